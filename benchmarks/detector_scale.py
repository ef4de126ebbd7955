"""The detector in batch mode at cluster scale: wall time and peak memory.

The issue's scale: 7 days at 10 s for 1,024 GPUs, 1,024 NIC ports and 2,048
switch ports (plus one storage port per spine), goals under 2 minutes and
under 8 GiB on 2 cores. What is measured is the realistic batch path,
``detector.batch.detect_store`` (what ``strandwatch detect --store`` runs):
window by window (``--window``, default 6 h), each window decided from its
data plus ``--context`` (default 2 h) before it.

The store here is the simulator itself (``SimulatedStore``): it steps a
seeded ``Simulation`` forward as windows ask for later data
(``Simulation.frames``: the collector.frames shape, built from the model's
arrays) and keeps the last window and its context on disk, in a temporary
directory, one file per column of each half hour (text and times as codes).
Its ``read`` hands out the rows of ``[start, end]`` as one frame per
measurement, sorted by series then time like a store read, with only the fields
asked for (it lists them by ``field_names`` as ``EmbeddedStore`` does, so
``read_frames`` asks for the detector's fields only): that load and copy is
the *peer*, the time pandas needs just to read the frames the detector gets.
Four clocks are reported:

- ``simulate``: the store's own work, stepping the model, writing its files and
  deleting those no later read needs (not the detector's cost);
- ``read``: the store's reads (the peer);
- ``detect``: everything else inside ``detect_store`` (the detector);
- ``ratio``: detect / read.

Peak memory is the process's peak resident set (``ru_maxrss``): the frames of a
window as read and the detector's working set. What the store holds is on disk,
as it is for a store the detector reads over the network or from its files; the
page cache that serves those files is not the process's memory.

Run from the repository root::

    .venv/bin/python benchmarks/detector_scale.py                 # the issue's scale (long)
    .venv/bin/python benchmarks/detector_scale.py --days 1        # a day, same cluster
    .venv/bin/python benchmarks/detector_scale.py --quick         # 3 h of 256 GPUs, 1 h windows
    .venv/bin/python benchmarks/detector_scale.py --json

``--gpus`` takes multiples of 128 (8 per host, 8 NICs per host, one leaf per
128 GPUs (at least 2), 4 spines, as many leaf uplinks as host ports / 2).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.extensions import ExtensionArray

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

from collector.store.embedded import TimeRange  # noqa: E402
from detector.batch import WindowSettings, detect_store  # noqa: E402
from detector.simulator import FRAME_MEASUREMENTS, SimConfig, Simulation  # noqa: E402

GOAL_SECONDS = 120.0
GOAL_BYTES = 8 * 2**30
CHUNK = timedelta(minutes=30)
"""The store simulates this much at a time."""


def scale_config(gpus: int, days: float, interval_s: float, seed: int) -> SimConfig:
    if gpus < 128 or gpus % 128:
        raise SystemExit(f"--gpus must be a multiple of 128, got {gpus}")
    hosts = gpus // 8
    leaves = max(2, gpus // 128)
    spines = 4
    uplinks = gpus // (2 * leaves)
    steps = round(days * 86400 / interval_s)
    if steps < 1:
        raise SystemExit(f"--days {days} is less than one interval of {interval_s} s")
    return SimConfig(seed=seed, duration=timedelta(seconds=steps * interval_s), interval_s=interval_s,
                     hosts=hosts, leaves=leaves, spines=spines, uplinks_per_leaf=uplinks)


@dataclass(frozen=True, slots=True)
class _StoredColumn:
    """One column of a chunk's frame, in its own file: the values, or for text and times their codes."""

    path: Path
    uniques: ExtensionArray | None
    """What the codes stand for (None: the file holds the values themselves)."""

    @staticmethod
    def write(path: Path, column: pd.Series) -> _StoredColumn:
        if pd.api.types.is_numeric_dtype(column.dtype):
            np.save(path, column.to_numpy())
            return _StoredColumn(path, None)
        codes, uniques = pd.factorize(column)
        np.save(path, codes.astype(np.int32))
        return _StoredColumn(path, uniques.array)


@dataclass(frozen=True, slots=True)
class _StoredFrame:
    """One measurement's frame of a chunk: its row count and where each column is."""

    rows: int
    columns: dict[str, _StoredColumn]


@dataclass(frozen=True, slots=True)
class _Chunk:
    """Consecutive intervals of the simulation on disk: per measurement, one file per column."""

    times: np.ndarray
    directory: Path
    frames: dict[str, _StoredFrame]


