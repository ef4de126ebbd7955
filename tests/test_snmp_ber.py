"""The BER codec's fast response decoder: round trips, agreement with pyasn1, and garbage."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import decoder
from pysnmp.proto.api import v2c

from collector.sources.snmp import ber

oids = st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=14).map(lambda arcs: (1, 3) + tuple(arcs))
values = st.one_of(
    st.integers(-(2**31), 2**31 - 1).map(lambda v: (ber.INTEGER, v, ber.encode_integer(v))),
    st.sampled_from([ber.COUNTER32, ber.GAUGE32, ber.TIMETICKS]).flatmap(
        lambda tag: st.integers(0, 2**32 - 1).map(lambda v: (tag, v, ber.encode_unsigned(tag, v)))
    ),
    st.integers(0, 2**64 - 1).map(lambda v: (ber.COUNTER64, v, ber.encode_unsigned(ber.COUNTER64, v))),
    st.binary(max_size=300).map(lambda b: (ber.OCTET_STRING, b, ber.encode_octets(b))),
    oids.map(lambda o: (ber.OBJECT_IDENTIFIER, o, ber.encode_oid(o))),
    st.sampled_from(sorted(ber.EXCEPTION_TAGS)).map(lambda tag: (tag, None, ber.encode_tlv(tag, b""))),
)
varbind_lists = st.lists(st.tuples(oids, values), max_size=40)


@given(varbind_lists, st.integers(0, 2**31 - 1))
def test_responses_round_trip(varbinds, request_id):
    encoded = [ber.encode_varbind(ber.encode_oid(oid), wire) for oid, (_, _, wire) in varbinds]
    message = ber.encode_response(ber.VERSION_2C, b"public", request_id, 0, 0, encoded)
    response = ber.decode_response(message)
    assert (response.community, response.request_id, response.pdu.pdu_type) == (b"public", request_id, ber.RESPONSE)
    assert response.pdu.varbinds == [(oid, tag, value) for oid, (tag, value, _) in varbinds]


@settings(max_examples=60)
@given(varbind_lists.filter(lambda v: all(tag not in ber.EXCEPTION_TAGS for _, (tag, _, _) in v)))
def test_values_agree_with_pyasn1(varbinds):
    encoded = [ber.encode_varbind(ber.encode_oid(oid), wire) for oid, (_, _, wire) in varbinds]
    message = ber.encode_response(ber.VERSION_2C, b"public", 7, 0, 0, encoded)
    decoded, _ = decoder.decode(message, asn1Spec=v2c.Message())
    reference = v2c.apiPDU.get_varbinds(v2c.apiMessage.get_pdu(decoded))
    ours = ber.decode_response(message).pdu.varbinds
    for (name, value), (oid, tag, plain) in zip(reference, ours, strict=True):
        assert tuple(name) == oid
        if tag == ber.OCTET_STRING:
            assert value.asOctets() == plain
        elif tag == ber.OBJECT_IDENTIFIER:
            assert tuple(value) == plain
        else:
            assert int(value) == plain


@given(st.binary(max_size=200))
def test_garbage_raises_only_ber_error(data):
    try:
        ber.decode_response(data)
    except ber.BerError:
        pass


@given(varbind_lists.filter(bool), st.data())
def test_truncated_or_corrupted_responses_raise_ber_error(varbinds, data):
    encoded = [ber.encode_varbind(ber.encode_oid(oid), wire) for oid, (_, _, wire) in varbinds]
    message = bytearray(ber.encode_response(ber.VERSION_2C, b"c", 1, 0, 0, encoded))
    cut = data.draw(st.integers(1, len(message) - 1))
    position = data.draw(st.integers(0, len(message) - 1))
    message[position] ^= data.draw(st.integers(1, 255))
    for candidate in (bytes(message[:cut]), bytes(message)):
        try:
            ber.decode_response(candidate)
        except ber.BerError:
            pass


def test_request_encoding_matches_what_the_agent_decodes():
    request = ber.encode_request(ber.GET_BULK_REQUEST, ber.VERSION_2C, b"ro", 4711, 1, 25,
                                 [ber.encode_oid((1, 3, 6, 1, 2, 1, 1, 3)), ber.encode_oid((1, 3, 6, 1, 2, 1, 2))])
    message = ber.decode_message(request)
    assert (message.pdu_type, message.request_id, message.field2, message.field3) == (ber.GET_BULK_REQUEST, 4711, 1, 25)
    assert message.varbinds == [((1, 3, 6, 1, 2, 1, 1, 3), ber.NULL, b""), ((1, 3, 6, 1, 2, 1, 2), ber.NULL, b"")]
