"""The service configuration: the sample loads, every error names the key, secrets come from the environment."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from collector.config import ConfigError, load_config, parse_config
from service_fixtures import make_certs

SAMPLE = Path(__file__).resolve().parent.parent / "collector" / "strandwatch.sample.yaml"


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """A CA with a client certificate ``node07``, and ``other/``: a second CA with its own ``node07``."""
    directory = make_certs(tmp_path_factory.mktemp("certs"), "node07")
    make_certs(directory / "other", "node07")
    return directory


def test_sample_loads_with_documented_defaults(certs):
    config = load_config(SAMPLE, environ={})
    assert config.site == "default"
    assert list(config.mqtt.brokers) == [("127.0.0.1", 1883)]
    assert config.mqtt.spool_max_bytes == 256 * 1024 * 1024
    assert config.ingest.filters(config.mqtt) == ["$share/strandwatch-ingest/strandwatch/v1/#"]
    assert config.store.backend == "embedded" and config.store.retention == timedelta(days=30)
    assert [(r.resolution, r.retention) for r in config.store.rollups] == [
        (timedelta(minutes=1), timedelta(days=90)), (timedelta(hours=1), timedelta(days=730))]
    # Every commented-out key of the sample is a real key too.
    uncommented = re.sub(r"(?m)^(\s+)# ( *)([a-z_]+:.*)$", r"\1\2\3", SAMPLE.read_text())
    document = yaml.safe_load(uncommented.replace("ca_file: /etc/strandwatch/ca.pem", f"ca_file: {certs / 'ca.crt'}")
                              .replace("cert_file: /etc/strandwatch/client.pem", f"cert_file: {certs / 'node07.crt'}")
                              .replace("key_file: /etc/strandwatch/client.key", f"key_file: {certs / 'node07.key'}"))
    document["mqtt"]["tls"].pop("key_password")  # the test key has none
    document["store"]["backend"] = "influxdb_v2"
    document["ingest"].pop("topics")
    config = parse_config(document, environ={"STRANDWATCH_INFLUX_TOKEN": "t"})
    assert config.store.influx.org == "my-org" and config.mqtt.tls.cert_file == str(certs / "node07.crt")
    assert config.ingest.shard_count == 3


@pytest.mark.parametrize(
    "document, message",
    [
        ({"mqtt": {"brokers": ["nohost"]}}, "mqtt.brokers[0]: expected 'host:port'"),
        ({"mqtt": {"brokers": ["a:99999"]}}, "mqtt.brokers[0]: expected 'host:port' with a port 1-65535"),
        ({"mqtt": {"keepalive_s": "often"}}, "mqtt.keepalive_s: expected an integer, got 'often'"),
        ({"mqtt": {"spool": {"max_mb": 0}}}, "mqtt.spool.max_mb: 0 is below the minimum 1"),
        ({"mqtt": {"tls": {"ca_file": "/nonexistent/ca.pem"}}}, "mqtt.tls.ca_file: file /nonexistent/ca.pem does not exist"),
        ({"mqtt": {"brokr": 1}}, "mqtt.brokr: unknown key"),
        ({"ingest": {"shard": {"index": 3, "count": 3, "hosts": ["a"]}}}, "ingest.shard.index: 3 must be below count 3"),
        ({"ingest": {"linger_s": -1}}, "ingest.linger_s: -1 is below the minimum 0.0"),
        ({"store": {"backend": "mysql"}}, "store.backend: 'mysql' is not one of embedded, influxdb_v1, influxdb_v2"),
        ({"store": {"backend": "influxdb_v1"}}, "store.influx.url: missing"),
        ({"store": {"backend": "influxdb_v2", "influx": {"url": "http://db:8086", "org": "o", "bucket": "b"}}},
         "store.influx.token: missing; store.backend influxdb_v2 needs org, bucket and token (or set STRANDWATCH_INFLUX_TOKEN)"),
        ({"store": {"rollups": [{"resolution": "fortnight"}]}}, "store.rollups[0].resolution: expected a duration"),
        ({"store": {"influx": {"url": "db:8086"}}}, "store.influx.url: 'db:8086' is not an http:// or https:// URL"),
        ({"mqtt": []}, "mqtt: expected a mapping of keys, got list"),
        ({"site": "a", "stie": "b"}, "stie: unknown key"),
    ],
)
def test_errors_name_the_file_the_key_and_the_problem(document, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(document, source="/etc/strandwatch/strandwatch.yaml", environ={})
    assert str(caught.value).startswith("/etc/strandwatch/strandwatch.yaml: ")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "tls, message",
    [
        ({"cert_file": "node07.crt"}, "mqtt.tls.key_file: a client certificate needs both cert_file and key_file"),
        ({"key_file": "node07.key"}, "mqtt.tls.cert_file: a client certificate needs both cert_file and key_file"),
        ({"cert_file": "node07.crt", "key_file": "absent.key"}, "mqtt.tls.key_file: file {certs}/absent.key does not exist"),
        ({"cert_file": "node07.crt", "key_file": "other/node07.key"},
         "mqtt.tls.cert_file: {certs}/node07.crt with key_file {certs}/other/node07.key: cannot load the client "
         "certificate and its key ([X509: KEY_VALUES_MISMATCH]"),
        ({"cert_file": "ca.key", "key_file": "ca.key"}, "mqtt.tls.cert_file: {certs}/ca.key with key_file"),
        ({"ca_file": "node07.key"}, "mqtt.tls.ca_file: {certs}/node07.key is not a readable PEM CA certificate"),
    ],
)
def test_tls_files_that_cannot_be_used_are_named(certs, tls, message):
    document = {"mqtt": {"tls": {key: str(certs / name) for key, name in tls.items()}}}
    with pytest.raises(ConfigError) as caught:
        parse_config(document, source="strandwatch.yaml", environ={})
    assert message.format(certs=certs) in str(caught.value)


def test_environment_overrides_secrets():
    document = {"mqtt": {"password": "in-file"},
                "store": {"backend": "influxdb_v2", "influx": {"url": "http://db:8086", "org": "o", "bucket": "b"}}}
    config = parse_config(document, environ={"STRANDWATCH_MQTT_PASSWORD": "from-env", "STRANDWATCH_INFLUX_TOKEN": "t0k"})
    assert config.mqtt.password == "from-env"
    assert config.store.influx.token == "t0k"


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read configuration .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("mqtt: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(broken)