class SimulatedStore:
    """A TelemetryReader over a simulation that runs forward as later data is read.

    It keeps its data on disk in ``directory``, as a store does: what it holds is not
    in the detector's process, only what a read hands out. Reads must come in time
    order (as ``detect_store``'s windows do). A read deletes the data before its start
    before it simulates further, so the store holds no more than one window and its
    context (and the rest of the last chunk).
    """

    def __init__(self, sim: Simulation, directory: Path) -> None:
        self.sim = sim
        self.directory = directory
        self.step_ns = round(sim.config.interval_s * 1e9)
        self.chunk_steps = max(1, round(CHUNK.total_seconds() / sim.config.interval_s))
        first = pd.Timestamp(sim.config.start) + pd.Timedelta(self.step_ns, "ns")
        self.span = TimeRange(first, pd.Timestamp(sim.config.end))
        self.chunks: list[_Chunk] = []
        self.chunks_written = 0
        self.simulate_s = 0.0
        self.read_s = 0.0
        self.rows_read = 0
        self.cells_read = 0

    def time_range(self, measurement: str) -> TimeRange | None:
        return self.span if measurement in FRAME_MEASUREMENTS else None

    def _simulate_until(self, end_ns: int) -> None:
        started = time.perf_counter()
        while not self.sim.finished and self.sim.time_ns < end_ns:
            steps = min(self.chunk_steps, self.sim.config.steps - self.sim.steps_done)
            first = self.sim.time_ns + self.step_ns
            frames = self.sim.frames(steps)
            self.sim.drop_ground_truth()  # the benchmark never evaluates: its truth would count in the peak
            directory = self.directory / str(self.chunks_written)
            directory.mkdir()
            self.chunks_written += 1
            stored = {measurement: _StoredFrame(len(frame), {
                name: _StoredColumn.write(directory / f"{measurement}.{number}.npy", frame[name])
                for number, name in enumerate(frame.columns)}) for measurement, frame in frames.items()}
            self.chunks.append(_Chunk(first + self.step_ns * np.arange(steps, dtype=np.int64), directory, stored))
        self.simulate_s += time.perf_counter() - started

    def field_names(self) -> list[str]:
        """The numeric columns of the frames: the fields a read can ask for by name."""
        if not self.chunks:
            self._simulate_until(self.span.first.value)
        names = {name for frame in self.chunks[0].frames.values() for name, column in frame.columns.items()
                 if column.uniques is None}
        return sorted(names)

    def read(self, measurement: str, start=None, end=None, fields=None, tags=None) -> pd.DataFrame:
        if tags is not None:
            raise NotImplementedError("SimulatedStore reads every series")
        start_ns = pd.Timestamp(start).value if start is not None else self.span.first.value
        end_ns = pd.Timestamp(end).value if end is not None else self.span.last.value + 1
        started = time.perf_counter()
        while self.chunks and self.chunks[0].times[-1] < start_ns:
            shutil.rmtree(self.chunks.pop(0).directory)
        self.simulate_s += time.perf_counter() - started
        self._simulate_until(end_ns)
        started = time.perf_counter()
        frame = self._rows(measurement, start_ns, end_ns, fields)
        self.read_s += time.perf_counter() - started
        self.rows_read += len(frame)
        self.cells_read += frame.size
        return frame

    def _rows(self, measurement: str, start_ns: int, end_ns: int, fields) -> pd.DataFrame:
        """The rows in ``[start, end)``, every series' rows together in time order.

        With ``fields``, only those numeric columns (the coded ones, text and times, always come).
        """
        chunks = [(chunk.times, chunk.frames[measurement]) for chunk in self.chunks if measurement in chunk.frames]
        if not chunks:
            return pd.DataFrame()
        index, offset = [], 0
        for times, frame in chunks:
            chosen = np.flatnonzero((times >= start_ns) & (times < end_ns))
            series = frame.rows // len(times)
            index.append(offset + np.arange(series)[:, None] * len(times) + chosen[None, :])
            offset += frame.rows
        rows = np.concatenate(index, axis=1).ravel()
        wanted = set(fields) if fields is not None else None
        names = [name for name, column in chunks[0][1].columns.items()
                 if wanted is None or name in wanted or column.uniques is not None]
        return pd.DataFrame({name: _column([frame.columns[name] for _, frame in chunks], rows) for name in names})


def _column(parts: list[_StoredColumn], rows: np.ndarray) -> np.ndarray | ExtensionArray:
    """The rows ``rows`` of one column stored in consecutive chunks."""
    stored = [np.load(part.path) for part in parts]
    if parts[0].uniques is None:
        return np.concatenate(stored).take(rows)
    starts = np.cumsum([0] + [len(part.uniques) for part in parts[:-1]])
    codes = np.concatenate([np.where(part_codes < 0, -1, part_codes + start)
                            for part_codes, start in zip(stored, starts)]).take(rows)
    uniques = type(parts[0].uniques)._concat_same_type([part.uniques for part in parts])
    return uniques.take(codes, allow_fill=True)


