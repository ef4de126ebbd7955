"""The embedded store: frames like points_to_frames, overwrite semantics, retention,
readers in other processes, and no acknowledged write lost to kill -9."""

from __future__ import annotations

import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from collector.frames import points_to_frames
from collector.lineprotocol import parse
from collector.schema import Point
from collector.store import AsyncEmbeddedStore, EmbeddedStore, TimeRange

REPO = Path(__file__).resolve().parents[1]
T = 1_700_000_000_000_000_000
S = 30_000_000_000

TELEGRAF = r"""
interface,agent_host=10.0.0.1,ifIndex=3,ifName=swp1 ifHCInOctets=123i,ifDescr="Ethernet 1/1 \"uplink\"",ifOperStatus=1i 1700000000000000000
interface,agent_host=10.0.0.1,ifIndex=4,ifName=swp2 ifHCInOctets=18446744073709551615u,ifOperStatus=2i 1700000000000000000
interface,agent_host=10.0.0.1,ifIndex=3,ifName=swp1 ifHCInOctets=456i,ifOperStatus=1i 1700000030000000000
infiniband,device=mlx5_0,host=gpu01,port=1 port_xmit_data=10i,port_rcv_data=20i 1700000000000000000
infiniband,device=mlx5_0,host=gpu01,port=1 np_cnp_sent=3i,rp_cnp_handled=4i 1700000000000000000
infiniband,device=mlx5_1,host=gpu01,port=1 port_xmit_data=11i 1700000030000000000
nvidia_smi,compute_mode=Default,host=gpu01,index=0,name=NVIDIA\ H100,pstate=P0,uuid=GPU-0 driver_version="550.54.15",power_draw=612.5,utilization_gpu=97i,healthy=true 1700000000000000000
nvidia_smi,host=gpu01,index=1,name=NVIDIA\ H100,uuid=GPU-1 power_draw=99.5,utilization_gpu=3i,healthy=false 1700000000000000000
"""


@pytest.fixture
def store(tmp_path):
    with EmbeddedStore(tmp_path / "strandwatch.db") as store:
        yield store


def ib(host: str, time_ns: int, **fields) -> Point:
    return Point("infiniband", {"host": host, "device": "mlx5_0", "port": "1"}, fields, time_ns)


def test_reads_have_exactly_the_shape_of_points_to_frames(store):
    points = parse(TELEGRAF)
    assert store.write(points) == sum(len(point.fields) for point in points)
    expected = points_to_frames(points)
    assert store.measurements() == sorted(expected)
    for measurement, frame in expected.items():
        pd.testing.assert_frame_equal(store.read(measurement), frame)


def test_same_series_field_and_time_overwrites(store):
    store.write([ib("a", T, port_xmit_data=1, port_rcv_data=5)])
    store.write([ib("a", T, port_xmit_data=2)])
    store.write([ib("a", T, port_xmit_data=2)])  # redelivery changes nothing
    frame = store.read("infiniband")
    assert frame[["port_xmit_data", "port_rcv_data"]].values.tolist() == [[2.0, 5.0]]


def test_later_point_in_one_batch_wins(store):
    store.write([ib("a", T, x=1), ib("a", T, x="text"), ib("a", T, x=3)])
    assert store.read("infiniband")["x"].tolist() == [3.0]


def test_values_keep_their_types(store, tmp_path):
    store.write([ib("a", T, i=-5, f=0.5, big=(1 << 64) - 1, s="x", b=True, nan=math.nan)])
    with closing(sqlite3.connect(tmp_path / "strandwatch.db")) as connection:
        stored = dict(connection.execute(
            "SELECT fields.name, samples.value FROM samples JOIN fields ON fields.id = samples.field_id"
        ))
    assert stored == {"i": -5, "f": 0.5, "big": float((1 << 64) - 1), "s": "x", "b": 1}
    assert type(stored["i"]) is int


