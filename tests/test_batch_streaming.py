"""Batch mode over a store, the streaming detector, and the evaluate command (quick set)."""

from __future__ import annotations

import argparse
import gc
import io
import json
import time
import weakref
from datetime import timedelta

import pandas as pd
import pytest

from collector.frames import points_to_frames
from collector.store import EmbeddedStore
from detector.batch import WindowSettings, detect_store
from detector.detect import detect
from detector.evaluate_cli import (Imperfections, add_evaluate_arguments, default_scenarios, quick_scenarios,
                                   random_scenarios, run_evaluate, run_scenario, with_seed_offset)
from detector.offline import add_detect_arguments, parse_since, run_detect
from detector.simulator import SimConfig, Simulation, simulate

CONTEXT = timedelta(minutes=20)
CONFIG = SimConfig(seed=1, hosts=6, gpus_per_host=4, nics_per_host=2, duration=timedelta(minutes=50))


def key(episode):
    return (episode.job, episode.cause, episode.start, episode.end, episode.links[:1])


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    """The simulator stepped interval by interval into a store, a streaming detector after each step,
    restarted from its state file halfway."""
    from detector.streaming import StreamingDetector
    directory = tmp_path_factory.mktemp("stream")
    sim = Simulation(CONFIG)
    store = EmbeddedStore(directory / "store.db", retention=None)
    state = directory / "state.json"
    alerts, results = [], []

    def detector():
        return StreamingDetector(store, sim.topology, sim.allocations, state, on_alert=alerts.append,
                                 sink=results.append, context=CONTEXT)

    streaming = detector()
    store.write(sim.points())
    while not sim.finished:
        now = sim.step()
        store.write(sim.points(now))
        streaming.step()
        if sim.steps_done == CONFIG.steps // 2:
            streaming = detector()  # a restart: everything from the state file
    yield sim, store, alerts, results
    store.close()


def test_streaming_opens_and_closes_each_episode_once(streamed):
    _, _, alerts, results = streamed
    opened = [a.id for a in alerts if a.event == "opened"]
    closed = [a.id for a in alerts if a.event == "closed"]
    assert opened and len(opened) == len(set(opened)) and len(closed) == len(set(closed))
    assert set(closed) <= set(opened)
    assert results and all(r.step_s == 30.0 for r in results)
    assert json.loads(json.dumps(alerts[0].to_dict()))["event"] == "opened"


def test_streaming_publishes_within_three_intervals(streamed):
    sim, _, alerts, _ = streamed
    step = pd.Timedelta(seconds=CONFIG.interval_s)
    for alert in alerts:
        if alert.event == "opened":
            assert alert.decided_until - pd.Timestamp(alert.episode.start) <= 3 * step, alert.to_dict()
    # Abrupt network events (congestion, PFC storms) are published within 3 intervals of their true onset.
    abrupt = [t for t in sim.ground_truth.episodes
              if t.cause.split("/")[0] in ("congestion", "pfc_storm") and t.gpu_seconds_lost >= 60]
    assert abrupt
    for truth in abrupt:
        first = min(a.decided_until for a in alerts if a.event == "opened" and a.episode.job == truth.job
                    and a.episode.cause == "network" and pd.Timestamp(a.episode.start) < pd.Timestamp(truth.end)
                    and pd.Timestamp(truth.start) < pd.Timestamp(a.episode.end))
        assert first - pd.Timestamp(truth.start) <= 3 * step, truth


def test_batch_gives_the_streaming_episodes(streamed):
    sim, store, alerts, _ = streamed
    batch = detect_store(store, sim.topology, sim.allocations,
                         windows=WindowSettings(window=timedelta(seconds=CONFIG.interval_s), context=CONTEXT))
    closed = {key(a.episode): a.episode for a in alerts if a.event == "closed"}
    still_open = {a.id for a in alerts if a.event == "opened"} - {a.id for a in alerts if a.event == "closed"}
    finished = {key(e): e for e in batch.episodes if f"{e.job}/{e.cause}/{e.start:%Y-%m-%dT%H:%M:%SZ}" not in still_open}
    assert set(closed) == set(finished)
    for name, episode in closed.items():
        assert episode.gpu_seconds_lost == pytest.approx(finished[name].gpu_seconds_lost, rel=1e-3)


def test_batch_windows_give_the_one_pass_episodes(streamed):
    sim, store, _, _ = streamed
    frames = {name: store.read(name) for name in ("interface", "infiniband", "ethtool", "nvidia_smi")}
    one = detect(frames, sim.topology, sim.allocations)
    windowed = detect_store(store, sim.topology, sim.allocations,
                            windows=WindowSettings(window=timedelta(minutes=15), context=timedelta(hours=1)))
    assert {key(e) for e in one.network_episodes} == {key(e) for e in windowed.network_episodes}
    assert windowed.totals()["gpu_seconds_lost"] == pytest.approx(one.totals()["gpu_seconds_lost"], rel=0.01)


