"""The Bus over MQTT: agents and pollers publish, ingest processes consume, nothing is lost.

Publishing (``MqttPublisher``): each batch becomes one QoS 1 message in the
envelope of ``collector.transport.envelope`` on the topic
``<prefix>/<site>/<source>/<host>`` (prefix ``strandwatch/v1``). ``publish``
returns once the broker acknowledged the message (PUBACK) or, while no broker
is reachable, once it is on disk in the spool; the spool is replayed in order,
ahead of anything newer, when a broker is back. Brokers are tried in the
order listed, moving on after a failed connection, with exponential backoff
and jitter between rounds.

Consuming (``MqttSubscription``): a persistent MQTT 5 session (fixed client
id, clean start off, a session expiry) with manual acknowledgement: a message
is PUBACKed only when the consumer calls ``Delivery.ack()`` after the store
accepted its points. If the consumer dies first, the broker still holds the
message for the session and sends it again when the same client id
reconnects. A message received on a connection that has since dropped is
not acknowledged (its packet id means nothing on the new connection); the
broker redelivers it and the second write overwrites the first.

Both follow aiomqtt's reusable-client pattern: one ``aiomqtt.Client`` per
broker address, entered again (``async with client``) after every
disconnect, with the subscriptions made again inside.

aiomqtt 2 exposes neither manual acknowledgement nor the end of a
connection outside message iteration, so this module uses private
attributes, pinned by aiomqtt>=2,<3: ``client._client`` (the paho-mqtt
client, for ``manual_ack_set``, ``ack`` and ``on_log``),
``client._disconnected`` (so a publish waiting for its PUBACK fails when the
connection drops instead of after the timeout), and ``client._connected``,
``_lock`` and ``_loop`` (so a connection the broker drops before its CONNACK
fails at once with paho's reason, such as the TLS alert "certificate
required" or "unknown ca", instead of "Operation timed out" after
``timeout_s``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
from paho.mqtt.client import MQTT_LOG_ERR
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector.bus import BusClosedError, Delivery
from collector.lineprotocol import parse
from collector.schema import COLLECTOR_HEALTH, Point
from collector.transport.envelope import (
    MAX_ENVELOPE_BYTES,
    CheckedPoints,
    Envelope,
    EnvelopeError,
    decode,
    encode_envelope,
)
from collector.transport.spool import Spool

__all__ = [
    "DEFAULT_TOPIC_PREFIX",
    "PROTOCOLS",
    "MqttBus",
    "MqttDelivery",
    "MqttPublisher",
    "MqttSettings",
    "MqttSubscription",
    "RejectCounter",
    "TlsFileError",
    "TlsSettings",
    "batch_source",
    "shard_filters",
]

log = logging.getLogger(__name__)

DEFAULT_TOPIC_PREFIX = "strandwatch/v1"
PROTOCOLS = ("5", "3.1.1")


class TlsFileError(ValueError):
    """A TLS file that cannot be used; ``key`` names its setting under ``mqtt.tls``."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"mqtt.tls.{key}: {problem}")


@dataclass(frozen=True)
class TlsSettings:
    """TLS towards the broker; client certificates when ``cert_file`` is set."""

    ca_file: str | None = None
    """The CA that signed the broker's certificate (PEM); the system's CAs when None."""
    cert_file: str | None = None
    """This client's certificate (PEM), for brokers with ``require_certificate true``; needs ``key_file``."""
    key_file: str | None = None
    key_password: str | None = None
    insecure: bool = False
    """Skip the broker hostname check (never in production)."""

    def context(self) -> ssl.SSLContext:
        """The client's TLS context; TlsFileError naming the setting, the file and what is wrong with it."""
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, key)
            if path is not None and not Path(path).is_file():
                raise TlsFileError(key, f"file {path} does not exist")
        if (self.cert_file is None) != (self.key_file is None):
            raise TlsFileError("cert_file" if self.cert_file is None else "key_file",
                               "a client certificate needs both cert_file and key_file")
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.ca_file is not None:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as error:
                raise TlsFileError("ca_file", f"{self.ca_file} is not a readable PEM CA certificate ({error})") from None
        if self.cert_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file, self.key_password)
            except (OSError, ssl.SSLError) as error:
                raise TlsFileError("cert_file", f"{self.cert_file} with key_file {self.key_file}: cannot load the "
                                                f"client certificate and its key ({error}); are they PEM, do they "
                                                f"belong together, is key_password right?") from None
        if self.insecure:
            context.check_hostname = False
        return context


