"""Command-line entry points of the SNMP source, wired into ``strandwatch`` by ``detector/cli.py``.

``strandwatch collect snmp --config FILE`` takes either of two files:

- a service configuration (``collector/strandwatch.sample.yaml``: ``snmp:``,
  ``mqtt:``, ``health_address``...): the poller runs as a service and
  publishes each poll to the MQTT brokers as one message (the envelope of
  ``collector.transport``; topic ``<prefix>/<site>/snmp/<mqtt.host>``), with
  the spool, ``/healthz``, ``/readyz`` and ``/metrics``, and SIGHUP re-reading
  the file's ``snmp:`` section (targets added or removed without a restart).
  ``--output FILE`` (or ``-``) prints line protocol there instead of
  publishing. It polls every ``snmp.interval`` when the section sets one,
  else every top-level ``interval_s``, at the wall clock's multiples of it.
- a plain SNMP configuration (``sample.yaml``): it prints line protocol to
  ``--output`` (default stdout), polling every ``interval`` seconds from start.

``--once`` polls once and prints the points (to ``--output``, default
stdout), whichever the file. The first SIGINT or SIGTERM lets the poll in
progress finish and be written or published (and the spool flushed), a
second one stops at once.

``strandwatch topology discover --config snmp.yaml --output topology.yaml``
walks the same targets' LLDP tables and writes a topology file (see
:mod:`collector.topology_discovery`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TextIO

import yaml

from collector.config import ConfigError, read_service_document
from collector.config import load_config as load_service_config
from collector.lineprotocol import encode
from collector.schema import COLLECTOR_HEALTH
from collector.service.logs import register_secrets, secret_values
from collector.service.publish import line_protocol_sink, poll_loop, serve_publishing
from collector.service.reload import SourceSet
from collector.service.signals import ShutdownSignals, run_service
from collector.sources.base import Source
from collector.sources.snmp.config import SnmpConfig, SnmpConfigError, load_config
from collector.sources.snmp.poller import SnmpSource
from collector.sources.snmp.vendor_profiles import ProfileError
from collector.topology_discovery import discover

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_NO_ANSWER = 1
EXIT_BAD_CONFIG = 2
EXIT_INTERRUPTED = 130


def add_collect_snmp_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``strandwatch collect snmp``."""
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="service configuration (strandwatch.yaml with snmp: and mqtt:: publish to MQTT) "
                             "or plain SNMP configuration (sample.yaml: print line protocol)")
    parser.add_argument("--once", action="store_true", help="poll once, print the points and exit")
    parser.add_argument(
        "--output", default=None, metavar="FILE",
        help="print line protocol to a file (appended to) or - (stdout) instead of publishing (default for a "
             "plain SNMP configuration and --once: -)",
    )


