"""The foundation's promise, end to end: `strandwatch demo` and the offline contract on its export.

Runs the real console script in a subprocess, as a new user would: simulated
switches answer SNMP on loopback ports, NIC trees live on disk, points travel the
bus into the embedded store, and the detector reads them back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from collector.store import EmbeddedStore

STRANDWATCH = [sys.executable, "-m", "detector.cli"]
ROOT = Path(__file__).resolve().parents[1]


def _run(arguments: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    environment = {**os.environ, "COLUMNS": "160", "PYTHONPATH": str(ROOT)}
    return subprocess.run(STRANDWATCH + arguments, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=environment)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path, Path]:
    workdir = tmp_path_factory.mktemp("demo")
    export = workdir / "scenario"
    store = workdir / "store.sqlite"
    result = _run(["demo", "--store", str(store), "--export", str(export)], cwd=workdir)
    return result, export, store


def test_demo_runs_the_whole_pipeline_and_reports(demo_run) -> None:
    result, _, store = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout
    for heading in ("Episodes", "Network loss by job", "Network loss by link",
                    "Detector against the simulator's ground truth", "Network-stranded compute"):
        assert heading in output
    with EmbeddedStore(store, read_only=True) as reader:
        assert {"interface", "infiniband", "ethtool", "nvidia_smi", "strandwatch_source"} <= set(reader.measurements())
        health = reader.read("strandwatch_source")
        assert set(health["source"]) >= {"snmp", "rdma", "gpu", "ethtool"}
        assert (health["up"] == 1).all(), "every simulated device answered every poll"


def test_demo_meets_the_accuracy_promise(demo_run) -> None:
    result, _, _ = demo_run
    accuracy_line = next(line for line in result.stdout.splitlines() if line.startswith('{"accuracy"'))
    accuracy = json.loads(accuracy_line)["accuracy"]
    assert accuracy["true_episodes"] > 0
    assert abs(accuracy["dollar_error"]) <= 0.10, "network loss within 10% of ground truth"
    assert accuracy["confounders_blamed_on_network"] == 0
    assert accuracy["false_network_dollars"] == 0
    assert accuracy["recall"] >= 0.9 and accuracy["precision"] >= 0.9


def test_offline_contract_on_demo_export(demo_run, tmp_path: Path) -> None:
    _, export, _ = demo_run
    for name in ("telemetry.lp", "topology.yaml", "jobs.csv", "ground_truth.json"):
        assert (export / name).is_file(), name
    result = _run(["detect", "--input", str(export / "telemetry.lp"), "--topology", str(export / "topology.yaml"),
                   "--jobs", str(export / "jobs.csv"), "--price-per-gpu-hour", "3.0", "--format", "json"],
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(result.stdout)
    assert set(document) >= {"episodes", "totals"}
    for episode in document["episodes"]:
        assert set(episode) >= {"job", "start", "end", "cause", "links", "gpu_seconds_lost", "dollars_lost"}
        assert episode["start"].endswith("Z") and episode["end"].endswith("Z")
        assert all(":" in link for link in episode["links"])
    network = [episode for episode in document["episodes"] if episode["cause"] == "network"]
    assert network, "the default scenario has network episodes"
    assert document["totals"]["gpu_seconds_lost"] == pytest.approx(sum(e["gpu_seconds_lost"] for e in network), abs=1)

    truth = json.loads((export / "ground_truth.json").read_text())
    true_network = sum(e["gpu_seconds_lost"] for e in truth["episodes"] if e["network"])
    assert document["totals"]["gpu_seconds_lost"] == pytest.approx(true_network, rel=0.10)
    assert document["totals"]["dollars_lost"] == pytest.approx(document["totals"]["gpu_seconds_lost"] / 3600 * 3.0, rel=0.01)