@dataclass(frozen=True)
class MqttSettings:
    """How to reach the brokers and what to call this publisher or consumer."""

    brokers: Sequence[tuple[str, int]]
    site: str = "default"
    host: str = field(default_factory=socket.gethostname)
    client_id: str | None = None
    """The consumer's MQTT client id, which names its persistent session (publishers make their own)."""
    username: str | None = None
    password: str | None = None
    tls: TlsSettings | None = None
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    keepalive_s: int = 30
    timeout_s: float = 10.0
    """How long a publish waits for its PUBACK before the connection counts as lost."""
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 30.0
    resume_delay_s: float = 2.0
    """After a reconnection, how long a publisher keeps spooling before it sends: time for the ingest
    processes to subscribe again. Mosquitto 2.0.11 does not restore shared subscriptions from its
    persistence file, so a message it receives after a restart and before they re-subscribe is lost."""
    session_expiry_s: int = 7 * 24 * 3600
    """How long the broker keeps a consumer's session (and its unacknowledged messages) while it is away."""
    receive_maximum: int = 256
    """Unacknowledged QoS 1 messages the broker may send a consumer at once."""
    max_message_bytes: int = MAX_ENVELOPE_BYTES
    spool_dir: Path | None = None
    spool_max_bytes: int = 256 * 1024 * 1024
    protocol: str = "5"
    """The MQTT version spoken: "5" (Mosquitto, EMQX, HiveMQ, VerneMQ) or "3.1.1" (NATS). With 3.1.1 a
    consumer's session is a clean-session-off session the broker keeps until the client id cleans it
    (no expiry, no receive maximum), and there are no shared subscriptions: ingest uses topic shards."""

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"mqtt: protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if not self.brokers:
            raise ValueError("mqtt: at least one broker address is needed")
        for host, port in self.brokers:
            if not host or not 0 < int(port) < 65536:
                raise ValueError(f"mqtt: broker address {host!r}:{port!r} is not a host and a port 1-65535")
        if self.reconnect_min_s <= 0 or self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("mqtt: need 0 < reconnect_min_s <= reconnect_max_s")
        if "#" in self.topic_prefix or "+" in self.topic_prefix or self.topic_prefix.endswith("/"):
            raise ValueError(f"mqtt: topic_prefix {self.topic_prefix!r} may not hold wildcards or end in '/'")

    def topic(self, source: str, host: str | None = None) -> str:
        return f"{self.topic_prefix}/{self.site}/{source}/{host or self.host}"

    def all_topics(self) -> str:
        """The filter matching every strandwatch message of this prefix."""
        return f"{self.topic_prefix}/#"


def shard_filters(hosts: Sequence[str], index: int, count: int, *, prefix: str = DEFAULT_TOPIC_PREFIX) -> list[str]:
    """Topic filters for ingest shard ``index`` of ``count``: a fixed subset of the hosts' topics.

    For brokers without shared subscriptions (NATS): every ingest process
    takes the hosts whose stable hash falls on its index, and together they
    cover every host exactly once.
    """
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is not within 0..{count - 1}")
    import zlib

    return [f"{prefix}/+/+/{host}" for host in sorted(hosts) if zlib.crc32(host.encode()) % count == index]


def batch_source(batch: Sequence[Point]) -> str:
    """The source name of a batch: its ``strandwatch_source`` point's ``source`` tag, else its measurement."""
    for point in batch:
        if point.measurement == COLLECTOR_HEALTH and point.tags.get("source"):
            return point.tags["source"]
    measurements = {point.measurement for point in batch}
    return measurements.pop() if len(measurements) == 1 else "mixed"


