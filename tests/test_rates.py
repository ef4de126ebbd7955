"""Counter rates: wraps, resets, gaps and duplicates never become spikes."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from detector.rates import (RatesError, counter_rates, distinct_rows, factorize_runs, grid_codes, group_codes, in_order,
                            key_codes, map_series, row_sums)

T0 = pd.Timestamp("2026-03-02T10:00:00Z")


def port_frame(rows: list[dict], port: str = "swp1", agent: str = "leaf01") -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["time"] = [T0 + pd.Timedelta(seconds=s) for s in frame.pop("t")]
    frame["agent_host"] = agent
    frame["ifName"] = port
    return frame


def rates(frame: pd.DataFrame, **kwargs) -> pd.DataFrame:
    return counter_rates(
        frame, series=["agent_host", "ifName"],
        counters=["ifHCOutOctets", "ifOutDiscards", "ifInErrors"], gauges=["ifHighSpeed"], **kwargs,
    )


def test_steady_counters_give_rates_over_elapsed_time():
    frame = port_frame([
        {"t": 0, "ifHCOutOctets": 0.0, "ifOutDiscards": 5.0, "ifHighSpeed": 400000.0},
        {"t": 10, "ifHCOutOctets": 1e10, "ifOutDiscards": 25.0, "ifHighSpeed": 400000.0},
        {"t": 20, "ifHCOutOctets": 3e10, "ifOutDiscards": 25.0, "ifHighSpeed": 400000.0},
    ])
    out = rates(frame)
    assert list(out["ifHCOutOctets"]) == [1e9, 2e9]
    assert list(out["ifOutDiscards"]) == [2.0, 0.0]
    assert list(out["interval_s"]) == [10.0, 10.0]
    assert list(out["ifHighSpeed"]) == [400000.0, 400000.0]
    assert "ifInErrors" not in out.columns


def test_counter32_wrap_is_an_increase():
    frame = port_frame([
        {"t": 0, "ifHCOutOctets": 0.0, "ifOutDiscards": 2**32 - 100.0},
        {"t": 10, "ifHCOutOctets": 1e9, "ifOutDiscards": 400.0},
    ])
    assert rates(frame)["ifOutDiscards"].tolist() == [50.0]


def test_counter32_restart_from_small_value_is_a_reset_not_a_wrap():
    frame = port_frame([
        {"t": 0, "ifOutDiscards": 1000.0},
        {"t": 10, "ifOutDiscards": 10.0},
        {"t": 20, "ifOutDiscards": 30.0},
    ])
    out = rates(frame)["ifOutDiscards"].tolist()
    assert np.isnan(out[0]) and out[1] == 2.0


def test_sysuptime_going_back_drops_the_interval_for_every_counter():
    frame = port_frame([
        {"t": 0, "sysUpTime": 50_000.0, "ifHCOutOctets": 5e12, "ifOutDiscards": 2**32 - 10.0},
        # the switch rebooted: discards restart near 0, which would also fit a wrap
        {"t": 10, "sysUpTime": 300.0, "ifHCOutOctets": 1e6, "ifOutDiscards": 5.0},
        {"t": 20, "sysUpTime": 1300.0, "ifHCOutOctets": 2e6, "ifOutDiscards": 15.0},
    ])
    out = rates(frame)
    assert out["ifHCOutOctets"].isna().tolist() == [True, False]
    assert out["ifOutDiscards"].isna().tolist() == [True, False]
    assert out["ifOutDiscards"].iloc[1] == 1.0


def test_sysuptime_wrapping_at_2_32_ticks_is_not_a_reboot():
    frame = port_frame([
        {"t": 0, "sysUpTime": 2**32 - 500.0, "ifHCOutOctets": 0.0},
        {"t": 10, "sysUpTime": 500.0, "ifHCOutOctets": 100.0},
    ])
    assert rates(frame)["ifHCOutOctets"].tolist() == [10.0]


def test_discontinuity_time_change_is_a_reset():
    frame = port_frame([
        {"t": 0, "ifCounterDiscontinuityTime": 0.0, "ifHCOutOctets": 500.0},
        {"t": 10, "ifCounterDiscontinuityTime": 900.0, "ifHCOutOctets": 800.0},
        {"t": 20, "ifCounterDiscontinuityTime": 900.0, "ifHCOutOctets": 1800.0},
    ])
    out = rates(frame)["ifHCOutOctets"].tolist()
    assert np.isnan(out[0]) and out[1] == 100.0


def test_counter64_going_down_is_a_new_baseline():
    frame = port_frame([
        {"t": 0, "ifHCOutOctets": 9e9},
        {"t": 10, "ifHCOutOctets": 1e3},
        {"t": 20, "ifHCOutOctets": 2e3},
    ])
    out = rates(frame)["ifHCOutOctets"].tolist()
    assert np.isnan(out[0]) and out[1] == 100.0


def test_missed_poll_averages_and_long_gap_drops():
    frame = port_frame([
        {"t": 0, "ifHCOutOctets": 0.0},
        {"t": 10, "ifHCOutOctets": 100.0},
        {"t": 30, "ifHCOutOctets": 500.0},  # one poll missed: 400 over 20 s
        {"t": 40, "ifHCOutOctets": 600.0},
        {"t": 400, "ifHCOutOctets": 9e6},  # collector down for six minutes
        {"t": 410, "ifHCOutOctets": 9e6 + 100.0},
    ])
    out = rates(frame)["ifHCOutOctets"].tolist()
    assert out[:3] == [10.0, 20.0, 10.0]
    assert np.isnan(out[3]) and out[4] == 10.0


def test_missing_field_in_one_sample_spans_to_the_previous_value():
    frame = port_frame([
        {"t": 0, "ifHCOutOctets": 0.0, "ifOutDiscards": 0.0},
        {"t": 10, "ifHCOutOctets": 100.0},
        {"t": 20, "ifHCOutOctets": 200.0, "ifOutDiscards": 40.0},
    ])
    out = rates(frame)
    assert np.isnan(out["ifOutDiscards"].iloc[0]) and out["ifOutDiscards"].iloc[1] == 2.0
    assert out["ifHCOutOctets"].tolist() == [10.0, 10.0]


def test_duplicate_and_split_samples_are_merged():
    frame = port_frame([
        {"t": 0, "ifHCOutOctets": 0.0, "ifOutDiscards": 0.0},
        {"t": 10, "ifHCOutOctets": 100.0},
        {"t": 10, "ifOutDiscards": 20.0},  # same series and time, other fields
        {"t": 10, "ifHCOutOctets": 100.0},  # redelivered
        {"t": 20, "ifHCOutOctets": 300.0, "ifOutDiscards": 20.0},
    ])
    out = rates(frame)
    assert out["interval_s"].tolist() == [10.0, 10.0]
    assert out["ifHCOutOctets"].tolist() == [10.0, 20.0]
    assert out["ifOutDiscards"].tolist() == [2.0, 0.0]


def test_series_are_independent_and_unsorted_input_is_fine():
    a = port_frame([{"t": 0, "ifHCOutOctets": 0.0}, {"t": 10, "ifHCOutOctets": 100.0}], port="swp1")
    b = port_frame([{"t": 0, "ifHCOutOctets": 1e6}, {"t": 10, "ifHCOutOctets": 0.5e6}], port="swp2")
    out = rates(pd.concat([b, a]).iloc[::-1])
    by_port = dict(zip(out["ifName"], out["ifHCOutOctets"]))
    assert by_port["swp1"] == 10.0 and np.isnan(by_port["swp2"])


def test_missing_tag_column_names_the_source():
    frame = port_frame([{"t": 0, "ifHCOutOctets": 0.0}]).drop(columns="ifName")
    with pytest.raises(RatesError, match="interface.*ifName"):
        counter_rates(frame, series=["agent_host", "ifName"], counters=["ifHCOutOctets"], source="interface")


def test_a_million_rows_in_seconds():
    n_series, n_times = 2_000, 500
    rng = np.random.default_rng(1)
    increments = rng.integers(0, 10**9, size=(n_series, n_times)).astype(float)
    frame = pd.DataFrame({
        "time": np.tile(pd.date_range(T0, periods=n_times, freq="10s"), n_series),
        "agent_host": np.repeat([f"leaf{i // 64:02d}" for i in range(n_series)], n_times),
        "ifName": np.repeat([f"swp{i % 64}" for i in range(n_series)], n_times),
        "ifHCOutOctets": increments.cumsum(axis=1).ravel(),
        "ifOutDiscards": (increments.cumsum(axis=1).ravel() // 1000) % 2**32,
        "ifHighSpeed": 400000.0,
    })
    started = time.perf_counter()
    out = rates(frame)
    elapsed = time.perf_counter() - started
    assert len(out) == n_series * (n_times - 1)
    out = out.sort_values(["agent_host", "ifName", "time"])
    expected = frame.sort_values(["agent_host", "ifName", "time"]).groupby(["agent_host", "ifName"])["ifHCOutOctets"]
    assert np.allclose(out["ifHCOutOctets"].to_numpy(), expected.diff().dropna().to_numpy() / 10)
    assert (out["ifOutDiscards"] >= 0).all()
    assert elapsed < 5.0, elapsed


def test_fields_a_point_lists_as_counter32_wrap_too():
    frame = port_frame([
        {"t": 0, "dot3InPauseFrames": 2**32 - 10.0, "counter32_fields": "dot3InPauseFrames,dot3OutPauseFrames"},
        {"t": 10, "dot3InPauseFrames": 90.0, "counter32_fields": "dot3InPauseFrames,dot3OutPauseFrames"},
    ])
    out = counter_rates(frame, series=["agent_host", "ifName"], counters=["dot3InPauseFrames"])
    assert out["dot3InPauseFrames"].tolist() == [10.0]
    unlisted = counter_rates(frame.drop(columns="counter32_fields"), series=["agent_host", "ifName"],
                             counters=["dot3InPauseFrames"])
    assert unlisted["dot3InPauseFrames"].isna().all()  # a 64-bit counter going down is a reset


def test_counters_with_a_value_in_every_row_give_the_rates_of_gappy_ones():
    """Dense counters take their differences in one pass; they must give what the gap-aware path gives."""
    rng = np.random.default_rng(7)
    frames = []
    for port in ("swp1", "swp2", "swp3"):
        steps = rng.integers(1, 3, size=40).cumsum() * 10.0  # missed polls: 10 s and 20 s intervals
        increments = rng.integers(0, 2**28, size=40).astype(float)
        totals = np.cumsum(increments)
        totals[25:] -= totals[25]  # an operator cleared the counters
        values = totals % 2**32  # Counter32 wraps
        frames.append(port_frame([{"t": t, "ifOutDiscards": v} for t, v in zip(steps, values)], port=port))
    frame = pd.concat(frames, ignore_index=True)
    frame["ifInErrors"] = frame["ifOutDiscards"]  # the same counter, but gappy in one more port
    gappy = port_frame([{"t": 0, "ifOutDiscards": 1.0, "ifInErrors": 1.0},
                        {"t": 10, "ifOutDiscards": 2.0, "ifInErrors": None},
                        {"t": 20, "ifOutDiscards": 3.0, "ifInErrors": 3.0}], port="swp4")
    out = rates(pd.concat([frame, gappy], ignore_index=True))
    out = out[out["ifName"] != "swp4"]
    assert out["ifOutDiscards"].notna().sum() > 60
    np.testing.assert_array_equal(out["ifOutDiscards"].to_numpy(), out["ifInErrors"].to_numpy())


def test_factorize_runs_gives_pandas_codes_and_uniques_whatever_the_order():
    values = pd.Series(["b", "b", "a", None, None, "b", "c", "c", "a"], dtype="str")
    for sort in (False, True):
        for sentinel in (False, True):
            codes, uniques = factorize_runs(values, sort=sort, use_na_sentinel=sentinel)
            want_codes, want_uniques = pd.factorize(values, sort=sort, use_na_sentinel=sentinel)
            np.testing.assert_array_equal(codes, want_codes)
            pd.testing.assert_index_equal(uniques, want_uniques)
    numbers = np.array([3, 3, 1, 1, 3, 2])
    np.testing.assert_array_equal(factorize_runs(numbers)[0], pd.factorize(numbers)[0])
    masked = pd.Series(["x", pd.NA, "x"], dtype="string")  # pd.NA compares to no bool: pandas factorizes
    np.testing.assert_array_equal(factorize_runs(masked)[0], pd.factorize(masked)[0])


def test_factorize_runs_compares_equal_values_that_are_distinct_objects():
    # Tags parsed per row (a JSON or CSV reply) are equal strings in distinct objects, NaNs too.
    spelled = ["".join(["sw", "p1"]), "".join(["sw", "p1"]), "swp2", float("nan"), float("nan"), "swp2"]
    values = np.array(spelled, dtype=object)
    assert values[0] is not values[1] and values[3] is not values[4]
    for sentinel in (False, True):
        codes, uniques = factorize_runs(values, use_na_sentinel=sentinel)
        want_codes, want_uniques = pd.factorize(values, use_na_sentinel=sentinel)
        np.testing.assert_array_equal(codes, want_codes)
        assert list(pd.Series(uniques).fillna("missing")) == list(pd.Series(want_uniques).fillna("missing"))


def test_group_codes_number_groups_like_a_groupby():
    frame = pd.DataFrame({"agent_host": ["a", "a", "a", "b", "b", "a", None, None, "a"],
                          "ifName": ["1", "1", "2", "1", "1", "1", "1", "1", None]})
    expected = frame.groupby(["agent_host", "ifName"], sort=False, dropna=False).ngroup().to_numpy()
    np.testing.assert_array_equal(group_codes([frame["agent_host"], frame["ifName"]]), expected)


@pytest.mark.parametrize("keep", ["first", "last"])
def test_distinct_rows_are_the_rows_drop_duplicates_keeps(keep):
    frame = pd.DataFrame({"host": ["a", "a", "b", "b", "a", None, None, "b"],
                          "netdev": ["x", "x", "x", "y", "x", "x", "x", "y"],
                          "value": [1, 2, 3, 4, 5, 6, 7, 8]})
    for columns in (["host"], ["host", "netdev"], None):
        pd.testing.assert_frame_equal(distinct_rows(frame, columns, keep=keep),
                                      frame.drop_duplicates(columns, keep=keep))


def test_in_order_is_a_lexicographic_check():
    series, times = np.array([0, 0, 1, 1, 2]), np.array([5, 6, 1, 9, 0])
    assert in_order(series, times) and in_order(series) and in_order(np.array([]))
    assert not in_order(series, np.array([5, 4, 1, 9, 0]))  # time goes back within a series
    assert not in_order(np.array([0, 1, 0]), np.array([1, 2, 3]))  # a series comes back
    assert in_order(np.array([1, 1]), np.array([3, 3]))  # ties are in order


def test_grid_codes_are_pandas_sorted_factorize_on_and_off_the_grid():
    """Times on the grid are coded by arithmetic; off it, sparse or with NaT, pandas' codes all the same."""
    step = 10 * 10**9
    base = 1_750_000_000 * 10**9
    rng = np.random.default_rng(3)
    cases = [
        base + step * np.tile(np.arange(50), 4),  # every slot, series after series
        base + step * rng.choice([0, 1, 2, 5, 9], 60),  # empty slots between
        base + step * np.array([0, 3 * 10**6]),  # too sparse for a table of slots
        np.append(base + step * np.arange(5), base + 7),  # one time off the grid
        np.append(base + step * np.arange(5), np.iinfo(np.int64).min),  # NaT
        np.empty(0, dtype=np.int64),
    ]
    for ns in cases:
        ns = np.asarray(ns, dtype=np.int64)
        codes, times = grid_codes(ns, step)
        want_codes, want_times = pd.factorize(ns.view("datetime64[ns]"), sort=True)
        np.testing.assert_array_equal(codes, want_codes)
        np.testing.assert_array_equal(times, np.asarray(want_times, dtype="datetime64[ns]").view(np.int64))


