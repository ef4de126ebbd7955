"""The ``ethtool`` source: PFC, ECN and drop counters of the RDMA interfaces."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from collector.schema import ETHTOOL, FieldValue, Point, health_point
from collector.sources.ethtool.backend import EthtoolBackend
from collector.sources.ethtool.kernel import KernelEthtoolBackend

log = logging.getLogger(__name__)

DEFAULT_COUNTER_INCLUDE: tuple[str, ...] = (
    r"pause",  # rx/tx_prio{N}_pause, *_pause_duration, *_pause_transition, tx_pause_storm_*, global pause
    r"discard",  # rx_prio{N}_discards, rx/tx_discards_phy, rx_prio{N}_buf_discard, rx_prio{N}_cong_discard
    r"out_of_buffer",  # rx_out_of_buffer: no receive WQE posted (slow consumer)
    r"(^|_)(ecn|cnp)(_|$)",  # ECN marks and congestion notifications, where a driver counts them
    r"_marked$",  # rx_prio{N}_marked: ECN-marked by the NIC's own buffer
)
"""Counter names (``re.search``) kept by default: the global and per-priority
counters that tell congestion and back-pressure apart."""

DEFAULT_COUNTER_EXCLUDE: tuple[str, ...] = (
    r"^(ch|rx|tx|xdpsq|xsksq)\d+_",  # mlx5 per-channel and per-queue counters: hundreds of them
    r"^(rx|tx)_queue_\d+_",  # per-queue counters of veth, virtio and others
    r"^ptp_",  # mlx5 PTP queue counters
)
"""Counter names (``re.search``) dropped even when included: per-queue copies."""

_OPTIONS = ("interfaces", "sysfs_root", "counter_include", "counter_exclude")


def _compile(option: str, patterns: Iterable[str]) -> list[re.Pattern[str]]:
    if isinstance(patterns, str):
        raise ValueError(f"ethtool source: {option} must be a list of regular expressions, not a string")
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except (re.error, TypeError) as err:
            raise ValueError(f"ethtool source: {option} pattern {pattern!r} is not a regular expression: {err}")
    return compiled


class EthtoolSource:
    """One ``ethtool`` point per interface and poll, with the counters the filter keeps.

    ``backend`` defaults to :class:`KernelEthtoolBackend` (the netdevs of the
    RDMA devices). A counter is kept when a ``counter_include`` pattern matches
    its name and no ``counter_exclude`` pattern does. An interface with nothing
    kept gives no point; one that disappears is skipped for that poll.
    """

    name = "ethtool"

    def __init__(
        self,
        host: str,
        backend: EthtoolBackend | None = None,
        counter_include: Iterable[str] = DEFAULT_COUNTER_INCLUDE,
        counter_exclude: Iterable[str] = DEFAULT_COUNTER_EXCLUDE,
    ) -> None:
        if not host:
            raise ValueError("ethtool source: host must be a non-empty string")
        if backend is not None and not isinstance(backend, EthtoolBackend):
            raise TypeError(f"ethtool source: backend {backend!r} lacks interfaces(), driver(), stats(), close()")
        self.host = host
        self.backend: EthtoolBackend = backend if backend is not None else KernelEthtoolBackend()
        self._include = _compile("counter_include", counter_include)
        self._exclude = _compile("counter_exclude", counter_exclude)
        self._kept: dict[str, bool] = {}

    @classmethod
    def from_config(cls, host: str, options: Mapping[str, Any]) -> EthtoolSource:
        """Build a kernel-backed source from the ``ethtool:`` block of a config file."""
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"ethtool source: unknown option(s) {unknown}; known: {list(_OPTIONS)}")
        interfaces = options.get("interfaces")
        if interfaces is not None and (
            isinstance(interfaces, str) or not all(isinstance(name, str) for name in interfaces)
        ):
            raise ValueError(f"ethtool source: interfaces must be a list of interface names, got {interfaces!r}")
        root = options.get("sysfs_root", "/sys")
        if not isinstance(root, str) or not root:
            raise ValueError(f"ethtool source: sysfs_root must be a path string, got {root!r}")
        return cls(
            host,
            KernelEthtoolBackend(list(interfaces) if interfaces else None, Path(root)),
            options.get("counter_include", DEFAULT_COUNTER_INCLUDE),
            options.get("counter_exclude", DEFAULT_COUNTER_EXCLUDE),
        )

    def keeps(self, counter: str) -> bool:
        """Whether the filter keeps this counter name (cached: names repeat every poll)."""
        kept = self._kept.get(counter)
        if kept is None:
            kept = any(p.search(counter) for p in self._include) and not any(
                p.search(counter) for p in self._exclude
            )
            self._kept[counter] = kept
        return kept

    def read(self, time_ns: int) -> list[Point]:
        """One blocking pass over the backend's interfaces."""
        points = []
        for ifname in self.backend.interfaces():
            try:
                driver = self.backend.driver(ifname)
                stats = self.backend.stats(ifname)
            except OSError as err:
                log.debug("ethtool: %s skipped this poll: %s", ifname, err)
                continue
            fields: dict[str, FieldValue] = {name: value for name, value in stats.items() if self.keeps(name)}
            if not fields:
                continue
            tags = {"host": self.host, "interface": ifname}
            if driver:
                tags["driver"] = driver
            points.append(Point(ETHTOOL, tags, fields, time_ns))
        return points

    async def collect(self, time_ns: int) -> list[Point]:
        started = time.perf_counter()
        up = 1
        points: list[Point] = []
        try:
            points = await asyncio.to_thread(self.read, time_ns)
        except Exception as err:  # a backend must not raise here; report it as a failed poll
            log.warning("ethtool: backend %s failed: %r", type(self.backend).__name__, err)
            up = 0
        health = health_point(self.name, self.host, time_ns, up=up, duration_s=time.perf_counter() - started,
                              points=len(points))
        return [*points, health]

    async def close(self) -> None:
        self.backend.close()
