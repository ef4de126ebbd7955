"""The SNMP source against real agents: simulated switches, snmpsimd recordings, snmpd, and broken agents."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from collector.lineprotocol import encode
from collector.schema import COLLECTOR_HEALTH, INTERFACE, Point
from collector.sources.base import Source
from collector.sources.snmp import SnmpConfig, SnmpConfigError, SnmpSource, SnmpTarget, load_config, parse_config
from collector.sources.snmp import SnmpClient, ber
from collector.sources.snmp.session import V3Session
from detector.simulator.snmp_agent import COUNTER_COLUMNS, OPER_DOWN, CounterBoard, SimulatedSwitchAgents
from snmp_fixtures import (
    GOLDEN,
    GarbageResponder,
    RelayProxy,
    Snmpd,
    Snmpsimd,
    free_udp_port,
    leaf_switches,
    own_snmpsim,  # noqa: F401  (pytest fixture)
    serve_snapshot,
    shared_snmpsim,  # noqa: F401  (pytest fixture)
    snapshot_dir,  # noqa: F401  (pytest fixture)
    switch_board,  # noqa: F401  (pytest fixture)
    walk_values,
)

SAMPLE = Path(__file__).parents[1] / "collector" / "sources" / "snmp" / "sample.yaml"
T0 = 1_700_000_000_000_000_000
COLUMN = {name: index for index, name in enumerate(COUNTER_COLUMNS)}


def assert_golden(name: str, text: str) -> None:
    """Compare with tests/golden/snmp/<name>; STRANDWATCH_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN / name
    if os.environ.get("STRANDWATCH_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with STRANDWATCH_UPDATE_GOLDEN=1 to write it"
    assert text == path.read_text()


def split(points: list[Point]) -> tuple[dict[tuple[str, str], Point], dict[str, Point]]:
    """Interface points by (agent_host, ifName) and health points by target."""
    interfaces = {(p.tags["agent_host"], p.tags["ifName"]): p for p in points if p.measurement == INTERFACE}
    health = {p.tags["target"]: p for p in points if p.measurement == COLLECTOR_HEALTH}
    return interfaces, health


def targets_for(agents: SimulatedSwitchAgents, **options) -> list[SnmpTarget]:
    return [SnmpTarget(name, host, port, **options) for name, (host, port) in agents.endpoints.items()]


async def poll_once(targets: list[SnmpTarget], use_pysnmp_for_v2c: bool = False, **options) -> list[Point]:
    source = SnmpSource(SnmpConfig(tuple(targets), **options), use_pysnmp_for_v2c=use_pysnmp_for_v2c)
    try:
        return await source.collect(T0)
    finally:
        await source.close()


# --- simulated switches -------------------------------------------------------------------------


async def test_counters_move_between_polls(switch_board):
    board, agents = switch_board
    board.counters[:] = 0
    board.oper_status[:] = 1
    board.uptime_ticks[:] = [360_000, 720_000]
    leaf01 = board.switch_index("leaf01")
    source = SnmpSource.from_targets(targets_for(agents))
    assert isinstance(source, Source) and source.name == "snmp"
    try:
        first, health = split(await source.collect(T0))
        board.counters[leaf01, 1, COLUMN["ifHCInOctets"]] += 50_000_000_000
        board.counters[leaf01, 1, COLUMN["ifInDiscards"]] += 7
        board.oper_status[leaf01, 2] = OPER_DOWN
        board.uptime_ticks[:] += 3000
        second, _ = split(await source.collect(T0 + 30_000_000_000))
    finally:
        await source.close()

    assert len(first) == 8 and set(health) == {"leaf01", "leaf02"}
    assert all(p.fields["up"] == 1 and p.fields["points"] == 4 for p in health.values())
    swp2 = first[("leaf01", "swp2")]
    assert swp2.tags == {"agent_host": "leaf01", "ifName": "swp2", "ifIndex": "2"}
    assert swp2.time_ns == T0
    assert swp2.fields == {
        "ifAlias": "to node002 mlx5_0",
        "ifHighSpeed": 400_000,
        "ifOperStatus": 1,
        **{column: 0 for column in COUNTER_COLUMNS},
        "sysUpTime": 360_000,
    }
    moved = second[("leaf01", "swp2")].fields
    assert moved["ifHCInOctets"] == 50_000_000_000 and moved["ifInDiscards"] == 7
    assert moved["sysUpTime"] == 363_000
    assert second[("leaf01", "swp3")].fields["ifOperStatus"] == OPER_DOWN
    assert second[("leaf02", "swp2")].fields["ifHCInOctets"] == 0
    assert second[("leaf02", "swp1")].time_ns == T0 + 30_000_000_000


async def test_counter32_columns_wrap_and_counter64_columns_do_not(switch_board):
    board, agents = switch_board
    board.counters[:] = 2**32 - 3
    board.counters[:] += 10  # numpy uint64 arithmetic, as the simulator does it
    hc_out = COLUMN["ifHCOutOctets"]
    board.counters[0, 0, hc_out] = 2**64 - 5
    board.counters[0, 0, hc_out : hc_out + 1] += 9  # array arithmetic wraps modulo 2^64, like a real Counter64
    board.counters[0, 1, COLUMN["ifHCInUcastPkts"]] = 2**64 - 1
    interfaces, _ = split(await poll_once(targets_for(agents)))
    assert interfaces[("leaf01", "swp2")].fields["ifHCInUcastPkts"] == 2**64 - 1
    fields = interfaces[("leaf01", "swp1")].fields
    assert fields["ifHCInOctets"] == 2**32 + 7
    assert fields["ifHCOutOctets"] == 4
    for column in ("ifInDiscards", "ifOutDiscards", "ifInErrors", "ifOutErrors"):
        assert fields[column] == 7, column


async def test_reboot_shows_as_uptime_going_back(switch_board):
    board, agents = switch_board
    board.counters[:] = 123_456_789
    board.uptime_ticks[:] = 9_000_000
    source = SnmpSource.from_targets(targets_for(agents)[:1], static_refresh_polls=100)
    try:
        before, _ = split(await source.collect(T0))
        board.counters[:] = 10  # the switch restarted: counters and sysUpTime start over
        board.uptime_ticks[:] = 500
        after, health = split(await source.collect(T0 + 30_000_000_000))
    finally:
        await source.close()
    assert before[("leaf01", "swp4")].fields["sysUpTime"] == 9_000_000
    assert after[("leaf01", "swp4")].fields["sysUpTime"] == 500
    assert after[("leaf01", "swp4")].fields["ifHCInOctets"] == 10
    assert after[("leaf01", "swp4")].fields["ifAlias"] == "to node004 mlx5_0"
    assert health["leaf01"].fields["up"] == 1


async def test_polls_use_multi_column_getbulk_and_cache_static_columns(switch_board):
    board, agents = switch_board
    with RelayProxy(agents.endpoints["leaf01"]) as relay:
        source = SnmpSource.from_targets(
            [SnmpTarget("leaf01", *relay.endpoint, max_repetitions=3)], static_refresh_polls=3
        )
        try:
            per_poll = []
            for poll in range(4):
                start = len(relay.requests)
                points = await source.collect(T0 + poll)
                assert len([p for p in points if p.measurement == INTERFACE]) == 4
                per_poll.append(relay.requests[start:])
        finally:
            await source.close()
    assert {pdu for poll in per_poll for pdu, _ in poll} == {ber.GET_BULK_REQUEST}
    # 4 rows, 3 repetitions: two requests per walk; sysUpTime rides on the first one.
    # The static columns (ifName, ifAlias, ifHighSpeed, ifDescr) and sysObjectID join on polls 1 and 4
    # only; so do the probes for what the simulated agent lacks: ifCounterDiscontinuityTime (it drops
    # out after the first answer) and the generic EtherLike profile's pause table (a third request).
    assert [[count for _, count in poll] for poll in per_poll] == [[16, 13, 4], [10, 9], [10, 9], [16, 13, 4]]


async def test_full_simulated_fabric_poll_is_fast():
    """4 switches x 40 ports x 13 columns (~2,100 varbinds) well under 0.3 s wall per poll."""
    with CounterBoard(leaf_switches(4, 40)) as board, SimulatedSwitchAgents(board) as agents:
        source = SnmpSource.from_targets(targets_for(agents), static_refresh_polls=1)
        try:
            await source.collect(T0)
            durations = []
            for poll in range(5):
                board.counters += 1_000_000
                started = time.perf_counter()
                points = await source.collect(T0 + poll)
                durations.append(time.perf_counter() - started)
        finally:
            await source.close()
    assert len([p for p in points if p.measurement == INTERFACE]) == 160
    assert sorted(durations)[2] < 0.3, durations


async def test_fast_path_decodes_well_over_a_hundred_thousand_varbinds_per_cpu_second():
    """4 switches x 64 ports, ~2,600 varbinds a poll: pysnmp spent ~460 ms of CPU on one, the BER path ~10."""
    with CounterBoard(leaf_switches(4, 64)) as board, SimulatedSwitchAgents(board) as agents:
        source = SnmpSource.from_targets(targets_for(agents))
        try:
            await source.collect(T0)
            started = time.process_time()
            for poll in range(10):
                board.counters += 1_000_000
                points = await source.collect(T0 + poll)
            cpu_per_poll = (time.process_time() - started) / 10
        finally:
            await source.close()
    assert len([p for p in points if p.measurement == INTERFACE]) == 256
    varbinds_per_poll = 4 * 64 * 10  # switches x ports x per-poll columns (9 IF-MIB and sysUpTime)
    assert varbinds_per_poll / cpu_per_poll > 65_000, f"{cpu_per_poll * 1000:.1f} ms of CPU per poll"


# --- broken agents --------------------------------------------------------------------------------


async def test_dead_target_costs_only_its_deadline(switch_board, caplog):
    _, agents = switch_board
    dead = SnmpTarget("dead01", "127.0.0.1", free_udp_port(), timeout=5, retries=3, deadline=1.0)
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="collector.sources.snmp"):
        interfaces, health = split(await poll_once([dead, *targets_for(agents)]))
    elapsed = time.perf_counter() - started
    assert health["dead01"].fields["up"] == 0 and health["dead01"].fields["points"] == 0
    assert 0.9 < health["dead01"].fields["duration_seconds"] < 2.0
    assert health["leaf01"].fields["up"] == 1 and health["leaf01"].fields["duration_seconds"] < 0.9
    assert len(interfaces) == 8 and elapsed < 3.0  # without the deadline: 4 tries x 5 s
    assert "dead01" in caplog.text and "deadline" in caplog.text


