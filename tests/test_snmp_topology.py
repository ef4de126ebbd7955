"""LLDP topology discovery against snmpsimd recordings: real switches' tables and a leaf-spine of our own."""

from __future__ import annotations

import logging
import os

import yaml

from collector.sources.snmp import SnmpTarget
from collector.topology_discovery import discover
from detector.topology import Topology
from snmp_fixtures import (
    GOLDEN,
    free_udp_port,
    own_snmpsim,  # noqa: F401  (pytest fixture)
    shared_snmpsim,  # noqa: F401  (pytest fixture)
)


async def test_arista_and_dell_recordings(shared_snmpsim, caplog):
    targets = [SnmpTarget(name, *shared_snmpsim.endpoint, community=name) for name in ("arista_eos", "dell-os10")]
    with caplog.at_level(logging.INFO, logger="collector.topology_discovery"):
        plain = await discover(targets)
    # Without patterns every named neighbor that is not a polled switch is a host. The Arista's four
    # MAC-only neighbors and the Dell's "Not Advertised" one have no system name: they cannot be
    # named and are left out, with a log line each.
    assert set(plain["hosts"]) == {"3750E-Estudio1.example.net", "4900M-CORE.example.net", "1007-mnt-1",
                                   "1007-lan-2", "core-1"}
    assert plain["hosts"]["4900M-CORE.example.net"]["nics"] == {
        "Te1/3": {"switch": "arista_eos", "port": "Ethernet48", "netdev": "Te1/3", "gpus": []}
    }
    assert caplog.text.count("advertises no system name") == 5
    # Dell's lldpRemLocalPortNum is not an ifIndex: ports are named through lldpLocPortId.
    assert plain["hosts"]["1007-lan-2"]["nics"]["ethernet1/1/26"]["port"] == "ethernet1/1/26"

    patterned = await discover(targets, switch_patterns=["*CORE*", "3750E-*", "core-*", "1007-lan-*"])
    assert set(patterned["hosts"]) == {"1007-mnt-1"}
    assert patterned["switches"]["arista_eos"]["uplinks"] == [
        {"port": "Ethernet47", "peer": "3750E-Estudio1.example.net", "peer_port": "\\A 7050s-estudio Et47\\"},
        {"port": "Ethernet48", "peer": "4900M-CORE.example.net", "peer_port": "Te1/3"},
    ]
    assert [u["port"] for u in patterned["switches"]["dell-os10"]["uplinks"]] == [
        "ethernet1/1/25", "ethernet1/1/26", "ethernet1/1/29",
    ]
    topology = Topology.from_dict(patterned)
    assert topology.nic_links() == {("1007-mnt-1", "Gi1/0/6"): "dell-os10:mgmt1/1/1"}
    assert "4900M-CORE.example.net" in topology.switches  # unpolled peers become switches of their own


async def test_own_leaf_and_spine_give_the_golden_topology(own_snmpsim, caplog):
    targets = [
        SnmpTarget("leaf01", *own_snmpsim.endpoint, community="arista-leaf-0"),
        SnmpTarget("spine01", *own_snmpsim.endpoint, community="cumulus-spine"),
        SnmpTarget("leaf02", "127.0.0.1", free_udp_port(), timeout=0.2, retries=0, deadline=0.5),
    ]
    with caplog.at_level(logging.WARNING, logger="collector.topology_discovery"):
        topology = await discover(targets, switch_patterns=["superspine*"])
    assert "lldp: target leaf02" in caplog.text
    text = yaml.safe_dump(topology, sort_keys=False, default_flow_style=None)
    golden = GOLDEN / "topology-leaf-spine.yaml"
    if os.environ.get("STRANDWATCH_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
    # leaf01 lists the link to spine01 as its uplink; spine01 names its own end even though leaf01
    # advertised a MAC as port id (taken from leaf01's table), and lists only its superspine uplink.
    assert topology["switches"]["leaf01"]["uplinks"] == [
        {"port": "Ethernet49/1", "peer": "spine01", "peer_port": "swp1"}
    ]
    assert topology["switches"]["spine01"]["uplinks"] == [
        {"port": "swp2", "peer": "superspine01.fabric.example", "peer_port": "swp7"}
    ]
    # node01 advertised its MAC as port id and its netdev as port description.
    assert topology["hosts"]["node01"]["nics"] == {
        "eth2": {"switch": "leaf01", "port": "Ethernet1", "netdev": "eth2", "gpus": []}
    }
    loaded = Topology.from_dict(topology)
    assert loaded.nic_links() == {("node01", "eth2"): "leaf01:Ethernet1",
                                  ("node02.cluster.local", "ens1f0np0"): "leaf01:Ethernet2"}
