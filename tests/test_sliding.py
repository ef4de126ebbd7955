"""The streaming detector's sliding window gives, step after step, exactly the frames of one store read."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from collector.schema import INFINIBAND, INTERFACE, Point
from collector.store import EmbeddedStore
from detector.batch import read_frames
from detector.sliding import SlidingFrames

T0 = pd.Timestamp("2026-01-01T00:00:00Z")
SECOND = 1_000_000_000


def interface_point(t: int, switch: str, port: str, **extra_tags: str) -> Point:
    fields = {"ifHCInOctets": 1000 * t, "ifHCOutOctets": 2000 * t, "ifOperStatus": 1, "sysUpTime": 100 * t}
    if port == "swp2":
        fields["counter32_fields"] = "ifInDiscards"  # a text field, on one series only
    if t >= 300:
        fields["ifInDiscards"] = t  # a field that appears halfway
    fields["ifHighSpeed"] = 100_000 if t < 450 else "100G"  # numbers, then text: a text column once mixed
    return Point(INTERFACE, {"agent_host": switch, "ifName": port, **extra_tags}, fields, T0.value + t * SECOND)


def points_at(t: int) -> list[Point]:
    points = [interface_point(t, switch, port) for switch in ("leaf02", "leaf01") for port in ("swp2", "swp1")]
    if 200 <= t < 400:
        points.append(interface_point(t, "leaf01", "swp10", zone="b"))  # a series with its own tag, then gone
    if t >= 500:
        points.append(interface_point(t, "leaf00", "swp1"))  # a series that sorts first, arriving late
    if t % 20 == 0:
        points.append(Point(INFINIBAND, {"host": "node01", "device": "mlx5_0", "port": "1"},
                            {"port_xmit_data": 4 * t, "port_rcv_data": 8 * t}, T0.value + t * SECOND))
    return points


@pytest.fixture
def store(tmp_path):
    with EmbeddedStore(tmp_path / "store.db", retention=None) as store:
        yield store


def assert_same_frames(got: dict[str, pd.DataFrame], store: EmbeddedStore, start: pd.Timestamp,
                       end: pd.Timestamp) -> None:
    want = read_frames(store, start, end)
    assert sorted(got) == sorted(want)
    for measurement, frame in want.items():
        pd.testing.assert_frame_equal(got[measurement], frame, check_exact=True)


def test_each_step_gives_the_frames_of_one_read(store):
    window = SlidingFrames(store, reread=timedelta(seconds=30), chunk=timedelta(seconds=70))
    context = pd.Timedelta(seconds=120)
    written = -10
    # Steps of varying length, some shorter than the interval; the window's start moves with its end.
    for end_s in [*range(40, 200, 10), 205, 207, 230, *range(250, 700, 20)]:
        for t in range(written + 10, end_s + 1, 10):
            store.write(points_at(t))
        written = end_s - end_s % 10
        end = T0 + pd.Timedelta(seconds=end_s)
        assert_same_frames(window.read(end - context, end), store, end - context, end)


def test_a_late_sample_within_reread_joins_the_window(store):
    window = SlidingFrames(store, reread=timedelta(seconds=60))
    for t in range(0, 200, 10):
        store.write([p for p in points_at(t) if p.tags.get("agent_host") != "leaf02" or t < 150])
    start, end = T0, T0 + pd.Timedelta(seconds=190)
    window.read(start, end)
    # leaf02's last polls arrive late (a slow poller): 40 s after the window's end, inside the minute reread.
    for t in range(150, 200, 10):
        store.write([p for p in points_at(t) if p.tags.get("agent_host") == "leaf02"])
    store.write(points_at(200))
    frames = window.read(start + pd.Timedelta(seconds=10), end + pd.Timedelta(seconds=10))
    assert_same_frames(frames, store, start + pd.Timedelta(seconds=10), end + pd.Timedelta(seconds=10))
    assert (frames[INTERFACE]["agent_host"] == "leaf02").sum() == 2 * 20  # 2 ports x 20 polls in [10 s, 200 s]


def test_a_window_that_does_not_follow_on_is_read_afresh(store):
    for t in range(0, 600, 10):
        store.write(points_at(t))
    window = SlidingFrames(store, chunk=timedelta(seconds=45))
    for start_s, end_s in [(300, 500), (100, 450), (100, 200), (400, 590), (590, 590)]:
        start, end = T0 + pd.Timedelta(seconds=start_s), T0 + pd.Timedelta(seconds=end_s)
        assert_same_frames(window.read(start, end), store, start, end)
    assert window.read(T0 - pd.Timedelta(hours=2), T0 - pd.Timedelta(hours=1)) == {}
    with pytest.raises(ValueError, match="before its start"):
        window.read(T0 + pd.Timedelta(seconds=10), T0)


def test_a_store_that_cannot_list_its_tags_is_refused():
    class FramesOnly:
        def read(self, measurement, start=None, end=None, fields=None, tags=None):
            return pd.DataFrame()

        def time_range(self, measurement):
            return None

    with pytest.raises(TypeError, match=r"tag_keys\(\).*FramesOnly"):
        SlidingFrames(FramesOnly())


def test_the_store_lists_tag_keys(store):
    store.write(points_at(250))
    assert store.tag_keys(INTERFACE) == ["agent_host", "ifName", "zone"]
    assert store.tag_keys("nothing") == []


def test_reads_share_their_tag_values(store):
    """The window keeps frames from hundreds of reads: each tag value is held once, not once per read."""
    store.write(points_at(0))
    store.write(points_at(10))
    first = store.read(INTERFACE, end=T0 + pd.Timedelta(seconds=5))
    second = store.read(INTERFACE, start=T0 + pd.Timedelta(seconds=5))
    assert first["ifName"].iloc[0] == second["ifName"].iloc[0]
    assert first["ifName"].iloc[0] is second["ifName"].iloc[0]
    assert first["agent_host"].iloc[0] is second["agent_host"].iloc[0]
