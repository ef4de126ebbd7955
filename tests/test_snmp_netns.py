"""The SNMP source against net-snmp's snmpd in a network namespace whose veth interfaces carry real traffic.

The poller runs inside the namespace (``strandwatch collect snmp --once``), as
it would on a switch's management network; the traffic comes from a second
namespace at the far ends of the veths.
"""

from __future__ import annotations

import pytest
import yaml

from collector.lineprotocol import parse
from collector.schema import COLLECTOR_HEALTH, INTERFACE
from snmp_fixtures import NetnsSnmpd, run_in_namespace

PORTS = 8


@pytest.fixture(scope="module")
def netns_snmpd(tmp_path_factory):
    with NetnsSnmpd(tmp_path_factory.mktemp("netns-snmpd"), PORTS) as agent:
        yield agent


def poll(netns_snmpd: NetnsSnmpd, workdir, **target) -> tuple[dict, dict]:
    """One poll from inside the namespace: interface points by ifName, health points by target."""
    config = workdir / f"snmp-{target['name']}.yaml"
    config.write_text(yaml.safe_dump({"targets": [{"host": "127.0.0.1", "port": NetnsSnmpd.PORT, **target}]}))
    points = parse(run_in_namespace(netns_snmpd.agent, config))
    interfaces = {p.tags["ifName"]: p for p in points if p.measurement == INTERFACE}
    health = {p.tags["target"]: p for p in points if p.measurement == COLLECTOR_HEALTH}
    return interfaces, health


def test_byte_rates_from_two_polls_match_the_traffic_sent(netns_snmpd, tmp_path):
    before, health = poll(netns_snmpd, tmp_path, name="agent")
    assert health["agent"].fields["up"] == 1
    assert set(before) == {"lo"} | {f"va{i}" for i in range(1, PORTS + 1)}
    sent = {f"va{i}": netns_snmpd.blast(i, packets=200 * i, payload=1000) for i in range(1, PORTS + 1)}
    # snmpd caches interface statistics for about a second; wait until the kernel's counters show up in SNMP.
    kernel = {f"va{i}": netns_snmpd.rx_bytes(i) for i in range(1, PORTS + 1)}
    for _ in range(30):
        after, _ = poll(netns_snmpd, tmp_path, name="agent")
        if all(after[name].fields["ifHCInOctets"] == kernel[name] for name in kernel):
            break
    seconds = (after["va1"].time_ns - before["va1"].time_ns) / 1e9
    for name, bytes_sent in sent.items():
        rate = (after[name].fields["ifHCInOctets"] - before[name].fields["ifHCInOctets"]) / seconds
        assert rate == pytest.approx(bytes_sent / seconds, rel=0.02), name
        assert after[name].fields["ifOperStatus"] == 1 and after[name].fields["ifHighSpeed"] == 10_000


@pytest.mark.parametrize("user", sorted(NetnsSnmpd.USERS))
def test_snmpv3_auth_priv(netns_snmpd, tmp_path, user):
    auth, auth_key, priv, priv_key = NetnsSnmpd.USERS[user]
    auth_file = tmp_path / "auth-key"
    auth_file.write_text(auth_key + "\n")
    interfaces, health = poll(
        netns_snmpd, tmp_path, name=f"v3-{user}", version=3, user=user, auth_protocol=auth,
        auth_key_file=str(auth_file), priv_protocol=priv, priv_key=priv_key,
    )
    assert health[f"v3-{user}"].fields["up"] == 1
    assert set(interfaces) == {"lo"} | {f"va{i}" for i in range(1, PORTS + 1)}
    assert all(point.fields["ifOperStatus"] == 1 for name, point in interfaces.items() if name != "lo")
