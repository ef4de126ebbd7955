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

This process drives the simulation: every poll interval, half an interval
after each of the service's poll instants (so a poll does not read a step
half done), it advances the simulation one step (``Simulation.step()``; the
agents see the new counters through the shared board) and rewrites the
sysfs tree. Every ``--scrape-every`` seconds it reads the service's
``/metrics`` and records the resident memory (``process_resident_memory_bytes``,
plus the anonymous part from ``/proc/<pid>/status``: SQLite maps the growing
database file, and those file pages count in RSS without being a leak).

At the end it scrapes once more, sends SIGTERM and waits for the service to
drain. Lost points: what ``strandwatch_points_out_total{stage="published"}``
counted at that last scrape, minus the points of the collected measurements
(everything but the detector's results) in the store; also checked against
the service's final log line ("N points stored"). Memory: the mean of the
first and of the last window (5 minutes each, or half the run if shorter),
and a least-squares slope in MB/hour over the run after a warm-up (the first
minute, or a tenth of a shorter run). Goals: 0 lost, flat memory.

Flat memory can only show after the service's caches are full: the
streaming detector reads ``[last decided - 2 h, newest]`` every step
(``detector.batch.DEFAULT_CONTEXT``), so its working set grows for the first
two hours, and each SQLite connection's page cache (up to 64 MiB) grows with
the database. Run 30 minutes or more for a verdict; ``--no-detector`` leaves
the detector out to soak the pollers, bus, ingest and store alone.

Run from the repository root; benchmarks are not part of the test suite::

    .venv/bin/python benchmarks/soak.py --quick
    .venv/bin/python benchmarks/soak.py --minutes 30 [--interval 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detector.results import RESULT_MEASUREMENTS  # noqa: E402
from detector.simulator import SimConfig, Simulation  # noqa: E402
from detector.simulator.snmp_agent import SimulatedSwitchAgents  # noqa: E402

PUBLISHED = 'strandwatch_points_out_total{stage="published"}'
RSS = "process_resident_memory_bytes"
STOPPED_LINE = re.compile(r"run: stopped; (\d+) points stored")
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
    steps: int
    samples: list[Sample] = field(default_factory=list)
    published_at_last_scrape: int = 0
    stored_by_log: int | None = None
    stored_in_store: dict[str, int] = field(default_factory=dict)
    exit_code: int | None = None
    drain_s: float = 0.0
    cpu_cores: float = 0.0
    dropped_messages: float = 0.0
    detector_lag_s: float | None = None

    @property
    def stored_collected(self) -> int:
        return sum(n for name, n in self.stored_in_store.items() if name not in RESULT_MEASUREMENTS)

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


def count_store(path: Path) -> dict[str, int]:
    """Points per measurement in the embedded store: distinct (series, time) pairs (a point is one of those)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT series.measurement, COUNT(*) FROM (SELECT DISTINCT series_id, time_ns FROM samples) AS points "
            "JOIN series ON series.id = points.series_id GROUP BY series.measurement"
        ).fetchall()
    finally:
        connection.close()
    return {name: count for name, count in rows}


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


def soak(minutes: float, interval_s: float, scrape_every_s: float, detector_interval_s: float | None, work: Path,
         progress: bool) -> SoakResult:
    interval_ns = round(interval_s * 1e9)
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    config = SimConfig(seed=7, start=now, duration=timedelta(minutes=minutes + 10), interval_s=interval_s)
    health_port = free_port()
    metrics_url = f"http://127.0.0.1:{health_port}/metrics"
    with Simulation(config) as simulation, SimulatedSwitchAgents(simulation.board) as agents:
        sysfs_host = simulation.cluster.host_names[0]
        simulation.write_sysfs(sysfs_host, work / "sysfs")
        config_path = service_config(simulation, agents, work, sysfs_host, health_port, interval_s,
                                     detector_interval_s)
        result = SoakResult(minutes, interval_s, len(agents.endpoints), sysfs_host, 0)
        log_path = work / "service.log"
        with open(log_path, "w") as log:
            service = subprocess.Popen(
                [sys.executable, "-m", "detector.cli", "--log-level", "INFO", "run", "--config", str(config_path)],
                cwd=work, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=log, stderr=subprocess.STDOUT,
            )
        started = time.monotonic()
        try:
            _wait_ready(service, metrics_url, log_path)
            cpu_start, cpu_clock = cpu_seconds(service.pid), time.monotonic()
            deadline = started + minutes * 60
            next_scrape = time.monotonic()
            next_step_ns = (time.time_ns() // interval_ns) * interval_ns + interval_ns // 2
            last: dict[str, float] = {}
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
                    last = scrape(metrics_url)
                    result.samples.append(_sample(last, service.pid, time.monotonic() - started))
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
    stopped = STOPPED_LINE.findall(log_path.read_text())
    result.stored_by_log = int(stopped[-1]) if stopped else None
    result.stored_in_store = count_store(work / "metrics.db")
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


def memory_summary(samples: list[Sample], minutes: float, attribute: str) -> dict[str, float]:
    """Mean of the first and last window (MB), their difference, and the slope (MB/hour) after warm-up."""
    seconds = minutes * 60
    window = min(300.0, seconds / 2)
    warmup = min(60.0, seconds / 10)
    t = np.array([s.elapsed_s for s in samples])
    mb = np.array([getattr(s, attribute) for s in samples]) / MB
    end = t[-1]
    first = mb[t <= t[0] + window].mean()
    last = mb[t >= end - window].mean()
    steady = t >= warmup
    slope = float(np.polyfit(t[steady] / 3600, mb[steady], 1)[0]) if steady.sum() >= 3 else float("nan")
    return {"window_s": window, "first_mb": float(first), "last_mb": float(last), "growth_mb": float(last - first),
            "slope_mb_per_hour": slope, "peak_mb": float(mb.max())}


def report(result: SoakResult) -> dict:
    rss = memory_summary(result.samples, result.minutes, "rss_bytes")
    anon = memory_summary(result.samples, result.minutes, "rss_anon_bytes")
    last = result.samples[-1]
    return {
        "minutes": result.minutes, "interval_s": result.interval_s, "switches": result.switches,
        "sysfs_host": result.sysfs_host, "simulation_steps": result.steps, "scrapes": len(result.samples),
        "polls_ok": last.polls_ok, "polls_failed": last.polls_failed,
        "published_at_last_scrape": result.published_at_last_scrape, "stored_by_log": result.stored_by_log,
        "stored_in_store": result.stored_in_store, "stored_collected": result.stored_collected,
        "lost": result.lost, "exit_code": result.exit_code, "drain_s": round(result.drain_s, 2),
        "cpu_cores": round(result.cpu_cores, 3), "dropped_messages": result.dropped_messages,
        "detector_lag_s": result.detector_lag_s, "rss": rss, "rss_anon": anon,
    }


def print_table(summary: dict) -> None:
    rss, anon = summary["rss"], summary["rss_anon"]
    window_min = rss["window_s"] / 60
    rows = [
        ("run", f"{summary['minutes']:g} min, poll every {summary['interval_s']:g} s, "
                f"{summary['switches']} switches (SNMP) + rdma sysfs of {summary['sysfs_host']}"),
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
        (f"RSS first / last {window_min:g} min", f"{rss['first_mb']:.1f} / {rss['last_mb']:.1f} MB "
                                                 f"(growth {rss['growth_mb']:+.1f} MB, peak {rss['peak_mb']:.1f})"),
        ("RSS slope after warm-up", f"{rss['slope_mb_per_hour']:+.1f} MB/hour"),
        (f"anon RSS first / last {window_min:g} min", f"{anon['first_mb']:.1f} / {anon['last_mb']:.1f} MB "
                                                      f"(growth {anon['growth_mb']:+.1f} MB)"),
        ("anon RSS slope after warm-up", f"{anon['slope_mb_per_hour']:+.1f} MB/hour"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the service runs (default 30)")
    parser.add_argument("--quick", action="store_true", help="a 2-minute run (overrides --minutes)")
    parser.add_argument("--interval", type=float, default=1.0, help="poll and simulation interval, s (default 1)")
    parser.add_argument("--scrape-every", type=float, default=5.0, help="seconds between /metrics scrapes")
    parser.add_argument("--detector-interval", type=float, default=10.0, help="detector step, s (default 10)")
    parser.add_argument("--no-detector", action="store_true",
                        help="leave the detector out: soak only the pollers, bus, ingest and store")
    parser.add_argument("--keep", type=Path, help="keep the work directory (store, log, config) here")
    parser.add_argument("--json", action="store_true", help="print the summary and samples as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args()
    minutes = 2.0 if args.quick else args.minutes
    if minutes <= 0 or args.interval <= 0 or args.scrape_every <= 0:
        parser.error("--minutes, --interval and --scrape-every must be positive")
    detector_interval = None if args.no_detector else args.detector_interval
    progress = not (args.quiet or args.json)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = soak(minutes, args.interval, args.scrape_every, detector_interval, args.keep, progress)
    else:
        with tempfile.TemporaryDirectory(prefix="strandwatch-soak-") as work:
            result = soak(minutes, args.interval, args.scrape_every, detector_interval, Path(work), progress)
    summary = report(result)
    if args.json:
        print(json.dumps({**summary, "samples": [asdict(s) for s in result.samples]}, indent=2))
    else:
        print_table(summary)
    return 0 if result.lost == 0 and result.exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
