"""The offline contract: ``strandwatch detect --input --topology --jobs --format json``.

The scenario in tests/fixtures/detect (see its README.md) holds one network
episode, one checkpoint and one slow host, plus a Counter32 wrap, a switch
reboot and an unallocated GPU that must not show up.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
from pathlib import Path

import pytest

from detector.offline import add_detect_arguments, run_detect
from detector.topology import Topology

FIXTURES = Path(__file__).parent / "fixtures" / "detect"
GOLDEN = FIXTURES / "expected.json"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def run(*extra: str, input_path: Path | None = None, topology: Path | None = None,
        jobs: Path | None = None) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    add_detect_arguments(parser)
    args = parser.parse_args([
        "--input", str(input_path or FIXTURES / "telemetry.lp"),
        "--topology", str(topology or FIXTURES / "topology.yaml"),
        "--jobs", str(jobs or FIXTURES / "jobs.csv"),
        *extra,
    ])
    out, err = io.StringIO(), io.StringIO()
    code = run_detect(args, out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def result() -> dict:
    code, out, err = run("--format", "json")
    assert code == 0, err
    return json.loads(out)


def test_matches_golden(result):
    text = json.dumps(result, indent=2, sort_keys=True) + "\n"
    if os.environ.get("STRANDWATCH_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert GOLDEN.exists(), f"{GOLDEN} is missing; run with STRANDWATCH_UPDATE_GOLDEN=1 to write it"
    assert json.loads(GOLDEN.read_text()) == result


def test_contract_shape(result):
    topology = Topology.load(FIXTURES / "topology.yaml")
    known_links = set(topology.switch_of_link())
    assert set(result["totals"]) >= {"gpu_seconds_lost", "dollars_lost"}
    for episode in result["episodes"]:
        assert {"job", "start", "end", "cause", "links", "gpu_seconds_lost", "dollars_lost"} <= set(episode)
        assert RFC3339.match(episode["start"]) and RFC3339.match(episode["end"])
        assert episode["start"] < episode["end"]
        assert all(link in known_links for link in episode["links"])
    network = [e for e in result["episodes"] if e["cause"] == "network"]
    assert result["totals"]["gpu_seconds_lost"] == pytest.approx(sum(e["gpu_seconds_lost"] for e in network), abs=0.2)
    assert result["totals"]["dollars_lost"] == pytest.approx(sum(e["dollars_lost"] for e in network), abs=0.02)


def test_finds_the_story_and_nothing_else(result):
    by_cause = {(e["job"], e["cause"]): e for e in result["episodes"]}
    assert set(by_cause) == {("train-a", "network"), ("eval-b", "checkpoint"), ("train-a", "slow_host")}
    network = by_cause[("train-a", "network")]
    assert (network["start"], network["end"]) == ("2026-03-02T10:02:00Z", "2026-03-02T10:04:00Z")
    assert network["links"][0] == "10.0.0.11:swp51"  # the oversubscribed uplink, by its IP agent_host
    # 4 GPUs at half speed for four 30 s intervals; $3/GPU-hour for H100.
    assert network["gpu_seconds_lost"] == pytest.approx(240, rel=0.03)
    assert network["dollars_lost"] == pytest.approx(240 / 3600 * 3.0, abs=0.01)
    assert by_cause[("train-a", "slow_host")]["hosts"] == ["node03"]
    assert by_cause[("train-a", "slow_host")]["links"] == []
    assert result["warnings"] == []


def test_price_override_applies_to_every_model():
    code, out, _ = run("--format", "json", "--price-per-gpu-hour", "6")
    assert code == 0
    totals = json.loads(out)["totals"]
    assert totals["dollars_lost"] == pytest.approx(totals["gpu_seconds_lost"] / 3600 * 6, abs=0.01)


def test_table_format():
    code, out, _ = run("--format", "table")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["start", "end", "job", "cause"]
    assert any("network" in line and "10.0.0.11:swp51" in line for line in lines)
    assert any(line.startswith("network loss:") for line in lines)
    assert any("not network, checkpoint" in line for line in lines)


def test_telegraf_data_without_ethtool_or_sm_active(tmp_path):
    lines = (FIXTURES / "telemetry.lp").read_text().splitlines()
    kept = [line for line in lines if not line.startswith("ethtool,")]
    kept = [re.sub(r",sm_active=[0-9.]+", "", line) for line in kept]
    path = tmp_path / "telegraf.lp"
    path.write_text("\n".join(kept) + "\n")
    code, out, err = run("--format", "json", input_path=path)
    assert code == 0, err
    result = json.loads(out)
    # utilization_gpu stays at 100% while NCCL waits: no GPU time shows as lost, and nothing is invented.
    assert result["totals"]["gpu_seconds_lost"] == 0
    assert all(e["cause"] == "checkpoint" for e in result["episodes"])


@pytest.mark.parametrize(("name", "content", "message"), [
    ("telemetry.lp", "interface,agent_host=a ifHCInOctets=1i 1 2 3\n", r"bad\.lp:1: "),
    ("empty.lp", "# nothing\n", r"empty\.lp: no points"),
])
def test_bad_input_names_the_file(tmp_path, name, content, message):
    path = tmp_path / ("bad.lp" if name == "telemetry.lp" else name)
    path.write_text(content)
    code, out, err = run(input_path=path)
    assert code == 2 and out == ""
    assert re.search(message, err), err


def test_missing_files_and_bad_topology_or_jobs(tmp_path):
    code, _, err = run(input_path=tmp_path / "nope.lp")
    assert code == 2 and "nope.lp" in err
    bad_topology = tmp_path / "topology.yaml"
    bad_topology.write_text("hosts: [node01]\n")
    code, _, err = run(topology=bad_topology)
    assert code == 2 and "topology.yaml: hosts" in err
    bad_jobs = tmp_path / "jobs.csv"
    bad_jobs.write_text("job,host,gpus,start,end\ntrain-a,node01,0 x,2026-03-02T10:00:00Z,\n")
    code, _, err = run(jobs=bad_jobs)
    assert code == 2 and "jobs.csv:2" in err
