"""The simulated switches' SNMP agent, checked with net-snmp's tools and raw datagrams."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from collector.sources.snmp import ber
from detector.simulator.snmp_agent import (
    COUNTER_COLUMNS,
    MAX_MESSAGE_SIZE,
    CounterBoard,
    PortSpec,
    SimulatedSwitchAgents,
    SwitchSpec,
)
from snmp_fixtures import GOLDEN, NET_SNMP_ENV, leaf_switches, net_snmp, require

COLUMN = {name: index for index, name in enumerate(COUNTER_COLUMNS)}
IF_X = "1.3.6.1.2.1.31.1.1.1"
IF = "1.3.6.1.2.1.2.2.1"

SWITCHES = [
    SwitchSpec("leaf01", [PortSpec(1, "swp1", "to node001 mlx5_0", 400_000), PortSpec(7, "swp7", "", 100_000)]),
    SwitchSpec("spine01", [PortSpec(3, "swp3", "to leaf01 swp51", 800_000)]),
]


@pytest.fixture(scope="module")
def agents():
    with CounterBoard(SWITCHES) as board, SimulatedSwitchAgents(board) as running:
        board.uptime_ticks[:] = [2**32 + 100, 42]
        board.oper_status[0, 1] = 2
        for column, offset in COLUMN.items():
            board.counters[0, 0, offset] = 2**32 + offset + 1
            board.counters[0, 1, offset] = 1000 * (offset + 1)
        yield board, running


def raw_request(pdu_type: int, oids: list[tuple[int, ...]], field2: int = 0, field3: int = 0,
                community: bytes = b"public", version: int = ber.VERSION_2C) -> bytes:
    varbinds = b"".join(ber.encode_varbind(ber.encode_oid(oid), ber.encode_tlv(ber.NULL, b"")) for oid in oids)
    pdu = (ber.encode_integer(4711) + ber.encode_integer(field2) + ber.encode_integer(field3)
           + ber.encode_tlv(ber.SEQUENCE, varbinds))
    return ber.encode_tlv(
        ber.SEQUENCE, ber.encode_integer(version) + ber.encode_octets(community) + ber.encode_tlv(pdu_type, pdu)
    )


def exchange(endpoint: tuple[str, int], request: bytes, timeout: float = 2.0) -> bytes | None:
    """Send one datagram and return the answer, or None after ``timeout``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(request, endpoint)
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def oid(text: str) -> tuple[int, ...]:
    return tuple(int(arc) for arc in text.split("."))


def test_bulkwalk_of_the_whole_agent(agents):
    _, running = agents
    leaf01 = running.endpoints["leaf01"]
    bulk = net_snmp("snmpbulkwalk", leaf01, "1.3.6.1", options=("-Cr7",))
    walked = net_snmp("snmpwalk", leaf01, "1.3.6.1")
    assert walked == bulk  # GETNEXT and GETBULK agree on order and values
    expected = (GOLDEN / "agent-leaf01-bulkwalk.txt")
    if os.environ.get("STRANDWATCH_UPDATE_GOLDEN"):
        expected.write_text(bulk)
    assert bulk == expected.read_text()
    spine = net_snmp("snmpbulkwalk", running.endpoints["spine01"], "1.3.6.1.2.1.1")
    assert '.1.3.6.1.2.1.1.5.0 = STRING: "spine01"' in spine
    assert ".1.3.6.1.2.1.1.3.0 = Timeticks: (42)" in spine