def _client(settings: MqttSettings, address: tuple[str, int], tls: ssl.SSLContext | None, *,
            consumer: bool) -> aiomqtt.Client:
    if settings.protocol == "5":
        properties = Properties(PacketTypes.CONNECT)
        if consumer:
            properties.SessionExpiryInterval = settings.session_expiry_s
            properties.ReceiveMaximum = settings.receive_maximum
        session: dict[str, object] = dict(protocol=aiomqtt.ProtocolVersion.V5, clean_start=not consumer,
                                          properties=properties)
    else:
        session = dict(protocol=aiomqtt.ProtocolVersion.V311, clean_session=not consumer)
    client = aiomqtt.Client(
        address[0],
        int(address[1]),
        username=settings.username,
        password=settings.password,
        # A publisher keeps no session, so it needs no fixed id; two with one id would keep kicking each other out.
        identifier=settings.client_id if consumer else f"strandwatch-pub-{settings.host}-{random.getrandbits(32):08x}",
        keepalive=settings.keepalive_s,
        timeout=settings.timeout_s,
        **session,  # type: ignore[arg-type]
        tls_context=tls,
    )
    if consumer:
        client._client.manual_ack_set(True)  # see the module docstring
    client._client.on_log = _fail_connecting(client)
    return client


def _fail_connecting(client: aiomqtt.Client) -> Callable[..., None]:
    """A paho ``on_log`` that fails a connection attempt at once with the error paho logs (see the module docstring).

    Under TLS 1.3 a broker refuses a client certificate after the handshake;
    paho logs the alert and closes the socket, but aiomqtt ignores a
    disconnection before the CONNACK and waits for its timeout.
    """

    def fail(text: str) -> None:
        if client._lock.locked() and not client._connected.done():  # an attempt under way, no CONNACK yet
            client._connected.set_exception(aiomqtt.MqttError(text))

    def on_log(_paho: object, _userdata: object, level: int, text: str) -> None:
        if level == MQTT_LOG_ERR:
            client._loop.call_soon_threadsafe(fail, text)

    return on_log


class _Reconnector:
    """Broker failover with exponential backoff and jitter; one aiomqtt.Client per address, reused."""

    def __init__(self, settings: MqttSettings, *, consumer: bool) -> None:
        self.settings = settings
        self.consumer = consumer
        self._tls = settings.tls.context() if settings.tls is not None else None  # bad files fail here, not later
        self._clients: dict[tuple[str, int], aiomqtt.Client] = {}
        self._attempt = 0
        self._delay = settings.reconnect_min_s

    def next_client(self) -> aiomqtt.Client:
        brokers = self.settings.brokers
        address = tuple(brokers[self._attempt % len(brokers)])
        self._attempt += 1
        if address not in self._clients:
            self._clients[address] = _client(self.settings, address, self._tls, consumer=self.consumer)
        return self._clients[address]

    def connected(self) -> None:
        self._delay = self.settings.reconnect_min_s
        self._attempt -= 1  # stay with the broker that works

    def tried_all(self) -> bool:
        return self._attempt >= len(self.settings.brokers)

    async def wait(self) -> None:
        """Back off after a failed connection or a lost one; the full delay only after a round of all brokers."""
        if self._attempt % len(self.settings.brokers) == 0:
            await asyncio.sleep(self._delay * random.uniform(0.5, 1.0))
            self._delay = min(self._delay * 2, self.settings.reconnect_max_s)


async def _publish(client: aiomqtt.Client, topic: str, payload: bytes) -> None:
    """A QoS 1 publish that fails as soon as the connection drops, not after the PUBACK timeout."""
    disconnected = client._disconnected  # this connection's; aiomqtt makes a new one per connection
    if disconnected.done():
        raise aiomqtt.MqttError("not connected")
    publishing = asyncio.ensure_future(client.publish(topic, payload, qos=1))
    await asyncio.wait((publishing, disconnected), return_when=asyncio.FIRST_COMPLETED)
    if not publishing.done():
        publishing.cancel()
        raise aiomqtt.MqttError(f"connection lost while publishing to {topic}")
    publishing.result()


