"""Rollups of the embedded store: counters keep their last value, gauges their mean and max, per-level retention."""

from __future__ import annotations

from datetime import timedelta

import pytest

from collector.schema import Point
from collector.store import EmbeddedStore
from collector.store.rollup import Resolution, Rollups

HOUR = 3600 * 10**9
T0 = 1_700_000_000_000_000_000 - 1_700_000_000_000_000_000 % HOUR


def raw_points(hours: int) -> list[Point]:
    points = []
    for index in range(360 * hours):  # every 10 s
        time_ns = T0 + index * 10 * 10**9
        points.append(Point("infiniband", {"host": "gpu01", "device": "mlx5_0", "port": "1"},
                            {"port_xmit_data": index * 100, "link_state": "DOWN" if index % 6 == 5 else "ACTIVE"}, time_ns))
        points.append(Point("nvidia_smi", {"host": "gpu01", "index": "0", "uuid": "GPU-1", "name": "H100"},
                            {"utilization_gpu": float(index % 6 * 20)}, time_ns))
    return points


@pytest.fixture
def rollups(tmp_path):
    store = EmbeddedStore(tmp_path / "metrics.db", retention=None)
    store.write(raw_points(3))
    rollups = Rollups(store, [Resolution(timedelta(minutes=1), timedelta(hours=2)), Resolution(timedelta(hours=1), None)])
    yield rollups
    rollups.close()
    store.close()


def test_counters_keep_last_gauges_mean_and_max(rollups):
    assert rollups.update(now=T0 + 3 * HOUR) == {"1m": 360, "1h": 6}
    assert rollups.stores["1m"].path.name == "metrics.1m.db"
    minute = rollups.stores["1m"].read("infiniband", start=T0 + 2 * HOUR, end=T0 + 2 * HOUR + 3 * 60 * 10**9)
    assert list(minute.port_xmit_data) == [72500.0, 73100.0, 73700.0]  # the last of each minute: rates stay exact
    assert list(minute.link_state) == ["DOWN"] * 3 and list(minute.port) == ["1"] * 3  # text field vs tag
    hour = rollups.stores["1h"].read("nvidia_smi")
    assert list(hour.utilization_gpu) == [50.0, 50.0, 50.0]
    assert list(hour.utilization_gpu_max) == [100.0, 100.0, 100.0]
    assert list(rollups.stores["1h"].read("infiniband").port_xmit_data) == [35900.0, 71900.0, 107900.0]


def test_update_is_incremental_and_late_points_reach_the_rollups(rollups):
    rollups.update(now=T0 + 3 * HOUR)
    late = Point("infiniband", {"host": "gpu01", "device": "mlx5_0", "port": "1"}, {"port_xmit_data": 10**9},
                 T0 + 3 * HOUR - 10**9)
    rollups.raw.write([late])
    written = rollups.update(now=T0 + 3 * HOUR)
    assert written["1m"] < 10  # only the last intervals again
    assert rollups.stores["1m"].read("infiniband").port_xmit_data.iloc[-1] == 10**9


def test_retention_per_resolution_and_store_choice(rollups):
    rollups.update(now=T0 + 3 * HOUR)
    minute_range = rollups.stores["1m"].time_range("infiniband")
    assert minute_range.first.value >= T0 + HOUR  # 2 h of 1 min data kept
    assert rollups.stores["1h"].time_range("infiniband").first.value == T0
    assert rollups.store_for(T0, T0 + HOUR) is rollups.raw
    assert rollups.store_for(T0, T0 + 24 * HOUR) is rollups.stores["1m"]
    assert rollups.store_for(T0, T0 + 7 * 24 * HOUR) is rollups.stores["1h"]


def test_resolutions_must_nest(tmp_path):
    store = EmbeddedStore(tmp_path / "m.db")
    with pytest.raises(ValueError, match="finest first"):
        Rollups(store, [Resolution(timedelta(hours=1), None), Resolution(timedelta(minutes=1), None)])
    with pytest.raises(ValueError, match="not a whole multiple"):
        Rollups(store, [Resolution(timedelta(minutes=7), None), Resolution(timedelta(hours=1), None)])
    store.close()
