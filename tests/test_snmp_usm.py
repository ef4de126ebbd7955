"""The built-in SNMPv3 User-based Security Model: key derivation vectors, message round trips, tampering."""

from __future__ import annotations

import pytest

from collector.sources.snmp import ber, usm
from collector.sources.snmp.config import SnmpTarget

ENGINE = bytes.fromhex("000000000000000000000002")


@pytest.mark.parametrize(
    ("protocol", "master", "localized"),
    [  # RFC 3414 appendix A.3.1 and A.3.2: passphrase "maplesyrup"
        ("md5", "9faf3283884e92834ebc9847d8edd963", "526f5eed9fcce26f8964c2930787d82b"),
        ("sha", "9fb5cc0381497b3793528939ff788d5d79145211", "6695febc9288e36282235fc7151f128497b38f3f"),
    ],
)
def test_key_derivation_matches_rfc_3414(protocol, master, localized):
    key = usm.password_to_key("maplesyrup", protocol)
    assert key.hex() == master
    assert usm.localize(key, ENGINE, protocol).hex() == localized


def target(auth: str = "sha256", priv: str = "aes", **options) -> SnmpTarget:
    return SnmpTarget("t", "h", version="3", user="mon", auth_protocol=auth, auth_key="auth-passphrase",
                      priv_protocol=priv, priv_key="priv-passphrase" if priv != "none" else None, **options)


def test_what_the_built_in_usm_handles():
    assert usm.supported(target("sha256", "aes")) and usm.supported(target("sha512", "aes256"))
    assert usm.supported(target("md5", "aes128")) and usm.supported(target("sha224", "aes192"))
    assert usm.supported(target("sha", "none")) and usm.supported(target("none", "none"))
    assert not usm.supported(target("sha", "des"))  # DES and 3DES: pysnmp
    assert not usm.supported(target("sha", "aes256"))  # a 20-byte key needs extension for AES-256: pysnmp
    assert not usm.supported(SnmpTarget("t", "h"))


def peer_with_engine(**options) -> usm.UsmPeer:
    peer = usm.UsmPeer(target(**options))
    discovery = peer.discovery_request(1)
    assert usm._parse(discovery).flags == usm.FLAG_REPORTABLE
    # An agent's answer to discovery carries its engine id, boots and time; reuse the message shape.
    answer, _ = usm._message(1, 0, ENGINE, 7, 1234, b"", b"", b"", ber.encode_tlv(ber.SEQUENCE, b""))
    peer.learn_engine(answer)
    return peer


@pytest.mark.parametrize(("auth", "priv"), [("sha256", "aes"), ("sha512", "aes256"), ("md5", "none")])
def test_requests_open_as_what_they_carry(auth, priv):
    peer = peer_with_engine(auth=auth, priv=priv)
    assert (peer.engine.engine_id, peer.engine.boots, peer.engine.time) == (ENGINE, 7, 1234)
    oids = [ber.encode_oid((1, 3, 6, 1, 2, 1, 1, 3)), ber.encode_oid((1, 3, 6, 1, 2, 1, 2, 2, 1, 8))]
    message = peer.request(42, ber.GET_BULK_REQUEST, 1, 25, oids)
    header = usm._parse(message)
    assert header.flags & usm.FLAG_AUTH and bool(header.flags & usm.FLAG_PRIV) == (priv != "none")
    assert ber.message_id(message) == 42
    pdu = peer.open(message)
    assert (pdu.pdu_type, pdu.request_id, pdu.error_status, pdu.error_index) == (ber.GET_BULK_REQUEST, 42, 1, 25)
    assert [oid for oid, _, _ in pdu.varbinds] == [(1, 3, 6, 1, 2, 1, 1, 3), (1, 3, 6, 1, 2, 1, 2, 2, 1, 8)]


def test_tampered_or_foreign_answers_are_rejected():
    peer = peer_with_engine()
    message = peer.request(42, ber.GET_BULK_REQUEST, 0, 10, [ber.encode_oid((1, 3, 6, 1))])
    for position in (len(message) - 1, len(message) // 2):
        tampered = bytearray(message)
        tampered[position] ^= 0x01
        with pytest.raises(usm.UsmError):
            peer.open(bytes(tampered))
    other_keys = peer_with_engine()
    other_keys._auth_passphrase = "another-passphrase"
    other_keys.learn_engine(usm._message(1, 0, ENGINE, 7, 1234, b"", b"", b"", ber.encode_tlv(ber.SEQUENCE, b""))[0])
    with pytest.raises(usm.UsmError, match="failed authentication"):
        other_keys.open(message)
    with pytest.raises(usm.UsmError, match="malformed SNMPv3 message"):
        peer.open(b"\x30\x03\x02\x01\x03")


def test_reports_are_named():
    report = ber.Pdu(ber.REPORT, 1, 0, 0, [(usm.USM_STATS + (2, 0), ber.COUNTER32, 1)])
    assert usm.report_name(report) == "notInTimeWindow"
    assert usm.report_name(ber.Pdu(ber.REPORT, 1, 0, 0, [])) == "an empty report"