class MqttPublisher:
    """Publishes batches as QoS 1 envelopes, spooling to disk while no broker answers.

    Use as ``async with MqttPublisher(settings) as publisher:`` or call
    ``start()`` and ``close()``.
    """

    def __init__(self, settings: MqttSettings) -> None:
        if settings.spool_dir is None:
            raise ValueError("mqtt: a publisher needs spool_dir, where batches wait while no broker is reachable")
        self.settings = settings
        self.spool = Spool(settings.spool_dir, settings.spool_max_bytes)
        self.published = 0
        """Messages the broker acknowledged (spooled ones count when their replay is acknowledged)."""
        self.spooled = 0
        """Messages that went to the spool instead of straight to the broker."""
        self._sequence = 0
        self._order = asyncio.Lock()  # keeps messages in order between direct publishes and replay
        self._client: aiomqtt.Client | None = None
        self._lost = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reconnector = _Reconnector(settings, consumer=False)
        self._first_attempt = asyncio.Event()
        self._was_connected = False
        self._failures_logged: set[str] = set()

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def start(self) -> None:
        """Start connecting; returns after the first attempt at each broker, connected or not."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="mqtt-publisher")
            await self._first_attempt.wait()

    async def __aenter__(self) -> MqttPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def publish(self, batch: list[Point], *, source: str | None = None, host: str | None = None) -> None:
        """Send ``batch`` as one message; returns when the broker has it or it is spooled on disk.

        A batch over ``max_message_bytes`` goes as several messages.
        """
        if self._closing.is_set():
            raise BusClosedError(f"publish of {len(batch)} points on a closed MQTT publisher")
        source = source or batch_source(batch)
        host = host or self.settings.host
        try:
            payload = encode_envelope(
                batch, site=self.settings.site, host=host, source=source, seq=self._sequence + 1,
                max_bytes=self.settings.max_message_bytes,
            )
        except ValueError:
            if len(batch) < 2:
                raise
            # Over the message size limit (a poll of many switches): send it as two halves, recursively.
            half = len(batch) // 2
            await self.publish(batch[:half], source=source, host=host)
            await self.publish(batch[half:], source=source, host=host)
            return
        self._sequence += 1
        await self.publish_payload(self.settings.topic(source, host), payload)

    async def publish_payload(self, topic: str, payload: bytes) -> None:
        """Send an already encoded envelope (see ``publish``)."""
        async with self._order:
            client = self._client
            if client is not None and not len(self.spool):
                try:
                    await _publish(client, topic, payload)
                    self.published += 1
                    return
                except aiomqtt.MqttError as error:
                    self._connection_lost(error)
            self.spool.put(topic, payload)
            self.spooled += 1

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until the spool is empty (everything reached a broker); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self.spool):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def close(self, drain_timeout: float = 5.0) -> None:
        """Give the spool ``drain_timeout`` seconds to reach a broker, then disconnect.

        What is still spooled stays on disk and is sent by the next publisher
        on the same spool directory.
        """
        if self._task is None or self._closing.is_set():
            self._closing.set()
            return
        await self.flush(drain_timeout)
        self._closing.set()
        await self._task

    def _connection_lost(self, error: BaseException) -> None:
        if self._client is not None:
            log.warning("MQTT publisher lost the broker (%s); spooling to %s", error, self.spool.directory)
        self._client = None
        self._lost.set()

    async def _run(self) -> None:
        while not self._closing.is_set():
            client = self._reconnector.next_client()
            try:
                async with client:
                    self._reconnector.connected()
                    log.info("MQTT publisher connected to %s:%s", client._hostname, client._port)
                    self._failures_logged.clear()
                    self._lost.clear()
                    if self._was_connected and self.settings.resume_delay_s:
                        await asyncio.sleep(self.settings.resume_delay_s)
                    self._was_connected = True
                    self._client = client
                    self._first_attempt.set()
                    await self._replay(client)
                    closing = asyncio.create_task(self._closing.wait())
                    lost = asyncio.create_task(self._lost.wait())
                    await asyncio.wait((closing, lost), return_when=asyncio.FIRST_COMPLETED)
                    closing.cancel()
                    lost.cancel()
                    self._client = None
            except aiomqtt.MqttError as error:
                self._connection_lost(error)
                failure = f"{client._hostname}:{client._port}: {error}"
                # A refusal (a certificate, a password) repeats at every attempt: say it once, not every backoff.
                if failure not in self._failures_logged:
                    self._failures_logged.add(failure)
                    log.warning("MQTT publisher: cannot connect to %s; spooling meanwhile", failure)
                else:
                    log.debug("MQTT publisher: cannot connect to %s", failure)
            if self._reconnector.tried_all():
                self._first_attempt.set()
            if not self._closing.is_set():
                await self._wait_or_close()

    async def _wait_or_close(self) -> None:
        waiting = asyncio.create_task(self._reconnector.wait())
        closing = asyncio.create_task(self._closing.wait())
        await asyncio.wait((waiting, closing), return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        closing.cancel()

    async def _replay(self, client: aiomqtt.Client, window: int = 32) -> None:
        """Send the spool oldest first, ``window`` messages in flight at a time."""
        replayed = 0
        while not self._lost.is_set():
            async with self._order:
                entries = self.spool.peek(window)
                if not entries:
                    break
                results = await asyncio.gather(
                    *(_publish(client, entry.key, entry.payload) for entry in entries), return_exceptions=True
                )
                for entry, result in zip(entries, results):
                    if isinstance(result, BaseException):
                        self._connection_lost(result)
                        break
                    self.spool.remove(entry)
                    self.published += 1
                    replayed += 1
        if replayed:
            log.info("MQTT publisher replayed %d spooled messages (%d left)", replayed, len(self.spool))


class RejectCounter:
    """Counts rejected messages by kind; logs the first of each kind as a warning, the rest at debug."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.counts: dict[str, int] = {}

    def reject(self, error: EnvelopeError) -> None:
        count = self.counts.get(error.kind, 0) + 1
        self.counts[error.kind] = count
        if count == 1:
            log.warning("%s: dropped a malformed message (%s): %s; further ones of this kind are counted, "
                        "logged at debug level", self.what, error.kind, error)
        else:
            log.debug("%s: dropped malformed message %d of kind %s: %s", self.what, count, error.kind, error)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class MqttDelivery(Delivery):
    """A Delivery that also carries its envelope (site, host, source, times) and topic.

    The envelope was validated on receipt. ``line_protocol`` is its points as
    UTF-8 line protocol that InfluxDB takes without encoding them again (None
    when some line lacked a timestamp); ``points`` are built from it only when
    a consumer asks. ``newest_ns`` is the envelope's poll time.
    """

    __slots__ = ("envelope", "topic", "line_protocol", "_count")

    def __init__(self, envelope: Envelope, topic: str, checked: CheckedPoints, on_ack: Callable[[], None]) -> None:
        super().__init__(checked.parsed, on_ack)
        self.envelope = envelope
        self.topic = topic
        self.line_protocol = checked.line_protocol
        self._count = checked.count

    @property
    def points(self) -> list[Point]:
        if self._points is None:  # validated on receipt: plain lines, each with its timestamp
            self._points = parse(self.envelope.points, source_name=f"topic {self.topic} seq {self.envelope.seq}")
        return self._points

    @property
    def count(self) -> int:
        return self._count

    @property
    def newest_ns(self) -> int:
        return self.envelope.time_ns


