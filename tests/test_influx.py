"""InfluxDB backends against Debian's influxd 1.6 and VictoriaMetrics, both on loopback ports.

The outage test stops influxd for about 3 s mid-stream (the issue's
"database stopped"; longer outages only take the same path for longer).
"""

from __future__ import annotations

import asyncio
import http.server
import threading
import time

import pandas as pd
import pytest

from collector.frames import points_to_frames
from collector.ingest import IngestService
from collector.schema import Point
from collector.store.influx import (
    AsyncInfluxWriter,
    InfluxQLReader,
    InfluxV1Writer,
    InfluxV2Writer,
    InfluxWriteError,
)
from collector.transport import MqttPublisher, MqttSettings, MqttSubscription
from service_fixtures import influxdb, mosquitto, victoria_metrics  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(90)

T0 = 1_700_000_000_000_000_000


def poll(step: int, ports: int = 10, host: str = "gpu01") -> list[Point]:
    return [
        Point("infiniband", {"host": host, "device": "mlx5_0", "port": str(port)},
              {"port_xmit_data": step * 1000 + port, "link_state": "ACTIVE" if port % 2 else "DOWN", "rate": 400.0},
              T0 + step * 10_000_000_000)
        for port in range(ports)
    ]


def test_v1_write_and_influxql_read_give_the_frames_of_the_points(influxdb, tmp_path):
    points = [point for step in range(30) for point in poll(step)]
    points.append(Point("nvidia_smi", {"host": "gpu01", "index": "0", "uuid": "GPU-1", "name": "H100 80GB"},
                        {"utilization_gpu": 97.0, "memory_used": 1234, "driver_version": 'a "quoted" 1'}, T0))
    writer = InfluxV1Writer(influxdb.url, influxdb.database, batch_points=100, spool_dir=tmp_path / "spool")
    assert writer.write(points) == len(points)
    writer.close()
    reader = InfluxQLReader(influxdb.url, influxdb.database, chunk_size=50)
    assert reader.measurements() == ["infiniband", "nvidia_smi"]
    expected = points_to_frames(points)
    for measurement in ("infiniband", "nvidia_smi"):
        pd.testing.assert_frame_equal(reader.read(measurement), expected[measurement])
    subset = reader.read("infiniband", start=T0 + 10 * 10**10, end=pd.Timestamp(T0 + 20 * 10**10, unit="ns", tz="UTC"),
                         fields=["port_xmit_data"], tags={"port": ["1", "2"]})
    assert len(subset) == 20 and list(subset.columns) == ["time", "host", "device", "port", "port_xmit_data"]
    with pytest.raises(InfluxWriteError, match="HTTP 400"):
        InfluxV1Writer(influxdb.url, influxdb.database, max_retries=0).write(
            [Point("infiniband", {"host": "gpu01", "device": "mlx5_0", "port": "0"}, {"rate": "text now"}, T0)])


async def test_database_stopped_mid_stream_spools_and_replays(influxdb, mosquitto, tmp_path):
    """Publisher -> Mosquitto -> ingest -> InfluxDB; influxd stops for ~3 s; every point arrives once."""
    writer = InfluxV1Writer(influxdb.url, influxdb.database, max_retries=1, retry_min_s=0.05, timeout_s=2,
                            spool_dir=tmp_path / "influx-spool")
    mqtt = dict(brokers=[mosquitto.address], site="dc1", host="gpu01", spool_dir=tmp_path / "spool",
                reconnect_min_s=0.1, reconnect_max_s=0.5)
    subscription = MqttSubscription(MqttSettings(**mqtt, client_id="ingest-influx"), ["$share/i/strandwatch/v1/#"])
    await subscription.start()
    await subscription.wait_connected()
    service = IngestService(subscription, AsyncInfluxWriter(writer), batch_messages=10, linger_s=0.05)
    consuming = asyncio.create_task(service.run())
    steps = 200
    async with MqttPublisher(MqttSettings(**mqtt)) as publisher:
        for step in range(steps):
            if step == 60:
                await asyncio.to_thread(influxdb.stop)
            if step == 140:
                await asyncio.to_thread(influxdb.start)
            await publisher.publish(poll(step))
            await asyncio.sleep(0.02)
    for _ in range(200):
        if service.stats.points == steps * 10:
            break
        await asyncio.sleep(0.05)
    await subscription.close()
    await consuming
    assert writer.spooled > 0, "the outage never reached the writer"
    assert await AsyncInfluxWriter(writer).flush()
    assert influxdb.count("infiniband", "port_xmit_data") == steps * 10
    frame = InfluxQLReader(influxdb.url, influxdb.database).read("infiniband", fields=["port_xmit_data"])
    assert sorted(frame.port_xmit_data) == sorted(step * 1000 + port for step in range(steps) for port in range(10))


def test_v2_writes_through_influxdb_client_reach_victoria_metrics(victoria_metrics, tmp_path):
    writer = InfluxV2Writer(victoria_metrics.url, org="site", bucket="strandwatch", token="unused",
                            batch_points=7, spool_dir=tmp_path / "spool")
    points = [point for step in range(20) for point in poll(step, ports=4)]
    assert writer.write(points) == len(points)
    writer.close()
    exported = victoria_metrics.export('{__name__="infiniband_port_xmit_data"}')
    samples = {(series["metric"]["port"], timestamp): value
               for series in exported for timestamp, value in zip(series["timestamps"], series["values"])}
    assert len(samples) == 80
    assert samples[("3", (T0 + 5 * 10**10) // 10**6)] == 5003


class _Throttling(http.server.BaseHTTPRequestHandler):
    """A /write endpoint that answers 429 with Retry-After: 1 to the first request, then 204."""

    requests: list[float] = []

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.requests.append(time.monotonic())
        if len(self.requests) == 1:
            self.send_response(429)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
        else:
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_retry_after_is_honoured(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Throttling)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        writer = InfluxV1Writer(f"http://127.0.0.1:{server.server_address[1]}", "db", retry_min_s=0.01,
                                spool_dir=tmp_path / "spool")
        writer.write(poll(0))
    finally:
        server.shutdown()
    first, second = _Throttling.requests
    assert 0.95 <= second - first < 2.0
    assert writer.written == 10 and writer.spooled == 0
