"""``strandwatch report --since 7d`` over a week of a 1,024-GPU cluster: wall time against just reading its rows.

The issue's goal: a week of a 1,024-GPU cluster rendered in under a minute on
2 cores. The store built here is what a collector with the sample config's
rollups (1 min kept 90 days, 1 h kept 730 days) holds at ``NOW``:

- ``metrics.1h.db``: two weeks of hourly ``nvidia_smi`` rows for 1,024 GPUs
  (128 hosts of 8) with every gauge and its ``_max``, and ``job_gpu`` rows
  (the report needs the week before for week-over-week change);
- ``metrics.1m.db``: the last week of minute ``nvidia_smi`` rows (the busy
  gauges ``utilization_gpu``, ``sm_active`` and their ``_max``: the fields the
  report reads) and minute ``job_gpu`` rows;
- ``metrics.db`` (raw): the newest hour of 10 s ``nvidia_smi`` samples (what
  is not rolled up yet) and two weeks of detector results
  (``stranded_compute`` at 10 s within episodes, ``stranded_episode``).

Rows are generated directly with numpy (no simulator: 60,000 intervals of a
1,024-GPU fabric would take far longer than the report), realistically
shaped: each block of 8 hosts split into lanes of 1 to 8 hosts, each lane
running jobs (mean 10 h) back to back with idle gaps (mean 1.5 h; about 85 %
of GPUs allocated), busy levels that vary by job and time of day, hourly rows
that are the means of their minutes, about 25 episodes a day of every cause
with links, switches, prices and evidence text. They are written through ``EmbeddedStore.write``.

Two clocks on the same store in the same run, and their ratio:

- ``report``: ``strandwatch report --since 7d --store ... --output ...`` as a
  subprocess (start-up, imports, reads, tables, figures, HTML, PDF, CSV);
- ``read`` (the peer): the same reads the report makes (recorded from
  ``load_report_data``, then replayed on a fresh reader): the time to just
  read those rows from the store;
- ``ratio``: report / read.

Run from the repository root::

    .venv/bin/python benchmarks/report_week.py                  # builds the store in a temporary folder
    .venv/bin/python benchmarks/report_week.py --dir /tmp/week  # builds it once there, reuses it later
    .venv/bin/python benchmarks/report_week.py --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

from collector.schema import Point  # noqa: E402
from collector.store import EmbeddedStore  # noqa: E402
from detector.report import load_report_data, open_reader  # noqa: E402

HOSTS, GPUS_PER_HOST, BLOCK_HOSTS = 128, 8, 8
NOW = pd.Timestamp("2026-11-16 09:37:20", tz="UTC")
"""The collector's clock when the store is read: rollups are complete up to 09:00 (1 h) and 09:37 (1 min)."""
HOUR_NS, MINUTE_NS, RAW_STEP_NS = 3600 * 10**9, 60 * 10**9, 10 * 10**9
PRICE_PER_GPU_HOUR = 2.5
EPISODES_PER_DAY = 25
CAUSES = ("network", "network", "network", "checkpoint", "input_stall", "slow_host", "hung")
GAUGES_1H = ("utilization_gpu", "utilization_memory", "memory_used", "memory_total", "power_draw", "temperature_gpu",
             "sm_active", "sm_occupancy")


def gpu_tags() -> list[dict[str, str]]:
    return [{"host": f"node{host + 1:03d}", "index": str(index), "uuid": f"GPU-{host:04x}{index:04x}-5a1e",
             "name": "NVIDIA H100 80GB HBM3"} for host in range(HOSTS) for index in range(GPUS_PER_HOST)]


LANES = ((8,), (4, 4), (4, 2, 2), (2, 2, 2, 2), (4, 2, 1, 1))
"""How a block of 8 hosts is shared: each lane (a run of hosts) runs jobs back to back."""


