"""The detector's parts on the hand-written scenario, and its accuracy on simulated clusters."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from collector.frames import points_to_frames
from collector.lineprotocol import parse_file
from detector.attribution import (IDENTITY, NETWORK, SLOW_HOST, AttributionSettings, _beside_loud, _column_medians,
                                  _PathScores, _path_state, _split, attribute, idle_loss_model)
from detector.congestion import (LOCAL, UTILIZATION_CAP, Signal, _median, _Placed, _row_quantile,
                                 _ScoreGrid, _sum, _sums_by_key, link_congestion, located_scores)
from detector.detect import detect, never_clean_warnings
from detector.episodes import EpisodeSettings, episode_ids
from detector.evaluation import Accuracy, _uplink_peers, evaluate
from detector.jobs import load_jobs
from detector.pricing import FALLBACK_PER_GPU_HOUR, Prices, gpu_model_key
from detector.telemetry import TelemetryError, load_telemetry
from detector.topology import Topology

FIXTURES = Path(__file__).parent / "fixtures" / "detect"
T0 = pd.Timestamp("2026-03-02T10:00:00Z")


def at(i: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(seconds=30 * i)


@pytest.fixture(scope="module")
def scenario():
    frames = points_to_frames(parse_file(FIXTURES / "telemetry.lp"))
    topology = Topology.load(FIXTURES / "topology.yaml")
    allocations = load_jobs(FIXTURES / "jobs.csv")
    telemetry = load_telemetry(frames)
    congestion = link_congestion(telemetry, topology)
    return frames, topology, allocations, telemetry, congestion


def score(congestion, link: str, i: int) -> pd.Series:
    rows = congestion.scores[(congestion.scores["link"] == link) & (congestion.scores["time"] == at(i))]
    assert len(rows) == 1, (link, i)
    return rows.iloc[0]


def test_grid_and_rates_survive_wrap_and_reboot(scenario):
    _, _, _, telemetry, congestion = scenario
    assert telemetry.step_s == 30.0
    # leaf01 swp1's ifInDiscards wraps at sample 3: 5/s, not a spike.
    port = telemetry.ports[(telemetry.ports["agent_host"] == "10.0.0.11") & (telemetry.ports["port"] == "swp1")]
    assert port["discards_in"].dropna().between(4.9, 5.1).all()
    # leaf02 reboots at sample 10: that interval is dropped, never negative or huge.
    leaf02 = telemetry.ports[telemetry.ports["agent_host"] == "10.0.0.12"]
    assert leaf02.loc[leaf02["time"] == at(10), "in_bps"].isna().all()
    assert (leaf02["in_bps"].dropna() < 400e9).all() and (leaf02["in_bps"].dropna() >= 0).all()
    assert congestion.scores["score"].max() < 1e3


def test_uplink_congestion_is_local_and_host_links_see_it_from_their_end(scenario):
    *_, congestion = scenario
    uplink = score(congestion, "10.0.0.11:swp51", 6)
    assert uplink["local_score"] >= 1 and uplink["top_signal"] in ("discards", "utilization")
    host_link = score(congestion, "10.0.0.11:swp1", 6)
    assert host_link["path_score"] >= 1 and host_link["local_score"] < 1
    assert score(congestion, "10.0.0.11:swp51", 3)["score"] < 1


def test_saturation_alone_is_not_congestion(scenario):
    *_, congestion = scenario
    utilization = congestion.signals[congestion.signals["signal"] == "utilization"]
    assert utilization["score"].max() <= UTILIZATION_CAP < 1


def test_pauses_a_host_sends_are_its_own_not_the_links(scenario):
    *_, congestion = scenario
    pauses = congestion.host_pause
    sent = pauses[(pauses["host"] == "node03") & (pauses["time"] == at(16))]
    assert sent["score"].max() >= 1
    assert score(congestion, "10.0.0.12:swp1", 16)["score"] < 1  # node03's own link
    assert score(congestion, "10.0.0.11:swp1", 16)["path_score"] >= 1  # node01 receives the pauses


def test_attribution_causes_and_loss(scenario):
    _, topology, allocations, telemetry, congestion = scenario
    intervals = attribute(telemetry, congestion, topology, allocations).intervals
    train = intervals[intervals["job"] == "train-a"].set_index("time")
    congested = [at(i) for i in range(5, 9)]
    assert (train.loc[congested, "network_fraction"] > 0.45).all()
    assert (train.loc[congested, "other_fraction"] == 0).all()
    assert train.loc[at(6), "network_fraction"] == pytest.approx(0.5, abs=0.03)
    assert set(train.loc[[at(16), at(17)], "other_cause"]) == {"slow_host"}
    assert (train.loc[[at(16), at(17)], "network_fraction"] == 0).all()
    healthy = [at(i) for i in (1, 2, 3, 4, 9, 10, 11, 12, 13, 14, 15, 18, 19)]
    assert (train.loc[healthy, ["network_fraction", "other_fraction"]] == 0).all().all()
    evaluation = intervals[intervals["job"] == "eval-b"].set_index("time")
    assert set(evaluation.loc[[at(12), at(13), at(14)], "other_cause"]) == {"checkpoint"}
    assert (evaluation["network_fraction"] == 0).all()
    assert evaluation["n_gpus"].max() == 1  # node02's GPU 1 is in no job
    assert evaluation.index.max() == at(19)


def test_network_loss_needs_the_job_to_slow_down(scenario):
    frames, topology, allocations, *_ = scenario
    nvidia = frames["nvidia_smi"].copy()
    congested = nvidia["time"].isin([at(i) for i in range(5, 9)]) & nvidia["host"].isin(["node01", "node03"])
    nvidia.loc[congested, "sm_active"] = 80.0  # the job rode the congestion out
    result = detect({**frames, "nvidia_smi": nvidia}, topology, allocations)
    assert result.totals()["gpu_seconds_lost"] == 0


def test_missing_measurements_still_detect(scenario):
    frames, topology, allocations, *_ = scenario
    only_switches = {"interface": frames["interface"], "nvidia_smi": frames["nvidia_smi"]}
    result = detect(only_switches, topology, allocations)
    network = result.network_episodes
    assert len(network) == 1 and network[0].links[0] == "10.0.0.11:swp51"
    with pytest.raises(TelemetryError, match="no series has two samples"):
        first_poll = frames["interface"][frames["interface"]["time"] == T0]
        detect({"interface": first_poll}, topology, allocations)


def test_telemetry_errors_name_the_first_bad_measurement(scenario):
    frames = scenario[0]
    both_bad = {**frames, "interface": frames["interface"].drop(columns=["agent_host"]),
                "infiniband": frames["infiniband"].drop(columns=["host"])}
    with pytest.raises(TelemetryError, match="measurement 'interface': no 'agent_host' tag"):
        load_telemetry(both_bad)
    with pytest.raises(TelemetryError, match="measurement 'infiniband': no 'host' tag"):
        load_telemetry({**frames, "infiniband": both_bad["infiniband"]})


def test_episodes_bridge_one_quiet_interval_but_not_another_cause():
    causes = {1: NETWORK, 2: NETWORK, 4: NETWORK, 5: "checkpoint", 6: NETWORK, 9: NETWORK}
    losses = pd.DataFrame({"time": [at(i) for i in causes], "job": "j", "cause": list(causes.values())})
    ids = episode_ids(losses, 30.0, EpisodeSettings(max_gap_intervals=1))
    network = ids[losses["cause"] == NETWORK].tolist()
    assert network[0] == network[1] == network[2]  # one interval without loss between: same episode
    assert network[3] != network[2]  # a checkpoint in between: a new one
    assert network[4] != network[3]  # two intervals without loss: a new one
    checkpoint = ids[losses["cause"] == "checkpoint"]
    assert checkpoint.nunique() == 1 and not set(network) & set(checkpoint)


def test_prices():
    assert gpu_model_key("NVIDIA H100 80GB HBM3") == "H100"
    assert gpu_model_key("NVIDIA A100-SXM4-80GB") == "A100"
    prices = Prices()
    assert prices.gpu_hour("H100") == 3.0
    assert prices.gpu_hour("NVIDIA H200") == 4.5
    assert prices.gpu_hour("Tesla T4") == FALLBACK_PER_GPU_HOUR
    assert Prices(override_per_gpu_hour=2.0).gpu_hour("B200") == 2.0
    assert prices.dollars(3600, "H100") == pytest.approx(3.0)
    with_energy = Prices(per_kwh=0.2)
    assert with_energy.dollars(3600, "H100", energy_joules=3.6e6) == pytest.approx(3.2)
    with pytest.raises(ValueError, match="per_kwh"):
        Prices(per_kwh=-1)


def test_baseline_ignores_congested_and_idle_intervals(scenario):
    _, topology, allocations, telemetry, congestion = scenario
    intervals = attribute(telemetry, congestion, topology, allocations, AttributionSettings()).intervals
    assert intervals.loc[intervals["job"] == "train-a", "baseline"].iloc[0] == pytest.approx(80, abs=1)
    assert intervals.loc[intervals["job"] == "eval-b", "baseline"].iloc[0] == pytest.approx(60, abs=1)
    assert np.isfinite(intervals[["loss_fraction", "network_fraction", "other_fraction"]]).all().all()


def test_idle_to_loss_fit_is_robust_to_loss_without_idle_time():
    """A job whose GPUs keep some kernels during checkpoints: loss = 1.6 x idle; two slow-host outliers."""
    idle = np.array([0.0] * 20 + [0.5, 0.55, 0.6, 0.58, 0.52, 0.61] + [0.0, 0.0])
    loss = np.array([0.0] * 20 + list(1.6 * idle[20:26]) + [0.35, 0.4])
    frame = pd.DataFrame({"idle_fraction": idle, "loss_fraction": loss})
    model = idle_loss_model(frame, pd.Series(True, index=frame.index), AttributionSettings())
    assert model.fitted and model.slope == pytest.approx(1.6, abs=0.05) and abs(model.intercept) < 0.02
    least_squares = np.polyfit(idle, loss, 1)
    assert abs(least_squares[0] - 1.6) > 3 * abs(model.slope - 1.6)  # the outliers bend least squares
    too_little = frame.assign(idle_fraction=0.0)
    assert idle_loss_model(too_little, pd.Series(True, index=frame.index), AttributionSettings()) == IDENTITY


@pytest.fixture(scope="module")
def default_scenario():
    from detector.simulator import SimConfig, simulate
    points, sim = simulate(SimConfig())
    return points_to_frames(points), sim


def test_signal_sums_are_pandas_row_sums_to_the_bit():
    """Signal sums add columns in numpy; the numbers must be pandas' ``sum(axis=1, min_count=1)``, signed zeros too."""
    rng = np.random.default_rng(7)
    choices = [np.nan, 0.0, -0.0, 1.5, -2.25, 1e-300, 1e300, -1e300, np.inf, 3.0]
    frame = pd.DataFrame({name: rng.choice(choices, 5000) for name in "abcde"})
    for names in (["a"], ["a", "b"], list("abcde"), ["a", "missing"]):
        for scale in (1.0, 1e-6):
            expected = frame[[n for n in names if n in frame]].sum(axis=1, min_count=1) * scale
            got = _sum(frame, names, scale)
            assert np.array_equal(np.isnan(got), np.isnan(expected))
            both = ~np.isnan(expected.to_numpy())
            assert (got.to_numpy()[both].view(np.int64) == expected.to_numpy()[both].view(np.int64)).all(), names
    assert _sum(frame, ["missing"]) is None


