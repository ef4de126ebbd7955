"""How batches travel between machines: MQTT with a versioned envelope and an on-disk spool.

See docs/transport.md. ``MqttBus`` is the distributed ``collector.bus.Bus``;
``MqttPublisher`` and ``MqttSubscription`` are its two halves.
"""

from __future__ import annotations

from collector.transport.envelope import (
    ENVELOPE_VERSION,
    MAX_ENVELOPE_BYTES,
    CheckedPoints,
    Envelope,
    EnvelopeError,
    decode,
    encode_envelope,
)
from collector.transport.mqtt import (
    MqttBus,
    MqttDelivery,
    MqttPublisher,
    MqttSettings,
    MqttSubscription,
    RejectCounter,
    TlsFileError,
    TlsSettings,
    batch_source,
    shard_filters,
)
from collector.transport.spool import Spool, SpoolEntry

__all__ = [
    "ENVELOPE_VERSION",
    "MAX_ENVELOPE_BYTES",
    "CheckedPoints",
    "Envelope",
    "EnvelopeError",
    "MqttBus",
    "MqttDelivery",
    "MqttPublisher",
    "MqttSettings",
    "MqttSubscription",
    "RejectCounter",
    "Spool",
    "SpoolEntry",
    "TlsFileError",
    "TlsSettings",
    "batch_source",
    "decode",
    "encode_envelope",
    "shard_filters",
]
