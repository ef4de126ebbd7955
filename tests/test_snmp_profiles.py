"""Vendor profiles: the data files, their choice by sysObjectID, and their tables polled from recordings."""

from __future__ import annotations

import logging
import os

import pytest

from collector.lineprotocol import encode
from collector.schema import COLLECTOR_HEALTH, INTERFACE, Point
from collector.sources.snmp import ProfileError, SnmpConfig, SnmpSource, SnmpTarget, load_profiles
from collector.sources.snmp import ber
from collector.sources.snmp.vendor_profiles import parse_profile, select_profiles
from snmp_fixtures import (
    GOLDEN,
    RelayProxy,
    Snmpsimd,
    own_snmpsim,  # noqa: F401  (pytest fixture)
    serve_snapshot,
    shared_snmpsim,  # noqa: F401  (pytest fixture)
    snapshot_dir,  # noqa: F401  (pytest fixture)
)

T0 = 1_700_000_000_000_000_000
ARISTA = (1, 3, 6, 1, 4, 1, 30065, 1, 3011, 7050, 1958, 128)


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("STRANDWATCH_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def without_durations(points: list[Point]) -> list[Point]:
    return [
        Point(p.measurement, p.tags, {**p.fields, "duration_seconds": 0.0}, p.time_ns)
        if p.measurement == COLLECTOR_HEALTH else p
        for p in points
    ]


async def poll(targets: list[SnmpTarget], **options) -> list[Point]:
    source = SnmpSource(SnmpConfig(tuple(targets), **options))
    try:
        return await source.collect(T0)
    finally:
        await source.close()


def by_port(points: list[Point]) -> dict[str, Point]:
    return {p.tags["ifName"]: p for p in points if p.measurement == INTERFACE}


# --- the data files -------------------------------------------------------------------------------


def test_built_in_profiles_and_their_choice_by_sys_object_id():
    profiles = load_profiles()
    assert set(profiles) == {"etherlike", "arista", "mellanox", "cumulus", "juniper"}
    assert profiles["etherlike"].generic and not profiles["arista"].generic

    def chosen(sys_object_id):
        return [p.name for p in select_profiles(profiles, sys_object_id)]

    assert chosen(ARISTA) == ["etherlike", "arista"]
    assert chosen((1, 3, 6, 1, 4, 1, 40310)) == ["etherlike", "cumulus"]
    assert chosen((1, 3, 6, 1, 4, 1, 33049, 2, 1, 56)) == ["etherlike", "mellanox"]
    assert chosen((1, 3, 6, 1, 4, 1, 2636, 1, 1, 1, 2, 158)) == ["etherlike", "juniper"]
    assert chosen((1, 3, 6, 1, 4, 1, 403101)) == ["etherlike"]  # a prefix matches whole arcs only
    assert chosen((1, 3, 6, 1, 4, 1, 8072, 3, 2, 10)) == chosen(None) == ["etherlike"]


def test_a_users_profile_folder_adds_and_replaces_profiles(tmp_path):
    (tmp_path / "juniper.yaml").write_text(
        "name: juniper\nsys_object_id: [1.3.6.1.4.1.2636]\ntables:\n"
        "  - {name: q, entry: 1.3.6.1.4.1.2636.3.15.4.1, index: [ifIndex, queue], columns: {tailDrops: 11}}\n"
    )
    (tmp_path / "site.yaml").write_text(
        "name: site\nsys_object_id: [.1.3.6.1.4.1.99999]\ntables:\n"
        "  - {name: t, entry: 1.3.6.1.4.1.99999.1.1, index: [slot], measurement: linecard, columns: {temp: 2}}\n"
    )
    profiles = load_profiles([tmp_path])
    assert profiles["juniper"].tables[0].columns == {"tailDrops": 11}
    assert profiles["site"].tables[0].measurement == "linecard"
    assert [p.name for p in select_profiles(profiles, (1, 3, 6, 1, 4, 1, 99999, 7))] == ["etherlike", "site"]
    with pytest.raises(ProfileError, match="profile folder does not exist"):
        load_profiles([tmp_path / "nope"])


def profile(**overrides) -> dict:
    document = {
        "name": "x",
        "sys_object_id": ["1.3.6.1.4.1.1"],
        "tables": [{"name": "t", "entry": "1.3.6.1.4.1.1.1.1", "index": ["ifIndex"], "columns": {"a": 2}}],
    }
    table = overrides.pop("table", {})
    document["tables"][0].update(table)
    document.update(overrides)
    return document


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (profile(sys_object_id="all"), r"sys_object_id: must be 'any' or a list"),
        (profile(sys_object_id=["1.3.six"]), r"sys_object_id\[0\]: must be a dotted numeric OID"),
        (profile(table={"index": ["prio", "ifIndex"]}), r"ifIndex can only come first"),
        (profile(table={"index": ["slot"]}), r"a table not indexed by ifIndex needs a measurement of its own"),
        (profile(table={"columns": {"ifHCInOctets": 6}}), r"columns\.ifHCInOctets: is a field the IF-MIB poll"),
        (profile(table={"columns": {"a": 0}}), r"columns\.a: must be a column number >= 1, got 0"),
        (profile(table={"measurement": "q", "index": ["ifIndex", "ifName"]}), r"are tags the poller sets"),
        (profile(tabels=[]), r"unknown key\(s\) \['tabels'\]"),
    ],
)
def test_profile_errors_name_the_file_and_the_key(document, message):
    with pytest.raises(ProfileError, match=message):
        parse_profile(document, "vendor.yaml")


# --- polled from recordings -----------------------------------------------------------------------


