"""Property-based fuzzing of the MQTT envelope decoder: network input is untrusted.

Whatever arrives, ``decode`` and ``Envelope.validate`` either give an envelope
and points or raise ``EnvelopeError`` (which the subscription counts and
drops); anything else would end the consumer's loop. They finish quickly
(no input makes them hang), and the size limits hold: a payload over
``max_bytes`` and a batch over ``max_points`` are refused as ``oversized``
before they are parsed.
"""

from __future__ import annotations

import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.lineprotocol import parse
from collector.schema import Point
from collector.transport.envelope import ENVELOPE_VERSION, Envelope, EnvelopeError, decode, encode_envelope

FAST = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
KEYS = ("v", "site", "host", "source", "time_ns", "sent_ns", "seq", "points")
GOOD = encode_envelope(
    [Point("infiniband", {"host": "gpu01", "device": "mlx5_0", "port": "1"}, {"port_xmit_data": 7}, 1_700_000_000 * 10**9),
     Point("interface", {"agent_host": "leaf01", "ifName": "Ethernet1"}, {"ifAlias": "up \"link\"", "ifOperStatus": 1},
           1_700_000_000 * 10**9)],
    site="dc1", host="gpu01", source="rdma", seq=1,
)


def decode_all(payload: bytes, **limits) -> tuple[Envelope, list[Point]] | EnvelopeError:
    """What the subscription does with a message: the envelope and its points, or the error it counts."""
    started = time.monotonic()
    try:
        envelope = decode(payload, where="fuzz", **{k: v for k, v in limits.items() if k == "max_bytes"})
        checked = envelope.validate("fuzz", **{k: v for k, v in limits.items() if k == "max_points"})
        # Unparsed points are built later, on demand (MqttDelivery.points): that parse must not fail.
        points = checked.parsed if checked.parsed is not None else parse(envelope.points)
        assert len(points) == checked.count
    except EnvelopeError as error:
        assert error.kind in EnvelopeError.KINDS
        result: tuple[Envelope, list[Point]] | EnvelopeError = error
    else:
        assert all(isinstance(point, Point) for point in points)
        assert all(0 <= value < 1 << 63 for value in (envelope.time_ns, envelope.sent_ns, envelope.seq))
        result = envelope, points
    assert time.monotonic() - started < 2.0, f"decoding {len(payload)} bytes took too long"
    return result


@settings(max_examples=1500, **FAST)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_an_envelope_or_an_envelope_error(payload):
    decode_all(payload)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
LINE_TEXT = st.text(st.sampled_from(list(' ,=\\"#\ntfi.-0123456789abmx_') + ["é", "\x00", "\r"]), max_size=80)


@settings(max_examples=1500, **FAST)
@given(
    st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=8),
    st.fixed_dictionaries({}, optional={
        "v": st.sampled_from([ENVELOPE_VERSION, 0, 2, True, "1", 1.0]),
        "site": st.text(max_size=10), "host": st.text(max_size=10), "source": st.text(max_size=10),
        "time_ns": st.integers(-5, 1 << 64), "sent_ns": st.integers(0, 1 << 64), "seq": st.integers(-1, 1 << 64),
        "points": LINE_TEXT,
    }),
)
def test_envelope_shaped_json_gives_an_envelope_or_an_envelope_error(noise, shaped):
    decode_all(json.dumps({**noise, **shaped}).encode())


@settings(max_examples=1500, **FAST)
@given(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255), st.sampled_from(["set", "insert", "delete"])),
                min_size=1, max_size=6))
def test_a_corrupted_valid_message_gives_an_envelope_or_an_envelope_error(edits):
    payload = bytearray(GOOD)
    for position, byte, action in edits:
        position %= max(len(payload), 1)
        if action == "set" and payload:
            payload[position] = byte
        elif action == "insert":
            payload.insert(position, byte)
        elif payload:
            del payload[position]
    decode_all(bytes(payload))


@settings(max_examples=200, **FAST)
@given(st.sampled_from([b"[", b"{\"v\":", b"{\"a\":[", b"\"\\u", b"9", b"\\"]), st.integers(1, 200_000))
def test_pathological_repetition_neither_crashes_nor_hangs(unit, count):
    decode_all(unit * count)


@settings(max_examples=300, **FAST)
@given(st.binary(min_size=1, max_size=2000), st.integers(0, 1999))
def test_a_payload_over_max_bytes_is_refused_as_oversized_before_parsing(payload, max_bytes):
    result = decode_all(payload, max_bytes=max_bytes)
    if len(payload) > max_bytes:
        assert isinstance(result, EnvelopeError) and result.kind == "oversized"


@settings(max_examples=200, **FAST)
@given(st.integers(0, 60), st.integers(0, 60))
def test_a_batch_over_max_points_is_refused_as_oversized(points, max_points):
    lines = "".join(f"m,host=h{index} f={index}i {index}\n" for index in range(points))
    payload = json.dumps({"v": 1, "site": "dc1", "host": "gpu01", "source": "rdma", "time_ns": 1, "sent_ns": 1,
                          "seq": 1, "points": lines}).encode()
    result = decode_all(payload, max_points=max_points)
    if points > max_points:
        assert isinstance(result, EnvelopeError) and result.kind == "oversized"
    else:
        assert not isinstance(result, EnvelopeError) and len(result[1]) == points