def test_a_signal_scored_as_a_matrix_gives_the_numbers_of_its_cells_to_the_bit():
    """Values that are a (series, time) matrix are scored and put on the grid in one pass per signal; scores,
    maxima, top signals and undefined cells must be those of the cell by cell path, NaN normals and signed zeros too."""
    rng = np.random.default_rng(13)
    n_links, n_times = 7, 60
    links = np.array([5, 1, 2, 6])  # scattered rows of the grid
    value = rng.choice([0.0, -0.0, 0.5, 3.0, 1e6, -2.0, 1e-300], size=(len(links), n_times)).ravel()
    normal = np.array([0.5, np.nan, 0.0, 2.0])
    cells = (links[:, None] * n_times + np.arange(n_times)).ravel()
    as_matrix = _Placed(value, cells, links, n_links, n_times)
    by_cell = _Placed(value, cells, None, n_links, n_times)
    per_link = np.full(n_links, np.nan)
    per_link[links] = normal
    signal = Signal("s", LOCAL, "", "", floor=1.0, relative=0.5)
    got, want = as_matrix.scores(normal, signal), by_cell.scores(per_link, signal)
    assert np.isnan(want).any() and (want == 0).any() and (want > 0).any()
    np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))
    earlier = rng.choice([0.0, 1.0, 2.0, np.nan], len(cells))  # a signal scored before, on the same cells
    grids = []
    for placed in (as_matrix, by_cell):
        grid = _ScoreGrid(n_links * n_times)
        grid.add(0, LOCAL, cells, earlier)
        placed.add_to(grid, 1, LOCAL, got)
        grids.append(grid)
    for name in ("best", "top", "undefined"):
        np.testing.assert_array_equal(getattr(grids[0], name), getattr(grids[1], name))
    np.testing.assert_array_equal(grids[0].worst[LOCAL], grids[1].worst[LOCAL])