async def test_arista_profile_on_the_shared_arista_recording(shared_snmpsim, caplog):
    """The recording (a DCS-7050TX) has no ARISTA-PFC-MIB, ARISTA-QUEUE-MIB or dot3PauseTable: the arista
    and etherlike profiles are chosen, find their tables absent, and cost nothing on the next polls."""
    with RelayProxy(shared_snmpsim.endpoint) as relay:
        source = SnmpSource.from_targets([SnmpTarget("arista_eos", *relay.endpoint, community="arista_eos")])
        try:
            with caplog.at_level(logging.DEBUG, logger="collector.sources.snmp"):
                first = await source.collect(T0)
            requests_first = len(relay.requests)
            second = await source.collect(T0 + 1)
            requests_second = len(relay.requests) - requests_first
        finally:
            await source.close()
    assert "sysObjectID 1.3.6.1.4.1.30065.1.3011.7050.1958.128, profiles ['etherlike', 'arista']" in caplog.text
    for points in (first, second):
        ports = by_port(points)
        assert len(ports) == 55
        assert not any(name.startswith(("arista", "dot3")) for p in ports.values() for name in p.fields)
        assert {p.measurement for p in points} == {INTERFACE, COLLECTOR_HEALTH}
    # Ethernet1's counters restarted at sysUpTime 0 (the recording's ifCounterDiscontinuityTime).
    assert by_port(first)["Ethernet1"].fields["ifCounterDiscontinuityTime"] == 0
    # First poll: the IF-MIB walk plus one probe per profile table (dot3Pause, PFC, ingress, egress).
    assert requests_first - 4 > requests_second


async def test_arista_pfc_queue_drops_wrap_and_discontinuity_across_two_snapshots(snapshot_dir):
    serve_snapshot(snapshot_dir, "arista-leaf-0.snmprec", "leaf01")
    with Snmpsimd(snapshot_dir, "leaf01") as server:
        source = SnmpSource.from_targets([SnmpTarget("leaf01", *server.endpoint, community="leaf01")])
        try:
            first = await source.collect(T0)
            serve_snapshot(snapshot_dir, "arista-leaf-1.snmprec", "leaf01")
            second = await source.collect(T0 + 30_000_000_000)
        finally:
            await source.close()
    for snapshot, points in enumerate((first, second)):
        assert_golden(f"arista-leaf-{snapshot}.lp", encode(without_durations(points)))
    before, after = by_port(first), by_port(second)
    ethernet1 = after["Ethernet1"].fields
    # A PFC storm on priority 3: Ethernet1 sent 60,000 pause requests in 30 s.
    assert ethernet1["aristaPfcPriorityRequests_prio3"] - before["Ethernet1"].fields[
        "aristaPfcPriorityRequests_prio3"] == 60_000
    # dot3InPauseFrames is Counter32 and wrapped; the point says so, and the reader wraps it at 2^32.
    assert before["Ethernet1"].fields["dot3InPauseFrames"] == 2**32 - 6 and ethernet1["dot3InPauseFrames"] == 20
    assert ethernet1["counter32_fields"] == "dot3InPauseFrames,dot3OutPauseFrames"
    # Ethernet2's counters were cleared: ifCounterDiscontinuityTime moved, telling the reader to restart.
    assert before["Ethernet2"].fields["ifCounterDiscontinuityTime"] == 0
    assert after["Ethernet2"].fields["ifCounterDiscontinuityTime"] == 502_000
    assert after["Ethernet2"].fields["ifHCInOctets"] < before["Ethernet2"].fields["ifHCInOctets"]
    egress = {(p.tags["ifName"], p.tags["queue"], p.tags["type"]): p for p in second
              if p.measurement == "arista_egress_queue"}
    assert len(egress) == 6
    assert egress[("Ethernet49/1", "1", "0")].fields == {
        "aristaEgressQueuePktsDropped": 400, "aristaEgressQueueBytesDropped": 400 * 4096, "sysUpTime": 503_000,
    }
    assert egress[("Ethernet49/1", "1", "0")].tags["agent_host"] == "leaf01"


async def test_mellanox_and_juniper_profiles(own_snmpsim):
    points = await poll([SnmpTarget(name, *own_snmpsim.endpoint, community=name) for name in ("onyx-leaf",
                                                                                            "juniper-qfx")])
    onyx = by_port(points)["Eth1/1"].fields
    assert onyx["mellanoxQoSPFCRxPausePkts_prio3"] == 12_000 and onyx["mellanoxQoSPFCRxPauseDuration_prio3"] == 950
    assert onyx["mellanoxQoSTCWREDDiscard_tc3"] == 31 and onyx["mellanoxQoSPortTxWaitMicroseconds"] == 8_400_000
    assert "counter32_fields" not in onyx
    juniper = by_port(points)["et-0/0/0"].fields
    assert (juniper["jnxCosQstatTailDropPkts_queue3"], juniper["jnxCosQstatTotalRedDropPkts_queue3"]) == (77, 5)
    assert list(juniper)[-1] == "sysUpTime"


def test_decoded_counter_types_are_the_wire_types():
    """The Counter32/Counter64 distinction behind counter32_fields comes straight from the BER tag."""
    for tag in (ber.COUNTER32, ber.COUNTER64):
        value = ber.encode_unsigned(tag, 2**32 - 1)
        varbind = ber.encode_varbind(ber.encode_oid((1, 3, 6, 1)), value)
        message = ber.encode_response(1, b"c", 1, 0, 0, [varbind])
        assert ber.decode_response(message).pdu.varbinds == [((1, 3, 6, 1), tag, 2**32 - 1)]