async def test_garbage_answers_are_a_failed_target(switch_board, caplog):
    _, agents = switch_board
    with GarbageResponder() as garbage:
        target = SnmpTarget("garbage01", *garbage.endpoint, timeout=0.3, retries=1, deadline=2.0)
        with caplog.at_level(logging.WARNING, logger="collector.sources.snmp"):
            interfaces, health = split(await poll_once([target, *targets_for(agents)]))
    assert health["garbage01"].fields["up"] == 0
    assert health["garbage01"].fields["duration_seconds"] < 2.1
    assert health["leaf02"].fields["up"] == 1 and len(interfaces) == 8
    assert "garbage01" in caplog.text


async def test_slow_target_is_cut_at_its_deadline_and_others_finish(switch_board):
    _, agents = switch_board
    with RelayProxy(agents.endpoints["leaf01"], delay=0.4) as slow:
        target = SnmpTarget("slow01", *slow.endpoint, timeout=2, retries=0, deadline=0.6, max_repetitions=2)
        interfaces, health = split(await poll_once([target, *targets_for(agents)[1:]]))
    assert health["slow01"].fields["up"] == 0
    assert health["slow01"].fields["duration_seconds"] < 1.5
    assert health["leaf02"].fields["up"] == 1
    assert {host for host, _ in interfaces} == {"leaf02"}


