"""Soak test of ``strandwatch run``: does the all-in-one service keep flat memory and lose no point?

The service runs as a child process (``python -m detector.cli run``) for
``--minutes`` (30 by default; ``--quick`` is 2) against the simulator:

- SNMP: every switch of a simulated cluster (``detector/simulator``: 2 leaves,
  2 spines, 8 hosts of 8 GPUs) answers on its own UDP port from the
  simulator's agent process (``SimulatedSwitchAgents``), reading the
  counters from the shared-memory ``CounterBoard``.
- Node sources: the ``agent:`` section's ``rdma`` source reads the
  ``/sys/class/infiniband`` tree of one simulated host, written by this
  process (``Simulation.write_sysfs``; files are replaced atomically).
  The GPU and ethtool faces of the simulator are in-process backends that
  cannot cross into the service's process, so the ``gpu``, ``ethtool``,
  ``dcgm`` and ``jobs`` sources are off.
- The streaming detector runs on the embedded store with the simulation's
  topology and jobs (the scenario starts at the current minute, so its jobs
  line up with the wall-clock stamps of the polls).

History: before the service starts, ``--history`` minutes (130 by default)
of the same simulation are written straight into the store, stamped at the
poll instants of the past: the interface points of every switch and the
infiniband points of the sysfs host, as the sources make them. The streaming
detector reads ``[last decided - 2 h, newest]`` every step
(``detector.batch.DEFAULT_CONTEXT``), so with that history its context is
full from its first step and the soak measures the service as it runs after
its first two hours, not while its working set fills. ``--history 0`` starts
from an empty store.

This process drives the simulation: every poll interval, half an interval
after each of the service's poll instants (so a poll does not read a step
half done), it advances the simulation one step (``Simulation.step()``; the
agents see the new counters through the shared board) and rewrites the
sysfs tree. Every ``--scrape-every`` seconds it reads the service's
``/metrics`` and records the resident memory (``process_resident_memory_bytes``,
plus the anonymous part from ``/proc/<pid>/status``: SQLite maps the
database file, and those file pages count in RSS without being a leak).

At the end it scrapes once more, sends SIGTERM and waits for the service to
drain. Lost points: what ``strandwatch_points_out_total{stage="published"}``
counted at that last scrape, minus the points of the collected measurements
(everything but the detector's results and ingest's own progress points)
stored after the history; also checked against the service's final log line
("N points stored"). Goal: 0.

Memory: the resident size swings within each detector step (its frames
come and go), so each minute is summarised by its lowest sample (the
*floor*, what the service holds between steps) and its highest (the
*peak*). The first ``--warmup`` minutes (5 by default: the detector's first
step decides a whole context, SQLite's caches fill) are warm-up. The verdict
is on the anonymous floor after warm-up: its least-squares slope must stay
under ``--max-slope`` MB/hour (10 by default). The slope is printed with its
standard error (1-2 MB/hour for a 30-minute run on the development VM): a
growth much slower than that needs a longer run to show. A run with fewer
than 4 whole minutes after warm-up (``--quick``) is judged on lost points only.

``--trace`` runs the service under ``tracemalloc`` with a thread that writes,
every minute and between two detector steps, what its memory holds: Python's traced bytes, SQLite's
(``sqlite3_memory_used``), glibc's heap in use and free (``mallinfo2``),
garbage-collector counts, threads, and the source lines whose allocations
grew most since the end of warm-up. Tracing slows the service; use it to
find a growth, not to measure one.

Run from the repository root; benchmarks are not part of the test suite::

    .venv/bin/python benchmarks/soak.py --quick
    .venv/bin/python benchmarks/soak.py --minutes 30 [--interval 1] [--json] [--trace]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from collector.schema import INFINIBAND, INGEST_HEALTH, INTERFACE  # noqa: E402
from collector.store import EmbeddedStore  # noqa: E402
from detector.results import RESULT_MEASUREMENTS  # noqa: E402
from detector.simulator import SimConfig, Simulation  # noqa: E402
from detector.simulator.snmp_agent import SimulatedSwitchAgents  # noqa: E402

PUBLISHED = 'strandwatch_points_out_total{stage="published"}'
RSS = "process_resident_memory_bytes"
STOPPED_LINE = re.compile(r"run: stopped; (\d+) points stored")
NOT_COLLECTED = (*RESULT_MEASUREMENTS, INGEST_HEALTH)
"""Measurements the service writes itself: not counted as collected points."""
MB = 1e6


@dataclass
class Sample:
    """One scrape: seconds since the service started, its memory and counters."""

    elapsed_s: float
    rss_bytes: float
    rss_anon_bytes: float
    published: float
    polls_ok: float
    polls_failed: float


@dataclass
class SoakResult:
    minutes: float
    interval_s: float
    switches: int
    sysfs_host: str
    history_minutes: float
    history_points: int = 0
    steps: int = 0
    samples: list[Sample] = field(default_factory=list)
    published_at_last_scrape: int = 0
    stored_by_log: int | None = None
    stored_in_store: dict[str, int] = field(default_factory=dict)
    exit_code: int | None = None
    drain_s: float = 0.0
    cpu_cores: float = 0.0
    dropped_messages: float = 0.0
    detector_lag_s: float | None = None
    detector_steps_failed: int = 0
    trace: list[dict] = field(default_factory=list)

    @property
    def stored_collected(self) -> int:
        return sum(n for name, n in self.stored_in_store.items() if name not in NOT_COLLECTED)

    @property
    def lost(self) -> int:
        return max(0, self.published_at_last_scrape - self.stored_collected)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(url: str) -> dict[str, float]:
    """``/metrics`` as {sample name with labels: value}."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def labelled_sum(metrics: dict[str, float], prefix: str) -> float:
    return sum(value for name, value in metrics.items() if name.startswith(prefix))