def test_get_serves_counter32_modulo_2_32_and_reports_missing_objects(agents):
    _, running = agents
    out = net_snmp(
        "snmpget",
        running.endpoints["leaf01"],
        f"{IF_X}.6.1",  # ifHCInOctets: Counter64, full value
        f"{IF}.10.1",  # ifInOctets: the same counter modulo 2^32
        f"{IF}.14.1",  # ifInErrors
        f"{IF}.8.7",  # ifOperStatus of a down port
        f"{IF}.8.2",  # no such port
        "1.3.6.1.2.1.1.3.0",  # sysUpTime modulo 2^32
        "1.3.6.1.4.1.99999.1.0",  # no such object
    )
    errors = COLUMN["ifInErrors"] + 1
    assert out.splitlines() == [
        f".{IF_X}.6.1 = Counter64: {2**32 + 1}",
        f".{IF}.10.1 = Counter32: 1",
        f".{IF}.14.1 = Counter32: {errors}",
        f".{IF}.8.7 = INTEGER: 2",
        f".{IF}.8.2 = No Such Instance currently exists at this OID",
        ".1.3.6.1.2.1.1.3.0 = Timeticks: (100) 0:00:01.00",
        ".1.3.6.1.4.1.99999.1.0 = No Such Object available on this agent at this OID",
    ]


def test_getnext_past_the_last_object_is_end_of_mib_view(agents):
    _, running = agents
    out = net_snmp("snmpgetnext", running.endpoints["leaf01"], f"{IF_X}.18.7", f"{IF_X}.15.7")
    assert out.splitlines() == [
        f".{IF_X}.18.7 = No more variables left in this MIB View (It is past the end of the MIB tree)",
        f'.{IF_X}.18.1 = STRING: "to node001 mlx5_0"',
    ]


def test_getbulk_with_non_repeaters(agents):
    _, running = agents
    out = net_snmp(
        "snmpbulkget", running.endpoints["leaf01"], "1.3.6.1.2.1.1.3", f"{IF_X}.1", f"{IF_X}.15",
        options=("-Cn1", "-Cr3", "-Ot"),
    )
    assert out.splitlines() == [
        ".1.3.6.1.2.1.1.3.0 = 100",
        f'.{IF_X}.1.1 = STRING: "swp1"',
        f".{IF_X}.15.1 = Gauge32: 400000",
        f'.{IF_X}.1.7 = STRING: "swp7"',
        f".{IF_X}.15.7 = Gauge32: 100000",
        f".{IF_X}.6.1 = Counter64: {2**32 + 1}",
        f'.{IF_X}.18.1 = STRING: "to node001 mlx5_0"',
    ]


def test_set_is_refused_as_not_writable(agents):
    _, running = agents
    host, port = running.endpoints["leaf01"]
    done = subprocess.run(
        [require("snmpset"), "-v2c", "-c", "public", "-On", f"{host}:{port}", "1.3.6.1.2.1.1.5.0", "s", "x"],
        capture_output=True, text=True, env=NET_SNMP_ENV,
    )
    assert done.returncode != 0 and "notWritable" in done.stderr


def test_other_communities_v1_and_garbage_get_no_answer(agents):
    _, running = agents
    endpoint = running.endpoints["leaf01"]
    uptime = [oid("1.3.6.1.2.1.1.3.0")]
    assert exchange(endpoint, raw_request(ber.GET_REQUEST, uptime, community=b"private"), 0.3) is None
    assert exchange(endpoint, raw_request(ber.GET_REQUEST, uptime, version=ber.VERSION_1), 0.3) is None
    assert exchange(endpoint, b"\x30\x05\x02\x01\x01\x04\xff", 0.3) is None
    assert exchange(endpoint, b"", 0.3) is None
    answer = ber.decode_message(exchange(endpoint, raw_request(ber.GET_REQUEST, uptime)))
    assert answer.pdu_type == ber.RESPONSE and answer.request_id == 4711
    assert answer.varbinds == [(uptime[0], ber.TIMETICKS, b"\x64")]


