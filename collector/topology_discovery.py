"""The fabric's wiring from the switches' LLDP tables, as a topology document.

Each switch (an SNMP target) is walked for LLDP-MIB ``lldpRemTable`` (who is
on the other end of each port: lldpRemSysName, lldpRemPortId and its subtype,
lldpRemPortDesc, the chassis id) and ``lldpLocPortTable`` (which local port
an lldpRemLocalPortNum is), plus ifName/ifDescr to name local ports the way
the ``interface`` points do, and sysName. :func:`discover` turns that into a
plain dict in the topology file format of the offline detect contract
(``detector/topology.py``, ``docs/topology.md``; the collector does not
import the detector)::

    hosts:
      node01:
        nics:
          eth2: {switch: leaf01, port: swp1, netdev: eth2, gpus: []}
    switches:
      leaf01:
        uplinks: [{port: swp51, peer: spine01, peer_port: swp1}]
      spine01:
        uplinks: []

Rules, in order:

- A neighbor whose lldpRemSysName (or its part before the first dot) is a
  target's name or a target's sysName is that switch: the link is a
  switch-to-switch link. ``peer_port`` is the peer's own name for its port,
  taken from the peer's LLDP table when it reports this link back, else
  from the advertised port id.
- A neighbor matching one of ``switch_patterns`` (shell patterns such as
  ``spine*`` or ``core-*``) is a switch that is not polled: an uplink to it.
- Any other neighbor with a sysName is a host: the advertised port id is
  its netdev (lldpd and most NIC agents send the interface name, or the MAC
  with the interface name as port description). The NIC's key is that
  netdev (or the MAC when nothing names the interface); ``gpus`` is empty.
  Rename the key to the RDMA device (``mlx5_0``) and fill ``gpus`` by hand
  or from the node inventory: LLDP does not know either.
- A neighbor without a sysName cannot be named and is left out (logged).

LLDP system capabilities are deliberately not used to tell switches from
hosts: GPU hosts running Docker advertise Bridge and Router too.

Switch-to-switch links are written as uplinks of the switch closer to the
hosts (fewer hops from a switch with host neighbors) towards the farther
one; links between switches equally far from hosts appear on both.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Collection, Sequence

from collector.sources.snmp import ifmib
from collector.sources.snmp.config import SnmpTarget
from collector.sources.snmp.session import SnmpClient
from collector.sources.snmp.walk import walk_columns

log = logging.getLogger(__name__)

LLDP_LOC_PORT_ENTRY = (1, 0, 8802, 1, 1, 2, 1, 3, 7, 1)
LLDP_REM_ENTRY = (1, 0, 8802, 1, 1, 2, 1, 4, 1, 1)
COLUMNS = {
    "ifName": ifmib.COLUMNS["ifName"],
    "ifDescr": ifmib.COLUMNS["ifDescr"],
    "lldpLocPortIdSubtype": LLDP_LOC_PORT_ENTRY + (2,),
    "lldpLocPortId": LLDP_LOC_PORT_ENTRY + (3,),
    "lldpLocPortDesc": LLDP_LOC_PORT_ENTRY + (4,),
    "lldpRemChassisIdSubtype": LLDP_REM_ENTRY + (4,),
    "lldpRemChassisId": LLDP_REM_ENTRY + (5,),
    "lldpRemPortIdSubtype": LLDP_REM_ENTRY + (6,),
    "lldpRemPortId": LLDP_REM_ENTRY + (7,),
    "lldpRemPortDesc": LLDP_REM_ENTRY + (8,),
    "lldpRemSysName": LLDP_REM_ENTRY + (9,),
}
MAC_ADDRESS = 3
"""LldpPortIdSubtype and LldpChassisIdSubtype value for a MAC address (4 for the chassis)."""
CHASSIS_MAC_ADDRESS = 4
NETWORK_ADDRESS = 4
"""LldpPortIdSubtype networkAddress: an address family octet and the address, not a name."""


@dataclass
class Neighbor:
    """One lldpRemTable row, decoded: what is plugged into ``port`` of ``switch``."""

    switch: str
    port: str
    sys_name: str | None
    port_id: str
    port_id_is_mac: bool
    port_desc: str | None
    chassis: str


@dataclass
class SwitchLldp:
    """What one switch told: its sysName and its neighbors."""

    target: str
    sys_name: str | None
    neighbors: list[Neighbor] = field(default_factory=list)
    port_order: dict[str, int] = field(default_factory=dict)


NOT_ADVERTISED = "not advertised"
"""What Dell OS10 (and others) put in a remote TLV the neighbor did not send: the same as nothing."""


def _text(value: object) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else "" if value is None else str(value)
    text = text.strip().strip("\x00")
    return "" if text.lower() == NOT_ADVERTISED else text


def _mac(value: object) -> str:
    if isinstance(value, bytes) and len(value) == 6:
        return ":".join(f"{byte:02x}" for byte in value)
    return _text(value)


async def read_lldp(client: SnmpClient, target: SnmpTarget) -> SwitchLldp:
    """Walk one switch's LLDP and interface names; raises what the session raises."""
    session = await client.session(target)
    result = await walk_columns(session, COLUMNS, target.max_repetitions, {"sysName": ifmib.SYS_NAME})
    columns = result.columns
    if_names = {index[0]: _text(name) for index, name in columns["ifName"].items() if len(index) == 1}
    if_descr = {index[0]: _text(name) for index, name in columns["ifDescr"].items() if len(index) == 1}
    known_names = set(if_names.values())
    by_descr = {descr: if_names.get(index, descr) for index, descr in if_descr.items()}

    def local_port(number: int) -> str:
        """The ifName of lldpLocPortNum ``number``, by its advertised id, its description or its ifIndex."""
        candidates = [_text(columns[c].get((number,))) for c in ("lldpLocPortId", "lldpLocPortDesc")]
        for candidate in candidates:
            if candidate in known_names:
                return candidate
        for candidate in candidates:
            if candidate in by_descr:
                return by_descr[candidate]
        if number in if_names:
            return if_names[number]
        return next((c for c in candidates if c), str(number))

    sys_name = _text(result.scalars.get("sysName")) or None
    lldp = SwitchLldp(target.name, sys_name)
    order = {name: index for index, name in if_names.items()}
    for index, port_id in sorted(columns["lldpRemPortId"].items()):
        if len(index) != 3:
            continue
        local_number = index[1]
        port_subtype = columns["lldpRemPortIdSubtype"].get(index)
        chassis_subtype = columns["lldpRemChassisIdSubtype"].get(index)
        chassis = columns["lldpRemChassisId"].get(index)
        is_mac = port_subtype == MAC_ADDRESS
        lldp.neighbors.append(
            Neighbor(
                switch=target.name,
                port=local_port(local_number),
                sys_name=_text(columns["lldpRemSysName"].get(index)) or None,
                port_id=_mac(port_id) if is_mac else _text(port_id) if port_subtype != NETWORK_ADDRESS else "",
                port_id_is_mac=is_mac,
                port_desc=_text(columns["lldpRemPortDesc"].get(index)) or None,
                chassis=_mac(chassis) if chassis_subtype == CHASSIS_MAC_ADDRESS else _text(chassis),
            )
        )
    lldp.port_order = {neighbor.port: order.get(neighbor.port, 1 << 31) for neighbor in lldp.neighbors}
    return lldp