def run_collect_snmp(args: argparse.Namespace) -> int:
    """Poll as ``args`` say. Exit status: 0, or 1 when no target answered a --once poll, 2 for a bad config."""
    try:
        document = read_service_document(args.config)
        service = load_service_config(args.config) if document is not None else None
    except ConfigError as exc:
        print(f"strandwatch collect snmp: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if service is not None:
        if service.snmp is None:
            print(f"strandwatch collect snmp: {args.config}: no 'snmp' section: nothing to poll", file=sys.stderr)
            return EXIT_BAD_CONFIG
        register_secrets(secret_values(service))
        config = service.snmp
    else:
        config = _load(args.config)
        if config is None:
            return EXIT_BAD_CONFIG
    try:
        source = SnmpSource(config)
    except (SnmpConfigError, ProfileError) as exc:
        print(f"strandwatch collect snmp: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if service is not None and not args.once:
        snmp_section = document.get("snmp") if isinstance(document.get("snmp"), dict) else {}
        interval_s = float(snmp_section.get("interval", service.interval_s))
        sources = SourceSet([source], _reloader(args.config), "collect snmp")
        if args.output is None:
            return run_service(lambda signals: serve_publishing(service, sources, interval_s, signals),
                               "collect snmp", "finishing the poll under way, publishing it and flushing the spool")
        with _opened(args.output) as out:
            return run_service(
                lambda signals: _print_polls(sources, interval_s, signals, out),
                "collect snmp", "finishing the poll under way and printing it, then stopping",
            )
    with _opened(args.output or "-") as out:
        if args.once:
            return asyncio.run(_poll_once(source, out))
        return asyncio.run(_poll_forever(source, config, out))


async def _print_polls(sources: SourceSet, interval_s: float, signals: ShutdownSignals, out: TextIO) -> int:
    signals.on_reload = sources.request
    try:
        await poll_loop(sources, interval_s, signals.stop, line_protocol_sink(out))
    finally:
        if not signals.forced:
            await sources.close()
    return EXIT_OK


def _reloader(path: str) -> Callable[[], list[Source]]:
    """SIGHUP: the SNMP source of the service configuration's ``snmp:`` section as the file reads now."""
    polled = {target.name for target in load_service_config(path).snmp.targets}  # type: ignore[union-attr]

    def rebuild() -> list[Source]:
        nonlocal polled
        fresh = load_service_config(path).snmp
        if fresh is None:
            raise ConfigError(f"{path}: the 'snmp' section is gone; keeping the running targets")
        names = {target.name for target in fresh.targets}
        log.info("collect snmp: reload of %s: %d targets; added %s; removed %s", path, len(names),
                 sorted(names - polled) or "none", sorted(polled - names) or "none")
        polled = names
        return [SnmpSource(fresh)]

    return rebuild


async def _poll_once(source: SnmpSource, out: TextIO) -> int:
    try:
        points = await source.collect(time.time_ns())
    finally:
        await source.close()
    out.write(encode(points))
    out.flush()
    answered = any(p.fields.get("up") == 1 for p in points if p.measurement == COLLECTOR_HEALTH)
    return EXIT_OK if answered else EXIT_NO_ANSWER


async def _poll_forever(source: SnmpSource, config: SnmpConfig, out: TextIO) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main = asyncio.current_task()
    assert main is not None

    def on_signal() -> None:
        if stop.is_set():
            main.cancel()  # a second signal: do not wait for the poll
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    try:
        next_poll = time.monotonic()
        while not stop.is_set():
            points = await source.collect(time.time_ns())
            out.write(encode(points))
            out.flush()
            next_poll += config.interval
            now = time.monotonic()
            if next_poll < now:  # the poll overran its interval: skip the slots it missed
                next_poll += (now - next_poll) // config.interval * config.interval + config.interval
            try:
                await asyncio.wait_for(stop.wait(), next_poll - now)
            except TimeoutError:
                pass
        return EXIT_OK
    except asyncio.CancelledError:
        return EXIT_INTERRUPTED
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await source.close()


def add_topology_discover_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``strandwatch topology discover``."""
    parser.add_argument("--config", required=True, metavar="FILE", help="SNMP configuration (YAML): the switches")
    parser.add_argument(
        "--output", default="-", metavar="FILE", help="topology file to write (replaced), or - (stdout)"
    )
    parser.add_argument(
        "--switch-pattern",
        action="append",
        default=[],
        metavar="PATTERN",
        help="neighbors whose system name matches this shell pattern (e.g. 'core-*') are switches that"
        " are not polled, not hosts; repeatable",
    )


def run_topology_discover(args: argparse.Namespace) -> int:
    """Write the topology. Exit status: 0, 1 when no switch answered, 2 for a bad config."""
    config = _load(args.config)
    if config is None:
        return EXIT_BAD_CONFIG
    topology = asyncio.run(
        discover(config.targets, switch_patterns=args.switch_pattern, concurrency=config.concurrency)
    )
    header = (
        f"# Discovered from the LLDP tables of {len(topology['switches'])} of {len(config.targets)} switches"
        f" in {args.config}.\n"
        "# Host NICs are keyed by the netdev (or MAC) their LLDP advertised: rename each to its RDMA\n"
        "# device (mlx5_0...) and fill in gpus; LLDP knows neither.\n"
    )
    text = header + yaml.safe_dump(topology, sort_keys=False, default_flow_style=None)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    return EXIT_OK if topology["switches"] else EXIT_NO_ANSWER


def _load(path: str) -> SnmpConfig | None:
    try:
        return load_config(path)
    except SnmpConfigError as exc:
        print(f"strandwatch: {exc}", file=sys.stderr)
        return None


@contextmanager
def _opened(output: str) -> Iterator[TextIO]:
    if output == "-":
        yield sys.stdout
        return
    with open(output, "a") as handle:
        yield handle