async def test_down_target_is_retried_with_exponential_backoff_and_recovers(switch_board, caplog):
    _, agents = switch_board
    port = free_udp_port()
    flaky = SnmpTarget("flaky01", "127.0.0.1", port, timeout=0.1, retries=0, deadline=0.3)
    source = SnmpSource.from_targets([flaky, *targets_for(agents)], backoff_initial=0.5, backoff_max=0.8)
    try:
        with caplog.at_level(logging.INFO, logger="collector.sources.snmp"):
            first = split(await source.collect(T0))[1]["flaky01"].fields
            skipped = split(await source.collect(T0 + 1))[1]["flaky01"].fields
            time.sleep(0.5)
            second = split(await source.collect(T0 + 2))[1]["flaky01"].fields
            time.sleep(0.5)
            still_waiting = split(await source.collect(T0 + 3))[1]["flaky01"].fields
            time.sleep(0.35)
            with RelayProxy(agents.endpoints["leaf01"], port=port):
                interfaces, health = split(await source.collect(T0 + 4))
    finally:
        await source.close()
    assert first["up"] == 0 and first["skipped"] == 0 and first["consecutive_failures"] == 1
    assert 0.3 <= first["retry_in_seconds"] <= 0.5
    assert skipped == {"up": 0, "duration_seconds": 0.0, "points": 0, "consecutive_failures": 1,
                       "retry_in_seconds": skipped["retry_in_seconds"], "skipped": 1}
    assert second["skipped"] == 0 and second["consecutive_failures"] == 2 and second["retry_in_seconds"] > 0.5
    assert still_waiting["skipped"] == 1  # the delay doubled to 0.8 s (backoff_max)
    assert health["flaky01"].fields == {"up": 1, "duration_seconds": health["flaky01"].fields["duration_seconds"],
                                        "points": 4}
    assert ("flaky01", "swp1") in interfaces
    assert "next try in" in caplog.text and "answering again after 2 failed polls" in caplog.text