def schedule(rng: np.random.Generator, first_minute: int, minutes: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Per GPU and minute: the job index holding it (-1 idle) and its busy level; and the jobs
    (name, hosts, first minute, end minute, GPUs)."""
    gpus = HOSTS * GPUS_PER_HOST
    job_of = np.full((gpus, minutes), -1, dtype=np.int32)
    level = np.zeros((gpus, minutes), dtype=np.float32)
    jobs = []
    for block in range(HOSTS // BLOCK_HOSTS):
        first_host = block * BLOCK_HOSTS
        for hosts in LANES[int(rng.integers(0, len(LANES)))]:
            minute = -int(rng.integers(0, 600))
            while minute < minutes:
                length = max(60, int(rng.exponential(10 * 60)))
                begin, end = max(minute, 0), min(minute + length, minutes)
                if begin < end:
                    rows = slice(first_host * GPUS_PER_HOST, (first_host + hosts) * GPUS_PER_HOST)
                    job_of[rows, begin:end] = len(jobs)
                    level[rows, begin:end] = rng.uniform(55, 85)
                    jobs.append((f"job-{len(jobs) + 1:04d}",
                                 [f"node{h + 1:03d}" for h in range(first_host, first_host + hosts)],
                                 first_minute + begin, first_minute + end, hosts * GPUS_PER_HOST))
                minute += length + int(rng.exponential(90))
            first_host += hosts
    return job_of, level, jobs


def write_store(directory: Path, seed: int = 7) -> dict[str, int]:
    """The three store files at ``directory``; field values written per file."""
    rng = np.random.default_rng(seed)
    tags = gpu_tags()
    gpus = len(tags)
    hour_end = NOW.floor("1h").value - HOUR_NS  # the last complete hour rolled up: 08:00
    minute_end = NOW.floor("1min").value - MINUTE_NS
    hours_start = hour_end - 14 * 24 * HOUR_NS
    first_minute = hours_start // MINUTE_NS
    minutes = (minute_end - hours_start) // MINUTE_NS + 1
    job_of, level, jobs = schedule(rng, first_minute, minutes)
    daily = 1 + 0.08 * np.sin(2 * np.pi * (np.arange(minutes) * MINUTE_NS / 86400e9))
    sm_active = np.where(job_of >= 0, level * daily, 0.3).astype(np.float32)
    written = {}

    with EmbeddedStore(directory / "metrics.1h.db", retention=None) as store:
        count = 0
        for day in range(14):
            points = []
            for hour in range(24):
                time_ns = hours_start + (day * 24 + hour) * HOUR_NS
                first = (time_ns - hours_start) // MINUTE_NS
                block = sm_active[:, first:first + 60]
                mean, top = block.mean(axis=1), block.max(axis=1)
                held = (job_of[:, first:first + 60] >= 0).any(axis=1)
                util = np.minimum(mean * 1.25 + 2, 100)
                for gpu in range(gpus):
                    fields = {"sm_active": float(mean[gpu]), "utilization_gpu": float(util[gpu]),
                              "sm_occupancy": float(mean[gpu] * 0.6), "utilization_memory": float(mean[gpu] * 0.7),
                              "memory_used": float(62000 * held[gpu] + 500), "memory_total": 81559.0,
                              "power_draw": float(70 + 6.3 * mean[gpu]), "temperature_gpu": float(32 + 0.4 * mean[gpu])}
                    fields.update({f"{name}_max": value * (1.1 if name != "memory_total" else 1.0)
                                   for name, value in list(fields.items())})
                    fields["sm_active_max"] = float(top[gpu])
                    points.append(Point("nvidia_smi", tags[gpu], fields, time_ns))
                    if held[gpu]:
                        job = jobs[int(job_of[gpu, first:first + 60].max())][0]
                        points.append(Point("job_gpu", {"host": tags[gpu]["host"], "index": tags[gpu]["index"],
                                                        "job": job}, {"allocated": 1.0, "source": "file"}, time_ns))
            count += store.write(points)
        written["1h"] = count

    week_first = minutes - 7 * 24 * 60
    with EmbeddedStore(directory / "metrics.1m.db", retention=None) as store:
        count = 0
        for chunk in range(week_first, minutes, 120):
            points = []
            for minute in range(chunk, min(chunk + 120, minutes)):
                time_ns = (first_minute + minute) * MINUTE_NS
                for gpu in range(gpus):
                    busy = float(sm_active[gpu, minute])
                    points.append(Point("nvidia_smi", tags[gpu], {
                        "sm_active": busy, "sm_active_max": min(busy * 1.15, 100.0),
                        "utilization_gpu": min(busy * 1.25 + 2, 100.0),
                        "utilization_gpu_max": 100.0 if busy > 1 else 0.0,
                    }, time_ns))
                    job = job_of[gpu, minute]
                    if job >= 0:
                        points.append(Point("job_gpu", {"host": tags[gpu]["host"], "index": tags[gpu]["index"],
                                                        "job": jobs[job][0]}, {"allocated": 1.0}, time_ns))
            count += store.write(points)
        written["1m"] = count

    with EmbeddedStore(directory / "metrics.db", retention=None) as store:
        points = []
        for time_ns in range(NOW.value - HOUR_NS, NOW.value, RAW_STEP_NS):
            minute = min((time_ns // MINUTE_NS) - first_minute, minutes - 1)
            for gpu in range(gpus):
                busy = float(sm_active[gpu, minute] + rng.normal(0, 2)) if job_of[gpu, minute] >= 0 else 0.0
                points.append(Point("nvidia_smi", tags[gpu],
                                    {"sm_active": busy, "utilization_gpu": min(busy + 15, 100.0)}, time_ns))
        count = store.write(points)
        count += store.write(result_points(rng, jobs))
        written["raw"] = count
    return written


def result_points(rng: np.random.Generator, jobs: list) -> list[Point]:
    """Two weeks of detector results: about 25 episodes a day, their stranded_compute rows at 10 s."""
    points = []
    job_minutes = sum(end - begin for _, _, begin, end, _ in jobs)
    for job, hosts, begin_minute, end_minute, gpus in jobs:
        span = end_minute - begin_minute
        for _ in range(rng.poisson(EPISODES_PER_DAY * 14 * span / job_minutes)):
            cause = str(rng.choice(CAUSES))
            start_ns = (begin_minute + int(rng.integers(0, max(span - 5, 1)))) * MINUTE_NS
            steps = int(rng.integers(6, 240))
            leaf = 1 + int(hosts[0][4:]) // 16
            link = f"leaf{leaf:02d}:swp{int(rng.integers(49, 65))}" if cause == "network" else ""
            share = float(rng.uniform(0.1, 0.6))
            lost = gpus * 10 * share
            tags = {"job": job, "cause": cause, **({"link": link, "switch": f"leaf{leaf:02d}"} if link else {})}
            for step in range(steps):
                points.append(Point("stranded_compute", tags, {
                    "gpu_seconds_lost": lost, "dollars_lost": lost / 3600 * PRICE_PER_GPU_HOUR,
                    "congestion_score": 1.4 if link else 0.0, "confidence": 0.9, "gpus": gpus,
                }, start_ns + step * RAW_STEP_NS))
            end = pd.Timestamp(start_ns + steps * RAW_STEP_NS, tz="UTC")
            points.append(Point("stranded_episode", tags, {
                "end": end.strftime("%Y-%m-%dT%H:%M:%SZ"), "duration_seconds": steps * 10.0,
                "gpu_seconds_lost": lost * steps, "dollars_lost": lost * steps / 3600 * PRICE_PER_GPU_HOUR,
                "confidence": 0.9, "gpus": gpus, "links": link, "hosts": ",".join(hosts),
                "evidence": f"ecn_marked {rng.uniform(1e5, 9e5):,.0f} packets/s (normal 0) on {link}" if link else
                            f"sm_active {share * 100:.0f} % below the job's healthy level",
            }, start_ns))
    return points


class Recorder:
    """A reader that remembers each read, to replay exactly the report's reads as the peer."""

    def __init__(self, reader) -> None:
        self.reader, self.calls = reader, []

    def read(self, measurement, start, end, fields=None):
        self.calls.append(("read", measurement, start, end, fields))
        return self.reader.read(measurement, start, end, fields)

    def read_series(self, measurement, start, end, fields):
        self.calls.append(("read_series", measurement, start, end, fields))
        return self.reader.read_series(measurement, start, end, fields)

    def latest(self, measurement):
        return self.reader.latest(measurement)


def peer(store_path: Path) -> tuple[float, int, int]:
    """Seconds to make the report's reads (recorded first, replayed on a fresh reader), calls, rows read."""
    with EmbeddedStore(store_path, read_only=True) as raw, ExitStack() as stack:
        recorder = Recorder(open_reader(raw, stack))
        end = recorder.latest("nvidia_smi") + pd.Timedelta(seconds=1)
        load_report_data(recorder, end - pd.Timedelta(days=7), end)
    with EmbeddedStore(store_path, read_only=True) as raw, ExitStack() as stack:
        reader = open_reader(raw, stack)
        began = time.perf_counter()
        rows = sum(len(getattr(reader, method)(measurement, start, end, fields))
                   for method, measurement, start, end, fields in recorder.calls)
        return time.perf_counter() - began, len(recorder.calls), rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="build the store here once and reuse it (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.dir or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        built = None
        if not (directory / "metrics.db").exists():
            began = time.perf_counter()
            written = write_store(directory)
            built = {"seconds": round(time.perf_counter() - began, 1), "field_values": written}
        began = time.perf_counter()
        run = subprocess.run([str(Path(sys.executable).with_name("strandwatch")), "report", "--since", "7d",
                              "--store", str(directory / "metrics.db"), "--output", str(directory / "report")],
                             capture_output=True, text=True)
        report_s = time.perf_counter() - began
        if run.returncode:
            print(run.stderr, file=sys.stderr)
            return 1
        read_s, calls, rows = peer(directory / "metrics.db")
        figures = {
            "gpus": HOSTS * GPUS_PER_HOST, "report_s": round(report_s, 2), "read_s": round(read_s, 2),
            "ratio": round(report_s / read_s, 1), "reads": calls, "rows_read": rows,
            "store_mib": {path.name: round(path.stat().st_size / 2**20, 1) for path in sorted(directory.glob("*.db"))},
            "build": built,
        }
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"report --since 7d, {figures['gpus']:,} GPUs: {figures['report_s']:.1f} s "
              f"(goal < 60 s); reading its {rows:,} rows in {calls} reads: {figures['read_s']:.2f} s; "
              f"ratio {figures['ratio']}")
        print(f"store: {figures['store_mib']} MiB" + (f"; built in {built['seconds']} s" if built else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