def run(args: argparse.Namespace) -> dict:
    config = scale_config(args.gpus, args.days, args.interval, args.seed)
    sim = Simulation(config)
    with tempfile.TemporaryDirectory(prefix="strandwatch-scale-") as directory:
        return _run(args, config, sim, SimulatedStore(sim, Path(directory)))


def _run(args: argparse.Namespace, config: SimConfig, sim: Simulation, store: SimulatedStore) -> dict:
    windows = WindowSettings(window=timedelta(hours=args.window), context=timedelta(hours=args.context))
    cluster = sim.cluster
    switch_ports = sum(len(spec.ports) for spec in cluster.switch_specs)
    started = time.perf_counter()
    shown = [0]

    def progress(done: int, total: int) -> None:
        if not args.json and (done == total or time.perf_counter() - shown[0] > 10):
            shown[0] = time.perf_counter()
            print(f"  window {done}/{total}  {shown[0] - started:6.1f} s", file=sys.stderr)

    result = detect_store(store, sim.topology, sim.allocations, pd.Timestamp(config.start),
                          pd.Timestamp(config.end), windows=windows, progress=progress)
    total_s = time.perf_counter() - started
    detect_s = total_s - store.simulate_s - store.read_s
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # Extrapolated to 7 days of this cluster by rows: the detector's work is linear in the rows it reads,
    # and a week in windows reads every interval once plus each window's context.
    series = switch_ports + 2 * cluster.n_nics + cluster.n_gpus
    week_rows = series * 7 * 86400 / config.interval_s * (1 + args.context / args.window)
    return {
        "gpus": cluster.n_gpus, "nic_ports": cluster.n_nics, "switch_ports": switch_ports,
        "days": args.days, "interval_s": config.interval_s, "intervals": config.steps,
        "window_h": args.window, "context_h": args.context,
        "rows_read": store.rows_read, "cells_read": store.cells_read,
        "episodes": len(result.episodes), "network_episodes": len(result.network_episodes),
        "simulate_s": round(store.simulate_s, 1), "read_s": round(store.read_s, 1), "detect_s": round(detect_s, 1),
        "detect_per_read": round(detect_s / store.read_s, 1) if store.read_s else None,
        "detect_rows_per_s": round(store.rows_read / detect_s) if detect_s > 0 else None,
        "peak_rss_gib": round(peak / 2**30, 2),
        "week_detect_s_extrapolated": round(detect_s * week_rows / store.rows_read, 0),
        "goal_seconds": GOAL_SECONDS, "goal_gib": GOAL_BYTES / 2**30,
        "meets_time_goal": detect_s * week_rows / store.rows_read < GOAL_SECONDS,
        "meets_memory_goal": peak < GOAL_BYTES,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=7.0, help="simulated span (default 7)")
    parser.add_argument("--gpus", type=int, default=1024, help="GPUs, a multiple of 128 (default 1024)")
    parser.add_argument("--interval", type=float, default=10.0, help="sampling interval in seconds (default 10)")
    parser.add_argument("--window", type=float, default=6.0, help="hours one detector pass decides (default 6)")
    parser.add_argument("--context", type=float, default=2.0, help="hours of context before a window (default 2)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 h of 256 GPUs in 1 h windows with 1 h context")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.quick:
        args.days, args.gpus, args.window, args.context = 0.125, 256, 1.0, 1.0
    report = run(args)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"detector batch over {report['days']} days at {report['interval_s']:g} s: {report['gpus']} GPUs, "
          f"{report['nic_ports']} NIC ports, {report['switch_ports']} switch ports; "
          f"{report['window_h']:g} h windows + {report['context_h']:g} h context")
    print(f"  rows read {report['rows_read']:,} ({report['cells_read']:,} cells), "
          f"episodes {report['episodes']} ({report['network_episodes']} network)")
    print(f"  simulate {report['simulate_s']:.1f} s (not counted)   read {report['read_s']:.1f} s (peer)   "
          f"detect {report['detect_s']:.1f} s  = {report['detect_per_read']}x the read")
    print(f"  peak RSS {report['peak_rss_gib']:.2f} GiB (goal < {report['goal_gib']:g})   7 days extrapolated: "
          f"detect {report['week_detect_s_extrapolated']:.0f} s (goal < {GOAL_SECONDS:.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
