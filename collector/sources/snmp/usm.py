"""SNMPv3 messages with the User-based Security Model (RFC 3414, RFC 7860, RFC 3826), without pyasn1.

pysnmp spends ~100 µs of CPU per varbind on an SNMPv3 answer, almost all of
it in pyasn1 decoding after the security processing. This module does the
security processing itself with standard primitives (``hmac``/``hashlib``
and AES-CFB from ``cryptography``) and hands the decrypted ScopedPDU to the
BER codec's PDU decoder. It covers what fabrics use: HMAC-MD5/SHA-1/SHA-2
authentication (RFC 3414, RFC 7860) and AES-CFB privacy (RFC 3826) whenever
the localized privacy key is long enough for the AES key (AES-128 with any
hash; AES-192/256 with SHA-224 and up). DES, 3DES and AES-192/256 keys that
need extension (the Blumenthal and Reeder drafts differ between vendors) are
left to pysnmp: :func:`supported` says which.

Flow per agent (:class:`UsmPeer`): discovery of the agent's engine id, boots
and time with an unauthenticated probe (RFC 3414 section 4), keys localized
to that engine id, then authenticated (and encrypted) requests; a
notInTimeWindow report re-synchronises the clock and the request is sent
again once.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import itertools
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from collector.sources.snmp import ber
from collector.sources.snmp.config import SnmpTarget

AUTH_HASHES: dict[str, tuple[Callable, int]] = {
    "md5": (hashlib.md5, 12),
    "sha": (hashlib.sha1, 12),
    "sha224": (hashlib.sha224, 16),
    "sha256": (hashlib.sha256, 24),
    "sha384": (hashlib.sha384, 32),
    "sha512": (hashlib.sha512, 48),
}
"""Hash and length of the truncated HMAC in msgAuthenticationParameters, per auth protocol."""
AES_KEY_BYTES = {"aes": 16, "aes128": 16, "aes192": 24, "aes256": 32}

USER_BASED_SECURITY = 3
FLAG_AUTH, FLAG_PRIV, FLAG_REPORTABLE = 0x01, 0x02, 0x04
MAX_MESSAGE_SIZE = 65507
USM_STATS = (1, 3, 6, 1, 6, 3, 15, 1, 1)
REPORTS = {
    1: "unsupportedSecLevel",
    2: "notInTimeWindow",
    3: "unknownUserName",
    4: "unknownEngineID",
    5: "wrongDigest",
    6: "decryptionError",
}
"""usmStats counters (USM_STATS + (n, 0)) an agent reports instead of answering."""


class UsmError(Exception):
    """The agent's answer failed security processing, or the agent reported a USM error."""


def supported(target: SnmpTarget) -> bool:
    """Whether this module handles the target's protocols (else pysnmp does)."""
    if target.version != "3" or (target.auth_protocol != "none" and target.auth_protocol not in AUTH_HASHES):
        return False
    if target.priv_protocol == "none":
        return True
    if target.priv_protocol not in AES_KEY_BYTES or importlib.util.find_spec("cryptography") is None:
        return False
    hash_function, _ = AUTH_HASHES[target.auth_protocol]
    return hash_function().digest_size >= AES_KEY_BYTES[target.priv_protocol]


