"""Simulate a GPU cluster and run strandwatch over it, end to end.

The simulator's switches are real SNMP agents on loopback UDP ports, its NICs are
/sys/class/infiniband trees on disk and its GPUs and NIC drivers sit behind the
backend interfaces of the NVML and ethtool sources. strandwatch polls them all on
a simulated clock that runs much faster than wall time, carries the points over
the in-process bus into the embedded store, reads them back, detects stranded
compute and compares what it found with the simulator's ground truth.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from collector.bus import InProcessBus, Subscription
from collector.lineprotocol import encode
from collector.runner import poll_and_publish
from collector.sources.base import Source
from collector.sources.ethtool import EthtoolSource
from collector.sources.gpu import GpuSource
from collector.sources.rdma import RdmaSource
from collector.sources.snmp import SnmpSource, SnmpTarget
from collector.ingest import IngestService
from collector.store import AsyncEmbeddedStore, EmbeddedStore
from detector.detect import DetectionResult, detect
from detector.evaluation import Accuracy, evaluate
from detector.jobs import JobsError, parse_time
from detector.pricing import Prices
from detector.results import write_results
from detector.simulator import SimConfig, Simulation
from detector.simulator.snmp_agent import SimulatedSwitchAgents

DEFAULT_STORE = Path("strandwatch-data") / "demo.sqlite"
TOP_ROWS = 10


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=1, help="scenario seed (default 1)")
    parser.add_argument("--hours", type=float, default=3.0, help="simulated hours (default 3)")
    parser.add_argument("--interval", type=float, default=30.0,
                        help="simulated seconds between polls (default 30)")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE,
                        help=f"embedded store the demo writes; replaced at each run (default {DEFAULT_STORE})")
    parser.add_argument("--export", type=Path, metavar="DIR",
                        help="also write the scenario for `strandwatch detect`: telemetry.lp, topology.yaml, "
                             "jobs.csv, ground_truth.json")
    parser.add_argument("--price-per-gpu-hour", type=float, metavar="DOLLARS",
                        help="one price for every GPU model instead of the default table")
    parser.add_argument("--start", type=_rfc3339, metavar="TIME",
                        help="simulated start, RFC 3339 (default: --hours before now, so the data is recent "
                             "for `strandwatch report --since 7d` and Grafana)")


def _rfc3339(text: str) -> datetime:
    try:
        return parse_time(text, "--start")
    except JobsError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def run_demo(args: argparse.Namespace) -> int:
    console = Console()
    if args.hours <= 0 or args.interval <= 0:
        console.print("[red]--hours and --interval must be positive[/red]")
        return 2
    duration = timedelta(hours=args.hours)
    start = args.start or (datetime.now(timezone.utc) - duration).replace(second=0, microsecond=0)
    config = SimConfig(seed=args.seed, start=start, duration=duration, interval_s=args.interval)
    for stale in (args.store, Path(f"{args.store}-wal"), Path(f"{args.store}-shm")):
        stale.unlink(missing_ok=True)
    if args.export:
        args.export.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with Simulation(config) as simulation:
        points_stored = asyncio.run(_collect(simulation, args.store, args.export, console))
        collected_s = time.monotonic() - began
        if args.export:
            simulation.export(args.export)
        with EmbeddedStore(args.store) as store:
            frames = {measurement: store.read(measurement) for measurement in store.measurements()}
            prices = Prices(override_per_gpu_hour=args.price_per_gpu_hour)
            result = detect(frames, simulation.topology, simulation.allocations, prices)
            write_results(store, result)
        accuracy = evaluate(result, simulation.ground_truth.episodes, simulation.topology, simulation.allocations)
        _report(console, simulation, result, accuracy)
    console.print(
        f"\n{points_stored:,} points collected over real SNMP, sysfs, GPU and ethtool sources and stored in "
        f"{args.store} in {collected_s:.0f} s; detection took {time.monotonic() - began - collected_s:.0f} s."
    )
    console.print(f"Weekly report of this run: strandwatch report --since 7d --store {args.store} --output report/")
    if args.export:
        console.print(f"Scenario exported to {args.export}/: replay it with\n  strandwatch detect "
                      f"--input {args.export}/telemetry.lp --topology {args.export}/topology.yaml "
                      f"--jobs {args.export}/jobs.csv --format json")
    return 0


async def _collect(simulation: Simulation, store_path: Path, export: Path | None, console: Console) -> int:
    """Runs the scenario through the real sources, bus and store; returns the points stored."""
    shared_memory = Path("/dev/shm")
    workdir = Path(tempfile.mkdtemp(prefix="strandwatch-demo-", dir=shared_memory if shared_memory.is_dir() else None))
    bus = InProcessBus()
    store = AsyncEmbeddedStore(EmbeddedStore(store_path))
    ingest = IngestService(bus.subscribe(), store)
    consumers = [asyncio.create_task(ingest.run())]
    if export is not None:
        consumers.append(asyncio.create_task(_export_batches(bus.subscribe(), export / "telemetry.lp")))
    sources: list[Source] = []
    try:
        with SimulatedSwitchAgents(simulation.board) as agents:
            targets = [SnmpTarget(name=name, host=host, port=port, timeout=2.0, retries=1)
                       for name, (host, port) in agents.endpoints.items()]
            sources.append(SnmpSource.from_targets(targets))
            sysfs_roots = {host: workdir / host / "sys" for host in simulation.topology.hosts}
            for host, root in sysfs_roots.items():
                simulation.write_sysfs(host, root)
                sources += [
                    RdmaSource(host, root),
                    GpuSource(host, simulation.gpu_backend(host)),
                    EthtoolSource(host, simulation.ethtool_backend(host)),
                ]
            console.print(
                f"Simulating {len(simulation.topology.hosts)} hosts, {len(agents.endpoints)} switches "
                f"(SNMP agents on {', '.join(f'{h}:{p}' for h, p in agents.endpoints.values())}), "
                f"{simulation.config.duration} of cluster time every {simulation.config.interval_s:g} s."
            )
            with Progress(
                TextColumn("[bold]collecting[/bold]"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[clock]}"), TimeElapsedColumn(), console=console, transient=False,
            ) as progress:
                task = progress.add_task("collect", total=simulation.config.steps, clock="")
                while not simulation.finished:
                    time_ns = simulation.step()
                    for host, root in sysfs_roots.items():
                        simulation.write_sysfs(host, root)
                    await poll_and_publish(sources, bus, time_ns)
                    clock = time.strftime("%Y-%m-%d %H:%M", time.gmtime(time_ns / 1e9))
                    progress.update(task, advance=1, clock=f"sim time {clock} UTC")
    finally:
        for source in sources:
            await source.close()
        await bus.close()
        await asyncio.gather(*consumers)
        await store.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return ingest.stats.points


async def _export_batches(subscription: Subscription, path: Path) -> None:
    with open(path, "w") as handle:
        async for delivery in subscription:
            handle.write(encode(delivery.points))
            await delivery.ack()


def _report(console: Console, simulation: Simulation, result: DetectionResult, accuracy: Accuracy) -> None:
    episodes = Table(title="Episodes (network loss counts; other causes shown for context)")
    for column in ("job", "start", "end", "cause", "blamed links", "GPU-h lost", "$ lost"):
        episodes.add_column(column, justify="right" if column in ("GPU-h lost", "$ lost") else "left")
    for episode in sorted(result.episodes, key=lambda e: e.start):
        style = "bold red" if episode.cause == "network" else "dim"
        episodes.add_row(
            episode.job, f"{episode.start:%H:%M}", f"{episode.end:%H:%M}", episode.cause,
            ", ".join(episode.links[:3]) + (" ..." if len(episode.links) > 3 else ""),
            f"{episode.gpu_seconds_lost / 3600:.2f}", f"{episode.dollars_lost:,.2f}", style=style,
        )
    console.print(episodes)

    breakdown = result.network_breakdown(simulation.topology)
    for key, title in (("job", "Network loss by job"), ("link", "Network loss by link"),
                       ("switch", "Network loss by switch")):
        rows = list(breakdown[key].items())
        shown = rows[:TOP_ROWS]
        table = Table(title=title, caption=f"and {len(rows) - len(shown)} more" if len(rows) > len(shown) else None)
        table.add_column(key)
        table.add_column("GPU-h lost", justify="right")
        table.add_column("$ lost", justify="right")
        for name, row in shown:
            table.add_row(name, f"{row['gpu_seconds_lost'] / 3600:.2f}", f"{row['dollars_lost']:,.2f}")
        console.print(table)

    totals = result.totals()
    console.print(f"[bold]Network-stranded compute: {totals['gpu_seconds_lost'] / 3600:.2f} GPU-hours, "
                  f"${totals['dollars_lost']:,.2f}[/bold]")
    table = Table(title="Detector against the simulator's ground truth")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in accuracy.rows():
        table.add_row(name, value)
    console.print(table)
    console.print(json.dumps({"accuracy": accuracy.to_dict()}, default=str), style="dim", soft_wrap=True)