def test_time_range_fields_and_tags_select_what_is_read(store):
    store.write([ib(host, T + step * S, x=step, y=-step) for host in ("a", "b", "c") for step in range(10)])
    frame = store.read("infiniband", start=T + 2 * S, end=T + 5 * S, fields=["x"], tags={"host": ["a", "c"]})
    assert list(frame.columns) == ["time", "host", "device", "port", "x"]
    assert frame["host"].tolist() == ["a"] * 3 + ["c"] * 3
    assert frame["x"].tolist() == [2.0, 3.0, 4.0] * 2
    assert store.read("infiniband", tags={"host": "b"}, start=pd.Timestamp(T + 9 * S, tz="UTC"))["y"].tolist() == [-9.0]
    aware = datetime.fromtimestamp((T + 8 * S) / 1e9, tz=timezone.utc)
    assert len(store.read("infiniband", start=aware)) == 6
    assert list(store.read("infiniband", fields=["missing"]).columns) == ["time"]
    assert list(store.read("infiniband", start=T + 10 * S).columns) == ["time"]
    store.write([Point("infiniband", {"host": "d", "rack": "r1"}, {"x": 1}, T)])
    assert list(store.read("infiniband", tags={"host": "a"}).columns) == ["time", "host", "device", "port", "x", "y"]


def test_field_names_list_every_field_for_reads_by_pattern(store):
    assert store.field_names() == []
    store.write([ib("a", T, x=1, y=2), Point("ethtool", {"host": "a", "interface": "eth0"}, {"rx_prio3_pause": 5}, T)])
    assert store.field_names() == ["rx_prio3_pause", "x", "y"]


def test_unknown_measurement_reads_as_an_empty_frame(store):
    frame = store.read("nothing")
    assert list(frame.columns) == ["time"] and len(frame) == 0
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
    assert store.time_range("nothing") is None


def test_times_must_be_unambiguous(store):
    with pytest.raises(ValueError, match="has no timezone"):
        store.read("infiniband", start=datetime(2024, 1, 1))
    with pytest.raises(TypeError, match="must be nanoseconds or a timezone-aware datetime"):
        store.read("infiniband", end="2024-01-01")
    with pytest.raises(TypeError, match="collection of field names"):
        store.read("infiniband", fields="x")


def test_time_range(store):
    store.write([ib("a", T + S, x=1), ib("b", T, x=1), ib("b", T + 5 * S, x=1)])
    assert store.time_range("infiniband") == TimeRange(
        pd.Timestamp(T, unit="ns", tz="UTC"), pd.Timestamp(T + 5 * S, unit="ns", tz="UTC")
    )


def test_retention_deletes_old_samples_and_empty_series(tmp_path):
    day = 86_400 * 10**9
    with EmbeddedStore(tmp_path / "s.db", retention=timedelta(days=30)) as store:
        store.write([ib("old", T - 31 * day, x=1), ib("both", T - 31 * day, x=1), ib("both", T, x=2)])
        store.write([Point("gone", {}, {"x": 1}, T - 40 * day)])
        assert store.apply_retention(pd.Timestamp(T, unit="ns", tz="UTC")) == 3
        assert store.measurements() == ["infiniband"]
        frame = store.read("infiniband")
        assert frame[["host", "x"]].values.tolist() == [["both", 2.0]]
        store.write([ib("old", T, x=3)])  # a series deleted by retention comes back
        assert store.read("infiniband", tags={"host": "old"})["x"].tolist() == [3.0]
        assert store.apply_retention(T) == 0
    with EmbeddedStore(tmp_path / "keep.db", retention=None) as store:
        store.write([ib("a", 0, x=1)])
        assert store.apply_retention(T) == 0


def test_read_only_store_and_bad_files(tmp_path):
    path = tmp_path / "s.db"
    with pytest.raises(FileNotFoundError, match="no strandwatch store"):
        EmbeddedStore(path, read_only=True)
    with EmbeddedStore(path) as store:
        store.write([ib("a", T, x=1)])
    with EmbeddedStore(path, read_only=True) as reader:
        assert reader.read("infiniband")["x"].tolist() == [1.0]
        with pytest.raises(RuntimeError, match="read-only"):
            reader.write([ib("a", T, x=2)])
    store = EmbeddedStore(path)
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.write([ib("a", T, x=2)])

    (tmp_path / "text.db").write_text("not a database at all, just some text that is long enough" * 20)
    with pytest.raises(OSError, match="not a strandwatch store"):
        EmbeddedStore(tmp_path / "text.db")
    with closing(sqlite3.connect(tmp_path / "other.db")) as other:
        other.execute("CREATE TABLE t (x)")
    with pytest.raises(OSError, match="not a strandwatch store"):
        EmbeddedStore(tmp_path / "other.db")
    with closing(sqlite3.connect(tmp_path / "other.db")) as other:
        assert other.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # left as it was
    with closing(sqlite3.connect(path)) as newer:
        newer.execute("PRAGMA user_version = 99")
    with pytest.raises(OSError, match="schema version 99"):
        EmbeddedStore(path)
    with pytest.raises(OSError, match="schema version 99"):
        EmbeddedStore(path, read_only=True)