async def test_a_target_with_its_own_interval_is_polled_less_often(switch_board):
    _, agents = switch_board
    leaf01, leaf02 = targets_for(agents)
    slow = SnmpTarget(leaf02.name, leaf02.host, leaf02.port, interval=3600)
    source = SnmpSource.from_targets([leaf01, slow])
    try:
        first = split(await source.collect(T0))[1]
        second = split(await source.collect(T0 + 1))[1]
    finally:
        await source.close()
    assert set(first) == {"leaf01", "leaf02"} and set(second) == {"leaf01"}


# --- recordings served by snmpsimd ----------------------------------------------------------------


async def test_cumulus_recording(shared_snmpsim):
    target = SnmpTarget("cumulus_bgp", *shared_snmpsim.endpoint, community="cumulus_bgp")
    points = await poll_once([target])
    interfaces, health = split(points)
    assert len(interfaces) == 98 and health["cumulus_bgp"].fields["points"] == 98
    swp1 = interfaces[("cumulus_bgp", "swp1")]
    assert swp1.tags["ifIndex"] == "4"
    if_mib = {name: value for name, value in swp1.fields.items() if not name.startswith("cl")}
    assert if_mib == {
        "ifAlias": "prd-test01",
        "ifHighSpeed": 200_000,
        "ifOperStatus": 1,
        "ifHCInOctets": 3_320_181_240_056,
        "ifHCOutOctets": 1_288_488_009_089,
        "ifHCInUcastPkts": 2_863_622_739,
        "ifHCOutUcastPkts": 2_509_310_070,
        "ifInDiscards": 3_144_990,
        "ifOutDiscards": 0,
        "ifInErrors": 0,
        "ifOutErrors": 0,
        "ifCounterDiscontinuityTime": 0,
        "sysUpTime": 362_623_318,
    }
    # The cumulus profile (sysObjectID 1.3.6.1.4.1.40310): CUMULUS-COUNTERS-MIB discards, PFC and
    # per-traffic-class drops, all Counter64 (so no counter32_fields), all zero in this recording.
    cumulus = {name: value for name, value in swp1.fields.items() if name.startswith("cl")}
    assert len(cumulus) == 6 + 18 + 16 and set(cumulus.values()) == {0}
    assert {"clBufferOverflowDiscards", "clIntInPfc3Pkt", "clIntOutPfc3Pkt", "clIntOutTc3WredDiscard"} <= set(cumulus)
    assert interfaces[("cumulus_bgp", "swp47")].fields["ifOperStatus"] == 2
    # No golden file here: the recording is GPL test data that stays outside the repository.
    lines = encode(p for p in points if p.measurement == INTERFACE).splitlines()
    assert len(lines) == 98 and lines[3].startswith(
        'interface,agent_host=cumulus_bgp,ifIndex=4,ifName=swp1 ifAlias="prd-test01",ifHighSpeed=200000i,'
    )


async def test_three_vendors_in_one_poll(shared_snmpsim):
    targets = [
        SnmpTarget(name, *shared_snmpsim.endpoint, community=name, tags={"vendor": vendor})
        for name, vendor in (("cumulus_bgp", "nvidia"), ("arista_eos", "arista"), ("dell-os10", "dell"))
    ]
    interfaces, health = split(await poll_once(targets))
    counts = {name: sum(1 for host, _ in interfaces if host == name) for name in health}
    assert counts == {"cumulus_bgp": 98, "arista_eos": 55, "dell-os10": 36}
    assert all(p.fields["up"] == 1 for p in health.values())
    assert {p.tags["vendor"] for (host, _), p in interfaces.items() if host == "arista_eos"} == {"arista"}
    # The recordings have no Counter32 octet columns, and need none: every interface has HC counters.
    assert all("ifHCInOctets" in p.fields and "ifInOctets" not in p.fields for p in interfaces.values())


