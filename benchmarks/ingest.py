"""Points per second through the whole transport, next to a raw write into the same InfluxDB.

One run starts Debian's Mosquitto and influxd 1.x on loopback ports (their
own configuration and data in a temporary directory) and measures, on the
same database server:

- ``raw``: pre-encoded line protocol POSTed to ``/write`` in batches of
  ``--write-batch`` points from one client (gzip off), the database's own
  ceiling for one writer;
- ``pipeline``: this process publishes ``--points`` points in messages of
  ``--message-points`` (one envelope per source poll, QoS 1, waiting for each
  PUBACK) through Mosquitto; one ingest process (``python -m
  strandwatch ingest``, its own process as in production) takes them from a
  shared subscription, writes them with the InfluxDB v1 writer and
  acknowledges after each write. Timed from the first publish until InfluxDB
  holds every point: it is polled every 0.1 s for the last message's points
  (cheap: one host's series), then counts everything once to confirm.

Both include encoding the points (the raw path encodes before the clock
starts: it is the bound). Prints a table, or JSON with ``--json``.
Run from the repository root: ``.venv/bin/python benchmarks/ingest.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from collector.lineprotocol import encode  # noqa: E402
from collector.schema import Point  # noqa: E402
from collector.transport import MqttPublisher, MqttSettings  # noqa: E402
from service_fixtures import InfluxDB1, Mosquitto  # noqa: E402

T0 = 1_700_000_000_000_000_000


def make_polls(total: int, per_message: int, measurement: str) -> list[tuple[str, list[Point]]]:
    """(host, batch) per message: ``per_message`` ports of one host per poll, realistic infiniband fields."""
    polls = []
    hosts = 64
    step = 0
    while len(polls) * per_message < total:
        host = f"gpu{len(polls) % hosts:03d}"
        if len(polls) % hosts == 0:
            step += 1
        batch = [
            Point(measurement, {"host": host, "device": f"mlx5_{port // 8}", "port": str(port % 8 + 1)},
                  {"port_xmit_data": step * 1_000_003 + port, "port_rcv_data": step * 999_983 + port,
                   "port_xmit_wait": step * 7, "np_cnp_sent": step, "symbol_error": 0, "rate": 400.0},
                  T0 + step * 10_000_000_000)
            for port in range(per_message)
        ]
        polls.append((host, batch))
    return polls


def _count(influx: InfluxDB1, statement: str, database: str) -> int:
    result = influx.query(statement, database=database)["results"][0]
    if "error" in result:
        raise RuntimeError(f"InfluxDB: {result['error']}")
    series = result.get("series")
    return series[0]["values"][0][1] if series else 0


def raw_write(influx: InfluxDB1, database: str, points: list[Point], batch: int) -> float:
    bodies = [encode(points[start : start + batch]).encode() for start in range(0, len(points), batch)]
    connection = http.client.HTTPConnection("127.0.0.1", influx.port, timeout=60)
    started = time.perf_counter()
    for body in bodies:
        connection.request("POST", f"/write?db={database}&precision=ns", body=body,
                           headers={"Content-Type": "text/plain"})
        response = connection.getresponse()
        response.read()
        if response.status != 204:
            raise RuntimeError(f"raw write failed: HTTP {response.status}")
    return time.perf_counter() - started


async def pipeline(mosquitto: Mosquitto, influx: InfluxDB1, database: str, polls, total_points: int,
                   directory: Path, ingest_batch: int) -> tuple[float, float]:
    config = directory / "strandwatch.yaml"
    config.write_text(
        f"""site: bench
mqtt:
  brokers: ["127.0.0.1:{mosquitto.port}"]
  client_id: bench-ingest
  receive_maximum: 1024
ingest:
  group: bench
  batch_points: {ingest_batch}
  batch_messages: 512
  linger_s: 0.1
store:
  backend: influxdb_v1
  influx:
    url: {influx.url}
    database: {database}
    gzip: false
    batch_points: {ingest_batch}
    spool_path: {directory / "influx-spool"}
