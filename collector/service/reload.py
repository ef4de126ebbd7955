"""Configuration reload (SIGHUP) for the poll loops: rebuild the sources, swap them between polls.

The signal handler only calls :meth:`SourceSet.request`; the poll loop calls
:meth:`SourceSet.apply_pending` before each poll, which rebuilds the sources
from the configuration, swaps them in and closes the ones they replace. A
poll therefore always runs on one consistent set of sources, and a
configuration that does not load (a typo, a missing secret file) is logged
and the running sources keep polling.

Rebuilding an SNMP source starts its targets afresh: the first poll after a
reload also walks the static columns (ifName, ifAlias, ifHighSpeed) and a
target in backoff is tried again at once. That costs one wider walk per
target, once, and keeps the poller free of reload logic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from collector.sources.base import Source

__all__ = ["SourceSet", "snmp_source_set"]

log = logging.getLogger(__name__)


class SourceSet:
    """The sources one poll loop polls, replaced as a whole when a reload was requested.

    ``rebuild()`` returns the new sources (it may return some of the current
    ones to keep them: those are not closed) or raises to refuse the new
    configuration.
    """

    def __init__(self, sources: Sequence[Source], rebuild: Callable[[], Sequence[Source]], name: str = "service") -> None:
        self.sources: list[Source] = list(sources)
        self.rebuild = rebuild
        self.name = name
        self.pending = False
        self.generation = 0

    def request(self) -> None:
        """Ask for a reload before the next poll (safe to call from a signal handler)."""
        self.pending = True

    async def apply_pending(self) -> bool:
        """Reload now if one was requested; true when the sources changed."""
        if not self.pending:
            return False
        self.pending = False
        try:
            fresh = list(self.rebuild())
        except Exception as error:
            log.error("%s: reload refused, keeping the running sources: %s", self.name, error)
            return False
        kept = {id(source) for source in fresh}
        for old in self.sources:
            if id(old) not in kept:
                try:
                    await old.close()
                except Exception as error:  # closing a replaced source must not stop the swap
                    log.warning("%s: closing replaced source %s failed: %r", self.name, old.name, error)
        self.sources = fresh
        self.generation += 1
        log.info("%s: reloaded; polling %s", self.name, ", ".join(s.name for s in fresh) or "nothing")
        return True

    async def close(self) -> None:
        for source in self.sources:
            try:
                await source.close()
            except Exception as error:
                log.warning("%s: closing source %s failed: %r", self.name, source.name, error)


def snmp_source_set(path: str | Path) -> SourceSet:
    """A SourceSet of one SnmpSource configured by the YAML file at ``path`` and rebuilt from it on reload.

    Raises :class:`~collector.sources.snmp.SnmpConfigError` when the file is
    bad at start; on reload a bad file is logged and the running source
    kept. Each reload logs the targets it adds and removes.
    """
    from collector.sources.snmp import SnmpSource, load_config  # here: node agents need not import pysnmp

    config = load_config(path)
    polled = {target.name for target in config.targets}

    def rebuild() -> list[Source]:
        nonlocal polled
        fresh = load_config(path)
        source = SnmpSource(fresh)
        names = {target.name for target in fresh.targets}
        log.info("snmp: reload of %s: %d targets; added %s; removed %s", path, len(names),
                 sorted(names - polled) or "none", sorted(polled - names) or "none")
        polled = names
        return [source]

    return SourceSet([SnmpSource(config)], rebuild, "snmp")