def test_batch_reads_alone_and_holds_one_windows_telemetry_at_a_time(streamed, monkeypatch):
    """The next window's telemetry is made while this window's jobs are attributed: the store's reads overlap
    none of that, and a window's telemetry is let go of before the next window's frames are read."""
    import detector.batch as batch
    sim, store, _, _ = streamed
    spans, made = {"read": [], "telemetry": []}, []
    real_read, real_load = batch.read_frames, batch.load_telemetry

    def read_frames(*args):
        gc.collect()
        assert all(ref() is None for ref in made), "an earlier window's telemetry is still held"
        started = time.perf_counter()
        frames = real_read(*args)
        spans["read"].append((started, time.perf_counter()))
        return frames

    def load_telemetry(frames, step_s):
        started = time.perf_counter()
        telemetry = real_load(frames, step_s)
        spans["telemetry"].append((started, time.perf_counter()))
        made.append(weakref.ref(telemetry.gpus))
        return telemetry

    monkeypatch.setattr(batch, "read_frames", read_frames)
    monkeypatch.setattr(batch, "load_telemetry", load_telemetry)
    result = detect_store(store, sim.topology, sim.allocations,
                          windows=WindowSettings(window=timedelta(minutes=10), context=CONTEXT))
    assert len(spans["read"]) == len(spans["telemetry"]) >= 5
    assert not [(read, made) for read in spans["read"] for made in spans["telemetry"]
                if read[0] < made[1] and made[0] < read[1]]
    assert result.network_episodes


def test_detect_store_command(streamed, tmp_path):
    sim, store, _, _ = streamed
    sim.topology.dump(tmp_path / "topology.yaml")
    from detector.jobs import dump_jobs
    dump_jobs(sim.allocations, tmp_path / "jobs.csv")
    parser = argparse.ArgumentParser()
    add_detect_arguments(parser)
    args = parser.parse_args(["--store", str(store.path), "--topology", str(tmp_path / "topology.yaml"),
                              "--jobs", str(tmp_path / "jobs.csv"), "--since", "2026-11-02T00:10:00Z",
                              "--window", "20m", "--no-progress", "--format", "json"])
    out, err = io.StringIO(), io.StringIO()
    assert run_detect(args, out, err) == 0, err.getvalue()
    data = json.loads(out.getvalue())
    assert data["episodes"] and all(e["start"] >= "2026-11-02T00:10:00Z" for e in data["episodes"])
    missing = parser.parse_args(["--store", str(tmp_path / "nope.db"), "--topology", str(tmp_path / "topology.yaml"),
                                 "--jobs", str(tmp_path / "jobs.csv")])
    assert run_detect(missing, io.StringIO(), err) == 2 and "nope.db" in err.getvalue()


def test_since_parses_spans_and_times():
    now = pd.Timestamp("2026-11-09T00:00:00Z")
    assert parse_since("7d", now, "--since") == pd.Timestamp("2026-11-02T00:00:00Z")
    assert parse_since("24h", now, "--since") == pd.Timestamp("2026-11-08T00:00:00Z")
    assert parse_since("2026-11-02T01:00:00+01:00", now, "--since") == pd.Timestamp("2026-11-02T00:00:00Z")
    with pytest.raises(ValueError, match="--until"):
        parse_since("yesterday", now, "--until")


@pytest.mark.slow
def test_evaluate_quick_meets_the_goals():
    parser = argparse.ArgumentParser()
    add_evaluate_arguments(parser)
    out = io.StringIO()
    code = run_evaluate(parser.parse_args(["--quick", "--format", "json"]), out, io.StringIO())
    data = json.loads(out.getvalue())
    assert code == 0, data["summary"]
    assert [s["name"] for s in data["scenarios"]] == ["quick-mixed", "quick-congestion", "quick-confounders"]
    assert data["summary"]["f1"] >= 0.95 and data["summary"]["confounder_false_share"] <= 0.01


@pytest.mark.slow
def test_contended_uplinks_are_the_fabrics_loss_and_a_slow_host_on_them_is_not():
    """Rings that share uplinks lose a little all the time: the truth and the detector both charge the fabric,
    name the uplinks, and leave a host that turns slow on such a fabric its own loss."""
    scenario = next(s for s in default_scenarios() if s.name == "contended-uplinks")
    result = run_scenario(scenario)
    assert result.precision == 1.0 and result.recall == 1.0 and result.link_accuracy == 1.0
    assert abs(result.dollar_error) <= 0.05
    assert result.false_network_dollars <= 0.01 * result.confounder_dollars