async def discover(
    targets: Sequence[SnmpTarget],
    *,
    switch_patterns: Collection[str] = (),
    concurrency: int = 32,
    client: SnmpClient | None = None,
) -> dict[str, Any]:
    """Walk every target's LLDP tables (``concurrency`` at once, each under its deadline) into a topology dict.

    A target that cannot be read is logged and left out; its neighbors still
    see it as a switch when they name it.
    """
    own_client = client is None
    snmp = client or SnmpClient()
    slots = asyncio.Semaphore(concurrency)

    async def read(target: SnmpTarget) -> SwitchLldp | None:
        async with slots:
            try:
                async with asyncio.timeout(target.deadline):
                    return await read_lldp(snmp, target)
            except TimeoutError:
                log.warning("lldp: target %s: no complete answer within its %.1f s deadline", target.name,
                            target.deadline)
            except Exception as exc:
                log.warning("lldp: target %s: %s: %s", target.name, type(exc).__name__, exc)
            return None

    try:
        tables = [table for table in await asyncio.gather(*(read(t) for t in targets)) if table is not None]
    finally:
        if own_client:
            await snmp.close()
    return build_topology(tables, [t.name for t in targets], switch_patterns)


def discover_topology(targets: Sequence[SnmpTarget], **options: Any) -> dict[str, Any]:
    """:func:`discover` for callers without an event loop."""
    return asyncio.run(discover(targets, **options))


