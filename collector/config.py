"""The one configuration file of the strandwatch service (``strandwatch.yaml``), validated on load.

Every key is documented in ``collector/strandwatch.sample.yaml``. Loading
checks types, ranges and unknown keys and raises ``ConfigError`` naming the
file, the key (``mqtt.brokers[1]``) and the problem, so a typo fails at
start-up rather than at 3 a.m.

Secrets need not be in the file: these environment variables override it.

=============================== ==========================
``STRANDWATCH_MQTT_USERNAME``   ``mqtt.username``
``STRANDWATCH_MQTT_PASSWORD``   ``mqtt.password``
``STRANDWATCH_MQTT_KEY_PASSWORD`` ``mqtt.tls.key_password``
``STRANDWATCH_INFLUX_USERNAME`` ``store.influx.username``
``STRANDWATCH_INFLUX_PASSWORD`` ``store.influx.password``
``STRANDWATCH_INFLUX_TOKEN``    ``store.influx.token``
=============================== ==========================
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from collector.agent import AgentConfig, AgentConfigError
from collector.agent import parse_config as parse_agent_config
from collector.sources.snmp.config import SnmpConfig, SnmpConfigError
from collector.sources.snmp.config import parse_config as parse_snmp_config
from collector.transport.mqtt import MqttSettings, TlsFileError, TlsSettings, shard_filters

__all__ = [
    "ConfigError",
    "DetectorConfig",
    "IngestConfig",
    "InfluxConfig",
    "RollupConfig",
    "ServiceConfig",
    "StoreConfig",
    "load_config",
    "open_writer",
    "parse_config",
    "read_service_document",
]

ENVIRONMENT_OVERRIDES = {
    "STRANDWATCH_MQTT_USERNAME": ("mqtt", "username"),
    "STRANDWATCH_MQTT_PASSWORD": ("mqtt", "password"),
    "STRANDWATCH_MQTT_KEY_PASSWORD": ("mqtt", "tls", "key_password"),
    "STRANDWATCH_INFLUX_USERNAME": ("store", "influx", "username"),
    "STRANDWATCH_INFLUX_PASSWORD": ("store", "influx", "password"),
    "STRANDWATCH_INFLUX_TOKEN": ("store", "influx", "token"),
}

BACKENDS = ("embedded", "influxdb_v1", "influxdb_v2")


class ConfigError(ValueError):
    """A configuration problem; the message names the file, the key and what is wrong."""


@dataclass(frozen=True)
class IngestConfig:
    group: str = "strandwatch-ingest"
    topics: tuple[str, ...] = ()
    """Explicit topic filters (topic shards); empty means the shared subscription of ``group``."""
    shard_index: int | None = None
    shard_count: int | None = None
    shard_hosts: tuple[str, ...] = ()
    batch_points: int = 50_000
    batch_messages: int = 128
    linger_s: float = 0.25

    def filters(self, mqtt: MqttSettings) -> list[str]:
        """The topic filters this ingest process subscribes to."""
        if self.topics:
            return list(self.topics)
        if self.shard_count:
            return shard_filters(self.shard_hosts, self.shard_index or 0, self.shard_count, prefix=mqtt.topic_prefix)
        return [f"$share/{self.group}/{mqtt.all_topics()}"]


@dataclass(frozen=True)
class InfluxConfig:
    url: str
    database: str = "strandwatch"
    """InfluxDB 1.x database (also the InfluxQL database name on 2.x/3.x through a DBRP mapping)."""
    retention_policy: str | None = None
    username: str | None = None
    password: str | None = None
    org: str | None = None
    bucket: str | None = None
    token: str | None = None
    gzip: bool = True
    batch_points: int = 5000
    timeout_s: float = 10.0
    max_retries: int = 5
    spool_dir: Path = Path("/var/lib/strandwatch/spool/influx")
    spool_max_bytes: int = 1024 * 1024 * 1024


@dataclass(frozen=True)
class RollupConfig:
    resolution: timedelta
    retention: timedelta | None


@dataclass(frozen=True)
class StoreConfig:
    backend: str = "embedded"
    path: Path = Path("/var/lib/strandwatch/metrics.db")
    retention: timedelta | None = timedelta(days=30)
    rollups: tuple[RollupConfig, ...] = ()
    influx: InfluxConfig | None = None


@dataclass(frozen=True)
class DetectorConfig:
    """The streaming detector of ``strandwatch run`` and ``strandwatch detect --follow``."""

    topology: Path
    jobs: Path
    interval_s: float = 60.0
    state_path: Path = Path("/var/lib/strandwatch/detector-state.json")
    price_per_gpu_hour: float | None = None
    price_per_kwh: float | None = None


@dataclass(frozen=True)
class ServiceConfig:
    site: str
    mqtt: MqttSettings
    ingest: IngestConfig
    store: StoreConfig
    source: str = "<config>"
    interval_s: float = 10.0
    """How often the pollers of ``run`` and ``collect`` poll."""
    snmp: SnmpConfig | None = None
    agent: AgentConfig | None = None
    detector: DetectorConfig | None = None
    health_address: tuple[str, int] = ("127.0.0.1", 9464)


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> ServiceConfig:
    """Read and validate the configuration file at ``path`` (environment overrides from ``environ``)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read configuration {path}: {error.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return parse_config(document if document is not None else {}, source=str(path), environ=environ)


SERVICE_ONLY_KEYS = ("site", "mqtt", "ingest", "store", "snmp", "agent", "detector", "health_address")
"""Top-level keys that only a service configuration has (not a plain SNMP or agent file)."""


def read_service_document(path: str | Path) -> dict | None:
    """The YAML mapping in ``path`` when it is a service configuration, else None.

    ``collect snmp`` and ``agent`` take either a service configuration (with
    ``mqtt:`` and their ``snmp:`` or ``agent:`` section) or their plain
    source file; a top-level key of SERVICE_ONLY_KEYS tells them apart.
    """
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read configuration {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if isinstance(document, dict) and any(key in document for key in SERVICE_ONLY_KEYS):
        return document
    return None


def parse_config(document: object, *, source: str = "<config>", environ: Mapping[str, str] | None = None) -> ServiceConfig:
    """Validate an already parsed configuration document (see ``load_config``)."""
    environ = os.environ if environ is None else environ
    root = _Section(document, source, "")
    for variable, key_path in ENVIRONMENT_OVERRIDES.items():
        if environ.get(variable):
            root.override(key_path, environ[variable])
    site = root.text("site", "default")
    mqtt = _mqtt(root.section("mqtt"), site)
    ingest = _ingest(root.section("ingest"))
    if mqtt.protocol == "3.1.1" and not ingest.topics and not ingest.shard_count and "ingest" in root.document:
        raise ConfigError(f"{source}: ingest: MQTT 3.1.1 (mqtt.protocol) has no shared subscriptions: "
                          "give ingest.shard or ingest.topics")
    store = _store(root.section("store"))
    interval_s = root.number("interval_s", 10.0, minimum=0.1)
    base_dir = Path(source).parent if source != "<config>" else Path(".")
    snmp = _snmp(root, source, base_dir)
    agent = _agent(root, source)
    detector = _detector(root.section("detector"))
    health_address = _address(root, "health_address", "127.0.0.1:9464")
    root.finish()
    return ServiceConfig(site, mqtt, ingest, store, source, interval_s, snmp, agent, detector, health_address)


def _snmp(root: _Section, source: str, base_dir: Path) -> SnmpConfig | None:
    document = root._get("snmp")
    if document is _MISSING:
        return None
    try:
        return parse_snmp_config(document, source=f"{source}: snmp", base_dir=base_dir)
    except SnmpConfigError as error:
        raise ConfigError(str(error)) from None


def _agent(root: _Section, source: str) -> AgentConfig | None:
    document = root._get("agent")
    if document is _MISSING:
        return None
    try:
        return parse_agent_config(document, origin=f"{source}: agent")
    except AgentConfigError as error:
        raise ConfigError(str(error)) from None


def _detector(section: _Section) -> DetectorConfig | None:
    if not section.present:
        return None
    topology = section.path("topology", None, must_exist=True)
    jobs = section.path("jobs", None, must_exist=True)
    for key, value in (("topology", topology), ("jobs", jobs)):
        if value is None:
            raise section.error(key, "missing; the detector needs the topology file and the jobs file")
    config = DetectorConfig(
        topology=Path(topology), jobs=Path(jobs),
        interval_s=section.number("interval_s", 60.0, minimum=1.0),
        state_path=Path(section.text("state_path", "/var/lib/strandwatch/detector-state.json")),
        price_per_gpu_hour=section.number("price_per_gpu_hour", None, minimum=0.0),
        price_per_kwh=section.number("price_per_kwh", None, minimum=0.0),
    )
    section.finish()
    return config


def _address(root: _Section, key: str, default: str) -> tuple[str, int]:
    text = root.text(key, default)
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise root.error(key, f"expected host:port such as 127.0.0.1:9464, got {text!r}")
    return host.strip("[]"), int(port)


def _mqtt(section: _Section, site: str) -> MqttSettings:
    brokers = []
    for position, address in enumerate(section.list("brokers", ["127.0.0.1:1883"])):
        key = f"brokers[{position}]"
        if not isinstance(address, str) or ":" not in address:
            raise section.error(key, f"expected 'host:port', got {address!r}")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise section.error(key, f"expected 'host:port' with a port 1-65535, got {address!r}")
        brokers.append((host.strip("[]"), int(port)))
    tls = None
    tls_section = section.section("tls")
    if tls_section.present:
        tls = TlsSettings(
            ca_file=tls_section.path("ca_file", None, must_exist=True),
            cert_file=tls_section.path("cert_file", None, must_exist=True),
            key_file=tls_section.path("key_file", None, must_exist=True),
            key_password=tls_section.text("key_password", None),
            insecure=tls_section.boolean("insecure", False),
        )
        tls_section.finish()
        try:
            tls.context()  # the files load: a wrong key or password is refused now, not at every reconnection
        except TlsFileError as error:
            raise tls_section.error(error.key, error.problem) from None
    spool = section.section("spool")
    settings = dict(
        brokers=brokers,
        site=site,
        host=section.text("host", socket.gethostname()),
        client_id=section.text("client_id", None),
        username=section.text("username", None),
        password=section.text("password", None),
        tls=tls,
        topic_prefix=section.text("topic_prefix", "strandwatch/v1"),
        keepalive_s=section.integer("keepalive_s", 30, minimum=5),
        timeout_s=section.number("timeout_s", 10.0, minimum=0.1),
        reconnect_min_s=section.number("reconnect_min_s", 0.2, minimum=0.01),
        reconnect_max_s=section.number("reconnect_max_s", 30.0, minimum=0.01),
        resume_delay_s=section.number("resume_delay_s", 2.0, minimum=0.0),
        session_expiry_s=section.integer("session_expiry_s", 7 * 24 * 3600, minimum=0),
        receive_maximum=section.integer("receive_maximum", 256, minimum=1, maximum=65535),
        max_message_bytes=section.integer("max_message_mb", 8, minimum=1) * 1024 * 1024,
        protocol=section.text("protocol", "5"),
        spool_dir=Path(spool.text("path", "/var/lib/strandwatch/spool/mqtt")),
        spool_max_bytes=spool.integer("max_mb", 256, minimum=1) * 1024 * 1024,
    )
    spool.finish()
    section.finish()
    try:
        return MqttSettings(**settings)
    except ValueError as error:
        raise section.error("", str(error).removeprefix("mqtt: ")) from None


def _ingest(section: _Section) -> IngestConfig:
    shard = section.section("shard")
    shard_count = shard.integer("count", None, minimum=1)
    shard_index = shard.integer("index", None, minimum=0)
    shard_hosts = tuple(shard.list("hosts", []))
    if shard.present:
        if shard_count is None or shard_index is None:
            raise shard.error("count" if shard_count is None else "index", "a shard needs both index and count")
        if shard_index >= shard_count:
            raise shard.error("index", f"{shard_index} must be below count {shard_count}")
        if not shard_hosts:
            raise shard.error("hosts", "a shard needs the list of all hosts to split")
    shard.finish()
    config = IngestConfig(
        group=section.text("group", "strandwatch-ingest"),
        topics=tuple(section.list("topics", [])),
        shard_index=shard_index,
        shard_count=shard_count,
        shard_hosts=shard_hosts,
        batch_points=section.integer("batch_points", 50_000, minimum=1),
        batch_messages=section.integer("batch_messages", 128, minimum=1),
        linger_s=section.number("linger_s", 0.25, minimum=0.0),
    )
    section.finish()
    return config


def _store(section: _Section) -> StoreConfig:
    backend = section.text("backend", "embedded")
    if backend not in BACKENDS:
        raise section.error("backend", f"{backend!r} is not one of {', '.join(BACKENDS)}")
    retention_days = section.number("retention_days", 30.0, minimum=0.0)
    rollups = []
    for position, rollup in enumerate(section.list("rollups", [])):
        item = _Section(rollup, section.source, f"{section.prefix}rollups[{position}].")
        resolution = item.duration("resolution", None)
        if resolution is None:
            raise item.error("resolution", "missing; e.g. 1m or 1h")
        days = item.number("retention_days", 0.0, minimum=0.0)
        item.finish()
        rollups.append(RollupConfig(resolution, timedelta(days=days) if days else None))
    influx_section = section.section("influx")
    influx = None
    if backend != "embedded" or influx_section.present:
        influx = _influx(influx_section, backend)
    influx_section.finish()
    config = StoreConfig(
        backend=backend,
        path=Path(section.text("path", "/var/lib/strandwatch/metrics.db")),
        retention=timedelta(days=retention_days) if retention_days else None,
        rollups=tuple(rollups),
        influx=influx,
    )
    section.finish()
    return config


def _influx(section: _Section, backend: str) -> InfluxConfig:
    url = section.text("url", None)
    if not url:
        raise section.error("url", f"missing; store.backend {backend} needs the database URL")
    if not url.startswith(("http://", "https://")):
        raise section.error("url", f"{url!r} is not an http:// or https:// URL")
    config = InfluxConfig(
        url=url.rstrip("/"),
        database=section.text("database", "strandwatch"),
        retention_policy=section.text("retention_policy", None),
        username=section.text("username", None),
        password=section.text("password", None),
        org=section.text("org", None),
        bucket=section.text("bucket", None),
        token=section.text("token", None),
        gzip=section.boolean("gzip", True),
        batch_points=section.integer("batch_points", 5000, minimum=1),
        timeout_s=section.number("timeout_s", 10.0, minimum=0.1),
        max_retries=section.integer("max_retries", 5, minimum=0),
        spool_dir=Path(section.text("spool_path", "/var/lib/strandwatch/spool/influx")),
        spool_max_bytes=section.integer("spool_max_mb", 1024, minimum=1) * 1024 * 1024,
    )
    if backend == "influxdb_v2":
        for key in ("org", "bucket", "token"):
            if not getattr(config, key):
                hint = " (or set STRANDWATCH_INFLUX_TOKEN)" if key == "token" else ""
                raise section.error(key, f"missing; store.backend influxdb_v2 needs org, bucket and token{hint}")
    return config


def open_writer(store: StoreConfig):
    """The asynchronous point writer for ``store``: what the ingest service writes to."""
    if store.backend == "embedded":
        from collector.store import AsyncEmbeddedStore, EmbeddedStore

        return AsyncEmbeddedStore(EmbeddedStore(store.path, retention=store.retention))
    from collector.store.influx import AsyncInfluxWriter, InfluxV1Writer, InfluxV2Writer

    influx = store.influx
    assert influx is not None
    if store.backend == "influxdb_v1":
        writer = InfluxV1Writer(
            influx.url, influx.database, username=influx.username, password=influx.password,
            retention_policy=influx.retention_policy, gzip=influx.gzip, batch_points=influx.batch_points,
            timeout_s=influx.timeout_s, max_retries=influx.max_retries,
            spool_dir=influx.spool_dir, spool_max_bytes=influx.spool_max_bytes,
        )
    else:
        writer = InfluxV2Writer(
            influx.url, org=influx.org, bucket=influx.bucket, token=influx.token, gzip=influx.gzip,
            batch_points=influx.batch_points, timeout_s=influx.timeout_s, max_retries=influx.max_retries,
            spool_dir=influx.spool_dir, spool_max_bytes=influx.spool_max_bytes,
        )
    return AsyncInfluxWriter(writer)


_MISSING = object()


class _Section:
    """One mapping of the document; reads keys with checks and remembers which were read."""

    def __init__(self, document: object, source: str, prefix: str) -> None:
        self.source = source
        self.prefix = prefix
        self.present = document is not None
        if document is None:
            document = {}
        if not isinstance(document, dict):
            where = prefix.rstrip(".") or "the top level"
            raise ConfigError(f"{source}: {where}: expected a mapping of keys, got {type(document).__name__}")
        self.document = dict(document)
        self.used: set[str] = set()

    def error(self, key: str, problem: str) -> ConfigError:
        name = f"{self.prefix}{key}".rstrip(".") or "the top level"
        return ConfigError(f"{self.source}: {name}: {problem}")

    def override(self, key_path: Sequence[str], value: str) -> None:
        document = self.document
        for key in key_path[:-1]:
            child = document.get(key)
            if not isinstance(child, dict):
                child = document[key] = {} if child is None else child
            document = child
        document[key_path[-1]] = value

    def _get(self, key: str) -> object:
        self.used.add(key)
        value = self.document.get(key, _MISSING)
        return _MISSING if value is None else value

    def section(self, key: str) -> _Section:
        value = self._get(key)
        return _Section(None if value is _MISSING else value, self.source, f"{self.prefix}{key}.")

    def text(self, key: str, default: Any) -> Any:
        value = self._get(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.error(key, f"expected text, got {type(value).__name__} {value!r}")
        return str(value)

    def path(self, key: str, default: Any, *, must_exist: bool) -> Any:
        value = self.text(key, default)
        if value is not None and must_exist and not Path(value).exists():
            raise self.error(key, f"file {value} does not exist")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def _numeric(self, key: str, default: Any, kinds: tuple[type, ...], kind_name: str,
                 minimum: float | None, maximum: float | None) -> Any:
        value = self._get(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise self.error(key, f"expected {kind_name}, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"{value} is below the minimum {minimum}")
        if maximum is not None and value > maximum:
            raise self.error(key, f"{value} is above the maximum {maximum}")
        return value

    def integer(self, key: str, default: Any, *, minimum: int | None = None, maximum: int | None = None) -> Any:
        return self._numeric(key, default, (int,), "an integer", minimum, maximum)

    def number(self, key: str, default: Any, *, minimum: float | None = None, maximum: float | None = None) -> Any:
        value = self._numeric(key, default, (int, float), "a number", minimum, maximum)
        return None if value is None else float(value)

    def list(self, key: str, default: list) -> list:
        value = self._get(key)
        if value is _MISSING:
            return default
        if not isinstance(value, list):
            raise self.error(key, f"expected a list, got {type(value).__name__} {value!r}")
        return value

    def duration(self, key: str, default: Any) -> Any:
        value = self._get(key)
        if value is _MISSING:
            return default
        units: dict[str, Callable[[float], timedelta]] = {
            "s": lambda n: timedelta(seconds=n), "m": lambda n: timedelta(minutes=n),
            "h": lambda n: timedelta(hours=n), "d": lambda n: timedelta(days=n),
        }
        text = str(value).strip()
        try:
            result = units[text[-1]](float(text[:-1]))
        except (KeyError, ValueError, IndexError):
            raise self.error(key, f"expected a duration such as 10s, 1m, 1h or 7d, got {value!r}") from None
        if result <= timedelta(0):
            raise self.error(key, f"duration {value!r} must be positive")
        return result

    def finish(self) -> None:
        """Reject keys nobody read: almost always a typo."""
        unknown = sorted(str(key) for key in self.document if key not in self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key" + (f" (also unknown: {', '.join(unknown[1:])})" if unknown[1:] else ""))