_END = object()


class MqttSubscription:
    """Deliveries from a persistent MQTT 5 session; each is PUBACKed only when acked.

    Messages that fail validation are counted in ``rejects``, logged once
    per kind, acknowledged (so the broker forgets them) and never delivered.
    """

    def __init__(self, settings: MqttSettings, filters: Sequence[str], *, max_queued: int = 0) -> None:
        if not settings.client_id:
            raise ValueError("mqtt: a consumer needs a fixed client_id: it names the session the broker keeps")
        if not filters:
            raise ValueError("mqtt: a subscription needs at least one topic filter")
        self.settings = settings
        self.filters = list(filters)
        self.rejects = RejectCounter(f"MQTT consumer {settings.client_id}")
        self.received = 0
        self.connections = 0
        self._queue: asyncio.Queue[object] = asyncio.Queue(max_queued)
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closed = False
        self._reconnector = _Reconnector(settings, consumer=True)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"mqtt-subscription-{self.settings.client_id}")

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until subscribed at a broker (the first time)."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    def __aiter__(self) -> AsyncIterator[MqttDelivery]:
        return self

    async def __anext__(self) -> MqttDelivery:
        if self._task is None:
            await self.start()
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)
            raise StopAsyncIteration
        return item  # type: ignore[return-value]

    async def close(self) -> None:
        """Disconnect; unacknowledged messages stay with the broker for the next session. Iteration ends."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._queue.put_nowait(_END)

    async def _run(self) -> None:
        while True:
            client = self._reconnector.next_client()
            try:
                async with client:
                    self._reconnector.connected()
                    self.connections += 1
                    generation = self.connections
                    await client.subscribe([(topic_filter, 1) for topic_filter in self.filters])
                    log.info("MQTT consumer %s subscribed to %s at %s:%s", self.settings.client_id,
                             ", ".join(self.filters), client._hostname, client._port)
                    self._connected.set()
                    async for message in client.messages:
                        await self._receive(client, generation, message)
            except aiomqtt.MqttError as error:
                log.warning("MQTT consumer %s: broker %s:%s: %s", self.settings.client_id,
                            client._hostname, client._port, error)
            await self._reconnector.wait()

    async def _receive(self, client: aiomqtt.Client, generation: int, message: aiomqtt.Message) -> None:
        self.received += 1
        topic = str(message.topic)
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()

        def ack() -> None:
            # A packet id is only meaningful on the connection it arrived on.
            if message.qos > 0 and generation == self.connections and client._client.is_connected():
                client._client.ack(message.mid, message.qos)

        try:
            envelope = decode(payload, where=f"topic {topic}", max_bytes=self.settings.max_message_bytes)
            checked = envelope.validate(f"topic {topic} seq {envelope.seq}")
        except EnvelopeError as error:
            self.rejects.reject(error)
            ack()
            return
        await self._queue.put(MqttDelivery(envelope, topic, checked, ack))


class MqttBus:
    """``collector.bus.Bus`` over MQTT: ``publish`` through an MqttPublisher, ``subscribe`` a persistent session.

    ``subscribe()`` takes the shared subscription ``$share/<group>/<prefix>/#``
    unless ``filters`` names others (topic shards: see ``shard_filters``).
    """

    def __init__(self, settings: MqttSettings, *, group: str = "strandwatch-ingest",
                 filters: Sequence[str] | None = None) -> None:
        self.settings = settings
        self.filters = list(filters) if filters else [f"$share/{group}/{settings.all_topics()}"]
        self._publisher: MqttPublisher | None = None
        self._subscriptions: list[MqttSubscription] = []
        self._closed = False

    async def publish(self, batch: list[Point], *, source: str | None = None) -> None:
        if self._closed:
            raise BusClosedError(f"publish of {len(batch)} points on a closed MQTT bus")
        if self._publisher is None:
            self._publisher = MqttPublisher(self.settings)
            await self._publisher.start()
        await self._publisher.publish(batch, source=source)

    @property
    def publisher(self) -> MqttPublisher | None:
        return self._publisher

    def subscribe(self) -> MqttSubscription:
        if self._closed:
            raise BusClosedError("subscribe on a closed MQTT bus")
        subscription = MqttSubscription(self.settings, self.filters)
        self._subscriptions.append(subscription)
        return subscription

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._publisher is not None:
            await self._publisher.close()
        for subscription in self._subscriptions:
            await subscription.close()
