"""``strandwatch detect``: the detector over files, the stable offline contract.

    strandwatch detect --input FILE.lp --topology TOPOLOGY.yaml --jobs JOBS.csv \\
        [--price-per-gpu-hour 3.0] [--format json|table]
    strandwatch detect --store STORE.db --topology TOPOLOGY.yaml --jobs JOBS.csv \\
        [--since 7d|RFC3339] [--until ...] [--window 6h]

reads line protocol (what strandwatch's collectors or an existing Telegraf
pipeline wrote), the cluster's wiring and the jobs' GPU allocations, and prints
the episodes of lost GPU time. ``--format json`` prints one JSON object::

    {"episodes": [{"job", "start", "end", "cause", "links", "gpu_seconds_lost",
                   "dollars_lost", "confidence", "evidence", ...}],
     "totals": {"gpu_seconds_lost", "dollars_lost"}, ...}

Times are RFC 3339 UTC; ``cause`` is ``network`` for loss to the fabric, and the
other causes (``slow_host``, ``checkpoint``, ``input_stall``, ``hung``,
``unknown``) are listed under their names but never counted in ``totals``, which
are network loss only. Links are ``<agent_host>:<ifName>``. Exit status 0 on
success, 2 when an input is missing or malformed (the message names the file).

With ``--store`` the detector reads an embedded store window by window
(detector/batch.py), with a progress bar on stderr, and prints the same output.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TextIO

import pandas as pd

from collector.frames import points_to_frames
from collector.lineprotocol import LineProtocolError, parse, parse_file
from detector.detect import DetectionResult, DetectorSettings, detect
from detector.jobs import JobsError, load_jobs
from detector.pricing import Prices
from detector.rates import RatesError
from detector.telemetry import TelemetryError
from detector.topology import Topology, TopologyError


def add_detect_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``detect`` subcommand's options."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", metavar="FILE.lp",
                        help="line protocol with interface, infiniband, ethtool and nvidia_smi points ('-': stdin)")
    source.add_argument("--store", metavar="PATH",
                        help="an embedded store (SQLite file) to read window by window instead of --input")
    parser.add_argument("--since", metavar="TIME",
                        help="with --store: from this time, RFC 3339 or ago from now (7d, 24h, 30m; default: the "
                             "store's first sample)")
    parser.add_argument("--until", metavar="TIME",
                        help="with --store: until this time, like --since (default: the store's last sample)")
    parser.add_argument("--window", type=_duration, metavar="DURATION",
                        help="with --store: time decided per pass (default 6h; bounds memory)")
    parser.add_argument("--no-progress", action="store_true", help="with --store: no progress bar on stderr")
    parser.add_argument("--topology", metavar="TOPOLOGY.yaml", help="hosts, NICs, switches and uplinks")
    parser.add_argument("--jobs", metavar="JOBS.csv", help="job,host,gpus,start,end per allocation")
    parser.add_argument("--price-per-gpu-hour", type=_non_negative, metavar="DOLLARS",
                        help="price of a GPU-hour for every GPU model (default: per model, see docs/detector.md)")
    parser.add_argument("--price-per-kwh", type=_non_negative, metavar="DOLLARS",
                        help="also charge the energy stranded GPUs burned while waiting")
    parser.add_argument("--interval", type=_positive, metavar="SECONDS",
                        help="analysis interval (default: the data's sampling interval)")
    parser.add_argument("--min-gpu-seconds", type=_non_negative, metavar="GPU_SECONDS",
                        help="drop episodes that lost less (default 60)")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")


def run_detect(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``detect`` for parsed arguments; print the result; return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    missing = [flag for flag, given in (("--input or --store", args.input or getattr(args, "store", None)),
                                        ("--topology", args.topology), ("--jobs", args.jobs)) if not given]
    if missing:
        print(f"strandwatch detect: error: missing {', '.join(missing)}", file=err)
        return 2
    try:
        result = _detect_files(args)
    except (OSError, LineProtocolError, TopologyError, JobsError, TelemetryError, RatesError, ValueError) as error:
        print(f"strandwatch detect: error: {error}", file=err)
        return 2
    if args.format == "json":
        json.dump(result.to_dict(), out, indent=2)
        out.write("\n")
    else:
        out.write(format_table(result))
    for warning in result.warnings:
        print(f"strandwatch detect: warning: {warning}", file=err)
    return 0


def _detect_files(args: argparse.Namespace) -> DetectionResult:
    topology = Topology.load(args.topology)
    allocations = load_jobs(args.jobs)
    if getattr(args, "store", None):
        return _detect_store(args, topology, allocations)
    if args.since or args.until or args.window:
        raise ValueError("--since, --until and --window need --store")
    if args.input == "-":
        points = parse(sys.stdin.read(), source_name="<stdin>")
    else:
        path = Path(args.input)
        if not path.is_file():
            raise OSError(f"{path}: no such input file")
        points = parse_file(path)
    if not points:
        raise ValueError(f"{args.input}: no points in the input")
    frames = points_to_frames(points)
    prices, settings = _settings(args)
    try:
        return detect(frames, topology, allocations, prices, settings)
    except (TelemetryError, RatesError) as error:
        raise type(error)(f"{args.input}: {error}") from error


def _settings(args: argparse.Namespace) -> tuple[Prices, DetectorSettings]:
    prices = Prices(override_per_gpu_hour=args.price_per_gpu_hour, per_kwh=args.price_per_kwh)
    settings = DetectorSettings(step_s=args.interval)
    if args.min_gpu_seconds is not None:
        settings = replace(settings, episodes=replace(settings.episodes, min_gpu_seconds=args.min_gpu_seconds))
    return prices, settings


def _detect_store(args: argparse.Namespace, topology: Topology, allocations: list) -> DetectionResult:
    from collector.store import EmbeddedStore
    from detector.batch import WindowSettings, detect_store

    path = Path(args.store)
    if not path.is_file():
        raise OSError(f"{path}: no such store")
    now = pd.Timestamp.now(tz="UTC")
    since = parse_since(args.since, now, "--since") if args.since else None
    until = parse_since(args.until, now, "--until") if args.until else None
    prices, settings = _settings(args)
    windows = WindowSettings(window=args.window) if args.window else WindowSettings()
    store = EmbeddedStore(path, read_only=True)
    try:
        if args.no_progress:
            return detect_store(store, topology, allocations, since, until, prices, settings, windows)
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.console import Console
        with Progress(TextColumn("detect"), BarColumn(), TextColumn("{task.completed}/{task.total} windows"),
                      TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("detect", total=None)
            return detect_store(store, topology, allocations, since, until, prices, settings, windows,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    except (TelemetryError, RatesError) as error:
        raise type(error)(f"{path}: {error}") from error
    finally:
        store.close()


def parse_since(text: str, now: pd.Timestamp, option: str) -> pd.Timestamp:
    """An RFC 3339 time, or a span ago from ``now``: ``90s``, ``30m``, ``24h``, ``7d``, ``2w``."""
    span = _DURATION.fullmatch(text.strip())
    if span:
        return now - pd.Timedelta(float(span.group(1)) * _UNITS[span.group(2)], "s")
    try:
        stamp = pd.Timestamp(text.strip())
    except ValueError:
        raise ValueError(f"{option}: not an RFC 3339 time nor a span like 7d or 24h: {text!r}") from None
    if stamp.tzinfo is None:
        raise ValueError(f"{option}: {text!r} has no UTC offset (add Z)")
    return stamp.tz_convert("UTC")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(text: str) -> timedelta:
    match = _DURATION.fullmatch(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a positive duration like 30m, 6h or 1d: {text!r}")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def format_table(result: DetectionResult) -> str:
    """Episodes as an aligned text table, then the network totals."""
    header = ("start", "end", "job", "cause", "GPU-s lost", "$ lost", "conf", "links / evidence")
    rows = []
    for episode in sorted(result.episodes, key=lambda e: (e.start, e.job)):
        data = episode.to_dict()
        parts = []
        if episode.links:
            more = f" +{len(episode.links) - 3}" if len(episode.links) > 3 else ""
            parts.append(", ".join(episode.links[:3]) + more)
        elif episode.hosts:
            parts.append(", ".join(episode.hosts))
        if episode.evidence:
            top = episode.evidence[0]
            level = f"{top.value / top.normal:.0f}x normal" if top.normal > 0 \
                else f"{top.value:.3g} {top.unit} (normal 0)"
            parts.append(f"{top.signal} {level}")
        detail = "; ".join(parts)
        rows.append((data["start"], data["end"], episode.job, episode.cause, f"{episode.gpu_seconds_lost:,.0f}",
                     f"{episode.dollars_lost:,.2f}", f"{episode.confidence:.2f}", detail))
    lines = []
    if rows:
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
        numeric = {4, 5, 6}
        for row in [header, *rows]:
            cells = [str(cell).rjust(widths[i]) if i in numeric else str(cell).ljust(widths[i])
                     for i, cell in enumerate(row)]
            lines.append("  ".join(cells).rstrip())
    else:
        lines.append("no episodes of lost GPU time")
    totals = result.totals()
    lines.append("")
    lines.append(f"network loss: {totals['gpu_seconds_lost']:,.0f} GPU-seconds, ${totals['dollars_lost']:,.2f}")
    for cause, total in result.by_cause().items():
        if cause != "network":
            lines.append(f"  not network, {cause}: {total['gpu_seconds_lost']:,.0f} GPU-seconds, "
                         f"${total['dollars_lost']:,.2f} ({total['episodes']} episodes)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m detector.offline``: the detect command on its own."""
    parser = argparse.ArgumentParser(prog="strandwatch detect", description=__doc__.split("\n")[0])
    add_detect_arguments(parser)
    return run_detect(parser.parse_args(argv))


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


if __name__ == "__main__":
    raise SystemExit(main())