@lru_cache(maxsize=256)
def password_to_key(password: str, auth_protocol: str) -> bytes:
    """RFC 3414 A.2.1 (and RFC 7860 for SHA-2): the hash of the passphrase repeated to 1 MiB."""
    hash_function, _ = AUTH_HASHES[auth_protocol]
    raw = password.encode()
    repeated = raw * (1048576 // len(raw) + 1)
    return hash_function(repeated[:1048576]).digest()


def localize(key: bytes, engine_id: bytes, auth_protocol: str) -> bytes:
    """RFC 3414 A.2.2: a user's key bound to one agent's engine id."""
    hash_function, _ = AUTH_HASHES[auth_protocol]
    return hash_function(key + engine_id + key).digest()


@dataclass
class _Engine:
    """The agent's authoritative engine as last heard: id, boots, and time at a local instant."""

    engine_id: bytes
    boots: int
    time: int
    heard_at: float
    auth_key: bytes
    priv_key: bytes

    def now(self) -> int:
        return min(self.time + int(time.monotonic() - self.heard_at), 2**31 - 1)


_salts = itertools.count(int.from_bytes(os.urandom(8), "big"))


class UsmPeer:
    """SNMPv3 security state for one target: builds requests and opens answers."""

    def __init__(self, target: SnmpTarget) -> None:
        if not supported(target):
            raise ValueError(f"target {target.name!r}: protocols not handled by the built-in USM")
        self.user = target.user.encode()  # type: ignore[union-attr]
        self.auth_protocol = target.auth_protocol
        self.priv_protocol = target.priv_protocol
        self.flags = (FLAG_AUTH if target.auth_protocol != "none" else 0) | (
            FLAG_PRIV if target.priv_protocol != "none" else 0
        )
        self._auth_passphrase = target.auth_key
        self._priv_passphrase = target.priv_key
        self.engine: _Engine | None = None

    def discovery_request(self, message_id: int) -> bytes:
        """An unauthenticated, empty GET that makes the agent report its engine id, boots and time."""
        pdu = _pdu(ber.GET_REQUEST, message_id, 0, 0, [])
        scoped = ber.encode_tlv(ber.SEQUENCE, ber.encode_octets(b"") + ber.encode_octets(b"") + pdu)
        message, _ = _message(message_id, FLAG_REPORTABLE, b"", 0, 0, b"", b"", b"", scoped)
        return message

    def learn_engine(self, answer: bytes) -> None:
        """Take the engine id, boots and time from the answer to :meth:`discovery_request`."""
        header = _parse(answer)
        if not header.engine_id:
            raise UsmError("the agent's discovery answer has no engine id")
        auth_key = priv_key = b""
        if self.auth_protocol != "none":
            auth_key = localize(password_to_key(self._auth_passphrase, self.auth_protocol), header.engine_id,
                                self.auth_protocol)
        if self.priv_protocol != "none":
            priv_key = localize(password_to_key(self._priv_passphrase, self.auth_protocol), header.engine_id,
                                self.auth_protocol)
        self.engine = _Engine(header.engine_id, header.boots, header.time, time.monotonic(), auth_key, priv_key)

    def request(self, message_id: int, pdu_type: int, field2: int, field3: int, oid_tlvs: list[bytes]) -> bytes:
        """A request PDU, authenticated and encrypted as the user's protocols say."""
        engine = self.engine
        assert engine is not None, "discover the engine first"
        varbinds = [ber.encode_tlv(ber.SEQUENCE, oid + b"\x05\x00") for oid in oid_tlvs]
        pdu = _pdu(pdu_type, message_id, field2, field3, varbinds)
        scoped = ber.encode_tlv(ber.SEQUENCE, ber.encode_octets(engine.engine_id) + ber.encode_octets(b"") + pdu)
        boots, now = engine.boots, engine.now()
        privacy = b""
        if self.flags & FLAG_PRIV:
            privacy = (next(_salts) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")
            scoped = ber.encode_octets(self._aes(engine, boots, now, privacy, scoped, encrypt=True))
        hash_function, mac_length = AUTH_HASHES.get(self.auth_protocol, (None, 0))
        message, mac_at = _message(message_id, self.flags | FLAG_REPORTABLE, engine.engine_id, boots, now, self.user,
                                   bytes(mac_length), privacy, scoped)
        if self.flags & FLAG_AUTH:
            mac = hmac.new(engine.auth_key, message, hash_function).digest()[:mac_length]
            message = message[:mac_at] + mac + message[mac_at + mac_length :]
        return message

    def open(self, answer: bytes) -> ber.Pdu:
        """Verify and decrypt an answer; its PDU. Raises :class:`UsmError` for what fails security,
        and for reports other than notInTimeWindow (which :meth:`resync_if_out_of_time` handles)."""
        engine = self.engine
        assert engine is not None
        header = _parse(answer)
        if header.flags & FLAG_AUTH:
            if header.user != self.user or header.engine_id != engine.engine_id:
                raise UsmError("answer for another user or engine")
            hash_function, mac_length = AUTH_HASHES[self.auth_protocol]
            if header.mac_end - header.mac_start != mac_length:
                raise UsmError("authentication parameters of the wrong length")
            blanked = answer[: header.mac_start] + bytes(mac_length) + answer[header.mac_end :]
            expected = hmac.new(engine.auth_key, blanked, hash_function).digest()[:mac_length]
            if not hmac.compare_digest(expected, answer[header.mac_start : header.mac_end]):
                raise UsmError("answer failed authentication (wrong auth key?)")
            engine.boots, engine.time, engine.heard_at = header.boots, header.time, time.monotonic()
        scoped, start, end = answer, header.data_start, header.data_end
        if header.flags & FLAG_PRIV:
            if not header.flags & FLAG_AUTH or len(header.privacy) != 8:
                raise UsmError("encrypted answer without authentication or salt")
            scoped = self._aes(engine, header.boots, header.time, header.privacy, answer[start:end], encrypt=False)
            start, end = 0, len(scoped)
        try:
            sstart, send = ber.read_sequence(scoped, start, end)
            _, pos = ber.read_octets(scoped, sstart, send)  # contextEngineID
            _, pos = ber.read_octets(scoped, pos, send)  # contextName
            pdu = ber.decode_pdu(scoped, pos, send)
        except ber.BerError as exc:
            raise UsmError(f"answer does not decode after decryption (wrong priv key?): {exc}") from None
        if pdu.pdu_type == ber.REPORT:
            return pdu
        if header.flags & (FLAG_AUTH | FLAG_PRIV) != self.flags:
            raise UsmError("answer at a lower security level than the request")
        return pdu

    def _aes(self, engine: _Engine, boots: int, now: int, salt: bytes, data: bytes, encrypt: bool) -> bytes:
        """RFC 3826 AES-CFB128: the IV is the agent's boots and time and our 64-bit salt."""
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

        key = engine.priv_key[: AES_KEY_BYTES[self.priv_protocol]]
        iv = boots.to_bytes(4, "big") + now.to_bytes(4, "big") + salt
        cipher = Cipher(algorithms.AES(key), _cfb()(iv))
        worker = cipher.encryptor() if encrypt else cipher.decryptor()
        return worker.update(data) + worker.finalize()


@lru_cache(maxsize=1)
def _cfb() -> type:
    """AES-CFB128: among cryptography's "decrepit" modes since 47, its primitives before."""
    try:
        from cryptography.hazmat.decrepit.ciphers.modes import CFB
    except ImportError:
        from cryptography.hazmat.primitives.ciphers.modes import CFB  # type: ignore[assignment,no-redef]
    return CFB


def report_name(pdu: ber.Pdu) -> str:
    """What a Report PDU reports: the usmStats counter's name, or the OID."""
    for oid, _, _ in pdu.varbinds:
        if oid[: len(USM_STATS)] == USM_STATS and len(oid) > len(USM_STATS):
            return REPORTS.get(oid[len(USM_STATS)], ".".join(map(str, oid)))
        return ".".join(map(str, oid))
    return "an empty report"


def _pdu(pdu_type: int, request_id: int, field2: int, field3: int, varbinds: list[bytes]) -> bytes:
    body = ber.encode_integer(request_id) + ber.encode_integer(field2) + ber.encode_integer(field3)
    return ber.encode_tlv(pdu_type, body + ber.encode_tlv(ber.SEQUENCE, b"".join(varbinds)))


def _message(
    message_id: int, flags: int, engine_id: bytes, boots: int, now: int, user: bytes, mac: bytes, privacy: bytes,
    data: bytes,
) -> tuple[bytes, int]:
    """An SNMPv3 message and the offset of its msgAuthenticationParameters content."""
    global_data = ber.encode_tlv(
        ber.SEQUENCE,
        ber.encode_integer(message_id) + ber.encode_integer(MAX_MESSAGE_SIZE) + ber.encode_octets(bytes((flags,)))
        + ber.encode_integer(USER_BASED_SECURITY),
    )
    before_mac = ber.encode_octets(engine_id) + ber.encode_integer(boots) + ber.encode_integer(now) + ber.encode_octets(
        user
    )
    mac_tlv = ber.encode_octets(mac)
    security = ber.encode_tlv(ber.SEQUENCE, before_mac + mac_tlv + ber.encode_octets(privacy))
    security_tlv = ber.encode_octets(security)
    head = ber.encode_integer(ber.VERSION_3) + global_data
    body = head + security_tlv + data
    message = ber.encode_tlv(ber.SEQUENCE, body)
    outer_header = len(message) - len(body)
    security_header = len(security_tlv) - len(security)
    sequence_header = len(security) - len(before_mac + mac_tlv + ber.encode_octets(privacy))
    mac_at = outer_header + len(head) + security_header + sequence_header + len(before_mac) + (len(mac_tlv) - len(mac))
    return message, mac_at


@dataclass
class _Header:
    flags: int
    engine_id: bytes
    boots: int
    time: int
    user: bytes
    mac_start: int
    mac_end: int
    privacy: bytes
    data_start: int
    data_end: int


def _parse(message: bytes) -> _Header:
    """The USM header of an SNMPv3 message and where its data is; raises :class:`UsmError`."""
    try:
        start, end = ber.read_sequence(message, 0, len(message))
        version, pos = ber.read_integer(message, start, end)
        if version != ber.VERSION_3:
            raise UsmError(f"not an SNMPv3 message (version {version})")
        gstart, gend = ber.read_sequence(message, pos, end)
        _, gpos = ber.read_integer(message, gstart, gend)  # msgID
        _, gpos = ber.read_integer(message, gpos, gend)  # msgMaxSize
        fstart, fend = ber.read_octets(message, gpos, gend)
        model, _ = ber.read_integer(message, fend, gend)
        if fend - fstart != 1 or model != USER_BASED_SECURITY:
            raise UsmError("not a User-based Security Model message")
        flags = message[fstart]
        sstart, send = ber.read_octets(message, gend, end)
        qstart, qend = ber.read_sequence(message, sstart, send)
        estart, eend = ber.read_octets(message, qstart, qend)
        boots, pos = ber.read_integer(message, eend, qend)
        now, pos = ber.read_integer(message, pos, qend)
        ustart, uend = ber.read_octets(message, pos, qend)
        mac_start, mac_end = ber.read_octets(message, uend, qend)
        pstart, pend = ber.read_octets(message, mac_end, qend)
        if flags & FLAG_PRIV:
            data_start, data_end = ber.read_octets(message, send, end)
        else:
            data_start, data_end = send, end
        return _Header(flags, message[estart:eend], boots, now, message[ustart:uend], mac_start, mac_end,
                       message[pstart:pend], data_start, data_end)
    except (ber.BerError, IndexError) as exc:
        raise UsmError(f"malformed SNMPv3 message: {exc}") from None