def build_topology(
    tables: Sequence[SwitchLldp], target_names: Sequence[str], switch_patterns: Collection[str] = ()
) -> dict[str, Any]:
    """The topology dict from the switches' LLDP tables (see the module docstring for the rules)."""
    aliases: dict[str, str] = {}
    for name in target_names:
        aliases[name] = name
        aliases.setdefault(name.split(".")[0], name)
    for table in tables:
        if table.sys_name:
            aliases.setdefault(table.sys_name, table.target)
            aliases.setdefault(table.sys_name.split(".")[0], table.target)

    def switch_of(neighbor: Neighbor) -> str | None:
        name = neighbor.sys_name
        if name is None:
            return None
        return aliases.get(name) or aliases.get(name.split(".")[0])

    # Each polled switch's own port names towards each peer switch, to name the far end of links.
    ports_toward: dict[tuple[str, str], list[str]] = defaultdict(list)
    for table in tables:
        for neighbor in table.neighbors:
            peer = switch_of(neighbor)
            if peer is not None:
                ports_toward[(table.target, peer)].append(neighbor.port)

    hosts: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    links: list[tuple[str, str, str, str | None, bool]] = []  # switch, port, peer, peer_port, peer polled
    for table in tables:
        for neighbor in table.neighbors:
            peer = switch_of(neighbor)
            if peer is not None:
                links.append((table.target, neighbor.port, peer, _peer_port(neighbor, peer, ports_toward), True))
            elif neighbor.sys_name and any(fnmatch.fnmatchcase(neighbor.sys_name, p) for p in switch_patterns):
                links.append((table.target, neighbor.port, neighbor.sys_name, _advertised_port(neighbor), False))
            elif neighbor.sys_name:
                netdev = neighbor.port_id if not neighbor.port_id_is_mac else neighbor.port_desc
                key = netdev or neighbor.port_id
                nic: dict[str, Any] = {"switch": table.target, "port": neighbor.port}
                if netdev:
                    nic["netdev"] = netdev
                nic["gpus"] = []
                hosts[neighbor.sys_name][key] = nic
            else:
                log.info(
                    "lldp: %s %s: neighbor %s (port %s) advertises no system name; left out",
                    table.target, neighbor.port, neighbor.chassis, neighbor.port_id,
                )

    tiers = _tiers({t.target for t in tables}, {nic["switch"] for nics in hosts.values() for nic in nics.values()},
                   [(a, b) for a, _, b, _, polled in links if polled])
    switches: dict[str, dict[str, Any]] = {t.target: {"uplinks": []} for t in tables}
    order = {t.target: t.port_order for t in tables}
    for switch, port, peer, peer_port, polled in sorted(links, key=lambda l: (l[0], order[l[0]].get(l[1], 0), l[1])):
        if polled and tiers.get(switch, _FAR) > tiers.get(peer, _FAR):
            continue  # the peer, closer to the hosts, lists this link as its uplink
        switches[switch]["uplinks"].append({"port": port, "peer": peer, "peer_port": peer_port})
    return {
        "hosts": {name: {"nics": dict(sorted(nics.items()))} for name, nics in sorted(hosts.items())},
        "switches": dict(sorted(switches.items())),
    }


_FAR = 1 << 30


def _tiers(switches: set[str], leaves: set[str], links: list[tuple[str, str]]) -> dict[str, int]:
    """Hops from the nearest switch with host neighbors; switches that reach none are far."""
    adjacent: dict[str, set[str]] = defaultdict(set)
    for a, b in links:
        adjacent[a].add(b)
        adjacent[b].add(a)
    tiers = {leaf: 0 for leaf in leaves}
    frontier = sorted(leaves)
    while frontier:
        following = []
        for switch in frontier:
            for peer in sorted(adjacent[switch]):
                if peer not in tiers:
                    tiers[peer] = tiers[switch] + 1
                    following.append(peer)
        frontier = following
    return {switch: tiers.get(switch, _FAR) for switch in switches | set(adjacent)}


def _advertised_port(neighbor: Neighbor) -> str | None:
    """The neighbor's port name as it advertised it: the port id, or the description when the id is a MAC."""
    if neighbor.port_id_is_mac:
        return neighbor.port_desc or neighbor.port_id
    return neighbor.port_id or neighbor.port_desc


def _peer_port(neighbor: Neighbor, peer: str, ports_toward: dict[tuple[str, str], list[str]]) -> str | None:
    """The polled peer's ifName for this link: from its own LLDP table when it names our switch on
    exactly one port, or when one of the ports it names matches what our neighbor advertised."""
    back = ports_toward.get((peer, neighbor.switch), [])
    advertised = _advertised_port(neighbor)
    if advertised in back or not back:
        return advertised
    if len(back) == 1:
        return back[0]
    return advertised
