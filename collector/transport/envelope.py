"""The versioned envelope one MQTT message carries: who sent a batch, when, and its points.

One message holds one batch (one source, one poll), not one value: a
message costs the broker about as much as a few hundred points, so batching
is what makes MQTT affordable. The envelope is JSON so any tool can read it;
the points inside are line protocol, the same text InfluxDB and Telegraf
speak::

    {"v": 1, "site": "dc1", "host": "gpu01", "source": "rdma",
     "time_ns": 1700000000000000000, "sent_ns": 1700000000012345678,
     "seq": 42, "points": "infiniband,device=mlx5_0,host=gpu01,port=1 port_xmit_data=1i 1700000000000000000\\n"}

- ``v`` is the envelope schema version; a consumer refuses versions it does
  not know rather than guessing.
- ``time_ns`` is the poll time the points are stamped with, ``sent_ns`` when
  the publisher first built the message (a spooled message keeps it, so the
  consumer can tell how late it is), ``seq`` counts the publisher's messages.
- Redelivery is harmless: the points carry the collector's timestamps, so a
  second copy overwrites the first in every store.

``decode`` checks everything before anything is trusted and raises
``EnvelopeError`` whose ``kind`` names the class of problem (for counting)
and whose message names the message and the problem; ``Envelope.validate``
then checks every line of the points, without building them when they are
plain line protocol (see ``collector.lineprotocol.plain_point_count``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from collector.lineprotocol import LineProtocolError, encode, parse, plain_point_count
from collector.schema import Point

__all__ = [
    "ENVELOPE_VERSION",
    "MAX_ENVELOPE_BYTES",
    "MAX_ENVELOPE_POINTS",
    "CheckedPoints",
    "Envelope",
    "EnvelopeError",
    "decode",
    "encode_envelope",
]

ENVELOPE_VERSION = 1
MAX_ENVELOPE_BYTES = 8 * 1024 * 1024
"""Default size limit of one message; a poll of a 64-port switch is ~100 KiB."""
MAX_ENVELOPE_POINTS = 200_000
_MAX_NAME_CHARS = 256

_INT64_LIMIT = 1 << 63
_NO_TIME = -(1 << 63)  # the parse default for lines without a timestamp; no real line carries it
_TEXT_KEYS = ("site", "host", "source")
_INT_KEYS = ("time_ns", "sent_ns", "seq")


class EnvelopeError(ValueError):
    """A message that is not a valid envelope; ``kind`` is one of KINDS."""

    KINDS = ("oversized", "not_json", "not_object", "wrong_version", "missing_key", "bad_value", "bad_points")

    def __init__(self, kind: str, where: str, problem: str) -> None:
        self.kind = kind
        self.where = where
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class Envelope:
    """One decoded message; ``points`` is line protocol until ``parse_points`` is called."""

    version: int
    site: str
    host: str
    source: str
    time_ns: int
    sent_ns: int
    seq: int
    points: str

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "v": self.version,
                "site": self.site,
                "host": self.host,
                "source": self.source,
                "time_ns": self.time_ns,
                "sent_ns": self.sent_ns,
                "seq": self.seq,
                "points": self.points,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()

    def parse_points(self, where: str = "<envelope>", max_points: int = MAX_ENVELOPE_POINTS) -> list[Point]:
        """The points; EnvelopeError(kind="bad_points") for any malformed line or too many points.

        A line without a timestamp gets the envelope's ``time_ns``.
        """
        checked = self.validate(where, max_points)
        if checked.parsed is not None:
            return checked.parsed
        return parse(self.points, source_name=where, default_time_ns=self.time_ns)

    def validate(self, where: str = "<envelope>", max_points: int = MAX_ENVELOPE_POINTS) -> CheckedPoints:
        """Check every line of ``points``; EnvelopeError(kind="bad_points" or "oversized") if any is wrong.

        Plain timestamped lines (what ``encode`` writes) are checked by one
        regex without building a point; anything else is parsed in full.
        """
        # Counting newlines first keeps a hostile message from costing a full parse.
        if self.points.count("\n") > max_points:
            raise EnvelopeError("oversized", where, f"more than {max_points} points")
        try:
            data = self.points.encode()
        except UnicodeEncodeError as error:  # JSON can carry lone surrogates; no store can
            raise EnvelopeError("bad_points", where, f"points are not valid Unicode text ({error.reason} "
                                                     f"at character {error.start})") from None
        count = plain_point_count(self.points)
        if count is not None:
            return CheckedPoints(count, data, None)
        try:
            points = parse(self.points, source_name=where, default_time_ns=_NO_TIME)
        except LineProtocolError as error:
            raise EnvelopeError("bad_points", where, f"line {error.line_number}: {error.reason}") from None
        complete = True
        for point in points:
            if point.time_ns == _NO_TIME:
                point.time_ns = self.time_ns
                complete = False
        return CheckedPoints(len(points), data if complete else None, points)


@dataclass(frozen=True, slots=True)
class CheckedPoints:
    """What ``Envelope.validate`` found: the points are valid, how many there are, and in which forms."""

    count: int
    line_protocol: bytes | None
    """The points as UTF-8 line protocol a store can take as it is (every line carries its timestamp);
    None when a line lacks one and takes the envelope's ``time_ns``."""
    parsed: list[Point] | None
    """The points, when validation had to parse them; None when one regex sufficed (``parse_points`` makes them)."""