def test_key_codes_are_pandas_sorted_factorize_of_the_keys_present():
    """Keys coded on a table of marks or, when sparse, by a sort; a negative key is missing (-1) either way."""
    rng = np.random.default_rng(5)
    cases = [
        rng.integers(0, 40, 200),  # dense: a table of marks
        np.where(rng.random(200) < 0.2, -1, rng.integers(0, 40, 200)),  # with missing keys
        np.array([3, 10**9, 3, -1, 7]),  # too sparse for a table
        np.array([-1, -1]),
        np.empty(0, dtype=np.int64),
    ]
    for keys in cases:
        keys = np.asarray(keys, dtype=np.int64)
        codes, present = key_codes(keys)
        valid = keys >= 0
        want_codes, want_present = pd.factorize(keys[valid], sort=True)
        np.testing.assert_array_equal(codes[valid], want_codes)
        np.testing.assert_array_equal(codes[~valid], -1)
        np.testing.assert_array_equal(present, want_present)


def test_row_sums_mix_dense_and_gappy_columns_like_pandas():
    frame = pd.DataFrame({"dense": [1.0, -0.0, 2.5, 0.0], "gappy": [np.nan, -0.0, np.nan, 1.0],
                          "empty": [np.nan] * 4})
    for names in (["dense", "gappy"], ["gappy", "dense"], ["gappy"], ["empty"], ["gappy", "empty"], []):
        want = frame[names].sum(axis=1, min_count=1).to_numpy() if names else np.full(4, np.nan)
        got = row_sums(frame, names)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def test_long_series_are_copied_run_by_run_to_the_rows_a_gather_gives(monkeypatch):
    """Rows of long series are copied a run at a time; short ones are gathered. Both give the same frame."""
    rng = np.random.default_rng(11)
    frames = []
    for port, length in (("swp1", 300), ("swp2", 1), ("swp3", 200)):
        steps = rng.integers(1, 3, size=length).cumsum() * 10.0
        totals = np.cumsum(rng.integers(0, 2**20, size=length).astype(float))
        rows = [{"t": t, "ifHCOutOctets": v, "ifOutDiscards": v if i % 7 else None, "ifHighSpeed": 100000}
                for i, (t, v) in enumerate(zip(steps, totals))]
        frames.append(port_frame(rows, port=port))
    frame = pd.concat(frames, ignore_index=True)
    by_runs = rates(frame)
    monkeypatch.setattr("detector.rates._ClosingRows.MIN_RUN", len(frame) + 1)
    gathered = rates(frame)
    assert len(by_runs) == 300 - 1 + 200 - 1
    pd.testing.assert_frame_equal(by_runs, gathered, check_exact=True)


def test_map_series_is_pandas_map_and_its_notna():
    links = pd.Series(["leaf1:swp1", "leaf1:swp1", "spine1:swp3", None, "leaf2:swp9", "leaf1:swp1"], dtype="str",
                      index=range(10, 16), name="link")
    hosts = {"leaf1:swp1": "node01", "leaf2:swp9": "node07"}
    mapped, known = map_series(links, hosts)
    pd.testing.assert_series_equal(mapped, links.map(hosts))
    np.testing.assert_array_equal(known, links.map(hosts).notna().to_numpy())