async def test_own_recordings_advance_wrap_and_reboot(snapshot_dir):
    serve_snapshot(snapshot_dir, "mini-switch-0.snmprec", "leaf01")
    with Snmpsimd(snapshot_dir, "leaf01") as server:
        source = SnmpSource.from_targets([SnmpTarget("leaf01", *server.endpoint, community="leaf01")])
        polls = []
        try:
            for snapshot in range(3):
                if snapshot:
                    serve_snapshot(snapshot_dir, f"mini-switch-{snapshot}.snmprec", "leaf01")
                polls.append(await source.collect(T0 + snapshot * 30_000_000_000))
        finally:
            await source.close()
    for snapshot, points in enumerate(polls):
        assert_golden(f"mini-switch-{snapshot}.lp", encode(points_without_durations(points)))
    first, second, third = (split(points)[0] for points in polls)
    # Counter32 discards and errors wrap at 2^32; the poller reports them raw.
    assert first[("leaf01", "swp2")].fields["ifInErrors"] == 4_294_967_290
    assert second[("leaf01", "swp2")].fields["ifInErrors"] == 4
    assert second[("leaf01", "swp51")].fields["ifHCInOctets"] == 1_200
    assert second[("leaf01", "swp51")].fields["ifOperStatus"] == 2
    # ifAlias is cached between refreshes: the recabling shows only after the reboot forced a refresh.
    assert second[("leaf01", "swp1")].fields["ifAlias"] == "to gpu-node01 mlx5_0"
    assert third[("leaf01", "swp1")].fields["ifAlias"] == "to gpu-node01 mlx5_0 (recabled)"
    assert third[("leaf01", "swp2")].fields["ifAlias"] == "to gpu-node02 mlx5_0 (replaced NIC)"
    assert third[("leaf01", "swp2")].fields["sysUpTime"] == 1_500


def points_without_durations(points: list[Point]) -> list[Point]:
    """Health points carry wall-clock durations; zero them so a golden file can hold them."""
    return [
        Point(p.measurement, p.tags, {**p.fields, "duration_seconds": 0.0}, p.time_ns)
        if p.measurement == COLLECTOR_HEALTH
        else p
        for p in points
    ]


async def test_agent_without_ifxtable_falls_back_to_counter32_octets_and_ifdescr(snapshot_dir):
    serve_snapshot(snapshot_dir, "legacy-switch.snmprec", "legacy01")
    with Snmpsimd(snapshot_dir, "legacy01") as server:
        source = SnmpSource.from_targets([SnmpTarget("legacy01", *server.endpoint, community="legacy01")])
        try:
            first = await source.collect(T0)
            second = await source.collect(T0 + 1)
        finally:
            await source.close()
    for points in (first, second):
        interfaces, health = split(points)
        assert health["legacy01"].fields["up"] == 1
        assert interfaces[("legacy01", "GigabitEthernet0/2")].fields == {
            "ifOperStatus": 2,
            "ifInDiscards": 2,
            "ifOutDiscards": 0,
            "ifInErrors": 0,
            "ifOutErrors": 4,
            "ifInOctets": 246_912,
            "ifOutOctets": 1_308_642,
            "sysUpTime": 4_200,
            # The fallback octet counters wrap at 2^32, and the point says so.
            "counter32_fields": "ifInOctets,ifOutOctets",
        }
        assert interfaces[("legacy01", "GigabitEthernet0/1")].tags["ifIndex"] == "1"


def comparable(points: list[Point]) -> list[str]:
    """Line protocol of ``points`` without the health points' wall-clock durations, sorted."""
    return sorted(encode(points_without_durations(points)).splitlines())


async def test_fast_path_and_pysnmp_give_identical_points(shared_snmpsim, own_snmpsim):
    targets = [
        SnmpTarget(name, *server.endpoint, community=name)
        for server, names in (
            (shared_snmpsim, ("cumulus_bgp", "arista_eos", "dell-os10")),
            (own_snmpsim, ("arista-leaf-0", "onyx-leaf", "juniper-qfx", "legacy-switch", "mini-switch-0")),
        )
        for name in names
    ]
    fast = await poll_once(targets)
    slow = await poll_once(targets, use_pysnmp_for_v2c=True)
    assert all(p.fields["up"] == 1 for p in fast if p.measurement == COLLECTOR_HEALTH)
    assert len(fast) > 200 and comparable(fast) == comparable(slow)


# --- net-snmp's snmpd showing this machine's interfaces --------------------------------------------


def kernel_interfaces() -> dict[int, str]:
    """ifindex to name, from ``ip -o link``."""
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^(\d+): ([^:@]+)[:@]", out, re.MULTILINE)}


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory):
    with Snmpd(tmp_path_factory.mktemp("snmpd")) as agent:
        yield agent


async def test_snmpd_interfaces_match_the_kernel(snmpd):
    before_walk = walk_values(snmpd.endpoint, "1.3.6.1.2.1.31.1.1.1.6")
    interfaces, health = split(await poll_once([SnmpTarget("host", *snmpd.endpoint)]))
    names = walk_values(snmpd.endpoint, "1.3.6.1.2.1.31.1.1.1.1")
    oper = walk_values(snmpd.endpoint, "1.3.6.1.2.1.2.2.1.8")
    assert health["host"].fields["up"] == 1
    assert {int(p.tags["ifIndex"]): name for (_, name), p in interfaces.items()} == kernel_interfaces()
    for (_, name), point in interfaces.items():
        index = point.tags["ifIndex"]
        assert names[f"1.3.6.1.2.1.31.1.1.1.1.{index}"] == name
        assert point.fields["ifOperStatus"] == int(oper[f"1.3.6.1.2.1.2.2.1.8.{index}"])
        assert point.fields["ifHCInOctets"] >= int(before_walk[f"1.3.6.1.2.1.31.1.1.1.6.{index}"])


