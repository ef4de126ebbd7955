"""Wide frames from points: one row per series and time, merged lines, stable dtypes."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd

from collector.frames import points_to_frames
from collector.lineprotocol import parse
from collector.schema import Point

T = 1_700_000_000_000_000_000
S = 30_000_000_000


def utc(*times_ns: int) -> pd.Series:
    return pd.Series(pd.DatetimeIndex(np.array(times_ns, dtype="datetime64[ns]")).tz_localize("UTC"), name="time")


def test_infiniband_counters_and_hw_counters_merge_into_one_row():
    frames = points_to_frames(parse(
        "infiniband,device=mlx5_0,host=gpu01,port=1 port_xmit_data=10i,port_rcv_data=20i 1700000000000000000\n"
        "infiniband,device=mlx5_0,host=gpu01,port=1 np_cnp_sent=3i,rp_cnp_handled=4i 1700000000000000000\n"
    ))
    expected = pd.DataFrame({
        "time": utc(T),
        "host": pd.array(["gpu01"], dtype="str"),
        "device": pd.array(["mlx5_0"], dtype="str"),
        "port": pd.array(["1"], dtype="str"),
        "np_cnp_sent": [3.0],
        "port_rcv_data": [20.0],
        "port_xmit_data": [10.0],
        "rp_cnp_handled": [4.0],
    })
    pd.testing.assert_frame_equal(frames["infiniband"], expected)


def test_later_line_wins_a_field_conflict():
    points = [
        Point("m", {"h": "a"}, {"x": 1, "y": 1}, T),
        Point("m", {"h": "a"}, {"x": 2}, T),
        Point("m", {"h": "a"}, {"y": 3}, T),
    ]
    frame = points_to_frames(points)["m"]
    assert frame[["x", "y"]].values.tolist() == [[2.0, 3.0]]


def test_rows_sorted_by_identifying_tags_then_time():
    points = [
        Point("nvidia_smi", {"host": "b", "index": "0", "uuid": "u2", "name": "H100"}, {"utilization_gpu": 1}, T + S),
        Point("nvidia_smi", {"host": "b", "index": "0", "uuid": "u2", "name": "H100"}, {"utilization_gpu": 2}, T),
        Point("nvidia_smi", {"host": "a", "index": "1", "uuid": "u1", "name": "H100", "pstate": "P0"},
              {"utilization_gpu": 3}, T + S),
        Point("nvidia_smi", {"host": "a", "index": "0", "uuid": "u0", "name": "H100"}, {"utilization_gpu": 4}, T),
    ]
    frame = points_to_frames(points)["nvidia_smi"]
    assert list(frame.columns) == ["time", "host", "index", "uuid", "name", "pstate", "utilization_gpu"]
    assert frame[["host", "index"]].values.tolist() == [["a", "0"], ["a", "1"], ["b", "0"], ["b", "0"]]
    assert frame["utilization_gpu"].tolist() == [4.0, 3.0, 2.0, 1.0]
    assert frame["pstate"].tolist() == ["", "P0", "", ""]
    pd.testing.assert_series_equal(frame["time"], utc(T, T + S, T, T + S))


def test_dtypes_numbers_float_strings_str_missing_nan():
    points = [
        Point("gpu", {"host": "a"}, {"util": 97, "power": 612.5, "ok": True, "driver": "550.54.15"}, T),
        Point("gpu", {"host": "b"}, {"util": 18446744073709551615, "ok": False}, T),
    ]
    frame = points_to_frames(points)["gpu"]
    assert frame.dtypes.astype(str).to_dict() == {
        "time": "datetime64[ns, UTC]", "host": "str", "driver": "str", "ok": "float64", "power": "float64",
        "util": "float64",
    }
    assert frame["driver"].tolist()[0] == "550.54.15" and pd.isna(frame["driver"].tolist()[1])
    assert frame["ok"].tolist() == [1.0, 0.0]
    assert math.isnan(frame["power"].tolist()[1])
    assert frame["util"].tolist() == [97.0, float(18446744073709551615)]
    assert isinstance(frame.index, pd.RangeIndex)


def test_a_field_with_strings_and_numbers_becomes_a_string_column():
    frame = points_to_frames([Point("m", {}, {"v": "up"}, T), Point("m", {}, {"v": 2}, T + S)])["m"]
    assert str(frame["v"].dtype) == "str"
    assert frame["v"].tolist() == ["up", "2.0"]


def test_nan_and_infinite_fields_are_no_value_and_empty_tags_no_tag():
    points = [
        Point("m", {"h": "a", "rack": ""}, {"x": math.nan, "y": 1.0}, T),
        Point("m", {"h": "a"}, {"x": math.inf, "y": 2.0}, T + S),
        Point("m", {"h": "b", "only_here": "x"}, {"x": math.nan}, T),  # no value: no row, no column
    ]
    frame = points_to_frames(points)["m"]
    assert list(frame.columns) == ["time", "h", "y"]
    assert frame["y"].tolist() == [1.0, 2.0]


def test_names_clashing_with_tags_or_time_get_a_suffix():
    frame = points_to_frames([Point("m", {"host": "a", "time": "t"}, {"host": 1, "time": 2}, T)])["m"]
    assert list(frame.columns) == ["time", "host", "time_tag", "host_field", "time_field"]


def test_one_frame_per_measurement_and_none_for_no_points():
    frames = points_to_frames(parse("b f=1i 1\na f=2i 1\nb g=3i 2\n"))
    assert list(frames) == ["a", "b"]
    assert frames["b"][["f", "g"]].isna().values.tolist() == [[False, True], [True, False]]
    assert points_to_frames([]) == {}


def test_a_million_values_take_seconds_not_minutes():
    count = 300_000
    points = [
        Point("infiniband", {"host": f"gpu{i % 100:03d}", "device": "mlx5_0", "port": "1"},
              {"port_xmit_data": i, "port_rcv_data": i, "np_cnp_sent": i}, T + (i // 100) * S)
        for i in range(count)
    ]
    started = time.perf_counter()
    frame = points_to_frames(points)["infiniband"]
    assert time.perf_counter() - started < 10
    assert frame.shape == (count, 7)
    assert frame["port_xmit_data"].is_monotonic_increasing is False  # sorted by host first
    assert frame.groupby("host")["time"].is_monotonic_increasing.all()