"""
    )
    log = directory / "ingest.log"
    ingest = subprocess.Popen(
        [sys.executable, "-m", "detector.cli", "--log-level", "INFO", "ingest", "--config", str(config)], cwd=REPO,
        stdout=open(log, "wb"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 20
        while "subscribed" not in log.read_text():
            if time.monotonic() > deadline or ingest.poll() is not None:
                raise RuntimeError(f"ingest did not start: {log.read_text()[-2000:]}")
            await asyncio.sleep(0.05)
        settings = MqttSettings(brokers=[mosquitto.address], site="bench", host="bench",
                                spool_dir=directory / "mqtt-spool")
        last_host, last_batch = polls[-1]
        last_poll = (f'SELECT count("port_xmit_data") FROM "pipeline" '
                     f"WHERE \"host\" = '{last_host}' AND time >= {last_batch[0].time_ns}")
        async with MqttPublisher(settings) as publisher:
            started = time.perf_counter()
            for host, batch in polls:
                await publisher.publish(batch, source="rdma", host=host)
            published = time.perf_counter() - started
        # One publisher, one ingest process writing in arrival order: the last message lands last. Waiting
        # for it costs influxd little (one host's series); a count of everything every second took
        # about a third of its CPU. The full count then confirms every point; the clock runs on while
        # one is missing.
        while _count(influx, last_poll, database) < len(last_batch):
            if ingest.poll() is not None:
                raise RuntimeError(f"ingest died: {log.read_text()[-2000:]}")
            await asyncio.sleep(0.1)
        finished = time.perf_counter()
        if influx.count("pipeline", "port_xmit_data", database=database) < total_points:
            while influx.count("pipeline", "port_xmit_data", database=database) < total_points:
                if ingest.poll() is not None:
                    raise RuntimeError(f"ingest died: {log.read_text()[-2000:]}")
                await asyncio.sleep(0.5)
            finished = time.perf_counter()
        return published, finished - started
    finally:
        ingest.send_signal(signal.SIGTERM)
        ingest.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=400_000)
    parser.add_argument("--message-points", type=int, default=500, help="points per MQTT message (one poll)")
    parser.add_argument("--write-batch", type=int, default=5000, help="points per InfluxDB write")
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="strandwatch-bench-") as temporary:
        directory = Path(temporary)
        mosquitto = Mosquitto(directory / "mosquitto")
        influx = InfluxDB1(directory / "influxdb")
        mosquitto.start()
        influx.start(timeout=30)
        try:
            for database in ("raw", "pipeline"):
                influx.query(f'CREATE DATABASE "{database}"', database=database)
            raw_polls = make_polls(arguments.points, arguments.message_points, "raw")
            raw_points = [point for _, batch in raw_polls for point in batch]
            raw_s = raw_write(influx, "raw", raw_points, arguments.write_batch)
            polls = make_polls(arguments.points, arguments.message_points, "pipeline")
            total = sum(len(batch) for _, batch in polls)
            published_s, pipeline_s = asyncio.run(
                pipeline(mosquitto, influx, "pipeline", polls, total, directory, arguments.write_batch))
            stored = influx.count("pipeline", "port_xmit_data", database="pipeline")
        finally:
            influx.stop()
            mosquitto.stop()
    result = {
        "points": total,
        "message_points": arguments.message_points,
        "raw_points_per_s": round(len(raw_points) / raw_s),
        "pipeline_points_per_s": round(total / pipeline_s),
        "publish_points_per_s": round(total / published_s),
        "ratio": round((total / pipeline_s) / (len(raw_points) / raw_s), 3),
        "stored": stored,
        "cpus": os.cpu_count(),
    }
    if arguments.json:
        print(json.dumps(result))
        return
    print(f"{'path':<34}{'points/s':>12}")
    print(f"{'raw /write (one client)':<34}{result['raw_points_per_s']:>12,}")
    print(f"{'publish only (to Mosquitto)':<34}{result['publish_points_per_s']:>12,}")
    print(f"{'publisher -> MQTT -> ingest -> DB':<34}{result['pipeline_points_per_s']:>12,}")
    print(f"pipeline / raw = {result['ratio']:.2f}  ({total:,} points, {arguments.message_points} per message, "
          f"{result['stored']:,} stored, {result['cpus']} CPUs)")


if __name__ == "__main__":
    main()
