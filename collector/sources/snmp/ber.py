"""Just enough BER to read and write SNMP v1/v2c messages without pyasn1.

pyasn1 spends tens of microseconds per variable; an agent answering thousands
of varbinds per poll (the simulated switches) and a poller reading them (the
SNMP source's v2c path) need a few microseconds. The codec covers the message
shell (version, community, PDU header), object identifiers, integers, unsigned
application types, octet strings and the v2c exception values. Everything else
(SNMPv3, traps) stays with pysnmp.

:func:`decode_message` keeps each value's raw content (the agent echoes or
re-encodes it); :func:`decode_response` is the poller's fast path: one flat
loop per message, values decoded to Python ints, bytes and OID tuples, and
OIDs memoised by their encoding because a poller sees the same OIDs every
poll.
"""

from __future__ import annotations

from dataclasses import dataclass

Oid = tuple[int, ...]

INTEGER = 0x02
OCTET_STRING = 0x04
NULL = 0x05
OBJECT_IDENTIFIER = 0x06
SEQUENCE = 0x30
COUNTER32 = 0x41
GAUGE32 = 0x42
TIMETICKS = 0x43
COUNTER64 = 0x46
NO_SUCH_OBJECT = 0x80
NO_SUCH_INSTANCE = 0x81
END_OF_MIB_VIEW = 0x82

GET_REQUEST = 0xA0
GET_NEXT_REQUEST = 0xA1
RESPONSE = 0xA2
SET_REQUEST = 0xA3
GET_BULK_REQUEST = 0xA5

VERSION_1 = 0
VERSION_2C = 1
VERSION_3 = 3
REPORT = 0xA8

NOT_WRITABLE = 17
"""v2c error-status an agent answers a SET with when nothing is writable."""

ERROR_STATUS_NAMES = (
    "noError", "tooBig", "noSuchName", "badValue", "readOnly", "genErr", "noAccess", "wrongType",
    "wrongLength", "wrongEncoding", "wrongValue", "noCreation", "inconsistentValue", "resourceUnavailable",
    "commitFailed", "undoFailed", "authorizationError", "notWritable", "inconsistentName",
)
"""RFC 3416 error-status values by number."""

EXCEPTION_TAGS = frozenset({NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW})
"""Varbind "values" that say the agent has nothing there; :func:`decode_response` gives them the value None."""

Value = int | bytes | tuple[int, ...] | None
"""A decoded varbind value: ints for INTEGER and the unsigned application types, OID tuples, bytes for
OCTET STRING, IpAddress, Opaque and anything unknown, None for NULL and the exception values."""


class BerError(ValueError):
    """The bytes are not a well-formed SNMP v1/v2c message."""


@dataclass(slots=True)
class Message:
    """A decoded v1/v2c message.

    ``field2`` and ``field3`` are error-status and error-index, or for a
    GETBULK non-repeaters and max-repetitions: the wire reuses the slots.
    Each varbind is (oid, value tag, raw value content).
    """

    version: int
    community: bytes
    pdu_type: int
    request_id: int
    field2: int
    field3: int
    varbinds: list[tuple[Oid, int, bytes]]


def encode_length(length: int) -> bytes:
    """BER definite length: short form below 128, else 0x80|n followed by n bytes."""
    if length < 0x80:
        return bytes((length,))
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def encode_tlv(tag: int, content: bytes) -> bytes:
    """One tag-length-value triple."""
    return bytes((tag,)) + encode_length(len(content)) + content


def encode_integer(value: int) -> bytes:
    """INTEGER TLV in minimal two's complement."""
    width = (value + (value < 0)).bit_length() // 8 + 1
    return encode_tlv(INTEGER, value.to_bytes(width, "big", signed=True))


