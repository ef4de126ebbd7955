"""Runs on an existing distributed broker: a 3-node NATS cluster (MQTT 3.1.1, clustered JetStream).

The publisher connects to one node, ingest (topic shards: NATS ignores
``$share``) to another; the publisher's node is killed with SIGKILL mid-stream,
the publisher fails over to the next broker of its list, and every point
arrives in the store exactly once.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from collector.config import ConfigError, parse_config
from collector.ingest import IngestService
from collector.schema import Point
from collector.store import AsyncEmbeddedStore, EmbeddedStore
from collector.transport import MqttPublisher, MqttSettings, MqttSubscription
from nats_fixture import nats_cluster  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(90)

T0 = 1_700_000_000_000_000_000
HOSTS = ("gpu01", "gpu04")  # one on each of two shards
MESSAGES, PORTS, KILL_AFTER = 300, 10, 100


def poll(step: int, host: str) -> list[Point]:
    return [Point("infiniband", {"host": host, "device": "mlx5_0", "port": str(port)},
                  {"port_xmit_data": step * 1000 + port}, T0 + step * 10_000_000_000) for port in range(PORTS)]


def address(node) -> str:
    return f"127.0.0.1:{node.mqtt_port}"


async def test_publisher_fails_over_when_its_nats_node_is_killed_and_nothing_is_lost(nats_cluster, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="collector.transport.mqtt")
    first, second, third = nats_cluster.nodes
    store = EmbeddedStore(tmp_path / "metrics.db", retention=None)
    subscriptions, consumers = [], []
    for index in range(2):
        # The configuration path an ingest process takes: protocol 3.1.1 and a topic shard.
        config = parse_config({
            "site": "dc1",
            "mqtt": {"brokers": [address(second), address(third)], "protocol": "3.1.1",
                     "client_id": f"ingest-{index}", "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
            "ingest": {"shard": {"index": index, "count": 2, "hosts": list(HOSTS)}, "linger_s": 0.1},
        }, environ={})
        subscription = MqttSubscription(config.mqtt, config.ingest.filters(config.mqtt))
        await subscription.start()
        await subscription.wait_connected(20)
        service = IngestService(subscription, AsyncEmbeddedStore(store), linger_s=0.1)
        subscriptions.append(subscription)
        consumers.append((service, asyncio.create_task(service.run())))

    settings = MqttSettings(
        brokers=[("127.0.0.1", node.mqtt_port) for node in (first, second, third)], protocol="3.1.1",
        site="dc1", host="gpu01", spool_dir=tmp_path / "spool", timeout_s=3.0,
        reconnect_min_s=0.1, reconnect_max_s=0.5, resume_delay_s=0.5,
    )
    async with MqttPublisher(settings) as publisher:
        assert publisher.connected
        for step in range(MESSAGES):
            if step == KILL_AFTER:
                first.kill()
            host = HOSTS[step % len(HOSTS)]
            await publisher.publish(poll(step, host), host=host)
        assert await publisher.flush(30), f"{len(publisher.spool)} messages still spooled"
    connections = [record.getMessage() for record in caplog.records if "publisher connected to" in record.getMessage()]
    assert connections[0].endswith(address(first))
    assert any(message.endswith((address(second), address(third))) for message in connections[1:]), connections

    expected = MESSAGES * PORTS
    for _ in range(400):
        if sum(service.stats.points for service, _ in consumers) >= expected and len(store.read("infiniband")) >= expected:
            break
        await asyncio.sleep(0.1)
    for subscription in subscriptions:
        await subscription.close()
    for _, task in consumers:
        await task
    frame = store.read("infiniband")
    store.close()
    assert len(frame) == expected
    assert sorted(frame.port_xmit_data) == sorted(step * 1000 + port for step in range(MESSAGES) for port in range(PORTS))
    assert {service.stats.points > 0 for service, _ in consumers} == {True}, "both shards took their hosts"


def test_mqtt_3_1_1_configuration_is_checked():
    """protocol "3.1.1" has no shared subscriptions: ingest must name its topics or shard; only 5 and 3.1.1 exist."""
    with pytest.raises(ConfigError, match=r"ingest: MQTT 3.1.1 .* has no shared subscriptions"):
        parse_config({"mqtt": {"protocol": "3.1.1"}, "ingest": {"group": "g"}}, environ={})
    with pytest.raises(ConfigError, match=r"mqtt: protocol '4' is not one of 5, 3.1.1"):
        parse_config({"mqtt": {"protocol": 4}}, environ={})
    assert parse_config({"mqtt": {"protocol": 5}}, environ={}).mqtt.protocol == "5"
    collector = parse_config({"mqtt": {"protocol": "3.1.1"}}, environ={})  # a publisher needs no ingest section
    assert collector.mqtt.protocol == "3.1.1"