async def test_fast_path_and_pysnmp_agree_on_snmpd(snmpd):
    slow, _ = split(await poll_once([SnmpTarget("host", *snmpd.endpoint)], use_pysnmp_for_v2c=True))
    fast, _ = split(await poll_once([SnmpTarget("host", *snmpd.endpoint)]))
    assert set(fast) == set(slow) == {("host", name) for name in kernel_interfaces().values()}
    for key, point in fast.items():
        before = slow[key].fields
        assert point.tags == slow[key].tags and set(point.fields) == set(before)
        for name, value in point.fields.items():
            if name.startswith("ifHC") or name in ("sysUpTime",):
                assert value >= before[name], (key, name)  # counters moved on between the two polls
            elif name not in ("ifInDiscards", "ifOutDiscards", "ifInErrors", "ifOutErrors"):
                assert value == before[name], (key, name)


def v3_target(name: str, endpoint: tuple[str, int], user: str, **options) -> SnmpTarget:
    auth, auth_key, priv, priv_key = Snmpd.V3_USERS[user]
    return SnmpTarget(name, *endpoint, version="3", user=user, auth_protocol=auth, auth_key=auth_key,
                      priv_protocol=priv, priv_key=priv_key, **options)


@pytest.mark.parametrize("pysnmp", [False, True], ids=["built-in USM", "pysnmp"])
async def test_snmpv3_auth_priv_against_snmpd(snmpd, pysnmp):
    targets = [v3_target(f"host-{user}", snmpd.endpoint, user) for user in ("strandwatch", "sha512user")]
    stranger = SnmpTarget("host-unknown-user", *snmpd.endpoint, version="3", user="stranger", deadline=2.0)
    source = SnmpSource(SnmpConfig((*targets, stranger)), use_pysnmp_for_v3=pysnmp)
    try:
        interfaces, health = split(await source.collect(T0))
    finally:
        await source.close()
    assert {name: p.fields["up"] for name, p in health.items()} == {
        "host-strandwatch": 1, "host-sha512user": 1, "host-unknown-user": 0,
    }
    assert {name for host, name in interfaces if host == "host-sha512user"} == set(kernel_interfaces().values())


async def test_snmpv3_with_des_goes_through_pysnmp(snmpd):
    interfaces, health = split(await poll_once([v3_target("host-des", snmpd.endpoint, "desuser")]))
    assert health["host-des"].fields["up"] == 1 and len(interfaces) == len(kernel_interfaces())


async def test_snmpv3_rediscovers_a_restarted_agent(tmp_path):
    """This snmpd makes up a new engine id when it restarts and reports unknownEngineID to requests
    for the old one: the poller discovers the engine again and sends the request once more."""
    agent = Snmpd(tmp_path)
    source = SnmpSource.from_targets([v3_target("restarted", agent.endpoint, "strandwatch", timeout=1, retries=0)])
    try:
        with agent:
            first = split(await source.collect(T0))[1]["restarted"].fields
        with agent:
            second = split(await source.collect(T0 + 1))[1]["restarted"].fields
    finally:
        await source.close()
    assert first["up"] == 1 and second["up"] == 1


async def test_snmpv3_resynchronises_a_clock_out_of_its_time_window(snmpd):
    """An agent answers a request from outside its time window (stale boots or time) with an
    authenticated notInTimeWindow report; the session takes the agent's clock from it and retries."""
    client = SnmpClient()
    try:
        session = await client.session(v3_target("clock", snmpd.endpoint, "strandwatch"))
        assert isinstance(session, V3Session)
        uptime = [(1, 3, 6, 1, 2, 1, 1, 3)]
        first = await session.bulk(1, 0, uptime)
        session.peer.engine.boots -= 1  # as if the agent had restarted since we last heard it
        session.peer.engine.time += 100_000
        second = await session.bulk(1, 0, uptime)
    finally:
        await client.close()
    assert first[0][0] == second[0][0] == (1, 3, 6, 1, 2, 1, 1, 3, 0) and session.requests == 2


# --- configuration --------------------------------------------------------------------------------