def test_normals_of_mostly_zero_rows_are_the_partitions_to_the_bit():
    """A row whose values at the quantile's ranks are zero skips the partition: the quantiles and the fleet median
    must stay numpy's, also where -0.0, negative values, NaN or too few zeros leave the partition to decide."""
    rng = np.random.default_rng(21)
    for n_times in (1, 2, 3, 8, 61):
        for zeros in (0.0, 0.3, 0.7, 0.95, 1.0):
            matrix = rng.choice([0.0, 2.5, 1e-300, 7.0], size=(40, n_times), p=[zeros, (1 - zeros) / 3,
                                                                                   (1 - zeros) / 3, (1 - zeros) / 3])
            matrix[0, 0], matrix[1, -1] = -0.0, -1.0  # nothing below +0.0 may be taken for it
            for quantile in (0.25, 0.5):
                position = quantile * (n_times - 1)
                below, above, fraction = int(position), min(int(position) + 1, n_times - 1), position % 1
                ordered = np.partition(matrix, sorted({below, above}), axis=1)
                low, high = ordered[:, below], ordered[:, above]
                between = (low + high) / 2 if quantile == 0.5 else low + (high - low) * fraction
                want = np.where(fraction != 0, between, low)
                got = _row_quantile(matrix, quantile)
                np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))
            values = matrix.ravel()
            for sample in (values, values[2 * n_times:], np.append(values[2 * n_times:], np.nan)):
                want = np.median(sample)
                assert np.array_equal(_median(sample), want, equal_nan=True)
                assert np.signbit(_median(sample)) == np.signbit(want)