def encode_unsigned(tag: int, value: int) -> bytes:
    """Counter32/Gauge32/TimeTicks/Counter64 TLV: unsigned, with a leading zero byte when the top bit is set."""
    return encode_tlv(tag, value.to_bytes((value.bit_length() + 8) // 8, "big"))


def encode_octets(value: bytes) -> bytes:
    """OCTET STRING TLV."""
    return encode_tlv(OCTET_STRING, value)


def encode_oid(oid: Oid) -> bytes:
    """OBJECT IDENTIFIER TLV; the first two arcs share one subidentifier."""
    if len(oid) < 2 or oid[0] > 2 or (oid[0] < 2 and oid[1] > 39):
        raise BerError(f"cannot encode OID {'.'.join(map(str, oid))}: needs two valid leading arcs")
    out = bytearray()
    for arc in (oid[0] * 40 + oid[1], *oid[2:]):
        if arc < 0x80:
            out.append(arc)
            continue
        chunk = []
        while arc:
            chunk.append(arc & 0x7F)
            arc >>= 7
        chunk.reverse()
        out.extend(b | 0x80 for b in chunk[:-1])
        out.append(chunk[-1])
    return encode_tlv(OBJECT_IDENTIFIER, bytes(out))


def encode_varbind(oid_tlv: bytes, value_tlv: bytes) -> bytes:
    """SEQUENCE of an already encoded OID and value."""
    return encode_tlv(SEQUENCE, oid_tlv + value_tlv)


def encode_response(
    version: int,
    community: bytes,
    request_id: int,
    error_status: int,
    error_index: int,
    varbinds: list[bytes],
) -> bytes:
    """A Response-PDU message around varbinds encoded by :func:`encode_varbind`."""
    pdu = (
        encode_integer(request_id)
        + encode_integer(error_status)
        + encode_integer(error_index)
        + encode_tlv(SEQUENCE, b"".join(varbinds))
    )
    return encode_tlv(
        SEQUENCE,
        encode_integer(version) + encode_octets(community) + encode_tlv(RESPONSE, pdu),
    )


def encode_request(
    pdu_type: int,
    version: int,
    community: bytes,
    request_id: int,
    field2: int,
    field3: int,
    oid_tlvs: list[bytes],
) -> bytes:
    """A request message (GET, GETNEXT, GETBULK) for already encoded OIDs, each with a NULL value.

    ``field2`` and ``field3`` are error-status and error-index (0, 0), or
    non-repeaters and max-repetitions for a GETBULK.
    """
    null = b"\x05\x00"
    varbinds = b"".join([encode_tlv(SEQUENCE, oid_tlv + null) for oid_tlv in oid_tlvs])
    pdu = encode_integer(request_id) + encode_integer(field2) + encode_integer(field3) + encode_tlv(SEQUENCE, varbinds)
    return encode_tlv(SEQUENCE, encode_integer(version) + encode_octets(community) + encode_tlv(pdu_type, pdu))


def _read_tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """Tag, content start and content end of the TLV at ``pos``."""
    if pos + 2 > end:
        raise BerError(f"truncated TLV at byte {pos}")
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        width = length & 0x7F
        if width == 0 or width > 4 or pos + width > end:
            raise BerError(f"unsupported or truncated length at byte {pos - 1}")
        length = int.from_bytes(data[pos : pos + width], "big")
        pos += width
    if pos + length > end:
        raise BerError(f"TLV at byte {pos} runs past the end of its container")
    return tag, pos, pos + length


def _expect(data: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    found, start, stop = _read_tlv(data, pos, end)
    if found != tag:
        raise BerError(f"expected tag 0x{tag:02x} at byte {pos}, found 0x{found:02x}")
    return start, stop


def _decode_oid(content: bytes) -> Oid:
    if not content or content[-1] & 0x80:
        raise BerError("empty or unterminated OBJECT IDENTIFIER")
    arcs: list[int] = []
    arc = 0
    for byte in content:
        arc = (arc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(arc)
            arc = 0
    first = arcs[0]
    head = (0, first) if first < 40 else (1, first - 40) if first < 80 else (2, first - 80)
    return head + tuple(arcs[1:])


def decode_message(data: bytes) -> Message:
    """Decode a v1/v2c message; raises :class:`BerError` on anything malformed."""
    end = len(data)
    start, stop = _expect(data, 0, end, SEQUENCE)
    vstart, vstop = _expect(data, start, stop, INTEGER)
    version = int.from_bytes(data[vstart:vstop], "big", signed=True)
    cstart, cstop = _expect(data, vstop, stop, OCTET_STRING)
    community = data[cstart:cstop]
    pdu_type, pstart, pstop = _read_tlv(data, cstop, stop)
    numbers = []
    pos = pstart
    for _ in range(3):
        istart, istop = _expect(data, pos, pstop, INTEGER)
        if istart == istop:
            raise BerError(f"empty INTEGER at byte {pos}")
        numbers.append(int.from_bytes(data[istart:istop], "big", signed=True))
        pos = istop
    lstart, lstop = _expect(data, pos, pstop, SEQUENCE)
    varbinds = []
    pos = lstart
    while pos < lstop:
        bstart, bstop = _expect(data, pos, lstop, SEQUENCE)
        ostart, ostop = _expect(data, bstart, bstop, OBJECT_IDENTIFIER)
        tag, value_start, value_stop = _read_tlv(data, ostop, bstop)
        varbinds.append((_decode_oid(data[ostart:ostop]), tag, data[value_start:value_stop]))
        pos = bstop
    return Message(version, community, pdu_type, numbers[0], numbers[1], numbers[2], varbinds)


@dataclass(slots=True)
class Pdu:
    """A decoded PDU with decoded values: each varbind is (oid, value tag, value)."""

    pdu_type: int
    request_id: int
    error_status: int
    error_index: int
    varbinds: list[tuple[Oid, int, Value]]


@dataclass(slots=True)
class Response:
    """A decoded v1/v2c message: its header and its :class:`Pdu`."""

    version: int
    community: bytes
    pdu: Pdu

    @property
    def request_id(self) -> int:
        return self.pdu.request_id


_OID_CACHE: dict[bytes, Oid] = {}
_OID_CACHE_LIMIT = 1 << 20
"""About 200 MB at worst; a poller of 1,000 switches x 64 ports x 20 columns needs 1.3 M entries
only if every column of every switch is distinct, and the cache then just starts over."""

_SIGNED_INTEGER = frozenset({INTEGER})
_INTEGER_TAGS = frozenset({INTEGER, COUNTER32, GAUGE32, TIMETICKS, COUNTER64, 0x47})  # 0x47: UInteger32
_NONE_TAGS = frozenset({NULL, NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW})


def _long_length(data: bytes, pos: int, first: int) -> tuple[int, int]:
    width = first & 0x7F
    if width == 0 or width > 4:
        raise BerError(f"unsupported length form at byte {pos - 1}")
    return int.from_bytes(data[pos : pos + width], "big"), pos + width


def read_integer(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The INTEGER at ``pos`` and the position after it."""
    start, stop = _expect(data, pos, end, INTEGER)
    if start == stop:
        raise BerError(f"empty INTEGER at byte {pos}")
    return int.from_bytes(data[start:stop], "big", signed=True), stop


def read_octets(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Start and end of the OCTET STRING content at ``pos``."""
    return _expect(data, pos, end, OCTET_STRING)


def read_sequence(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Start and end of the SEQUENCE content at ``pos``."""
    return _expect(data, pos, end, SEQUENCE)


def decode_response(data: bytes) -> Response:
    """Decode a v1/v2c message with its values; raises :class:`BerError` on anything malformed.

    The poller's hot path: about a microsecond per varbind where pyasn1 takes sixty.
    """
    try:
        end = len(data)
        start, stop = _expect(data, 0, end, SEQUENCE)
        if stop != end:
            raise BerError(f"{end - stop} bytes after the message")
        version, pos = read_integer(data, start, stop)
        cstart, cstop = _expect(data, pos, stop, OCTET_STRING)
        return Response(version, data[cstart:cstop], _decode_pdu(data, cstop, stop))
    except IndexError:
        raise BerError("message ends in the middle of a TLV") from None


def decode_pdu(data: bytes, pos: int, end: int) -> Pdu:
    """Decode the PDU at ``pos`` (inside an SNMPv3 ScopedPDU, say); raises :class:`BerError`."""
    try:
        return _decode_pdu(data, pos, end)
    except IndexError:
        raise BerError("PDU ends in the middle of a TLV") from None


def message_id(data: bytes) -> int | None:
    """The id that pairs an answer with its request, from the first bytes of a message:
    request-id for v1/v2c, msgID for SNMPv3; None when the bytes do not start like SNMP."""
    try:
        start, stop = _expect(data, 0, len(data), SEQUENCE)
        version, pos = read_integer(data, start, stop)
        if version == VERSION_3:
            gstart, gstop = _expect(data, pos, stop, SEQUENCE)
            return read_integer(data, gstart, gstop)[0]
        _, pos = _expect(data, pos, stop, OCTET_STRING)
        _, pstart, pstop = _read_tlv(data, pos, stop)
        return read_integer(data, pstart, pstop)[0]
    except (BerError, IndexError):
        return None


def _decode_pdu(data: bytes, pos: int, end: int) -> Pdu:
    pdu_type, pstart, pstop = _read_tlv(data, pos, end)
    request_id, pos = read_integer(data, pstart, pstop)
    error_status, pos = read_integer(data, pos, pstop)
    error_index, pos = read_integer(data, pos, pstop)
    pos, list_end = _expect(data, pos, pstop, SEQUENCE)
    cache = _OID_CACHE
    varbinds: list[tuple[Oid, int, Value]] = []
    append = varbinds.append
    while pos < list_end:
        if data[pos] != SEQUENCE:
            raise BerError(f"expected a varbind SEQUENCE at byte {pos}")
        length = data[pos + 1]
        pos += 2
        if length & 0x80:
            length, pos = _long_length(data, pos, length)
        varbind_end = pos + length
        if varbind_end > list_end or data[pos] != OBJECT_IDENTIFIER:
            raise BerError(f"malformed varbind at byte {pos}")
        length = data[pos + 1]
        pos += 2
        if length & 0x80:
            length, pos = _long_length(data, pos, length)
        key = data[pos : pos + length]
        oid = cache.get(key)
        if oid is None:
            oid = _decode_oid(key)
            if len(cache) >= _OID_CACHE_LIMIT:
                cache.clear()
            cache[key] = oid
        pos += length
        tag = data[pos]
        length = data[pos + 1]
        pos += 2
        if length & 0x80:
            length, pos = _long_length(data, pos, length)
        value_end = pos + length
        if value_end != varbind_end:
            raise BerError(f"varbind value at byte {pos} does not end with its varbind")
        if tag in _INTEGER_TAGS:
            value: Value = int.from_bytes(data[pos:value_end], "big", signed=tag in _SIGNED_INTEGER)
        elif tag in _NONE_TAGS:
            value = None
        elif tag == OBJECT_IDENTIFIER:
            value = _decode_oid(data[pos:value_end])
        else:
            value = data[pos:value_end]
        append((oid, tag, value))
        pos = value_end
    if pos != list_end:
        raise BerError("varbind list overruns its length")
    return Pdu(pdu_type, request_id, error_status, error_index, varbinds)