def test_sample_config_loads(tmp_path, monkeypatch):
    sample = tmp_path / "snmp.yaml"
    sample.write_text(SAMPLE.read_text())
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "spine-priv-key").write_text("sample-priv-key\n")
    monkeypatch.setenv("STRANDWATCH_SNMP_COMMUNITY", "sample-community")
    config = load_config(sample)
    assert [t.name for t in config.targets] == ["leaf01", "leaf02", "spine01"]
    leaf01, leaf02, spine01 = config.targets
    assert leaf01.community == "fabric-ro" and leaf01.tags == {"rack": "r12", "role": "leaf"}
    assert leaf02.community == "sample-community"
    assert spine01.version == "3" and spine01.priv_protocol == "aes" and spine01.timeout == 3
    assert spine01.priv_key == "sample-priv-key"
    assert config.static_refresh_polls == 10 and config.concurrency == 32 and config.interval == 10
    assert (config.backoff_initial, config.backoff_max) == (10, 300)
    SnmpSource(config)  # builds the credentials and loads the profiles for every target


def one_target(**keys) -> dict:
    """An SNMP section with one target ``a`` on host ``h`` plus ``keys``."""
    return {"targets": [{"name": "a", "host": "h", **keys}]}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"targets": []}, "snmp: targets: must be a non-empty list"),
        ({"targets": [{"host": "10.0.0.1"}]}, r"targets\[0\]\.name: is required"),
        (one_target(port=70000), r"targets\[0\] \(a\)\.port: must be an integer 1-65535, got 70000"),
        (one_target(version=1), r"version: must be '2c' or '3', got '1' \(SNMPv1 has no GETBULK\)"),
        (one_target(comunity="x"), r"unknown key\(s\) \['comunity'\]"),
        (one_target(version=3), r"\(a\)\.user: is required for version 3"),
        (one_target(version=3, user="u", priv_protocol="aes", priv_key="12345678"), "needs an auth_protocol"),
        (one_target(version=3, user="u", auth_protocol="sha", auth_key="short"), "auth_key: must be a passphrase"),
        (one_target(tags={"agent_host": "x"}), r"tags: \['agent_host'\] are set by the poller"),
        (one_target(deadline="soon"), r"deadline: must be seconds > 0, got 'soon'"),
        (one_target(max_repetitions=0), r"max_repetitions: must be an integer 1-1000, got 0"),
        ({"targets": [{"name": "a", "host": "h"}, {"name": "a", "host": "g"}]}, r"duplicate names \['a'\]"),
        ({**one_target(), "static_refresh_polls": 0}, r"static_refresh_polls: must be an integer >= 1"),
        ({**one_target(), "defaults": {"name": "x"}}, r"defaults: unknown or per-target-only key\(s\) \['name'\]"),
        (one_target(interval=0), r"\(a\)\.interval: must be seconds > 0, got 0"),
        ({**one_target(), "interval": "10s"}, r"snmp: interval: must be seconds > 0, got '10s'"),
        ({**one_target(), "backoff_initial": 60, "backoff_max": 30}, r"backoff_max: must be at least backoff_initial"),
        ({**one_target(), "profile_dirs": "/etc/profiles"}, r"profile_dirs: must be a list of folder paths"),
        (
            {
                "defaults": {"version": 3, "user": "mon", "auth_protocol": "sha"},
                "targets": [
                    {"name": "a", "host": "h", "auth_key": "12345678"},
                    {"name": "b", "host": "g", "auth_key": "87654321"},
                ],
            },
            r"'a' and 'b' use SNMPv3 user 'mon' with different protocols or keys",
        ),
    ],
)
def test_config_errors_name_the_key_and_the_problem(section, message):
    with pytest.raises(SnmpConfigError, match=message):
        parse_config(section)


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "snmp.yaml"
    bad.write_text("targets:\n  - name: leaf01\n    host: 10.0.0.1\n    retries: -1\n")
    expected = r"snmp\.yaml: targets\[0\] \(leaf01\)\.retries: must be an integer >= 0"
    with pytest.raises(SnmpConfigError, match=expected):
        load_config(bad)
    bad.write_text("targets: [\n")
    with pytest.raises(SnmpConfigError, match=r"snmp\.yaml: not valid YAML"):
        load_config(bad)
    with pytest.raises(SnmpConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_defaults_apply_to_every_target_and_tags_become_strings():
    config = parse_config(
        {
            "defaults": {"community": "ro", "timeout": 0.5, "tags": {"site": "ams"}},
            "targets": [
                {"name": "a", "host": "h"},
                {"name": "b", "host": "g", "community": "other", "tags": {"rack": 7}},
            ],
        }
    )
    a, b = config.targets
    assert (a.community, a.timeout, dict(a.tags)) == ("ro", 0.5, {"site": "ams"})
    assert (b.community, dict(b.tags)) == ("other", {"rack": "7"})


async def test_close_then_collect_again(switch_board):
    _, agents = switch_board
    source = SnmpSource.from_targets(targets_for(agents))
    first = await source.collect(T0)
    await source.close()
    second = await source.collect(T0 + 1)
    await source.close()
    assert len(first) == len(second) == 10


# --- secrets --------------------------------------------------------------------------------------

COMMUNITY = "s3cret-community-4711"
AUTH_KEY = "s3cret-auth-key-4711"
PRIV_KEY = "s3cret-priv-key-4711"


def test_secrets_come_from_environment_variables_and_files(tmp_path, monkeypatch):
    monkeypatch.setenv("SW_TEST_COMMUNITY", COMMUNITY)
    monkeypatch.setenv("SW_TEST_PRIV", PRIV_KEY)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "auth").write_text(AUTH_KEY + "\n")
    config_file = tmp_path / "snmp.yaml"
    config_file.write_text(
        "defaults: {community_env: SW_TEST_COMMUNITY}\n"
        "targets:\n"
        "  - {name: a, host: h}\n"
        "  - {name: b, host: h, community: other}\n"
        "  - {name: c, host: h, version: 3, user: mon, auth_protocol: sha512, auth_key_file: secrets/auth,\n"
        "     priv_protocol: aes256, priv_key_env: SW_TEST_PRIV}\n"
    )
    a, b, c = load_config(config_file).targets
    assert (a.community, b.community) == (COMMUNITY, "other")
    assert (c.auth_key, c.priv_key) == (AUTH_KEY, PRIV_KEY)  # the file's trailing newline is not part of it
    assert not any(secret in repr(target) for secret in (COMMUNITY, AUTH_KEY, PRIV_KEY) for target in (a, b, c))


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"community_env": "SW_TEST_UNSET"}, r"\(a\)\.community_env: environment variable SW_TEST_UNSET is not set"),
        ({"community_file": "missing.txt"}, r"\(a\)\.community_file: cannot read missing.txt: No such file"),
        ({"community": "x", "community_env": "HOME"}, r"\(a\): set only one of community, community_env"),
        ({"version": 3, "user": "u", "auth_protocol": "sha", "auth_key_file": "short.txt"},
         r"\(a\)\.auth_key: must be a passphrase of at least 8 characters"),
        ({"community_file": "empty.txt"}, r"\(a\)\.community_file: empty.txt holds an empty community"),
    ],
)
def test_secret_errors_name_the_source_not_the_secret(tmp_path, keys, message):
    (tmp_path / "short.txt").write_text("tiny\n")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(SnmpConfigError, match=message) as error:
        parse_config({"targets": [{"name": "a", "host": "h", **keys}]}, base_dir=tmp_path)
    assert "tiny" not in str(error.value)