def rss_anon_bytes(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024.0
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_store(path: Path, after_ns: int) -> dict[str, int]:
    """Points per measurement stamped after ``after_ns``: distinct (series, time) pairs (a point is one of those)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT series.measurement, COUNT(*) FROM (SELECT DISTINCT series_id, time_ns FROM samples "
            "WHERE time_ns > ?) AS points JOIN series ON series.id = points.series_id GROUP BY series.measurement",
            (after_ns,),
        ).fetchall()
    finally:
        connection.close()
    return {name: count for name, count in rows}


def write_history(simulation: Simulation, path: Path, sysfs_host: str, until_ns: int) -> int:
    """Step ``simulation`` up to ``until_ns``, storing what the soaked sources read at each step; the points stored.

    Those are the interface points of every switch and the infiniband points of
    ``sysfs_host``, from the sources' own point builders (``Simulation.points``).
    """
    stored = 0
    batch = []
    with EmbeddedStore(path, retention=None) as store:
        while simulation.time_ns + round(simulation.config.interval_s * 1e9) <= until_ns:
            stamp = simulation.step()
            batch.extend(point for point in simulation.points(stamp) if point.measurement == INTERFACE
                         or (point.measurement == INFINIBAND and point.tags.get("host") == sysfs_host))
            if len(batch) >= 20_000:
                store.write(batch)
                stored += len(batch)
                batch = []
        store.write(batch)
    return stored + len(batch)


def service_config(simulation: Simulation, agents: SimulatedSwitchAgents, work: Path, sysfs_host: str,
                   health_port: int, interval_s: float, detector_interval_s: float | None) -> Path:
    exported = simulation.export(work / "scenario")
    config = {
        "site": "soak",
        "interval_s": interval_s,
        "health_address": f"127.0.0.1:{health_port}",
        "store": {"path": str(work / "metrics.db"), "retention_days": 0, "rollups": []},
        "snmp": {"targets": [{"name": name, "host": host, "port": port, "timeout": 1, "retries": 1}
                             for name, (host, port) in agents.endpoints.items()]},
        "agent": {"host": sysfs_host,
                  "sources": {"rdma": {"sysfs_root": str(work / "sysfs")}, "ethtool": False, "gpu": False,
                              "dcgm": False, "jobs": False}},
    }
    if detector_interval_s is not None:
        config["detector"] = {"topology": str(exported["topology"]), "jobs": str(exported["jobs"]),
                              "interval_s": detector_interval_s, "state_path": str(work / "detector-state.json")}
    path = work / "strandwatch.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def soak(minutes: float, interval_s: float, scrape_every_s: float, detector_interval_s: float | None,
         history_minutes: float, work: Path, progress: bool, trace_after_s: float | None) -> SoakResult:
    interval_ns = round(interval_s * 1e9)
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    history = timedelta(minutes=history_minutes)
    config = SimConfig(seed=7, start=now - history, duration=history + timedelta(minutes=minutes + 10),
                       interval_s=interval_s)
    health_port = free_port()
    metrics_url = f"http://127.0.0.1:{health_port}/metrics"
    trace_path = work / "trace.jsonl"
    with Simulation(config) as simulation, SimulatedSwitchAgents(simulation.board) as agents:
        sysfs_host = simulation.cluster.host_names[0]
        result = SoakResult(minutes, interval_s, len(agents.endpoints), sysfs_host, history_minutes)
        if history_minutes > 0:
            began = time.monotonic()
            result.history_points = write_history(simulation, work / "metrics.db", sysfs_host, time.time_ns())
            if progress:
                print(f"history: {result.history_points:,} points over {history_minutes:g} min written in "
                      f"{time.monotonic() - began:.0f} s", flush=True)
        history_end_ns = simulation.time_ns
        simulation.write_sysfs(sysfs_host, work / "sysfs")
        config_path = service_config(simulation, agents, work, sysfs_host, health_port, interval_s,
                                     detector_interval_s)
        log_path = work / "service.log"
        command = [sys.executable, "-m", "detector.cli", "--log-level", "INFO", "run", "--config", str(config_path)]
        if trace_after_s is not None:
            command = [sys.executable, str(Path(__file__).resolve()), TRACED, str(trace_path), str(trace_after_s),
                       *command[3:]]
        with open(log_path, "w") as log:
            service = subprocess.Popen(command, cwd=work, env={**os.environ, "PYTHONPATH": str(REPO)},
                                       stdout=log, stderr=subprocess.STDOUT)
        started = time.monotonic()
        try:
            _wait_ready(service, metrics_url, log_path)
            cpu_start, cpu_clock = cpu_seconds(service.pid), time.monotonic()
            deadline = started + minutes * 60
            next_scrape = time.monotonic()
            next_step_ns = (time.time_ns() // interval_ns) * interval_ns + interval_ns // 2
            while time.monotonic() < deadline:
                if service.poll() is not None:
                    raise RuntimeError(f"the service exited early ({service.returncode}): "
                                       f"{log_path.read_text()[-3000:]}")
                if time.time_ns() >= next_step_ns:
                    if not simulation.finished:
                        simulation.step()
                        simulation.write_sysfs(sysfs_host, work / "sysfs")
                        result.steps += 1
                    next_step_ns += interval_ns
                    while next_step_ns <= time.time_ns():  # the driver fell behind: skip, as the poller does
                        next_step_ns += interval_ns
                if time.monotonic() >= next_scrape:
                    result.samples.append(_sample(scrape(metrics_url), service.pid, time.monotonic() - started))
                    next_scrape += scrape_every_s
                    if progress:
                        s = result.samples[-1]
                        print(f"  {s.elapsed_s:7.0f} s  rss {s.rss_bytes / MB:7.1f} MB  anon "
                              f"{s.rss_anon_bytes / MB:7.1f} MB  published {s.published:,.0f}", flush=True)
                wait_s = min((next_step_ns - time.time_ns()) / 1e9, next_scrape - time.monotonic(),
                             deadline - time.monotonic())
                time.sleep(max(0.0, wait_s))
            last = scrape(metrics_url)
            result.samples.append(_sample(last, service.pid, time.monotonic() - started))
            result.published_at_last_scrape = int(last.get(PUBLISHED, 0))
            result.dropped_messages = labelled_sum(last, "strandwatch_dropped_messages_total")
            result.detector_lag_s = last.get("strandwatch_detector_lag_seconds")
            result.cpu_cores = (cpu_seconds(service.pid) - cpu_start) / (time.monotonic() - cpu_clock)
            stopping = time.monotonic()
            service.send_signal(signal.SIGTERM)
            result.exit_code = service.wait(120)
            result.drain_s = time.monotonic() - stopping
        finally:
            if service.poll() is None:
                service.kill()
                service.wait()
    log_text = log_path.read_text()
    stopped = STOPPED_LINE.findall(log_text)
    result.stored_by_log = int(stopped[-1]) if stopped else None
    result.detector_steps_failed = log_text.count("detector: step failed")
    result.stored_in_store = count_store(work / "metrics.db", history_end_ns)
    if trace_path.exists():
        result.trace = [json.loads(line) for line in trace_path.read_text().splitlines()]
    return result


def _wait_ready(service: subprocess.Popen, url: str, log_path: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise RuntimeError(f"the service exited ({service.returncode}): {log_path.read_text()[-3000:]}")
        try:
            if scrape(url).get(PUBLISHED, 0) > 0:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the service published nothing within {timeout_s} s: {log_path.read_text()[-3000:]}")


def _sample(metrics: dict[str, float], pid: int, elapsed_s: float) -> Sample:
    return Sample(elapsed_s, metrics.get(RSS, float("nan")), rss_anon_bytes(pid), metrics.get(PUBLISHED, 0.0),
                  labelled_sum({k: v for k, v in metrics.items() if 'result="ok"' in k}, "strandwatch_polls_total"),
                  labelled_sum({k: v for k, v in metrics.items() if 'result="failed"' in k},
                               "strandwatch_polls_total"))


def memory_summary(samples: list[Sample], attribute: str, warmup_min: float) -> dict[str, object]:
    """Per-minute floors and peaks (MB) and the floors' slope (MB/hour) after warm-up and over the last half."""
    t = np.array([s.elapsed_s for s in samples])
    mb = np.array([getattr(s, attribute) for s in samples]) / MB
    minute = (t // 60).astype(int)
    minutes = np.unique(minute)
    floors = np.array([mb[minute == m].min() for m in minutes])
    peaks = np.array([mb[minute == m].max() for m in minutes])
    steady = minutes >= warmup_min
    last_half = minutes >= minutes[-1] / 2

    def slope(mask: np.ndarray) -> tuple[float, float]:
        """Least-squares slope of the floors (MB/hour) and its standard error."""
        # The last minute is partial (a few samples): its floor is not comparable.
        mask = mask & (minutes < minutes[-1])
        if mask.sum() < 4:
            return float("nan"), float("nan")
        fit, covariance = np.polyfit(minutes[mask] / 60, floors[mask], 1, cov=True)
        return float(fit[0]), float(np.sqrt(covariance[0, 0]))

    return {
        "floors_mb": [round(float(v), 1) for v in floors], "peaks_mb": [round(float(v), 1) for v in peaks],
        "steady_first_mb": float(floors[steady][0]) if steady.any() else float("nan"),
        "steady_last_mb": float(floors[steady & (minutes < minutes[-1])][-1]) if steady.sum() > 1 else float("nan"),
        "slope_mb_per_hour": slope(steady)[0], "slope_error_mb_per_hour": slope(steady)[1],
        "last_half_slope_mb_per_hour": slope(last_half)[0],
        "peak_mb": float(mb.max()),
    }


def report(result: SoakResult, warmup_min: float, max_slope: float) -> dict:
    rss = memory_summary(result.samples, "rss_bytes", warmup_min)
    anon = memory_summary(result.samples, "rss_anon_bytes", warmup_min)
    last = result.samples[-1]
    slope = anon["slope_mb_per_hour"]
    flat = None if slope != slope else bool(slope <= max_slope)  # None: too short after warm-up to judge
    return {
        "minutes": result.minutes, "interval_s": result.interval_s, "switches": result.switches,
        "sysfs_host": result.sysfs_host, "history_minutes": result.history_minutes,
        "history_points": result.history_points, "simulation_steps": result.steps, "scrapes": len(result.samples),
        "polls_ok": last.polls_ok, "polls_failed": last.polls_failed,
        "published_at_last_scrape": result.published_at_last_scrape, "stored_by_log": result.stored_by_log,
        "stored_in_store": result.stored_in_store, "stored_collected": result.stored_collected,
        "lost": result.lost, "exit_code": result.exit_code, "drain_s": round(result.drain_s, 2),
        "cpu_cores": round(result.cpu_cores, 3), "dropped_messages": result.dropped_messages,
        "detector_lag_s": result.detector_lag_s, "detector_steps_failed": result.detector_steps_failed,
        "warmup_minutes": warmup_min, "max_slope_mb_per_hour": max_slope, "flat": flat,
        "passed": flat is not False and result.lost == 0 and result.exit_code == 0,
        "rss": rss, "rss_anon": anon, "trace": result.trace,
    }


def print_table(summary: dict) -> None:
    rss, anon = summary["rss"], summary["rss_anon"]
    rows = [
        ("run", f"{summary['minutes']:g} min, poll every {summary['interval_s']:g} s, "
                f"{summary['switches']} switches (SNMP) + rdma sysfs of {summary['sysfs_host']}"),
        ("history before the start", f"{summary['history_minutes']:g} min, {summary['history_points']:,} points"),
        ("simulation steps / scrapes", f"{summary['simulation_steps']} / {summary['scrapes']}"),
        ("polls ok / failed", f"{summary['polls_ok']:,.0f} / {summary['polls_failed']:,.0f}"),
        ("published (last scrape)", f"{summary['published_at_last_scrape']:,}"),
        ("stored (final log line)", "missing" if summary["stored_by_log"] is None else f"{summary['stored_by_log']:,}"),
        ("stored (in the store)", f"{summary['stored_collected']:,}  "
                                  + ", ".join(f"{k} {v:,}" for k, v in sorted(summary["stored_in_store"].items()))),
        ("lost points (goal 0)", f"{summary['lost']:,}"),
        ("dropped messages", f"{summary['dropped_messages']:,.0f}"),
        ("exit code / drain", f"{summary['exit_code']} / {summary['drain_s']:.2f} s"),
        ("service CPU", f"{summary['cpu_cores']:.3f} cores"),
        ("detector lag (last scrape)", "n/a" if summary["detector_lag_s"] is None
         else f"{summary['detector_lag_s']:.1f} s"),
        ("detector steps failed", f"{summary['detector_steps_failed']}"),
    ]
    for name, memory in (("RSS", rss), ("anon RSS", anon)):
        rows += [
            (f"{name} floor after warm-up", f"{memory['steady_first_mb']:.1f} -> {memory['steady_last_mb']:.1f} MB "
                                            f"(peak {memory['peak_mb']:.1f} MB)"),
            (f"{name} floor slope", f"{memory['slope_mb_per_hour']:+.1f} +- {memory['slope_error_mb_per_hour']:.1f} "
                                    f"MB/hour after warm-up, {memory['last_half_slope_mb_per_hour']:+.1f} "
                                    f"over the last half"),
        ]
    rows += [
        ("anon floor per minute (MB)", " ".join(f"{v:.0f}" for v in anon["floors_mb"])),
        ("anon peak per minute (MB)", " ".join(f"{v:.0f}" for v in anon["peaks_mb"])),
        ("verdict", f"{'PASS' if summary['passed'] else 'FAIL'}: {summary['lost']} lost; "
                    + (f"anon floor slope {anon['slope_mb_per_hour']:+.1f} MB/hour after "
                       f"{summary['warmup_minutes']:g} min (limit {summary['max_slope_mb_per_hour']:g})"
                       if summary["flat"] is not None else
                       f"memory not judged: fewer than 4 whole minutes after {summary['warmup_minutes']:g} min "
                       f"of warm-up")),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if summary["trace"]:
        print_trace(summary["trace"])


def print_trace(trace: list[dict]) -> None:
    print("\ntraced service, per minute (MB): python traced / sqlite / malloc in use / malloc free / "
          "gc objects / threads")
    for entry in trace:
        print(f"  {entry['elapsed_s'] / 60:5.1f} min  {entry['traced_mb']:7.1f} {entry['sqlite_mb']:7.1f} "
              f"{entry['malloc_in_use_mb']:7.1f} {entry['malloc_free_mb']:7.1f} {entry['gc_objects']:9,} "
              f"{entry['threads']:3}")
    growth = trace[-1].get("growth") or []
    if growth:
        print("largest growths of traced memory since the end of warm-up:")
        for line in growth:
            print(f"  {line}")


# --- the traced service (--trace): this file run as the service's process ---------------------------------

TRACED = "traced-service"


def traced_service(report_path: Path, warmup_s: float, argv: list[str]) -> int:
    """Run ``strandwatch`` (``argv``) under tracemalloc; a thread appends a memory record every minute."""
    tracemalloc.start()
    watcher = threading.Thread(target=_watch_memory, args=(report_path, warmup_s), name="soak-trace", daemon=True)
    watcher.start()
    from detector.cli import main as strandwatch_main
    return strandwatch_main(argv)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _watch_memory(report_path: Path, warmup_s: float, every_s: float = 60.0) -> None:
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _Mallinfo2
    sqlite = ctypes.CDLL("libsqlite3.so.0")
    sqlite.sqlite3_memory_used.restype = ctypes.c_int64
    started = time.monotonic()
    baseline: tracemalloc.Snapshot | None = None
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    while True:
        time.sleep(every_s)
        _wait_detector_idle(timeout_s=every_s / 2)
        elapsed = time.monotonic() - started
        snapshot = tracemalloc.take_snapshot().filter_traces(ignore)
        heap = libc.mallinfo2()
        entry = {
            "elapsed_s": round(elapsed, 1), "traced_mb": round(tracemalloc.get_traced_memory()[0] / MB, 1),
            "sqlite_mb": round(sqlite.sqlite3_memory_used() / MB, 1),
            "malloc_in_use_mb": round((heap.uordblks + heap.hblkhd) / MB, 1),
            "malloc_free_mb": round(heap.fordblks / MB, 1), "gc_objects": len(gc.get_objects()),
            "gc_counts": gc.get_count(), "threads": threading.active_count(),
        }
        if baseline is None and elapsed >= warmup_s:
            baseline = snapshot
        elif baseline is not None:
            entry["growth"] = [str(stat) for stat in snapshot.compare_to(baseline, "lineno")[:12]]
        with open(report_path, "a") as report:
            report.write(json.dumps(entry) + "\n")


def _wait_detector_idle(timeout_s: float) -> None:
    """Until the detector's thread waits for its next step (or ``timeout_s``): its frames are gone then.

    A snapshot taken in the middle of a step holds hundreds of MB that the step frees again, which
    would hide a slow growth. The detector's steps run on a thread named ``detector_0``; between
    steps its innermost Python frame is the executor's ``_worker`` loop.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ident = next((t.ident for t in threading.enumerate() if t.name.startswith("detector")), None)
        frame = sys._current_frames().get(ident) if ident is not None else None
        if frame is None or frame.f_code.co_name == "_worker":
            return
        time.sleep(0.1)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == TRACED:
        return traced_service(Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the service runs (default 30)")
    parser.add_argument("--quick", action="store_true", help="a 2-minute run (overrides --minutes)")
    parser.add_argument("--interval", type=float, default=1.0, help="poll and simulation interval, s (default 1)")
    parser.add_argument("--scrape-every", type=float, default=5.0, help="seconds between /metrics scrapes")
    parser.add_argument("--detector-interval", type=float, default=10.0, help="detector step, s (default 10)")
    parser.add_argument("--history", type=float, default=130.0,
                        help="minutes of simulated history stored before the service starts (default 130: "
                             "the detector's 2 h context is full from its first step)")
    parser.add_argument("--warmup", type=float, default=5.0, help="minutes left out of the memory verdict (default 5)")
    parser.add_argument("--max-slope", type=float, default=10.0,
                        help="the anonymous memory floor's slope after warm-up that still counts as flat, "
                             "MB/hour (default 10)")
    parser.add_argument("--no-detector", action="store_true",
                        help="leave the detector out: soak only the pollers, bus, ingest and store")
    parser.add_argument("--trace", action="store_true",
                        help="run the service under tracemalloc and report what its memory holds each minute")
    parser.add_argument("--keep", type=Path, help="keep the work directory (store, log, config) here")
    parser.add_argument("--json", action="store_true", help="print the summary and samples as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args()
    minutes = 2.0 if args.quick else args.minutes
    if minutes <= 0 or args.interval <= 0 or args.scrape_every <= 0 or args.history < 0 or args.warmup < 0:
        parser.error("--minutes, --interval and --scrape-every must be positive; --history and --warmup not negative")
    detector_interval = None if args.no_detector else args.detector_interval
    progress = not (args.quiet or args.json)
    trace_after_s = args.warmup * 60 if args.trace else None
    run = (minutes, args.interval, args.scrape_every, detector_interval, args.history)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = soak(*run, args.keep, progress, trace_after_s)
    else:
        with tempfile.TemporaryDirectory(prefix="strandwatch-soak-") as work:
            result = soak(*run, Path(work), progress, trace_after_s)
    summary = report(result, args.warmup, args.max_slope)
    if args.json:
        print(json.dumps({**summary, "samples": [asdict(s) for s in result.samples]}, indent=2))
    else:
        print_table(summary)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