def test_threads_write_and_read_concurrently(store):
    def writer(host: str) -> None:
        for step in range(50):
            store.write([ib(host, T + step * S, x=step)])

    def reader() -> None:
        for _ in range(20):
            store.read("infiniband")

    threads = [threading.Thread(target=writer, args=(f"h{i}",)) for i in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.read("infiniband")) == 200


async def test_async_wrapper(tmp_path):
    store = AsyncEmbeddedStore(EmbeddedStore(tmp_path / "s.db"))
    assert await store.write(p for p in [ib("a", T, x=1)]) == 1
    assert (await store.read("infiniband", fields=["x"]))["x"].tolist() == [1.0]
    assert await store.measurements() == ["infiniband"]
    assert (await store.time_range("infiniband")).first == pd.Timestamp(T, unit="ns", tz="UTC")
    assert await store.apply_retention(T) == 0
    await store.close()


# --- other processes ------------------------------------------------------

# Writes batch after batch of BATCH points (one timestamp each) and prints each
# step once write() has returned, i.e. once the batch is acknowledged.
WRITER = """
import sys
from collector.schema import Point
from collector.store import EmbeddedStore
path, batch, steps, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
store = EmbeddedStore(path)
for step in range(first, first + steps):
    points = [
        Point("infiniband", {"host": f"gpu{h:04d}", "device": "mlx5_0", "port": "1"},
              {"port_xmit_data": step * 100_000 + h, "port_rcv_data": step}, %d + step * %d)
        for h in range(batch)
    ]
    store.write(points)
    print(step, flush=True)
""" % (T, S)


def start_writer(path: Path, batch: int, steps: int, first: int = 0) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(batch), str(steps), str(first)],
        stdout=subprocess.PIPE, text=True, env=environment,
    )


def steps_stored(frame: pd.DataFrame, batch: int) -> list[int]:
    """The steps in ``frame``, checking each is complete and holds what the writer wrote."""
    steps = []
    for time_value, rows in frame.groupby("time"):
        step = (time_value.value - T) // S
        assert len(rows) == batch, f"step {step} has {len(rows)} of {batch} points: a partial batch"
        hosts = rows["host"].str.slice(3).astype(int)
        assert (rows["port_xmit_data"] == step * 100_000 + hosts).all()
        assert (rows["port_rcv_data"] == step).all()
        steps.append(step)
    return steps


def test_another_process_reads_while_the_daemon_writes(tmp_path):
    path, batch = tmp_path / "s.db", 500
    EmbeddedStore(path).close()
    writer = start_writer(path, batch, steps=60)
    seen = []
    with EmbeddedStore(path, read_only=True) as reader:
        while writer.poll() is None:
            steps = steps_stored(reader.read("infiniband"), batch)
            assert steps == list(range(len(steps)))  # whole batches, in order, nothing missing
            seen.append(len(steps))
        assert writer.wait() == 0
        assert steps_stored(reader.read("infiniband"), batch) == list(range(60))
    assert seen == sorted(seen) and len(set(seen)) > 2, seen  # saw the data grow under the writer


def test_kill_9_loses_no_acknowledged_write(tmp_path):
    path, batch = tmp_path / "s.db", 2000
    first = 0
    delays = random.Random(9)
    for round_ in range(3):
        writer = start_writer(path, batch, steps=10_000, first=first)
        acknowledged = []
        deadline = time.monotonic() + 30
        while len(acknowledged) < 5 + 3 * round_ and time.monotonic() < deadline:
            acknowledged.append(int(writer.stdout.readline()))
        time.sleep(delays.uniform(0, 0.03))  # land anywhere in building, writing, committing
        os.kill(writer.pid, signal.SIGKILL)
        acknowledged += [int(line) for line in writer.stdout.read().split()]
        writer.wait()
        assert acknowledged, "the writer acknowledged nothing"

        with EmbeddedStore(path, read_only=True) as reader:
            steps = steps_stored(reader.read("infiniband"), batch)
        last = acknowledged[-1]
        # Every acknowledged batch is there, complete; at most the one batch
        # committed but not yet printed when the kill came is there too.
        assert steps[: last + 1] == list(range(last + 1))
        assert steps in (list(range(last + 1)), list(range(last + 2)))
        first = steps[-1] + 1