def test_huge_getbulk_is_cut_to_one_datagram():
    switches = leaf_switches(1, 64)
    with CounterBoard(switches) as board, SimulatedSwitchAgents(board) as running:
        board.counters[:] = 2**63  # widest Counter64 values
        columns = [oid(f"{IF}.1"), oid(f"{IF_X}.1"), oid(f"{IF_X}.6")]
        reply = exchange(running.endpoints["leaf01"], raw_request(ber.GET_BULK_REQUEST, columns, 0, 100_000))
    assert reply is not None and len(reply) <= MAX_MESSAGE_SIZE
    message = ber.decode_message(reply)
    assert message.field2 == 0 and len(message.varbinds) > 1000
    for repeater in range(3):
        column = message.varbinds[repeater::3]
        served = [vb[0] for vb in column if vb[1] != ber.END_OF_MIB_VIEW]
        assert served == sorted(set(served))
        # Past the last object a repeater repeats endOfMibView under the last name it reached.
        assert {(vb[0], vb[1]) for vb in column[len(served):]} <= {(served[-1], ber.END_OF_MIB_VIEW)}


def test_agent_answers_getbulk_fast(agents):
    """Raw GETBULK round trips: the agent's share of a poll is small next to the poller's."""
    switches = leaf_switches(1, 40)
    columns = [oid(f"{IF}.{c}") for c in (8, 13, 14, 19, 20)]
    columns += [oid(f"{IF_X}.{c}") for c in (1, 6, 7, 10, 11, 15, 18)]
    with CounterBoard(switches) as board, SimulatedSwitchAgents(board) as running:
        endpoint = running.endpoints["leaf01"]
        request = raw_request(ber.GET_BULK_REQUEST, columns, 0, 41)
        varbinds = 0
        started = time.perf_counter()
        for _ in range(50):
            varbinds += len(ber.decode_message(exchange(endpoint, request)).varbinds)
        elapsed = time.perf_counter() - started
    assert varbinds == 50 * 12 * 41
    assert varbinds / elapsed > 50_000, f"{varbinds / elapsed:.0f} varbinds/s"


def test_board_rejects_bad_switches():
    with pytest.raises(ValueError, match="duplicate switch names"):
        CounterBoard([SwitchSpec("a", []), SwitchSpec("a", [])])
    with pytest.raises(ValueError, match="switch 'a': duplicate if_index"):
        CounterBoard([SwitchSpec("a", [PortSpec(1, "x", "", 1), PortSpec(1, "y", "", 1)])])
    with pytest.raises(ValueError, match=r"if_index must be 1..2\^31-1, got \[0\]"):
        CounterBoard([SwitchSpec("a", [PortSpec(0, "x", "", 1)])])
    with pytest.raises(ValueError, match="at least one switch"):
        CounterBoard([])


def test_board_is_shared_between_mappings():
    with CounterBoard(SWITCHES) as owner:
        other = CounterBoard.attach(owner.name, SWITCHES)
        owner.counters[1, 0, COLUMN["ifOutDiscards"]] = 99
        owner.uptime_ticks[owner.switch_index("spine01")] = 7
        assert other.counters[1, 0, COLUMN["ifOutDiscards"]] == 99 and other.uptime_ticks[1] == 7
        assert other.oper_status.tolist() == [[1, 1], [1, 1]]
        other.close()
        with pytest.raises(ValueError, match="holds .* bytes, the switches need"):
            CounterBoard.attach(owner.name, leaf_switches(4, 64))
        with pytest.raises(KeyError, match="no switch named 'leaf09'"):
            owner.switch_index("leaf09")


async def test_async_context_and_clean_stop():
    with CounterBoard(SWITCHES[:1]) as board:
        async with SimulatedSwitchAgents(board) as running:
            endpoint = running.endpoints["leaf01"]
            process = running._process
            assert exchange(endpoint, raw_request(ber.GET_REQUEST, [oid("1.3.6.1.2.1.1.5.0")])) is not None
        assert running.endpoints == {} and process is not None and not process.is_alive()
        assert process.exitcode == 0
        assert exchange(endpoint, raw_request(ber.GET_REQUEST, [oid("1.3.6.1.2.1.1.5.0")]), 0.3) is None