def encode_envelope(
    points: list[Point],
    *,
    site: str,
    host: str,
    source: str,
    seq: int,
    time_ns: int | None = None,
    sent_ns: int | None = None,
    max_bytes: int = MAX_ENVELOPE_BYTES,
) -> bytes:
    """The message for one batch; ValueError when it would exceed ``max_bytes`` (split the batch)."""
    for key, value in (("site", site), ("host", host), ("source", source)):
        _check_name(key, value, f"envelope from {host!r}")
    if time_ns is None:
        time_ns = max((point.time_ns for point in points), default=time.time_ns())
    envelope = Envelope(
        ENVELOPE_VERSION, site, host, source, int(time_ns),
        time.time_ns() if sent_ns is None else sent_ns, seq, encode(points),
    )
    payload = envelope.to_bytes()
    if len(payload) > max_bytes:
        raise ValueError(
            f"batch of {len(points)} points from {source!r} on {host!r} is {len(payload)} bytes, "
            f"over the {max_bytes}-byte message limit; publish it in smaller batches"
        )
    return payload


def decode(payload: bytes, *, where: str = "<message>", max_bytes: int = MAX_ENVELOPE_BYTES) -> Envelope:
    """The envelope in ``payload``; EnvelopeError naming ``where`` (e.g. the topic) and the problem.

    The points are not parsed here (see ``Envelope.parse_points``).
    """
    if len(payload) > max_bytes:
        raise EnvelopeError("oversized", where, f"{len(payload)} bytes, over the {max_bytes}-byte limit")
    try:
        document = json.loads(payload)
    except RecursionError:  # nesting deeper than the JSON decoder's recursion limit
        raise EnvelopeError("not_json", where, "not a JSON envelope (nested too deeply)") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, an integer of more than 4300 digits
        raise EnvelopeError("not_json", where, f"not a JSON envelope ({error})") from None
    if not isinstance(document, dict):
        raise EnvelopeError("not_object", where, f"envelope is a JSON {type(document).__name__}, not an object")
    if "v" not in document:
        raise EnvelopeError("missing_key", where, "envelope has no schema version 'v'")
    version = document["v"]
    if version != ENVELOPE_VERSION or isinstance(version, bool):
        raise EnvelopeError(
            "wrong_version", where, f"envelope version {version!r}; this strandwatch reads version {ENVELOPE_VERSION}"
        )
    for key in (*_TEXT_KEYS, *_INT_KEYS, "points"):
        if key not in document:
            raise EnvelopeError("missing_key", where, f"envelope has no {key!r}")
    for key in _TEXT_KEYS:
        try:
            _check_name(key, document[key], where)
        except ValueError as error:
            raise EnvelopeError("bad_value", where, str(error)) from None
    for key in _INT_KEYS:
        value = document[key]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _INT64_LIMIT:
            shown = repr(value) if not isinstance(value, int) or value.bit_length() <= 64 else f"a {value.bit_length()}-bit number"
            raise EnvelopeError("bad_value", where, f"{key!r} must be a non-negative integer below 2**63, not {shown}")
    if not isinstance(document["points"], str):
        raise EnvelopeError("bad_value", where, f"'points' must be line protocol text, not {type(document['points']).__name__}")
    return Envelope(
        version, document["site"], document["host"], document["source"],
        document["time_ns"], document["sent_ns"], document["seq"], document["points"],
    )


def _check_name(key: str, value: object, where: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: {key!r} must be a non-empty string, not {value!r}")
    if len(value) > _MAX_NAME_CHARS:
        raise ValueError(f"{where}: {key!r} is {len(value)} characters, over {_MAX_NAME_CHARS}")
    if any(character in value for character in "/+#\0") or not value.isprintable():
        raise ValueError(f"{where}: {key!r} value {value!r} may not contain '/', '+', '#' or control characters")