def test_host_sums_are_pandas_groupby_sums_to_the_bit():
    """Sums per integer key are those of a groupby over the keys, whichever way pandas sums (sorted or not, NaN or not)."""
    rng = np.random.default_rng(9)
    choices = [0.1, 0.2, 0.3, 1e16, -1e16, 1.0, 1e-3, -0.0, np.inf]
    for sorted_keys in (True, False):
        for gaps in (False, True):
            keys = rng.integers(-1, 300, 20000)
            if sorted_keys:
                keys.sort()
            values = pd.DataFrame({"tx": rng.choice(choices, len(keys)), "rx": rng.choice(choices, len(keys))})
            if gaps:
                values = values.mask(rng.random(values.shape) < 0.1)
            for min_count in (0, 1):
                expected = values.groupby(np.where(keys >= 0, keys, np.nan)).sum(min_count=min_count)
                got = _sums_by_key(values, keys, min_count)
                np.testing.assert_array_equal(got.index.to_numpy(), expected.index.to_numpy().astype(np.int64))
                for column in values.columns:
                    assert got[column].to_numpy().tobytes() == expected[column].to_numpy().tobytes(), column


@pytest.mark.parametrize("which", ["fixture", "simulated"])
def test_grid_scores_are_the_groupby_scores(which, scenario, default_scenario, monkeypatch):
    """The numpy path over (time, link) codes gives the rows and numbers of the pandas groupby path."""
    from detector import congestion as module
    if which == "fixture":
        _, topology, _, telemetry, _ = scenario
    else:
        frames, sim = default_scenario
        topology, telemetry = sim.topology, load_telemetry(frames)
    fast = link_congestion(telemetry, topology)
    monkeypatch.setattr(module._EvidenceGrid, "has_duplicates", lambda self: True)
    slow = link_congestion(telemetry, topology)
    assert len(fast.signals) > 100 and fast.scores["score"].max() >= 1
    pd.testing.assert_frame_equal(fast.signals, slow.signals, check_exact=True)
    pd.testing.assert_frame_equal(fast.scores, slow.scores, check_exact=True)
    # What a batch window keeps and what attribution reads: the same from the grid as from the frame.
    times = fast.scores["time"].drop_duplicates()
    start, end = times.iloc[len(times) // 4], times.iloc[3 * len(times) // 4]
    pd.testing.assert_frame_equal(fast.link_scores.frame(start, end, 0.1), slow.link_scores.frame(start, end, 0.1),
                                  check_exact=True)
    links = pd.Index(sorted(set(fast.scores["link"])))[::2].append(pd.Index(["no-such-switch:swp1"]))
    stamps = pd.DatetimeIndex(times).as_unit("ns").asi8
    stamps = np.concatenate([stamps[::3], [stamps.max() + 1]])
    for grid_matrix, frame_matrix in zip(fast.link_scores.matrices(stamps, links),
                                         slow.link_scores.matrices(stamps, links)):
        np.testing.assert_array_equal(grid_matrix, frame_matrix)
        assert np.isnan(grid_matrix[-1]).all() and np.isnan(grid_matrix[:, -1]).all()


@pytest.mark.parametrize("keep_unscored", [True, False])
def test_whole_series_scored_as_rows_give_the_numbers_of_scattered_cells(keep_unscored, default_scenario, monkeypatch):
    """Frames whose series hold every interval are scored as (series, time) matrices: the same scores and evidence."""
    from detector import congestion as module
    frames, sim = default_scenario
    telemetry = load_telemetry(frames)
    grid = module._EvidenceGrid([module._switch_ports(telemetry.ports, sim.topology)],
                                module.grid_step_ns(telemetry.step_s))
    assert grid.series_links[0] is not None  # the simulator's switches answer every poll
    rows = link_congestion(telemetry, sim.topology, keep_unscored=keep_unscored)
    monkeypatch.setattr(module, "_series_links", lambda cells, n_times: None)
    cells = link_congestion(telemetry, sim.topology, keep_unscored=keep_unscored)
    pd.testing.assert_frame_equal(rows.signals, cells.signals, check_exact=True)
    pd.testing.assert_frame_equal(rows.scores, cells.scores, check_exact=True)


@pytest.mark.parametrize("grid", [True, False])
def test_evidence_without_unscored_entries_keeps_what_scored_and_the_same_scores(grid, default_scenario, monkeypatch):
    """What batch and streaming keep (entries that scored above 0) is the full evidence, filtered; scores unchanged."""
    from detector import congestion as module
    if not grid:
        monkeypatch.setattr(module._EvidenceGrid, "has_duplicates", lambda self: True)
    frames, sim = default_scenario
    telemetry = load_telemetry(frames)
    full = link_congestion(telemetry, sim.topology)
    scored = link_congestion(telemetry, sim.topology, keep_unscored=False)
    pd.testing.assert_frame_equal(full.scores, scored.scores, check_exact=True)
    want = full.signals[full.signals["score"] > 0].reset_index(drop=True)
    assert 0 < len(want) < len(full.signals)
    pd.testing.assert_frame_equal(scored.signals, want, check_exact=True)


def check_accuracy(frames, sim) -> Accuracy:
    result = detect(frames, sim.topology, sim.allocations)
    accuracy = evaluate(result, sim.ground_truth.episodes, sim.topology, sim.allocations)
    assert accuracy.true_episodes > 0
    assert accuracy.precision >= 0.9 and accuracy.recall >= 0.9, accuracy.rows()
    assert accuracy.link_accuracy is not None and accuracy.link_accuracy >= 0.9, accuracy.rows()
    assert abs(accuracy.dollar_error) <= 0.10, accuracy.rows()
    assert accuracy.confounders_blamed_on_network == 0 and accuracy.false_network_dollars == 0, accuracy.rows()
    return accuracy


@pytest.mark.slow
def test_accuracy_on_the_default_scenario(default_scenario):
    frames, sim = default_scenario
    accuracy = check_accuracy(frames, sim)
    table = dict(accuracy.rows())
    assert set(table) >= {"precision", "recall", "F1", "root-cause link accuracy", "network dollar error"}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
def test_accuracy_on_other_seeds(seed):
    from detector.simulator import SimConfig, simulate
    points, sim = simulate(SimConfig(seed=seed, switch_reboot=True))
    check_accuracy(points_to_frames(points), sim)


@pytest.mark.slow
def test_accuracy_without_ethtool_a_slow_host_shows_as_a_straggler(default_scenario):
    frames, sim = default_scenario
    check_accuracy({name: frame for name, frame in frames.items() if name != "ethtool"}, sim)


def test_evaluation_matches_jobs_and_times_and_either_end_of_an_uplink(scenario):
    from detector.simulator import TrueEpisode
    frames, topology, allocations, *_ = scenario
    result = detect(frames, topology, allocations)

    def true(job, start, end, cause, links=(), lost=240.0):
        return TrueEpisode(job, at(start).to_pydatetime(), at(end).to_pydatetime(), cause, links, lost)

    truth = [
        true("train-a", 4, 8, "congestion", ("10.0.0.1:swp1",)),  # the spine's end of leaf01's swp51
        true("eval-b", 11, 14, "checkpoint"),
        true("train-a", 15, 17, "slow_host"),
        true("eval-b", 2, 3, "link_degradation", ("10.0.0.11:swp2",), lost=20.0),  # too small to be required
    ]
    accuracy = evaluate(result, truth, topology, allocations)
    assert (accuracy.precision, accuracy.recall, accuracy.link_accuracy) == (1.0, 1.0, 1.0)
    assert accuracy.true_episodes == 1 and accuracy.confounder_episodes == 2
    assert accuracy.dollar_error == pytest.approx(result.totals()["dollars_lost"] / (260 / 3600 * 3.0) - 1, abs=1e-3)
    assert accuracy.false_network_dollars == 0 and accuracy.unexplained_network_dollars == 0

    wrong = evaluate(result, [true("train-a", 4, 8, "checkpoint")], topology, allocations)
    assert wrong.precision == 0.0 and wrong.confounders_blamed_on_network == 1
    assert wrong.false_network_dollars == pytest.approx(result.totals()["dollars_lost"], abs=0.01)
    assert wrong.unexplained_network_dollars == pytest.approx(wrong.false_network_dollars)
    # Charged outside any true episode at all: not inside a confounder's, still unexplained.
    nothing_true = evaluate(result, [true("eval-b", 11, 14, "checkpoint")], topology, allocations)
    assert nothing_true.false_network_dollars == 0
    assert nothing_true.unexplained_network_dollars == pytest.approx(result.totals()["dollars_lost"], abs=0.01)


def test_a_slow_host_on_a_chronically_congested_fabric_is_charged_beyond_what_the_fabric_costs():
    """Uplinks that always drop a little cost the job 2%; a host that turns slow costs it 30% more, and that is
    the host's. Where the fabric's trouble is unlike any seen without a suspect host, all waiting stays the fabric's."""
    settings = AttributionSettings()
    n = 60
    loss = np.full(n, 0.02)
    fabric_score = np.full(n, 2.0)
    suspected = np.zeros(n, dtype=bool)
    loss[:5], fabric_score[:5] = 0.0, 0.0  # a clean stretch: the job's healthy traffic
    loss[40:50], suspected[40:50] = 0.32, True
    fabric_score[48:50] = 20.0  # the fabric much worse than ever without the slow host
    busy = 60.0 * (1 - loss)
    traffic = np.full(n, 1e10)
    network, other, cause = _split(loss, np.zeros(n), busy, 60.0, 0.01, traffic, traffic, fabric_score, fabric_score,
                                   suspected, IDENTITY, 4, settings)
    np.testing.assert_allclose(network[5:40], 0.02)
    np.testing.assert_allclose(network[40:48], 0.02)
    np.testing.assert_allclose(other[40:48], 0.30)
    assert set(cause[40:48]) == {SLOW_HOST}
    np.testing.assert_allclose(network[48:50], 0.32)
    assert (other[48:50] == 0).all()


def test_links_congested_as_usual_rank_after_new_trouble():
    """An uplink that always drops a little (local evidence, score 3) is blamed after a PFC storm's leaf port
    (pauses only, score 120: the NIC's pauses come from that port) while the storm lasts; an uplink whose
    trouble is new keeps its place first."""
    names = np.array(["leaf01:swp1", "leaf01:swp33"])
    score = np.zeros((20, 2))
    local = np.zeros((20, 2))
    score[:, 1], local[:, 1] = 3.0, 3.0  # the uplink, always
    score[10:13, 0] = 120.0  # the storm
    storm = np.zeros((20, 2), dtype=bool)
    storm[10:13, 0] = True  # its top signal: pauses received
    path = _PathScores(names, np.array([0, -1]), score, local, located_scores(score, local, storm))
    _, _, links = _path_state(path, AttributionSettings())
    assert links[0] == ("leaf01:swp33",)
    assert all(blamed == ("leaf01:swp1", "leaf01:swp33") for blamed in links[10:13])

    score[:, 1], local[:, 1] = 0.0, 0.0
    score[10:13, 1], local[10:13, 1] = 3.0, 3.0  # the uplink's trouble is new as well
    path = _PathScores(names, np.array([0, -1]), score, local, located_scores(score, local, storm))
    _, _, links = _path_state(path, AttributionSettings())
    assert all(blamed == ("leaf01:swp33", "leaf01:swp1") for blamed in links[10:13])


def test_an_uplink_that_drops_is_blamed_before_the_host_ports_whose_nics_count_the_marks():
    """ECN marks at a host's NIC (path evidence, score 35) say the path is congested, not where; an uplink that
    drops at half a signal's floor (local 0.45, new) or all along for other jobs' rings (local 1.5, as usual)
    is where, and is named first."""
    names = np.array(["leaf01:swp3", "leaf01:swp33"])
    marks = np.zeros((20, 2), dtype=bool)
    score, local = np.zeros((20, 2)), np.zeros((20, 2))
    score[10:14, 0] = 35.0  # the host port: its NIC counts ECN marks
    score[10:14, 1] = local[10:14, 1] = 0.45
    path = _PathScores(names, np.array([0, -1]), score, local, located_scores(score, local, marks))
    _, _, links = _path_state(path, AttributionSettings())
    assert all(blamed == ("leaf01:swp33", "leaf01:swp3") for blamed in links[10:14])
    assert links[0] == ()

    score[:, 1] = local[:, 1] = 1.5  # the uplink drops all along
    path = _PathScores(names, np.array([0, -1]), score, local, located_scores(score, local, marks))
    _, _, links = _path_state(path, AttributionSettings())
    assert all(blamed == ("leaf01:swp33", "leaf01:swp3") for blamed in links[10:14])


def test_a_nic_paused_by_its_own_leaf_port_locates_the_trouble_on_that_link_and_marks_do_not():
    """Pauses a NIC receives and its waits to send come from its own leaf port; ECN marks from any hop."""
    from detector.congestion import FrameScores
    times = pd.DatetimeIndex([T0, T0, T0, T0])
    frame = pd.DataFrame({"time": times, "link": ["a", "b", "c", "d"], "score": [30.0, 20.0, 40.0, 2.0],
                          "local_score": [0.0, 0.0, 0.0, 2.0],
                          "top_signal": ["pauses_received", "xmit_wait", "ecn_marked", "discards"]})
    score, local, located = FrameScores(frame).matrices(np.array([T0.value]), pd.Index(["a", "b", "c", "d"]))
    np.testing.assert_array_equal(located[0], [30.0, 20.0, 0.0, 2.0])
    np.testing.assert_array_equal(score[0], frame["score"].to_numpy())


def test_a_job_whose_path_is_never_clean_while_it_works_is_named_with_the_links_blamed_most_often():
    """The links first blamed in most of the job's intervals, most often first; past ten jobs the rest are counted."""
    links = [("spine01:swp2", "leaf01:swp25")] * 8 + [("leaf01:swp25",)] * 2 + [()] * 2
    intervals = pd.DataFrame({"job": ["a"] * 12 + ["b"] * 2, "links": links + [("leaf02:swp3",)] * 2})
    (line,) = never_clean_warnings(["a"], intervals)
    assert line.startswith("job a: its path was congested whenever its GPUs worked (most often blamed: "
                           "spine01:swp2, leaf01:swp25)")
    assert never_clean_warnings([], intervals) == []
    many = pd.concat([intervals.assign(job=f"j{i:02d}") for i in range(13)])
    lines = never_clean_warnings([f"j{i:02d}" for i in range(13)], many)
    assert len(lines) == 11 and lines[-1] == "3 more job(s) with a path congested whenever their GPUs worked: j10, j11, j12"


def test_an_oversubscribed_fabric_is_reported_where_its_loss_cannot_be_measured():
    """4:1 oversubscribed leaves (3 uplinks of 800G for 24 host ports of 400G): jobs across leaves lose to
    contention in every interval. Their steady loss has no clean baseline to be measured against; the result
    says so and names uplinks, instead of reporting nothing."""
    from detector.simulator import SimConfig, simulate
    config = SimConfig(seed=1105, duration=timedelta(hours=1.5), hosts=6, leaves=2, spines=3,
                       uplinks_per_leaf=3, gpu_model="B200", job_mean_hours=1.0)
    points, sim = simulate(config)
    result = detect(points_to_frames(points), sim.topology, sim.allocations)
    never_clean = [line for line in result.warnings if "congested whenever its GPUs worked" in line]
    assert never_clean
    uplinks = set(_uplink_peers(sim.topology))
    for line in never_clean:
        named = line.split("most often blamed: ")[1].split(")")[0].split(", ")
        assert set(named) <= uplinks, line


@pytest.mark.slow
def test_a_hang_on_a_never_clean_path_does_not_turn_congestion_into_input_stalls():
    """Rings across leaves share uplinks in every interval, so the job's only clean intervals are a hang's (its
    kernels spin: no idle share, all time lost) and checkpoints'. Fitted with the hang, loss ~ idle share had an
    intercept of 0.47, and every other interval of a 35% contention slowdown went to input stalls (dollar
    error -24%). Left out of the fit, the slowdown stays the network's."""
    from detector.simulator import SimConfig, simulate
    config = SimConfig(seed=1210, duration=timedelta(hours=4), leaves=4, spines=4, hosts=12, nics_per_host=4,
                       uplinks_per_leaf=12, uplink_gbps=400, gpu_model="H200", switch_reboot=True)
    points, sim = simulate(config)
    result = detect(points_to_frames(points), sim.topology, sim.allocations)
    assert result.idle_models["job-01"].intercept == pytest.approx(0.0, abs=0.01)
    job = result.intervals[result.intervals["job"] == "job-01"]
    contention = job[job["path_score"] > 1000]
    assert len(contention) >= 20 and (contention["other_cause"] != "input_stall").all()
    accuracy = evaluate(result, sim.ground_truth.episodes, sim.topology, sim.allocations)
    assert abs(accuracy.dollar_error) <= 0.05 and accuracy.recall == 1.0


@pytest.mark.slow
def test_without_ethtool_a_slow_host_on_a_seldom_clean_path_is_found_as_a_straggler():
    """Rings share uplinks most of the time, so many of the job's clean intervals are its checkpoints' (GPUs
    idle). Measured against those, every host looked 25 times its healthy level and node06, throttled 1.4x
    while the others wait, was no straggler: without ethtool's pause counters its 1,800 GPU-seconds went to
    the network. The hosts' levels come from the intervals the baseline uses."""
    from detector.simulator import SimConfig, simulate
    config = SimConfig(seed=1416, duration=timedelta(hours=2), interval_s=10, leaves=4, spines=4, hosts=12,
                       gpus_per_host=4, gpu_model="A100", nics_per_host=2, uplinks_per_leaf=12, uplink_gbps=400,
                       job_mean_hours=3.0)
    points, sim = simulate(config)
    frames = points_to_frames(points)
    del frames["ethtool"]
    result = detect(frames, sim.topology, sim.allocations)
    job = result.intervals[result.intervals["job"] == "job-04"].set_index("time")
    slow = job.loc[pd.Timestamp("2026-11-02T01:38:00Z"):pd.Timestamp("2026-11-02T01:44:00Z")]
    assert (slow["straggler"] == "node06").all() and (slow["network_fraction"] == 0).all()
    accuracy = evaluate(result, sim.ground_truth.episodes, sim.topology, sim.allocations)
    assert accuracy.confounders_blamed_on_network == 0 and accuracy.false_network_dollars < 0.05


def test_quieter_network_shares_count_only_beside_loud_ones():
    """A degradation ramps up: its quieter intervals (half the noise floor or more) join the loud ones next
    to them; as quiet a run that never gets loud is noise."""
    share = np.array([0.0, 0.006, 0.008, 0.012, 0.02, 0.007, 0.0, 0.007, 0.008, 0.004, 0.011])
    np.testing.assert_array_equal(_beside_loud(share, 0.01), [False, True, True, True, True, True, False,
                                                              False, False, False, True])
    assert not _beside_loud(np.zeros(3), 0.01).any()
    assert not _beside_loud(np.array([]), 0.01).any()


def test_column_medians_are_numpys_nanmedian():
    rng = np.random.default_rng(4)
    for shape in [(1, 3), (5, 4), (6, 7), (300, 20)]:
        matrix = rng.normal(size=shape)
        matrix[rng.random(shape) < 0.3] = np.nan
        matrix[:, 0] = np.nan
        with pytest.warns(RuntimeWarning):
            expected = np.nanmedian(matrix, axis=0)
        np.testing.assert_array_equal(_column_medians(matrix), expected)


def test_switch_vendor_pause_counters(scenario):
    """Cumulus PFC counters on the interface points: pauses a leaf sends, and pauses a host sends into it."""
    frames, topology, allocations, *_ = scenario
    interface = frames["interface"].copy()
    poll = ((interface["time"] - T0).dt.total_seconds() // 30).astype(int)
    storm = (interface["agent_host"] == "10.0.0.11") & (interface["ifName"] == "swp2")
    slow = (interface["agent_host"] == "10.0.0.12") & (interface["ifName"] == "swp1")
    interface["clIntOutPfc3Pkt"] = np.where(storm, 5000.0 * 30 * (poll - 12).clip(0, 3), 0.0)
    interface["clIntInPfc3Pkt"] = np.where(slow, 6000.0 * 30 * (poll - 15).clip(0, 2), 0.0)
    telemetry = load_telemetry({"interface": interface})
    congestion = link_congestion(telemetry, topology)
    storm_scores = congestion.signals[(congestion.signals["signal"] == "switch_pauses_sent")
                                      & (congestion.signals["link"] == "10.0.0.11:swp2")].set_index("time")["score"]
    assert (storm_scores[[at(13), at(14), at(15)]] >= 1).all() and storm_scores[at(10)] == 0
    assert congestion.signals.loc[congestion.signals["signal"] == "switch_pauses_received", "score"].max() == 0
    sent = congestion.host_pause[(congestion.host_pause["host"] == "node03")].set_index("time")["score"]
    assert (sent[[at(16), at(17)]] >= 1).all() and sent[at(15)] == 0


def test_episode_evidence_rows_by_time_are_the_rows_isin_keeps():
    """Episodes find their evidence rows by time from one sort: the rows, order and labels of ``isin``."""
    from detector.episodes import _RowsByTime
    from detector.rates import nanoseconds
    stamps = pd.to_datetime(["2026-01-01 00:00:30", "2026-01-01 00:00:10", "2026-01-01 00:00:20",
                             "2026-01-01 00:00:10", "2026-01-01 00:00:40"], utc=True)
    frame = pd.DataFrame({"time": stamps, "link": list("abcde")}, index=[7, 3, 9, 1, 5])
    rows = _RowsByTime(frame)
    for wanted in ([stamps[1]], [stamps[4], stamps[1], stamps[1]], [pd.Timestamp("2026-01-02", tz="UTC")], []):
        wanted = pd.Series(wanted, dtype="datetime64[ns, UTC]")
        pd.testing.assert_frame_equal(frame.iloc[rows.at(nanoseconds(wanted))], frame[frame["time"].isin(wanted)])
    np.testing.assert_array_equal(rows.columns["link"][rows.at(nanoseconds(stamps[:1]))], ["a"])
    assert len(_RowsByTime(pd.DataFrame()).at(nanoseconds(stamps))) == 0


def test_episode_helpers_are_the_pandas_steps_they_replace():
    """An episode's sums, means, medians and evidence ranking on arrays: pandas' numbers and order, to the bit."""
    from detector.episodes import _descending, _mean, _median, _sum
    rng = np.random.default_rng(7)
    for values in (rng.random(9), np.array([2.0, np.nan, 2.0, -np.inf, 5.0, 2.0, np.nan]), np.array([np.nan]),
                   np.array([]), np.array([1.0, 1.0, 1.0]), rng.random(40).round(1)):
        series = pd.Series(values, dtype=float)
        np.testing.assert_array_equal(_descending(values), series.sort_values(ascending=False).index.to_numpy())
        for mine, theirs in ((_sum, series.sum), (_mean, series.mean), (_median, series.median)):
            np.testing.assert_equal(mine(values), theirs())


def test_nics_and_netdevs_outside_the_topology_are_named_and_left_out(scenario):
    """A host the topology lacks: its NIC and netdev rows are dropped and named once each, the rest scored as before."""
    _, topology, _, telemetry, congestion = scenario
    host = telemetry.nics["host"].iloc[0]
    ghost = dataclasses.replace(telemetry, nics=telemetry.nics.replace({"host": {host: "ghost"}}),
                                pauses=telemetry.pauses.replace({"host": {host: "ghost"}}))
    moved = link_congestion(ghost, topology)
    devices = sorted(set(telemetry.nics.loc[telemetry.nics["host"] == host, "device"]))
    netdevs = sorted(set(telemetry.pauses.loc[telemetry.pauses["host"] == host, "netdev"]))
    assert moved.unmapped == {"infiniband": {f"ghost/{device}" for device in devices},
                              "ethtool": {f"ghost/{netdev}" for netdev in netdevs}}
    assert congestion.unmapped == {}
    kept = congestion.signals[congestion.signals["signal"].isin(["discards", "port_errors"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        moved.signals[moved.signals["signal"].isin(["discards", "port_errors"])].reset_index(drop=True), kept)