@pytest.mark.slow
def test_a_confounder_only_shape_whose_rings_share_an_uplink_is_charged_only_that_contention():
    """No event injected, yet two jobs' rings share an uplink all along: the truth has that network loss, the
    detector finds it, and only what it charges beyond the truth's network episodes counts as false."""
    scenario = random_scenarios(8, 8)[7]
    assert scenario.kind == "confounder" and "non-blocking" in scenario.about
    result = run_scenario(scenario)
    assert result.true_dollars > 1 and abs(result.dollar_error) <= 0.05
    assert result.false_network_dollars <= 0.01 * result.confounder_dollars


def test_evaluate_seed_offset_runs_the_same_shapes_on_other_draws():
    quick = {scenario.name: scenario for scenario in quick_scenarios()}
    moved = with_seed_offset(quick["quick-confounders"], 100)
    assert moved.name == "quick-confounders+100"
    assert moved.config == quick["quick-confounders"].config.with_(seed=quick["quick-confounders"].config.seed + 100)
    parser = argparse.ArgumentParser()
    add_evaluate_arguments(parser)
    out = io.StringIO()
    code = run_evaluate(parser.parse_args(["--scenario", "quick-confounders", "--seed-offset", "100", "--workers", "1",
                                           "--format", "json"]), out, io.StringIO())
    data = json.loads(out.getvalue())
    assert code == 0, data["summary"]
    assert [s["name"] for s in data["scenarios"]] == ["quick-confounders+100"]
    err = io.StringIO()
    assert run_evaluate(parser.parse_args(["--quick", "--seed-offset", "-1"]), io.StringIO(), err) == 2
    assert "--seed-offset must be >= 0" in err.getvalue()


def test_evaluate_random_draws_the_same_shapes_for_the_same_draw():
    first = random_scenarios(8, 1)
    assert first == random_scenarios(8, 1)
    assert [s.config for s in first] != [s.config for s in random_scenarios(8, 2)]
    assert [s.name for s in first[:2]] == ["random-1-0", "random-1-1"]
    abouts = [s.about for s in random_scenarios(24, 1)]
    assert any("oversubscribed 4:1" in about for about in abouts) and any("non-blocking" in about for about in abouts)
    parser = argparse.ArgumentParser()
    add_evaluate_arguments(parser)
    out = io.StringIO()
    assert run_evaluate(parser.parse_args(["--random", "3", "--random-draw", "2", "--list"]), out, io.StringIO()) == 0
    assert [line.split()[0] for line in out.getvalue().splitlines()] == ["random-2-0", "random-2-1", "random-2-2"]
    for bad in (["--random", "0"], ["--random", "2", "--quick"], ["--random", "2", "--scenario", "default"]):
        err = io.StringIO()
        assert run_evaluate(parser.parse_args(bad), io.StringIO(), err) == 2
        assert "--random takes N >= 1" in err.getvalue()


def test_imperfect_telemetry_loses_rows_moves_times_and_leaves_measurements_out():
    points, _ = simulate(SimConfig(seed=3, duration=timedelta(minutes=30), hosts=4))
    frames = points_to_frames(points)
    imperfect = Imperfections(drop_rows=0.1, jitter_s=3.0, without=("ethtool",))
    worse = imperfect.apply(frames, seed=5)
    assert set(worse) == set(frames) - {"ethtool"}
    for measurement, frame in worse.items():
        assert 0.85 * len(frames[measurement]) < len(frame) < 0.95 * len(frames[measurement])
        assert frame["time"].min() >= frames[measurement]["time"].min() - pd.Timedelta(seconds=3)
        assert frame["time"].max() <= frames[measurement]["time"].max() + pd.Timedelta(seconds=3)
        assert not frame["time"].isin(frames[measurement]["time"]).all()
    again = imperfect.apply(frames, seed=5)
    assert all(again[m].equals(worse[m]) for m in worse)
    assert Imperfections().apply(frames, seed=5) is frames
    assert imperfect.describe() == "10% of rows dropped; times moved up to 3 s; without ethtool"

    parser = argparse.ArgumentParser()
    add_evaluate_arguments(parser)
    out = io.StringIO()
    code = run_evaluate(parser.parse_args(["--scenario", "quick-congestion", "--drop-rows", "0.02", "--jitter", "2",
                                           "--without", "ethtool", "--workers", "1", "--format", "json"]),
                        out, io.StringIO())
    data = json.loads(out.getvalue())
    assert code == 0, data["summary"]
    assert data["telemetry"] == "2% of rows dropped; times moved up to 2 s; without ethtool"
    for bad in (["--quick", "--drop-rows", "1"], ["--quick", "--jitter", "-1"]):
        err = io.StringIO()
        assert run_evaluate(parser.parse_args(bad), io.StringIO(), err) == 2
        assert "--drop-rows must be in [0, 1)" in err.getvalue()