async def test_secrets_never_reach_logs_errors_or_points(switch_board, snmpd, caplog):
    _, agents = switch_board
    leaf01 = agents.endpoints["leaf01"]
    with GarbageResponder() as garbage, caplog.at_level(logging.DEBUG):
        targets = [
            SnmpTarget("wrong-community", *leaf01, community=COMMUNITY, timeout=0.2, retries=0, deadline=1),
            SnmpTarget("garbage", *garbage.endpoint, community=COMMUNITY, timeout=0.2, retries=0, deadline=1),
            SnmpTarget("wrong-auth", *snmpd.endpoint, version="3", user=Snmpd.V3_USER, auth_protocol="sha256",
                       auth_key=AUTH_KEY, priv_protocol="aes", priv_key=PRIV_KEY, timeout=0.5, retries=0, deadline=2),
            SnmpTarget("wrong-priv", *snmpd.endpoint, version="3", user=Snmpd.V3_USER, auth_protocol="sha256",
                       auth_key=Snmpd.V3_AUTH_KEY, priv_protocol="aes", priv_key=PRIV_KEY, timeout=0.5, retries=0,
                       deadline=2),
        ]
        # One poller keeps one set of keys per SNMPv3 user name: the wrong-priv target needs its own.
        points = await poll_once(targets[:3]) + await poll_once(targets[3:])
    health = split(points)[1]
    assert [health[t.name].fields["up"] for t in targets] == [0, 0, 0, 0]
    assert len(caplog.records) >= 4
    exposed = caplog.text + encode(points) + repr(targets) + "".join(str(r.args) for r in caplog.records)
    for secret in (COMMUNITY, AUTH_KEY, PRIV_KEY):
        assert secret not in exposed
