"""Command-line entry points of the SNMP source, wired into ``strandwatch`` by ``detector/cli.py``.

``strandwatch collect snmp --config snmp.yaml --once --output -`` prints one
poll's points as line protocol; without ``--once`` it polls every
``interval`` seconds of the configuration and prints each poll as it
finishes, until SIGINT or SIGTERM: the first signal lets the poll in
progress finish and be written, a second one stops at once.

``strandwatch topology discover --config snmp.yaml --output topology.yaml``
walks the same targets' LLDP tables and writes a topology file (see
:mod:`collector.topology_discovery`).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TextIO

import yaml

from collector.lineprotocol import encode
from collector.schema import COLLECTOR_HEALTH
from collector.sources.snmp.config import SnmpConfig, SnmpConfigError, load_config
from collector.sources.snmp.poller import SnmpSource
from collector.sources.snmp.vendor_profiles import ProfileError
from collector.topology_discovery import discover

EXIT_OK = 0
EXIT_NO_ANSWER = 1
EXIT_BAD_CONFIG = 2
EXIT_INTERRUPTED = 130


def add_collect_snmp_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``strandwatch collect snmp``."""
    parser.add_argument("--config", required=True, metavar="FILE", help="SNMP configuration (YAML, see sample.yaml)")
    parser.add_argument("--once", action="store_true", help="poll once, print the points and exit")
    parser.add_argument(
        "--output", default="-", metavar="FILE", help="where line protocol goes: a file (appended to) or - (stdout)"
    )


def run_collect_snmp(args: argparse.Namespace) -> int:
    """Poll as ``args`` say. Exit status: 0, or 1 when no target answered a --once poll, 2 for a bad config."""
    config = _load(args.config)
    if config is None:
        return EXIT_BAD_CONFIG
    try:
        source = SnmpSource(config)
    except (SnmpConfigError, ProfileError) as exc:
        print(f"strandwatch collect snmp: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    with _opened(args.output) as out:
        if args.once:
            return asyncio.run(_poll_once(source, out))
        return asyncio.run(_poll_forever(source, config, out))


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
