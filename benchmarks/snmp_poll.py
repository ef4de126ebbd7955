"""How fast strandwatch polls SNMP, next to Prometheus' snmp_exporter and net-snmp's snmpbulkwalk.

Two modes (run as root from the repository root with the project's virtual
environment):

``compare`` (default): Debian's snmpd in a network namespace of its own with
``--ports`` veth interfaces (64 by default, plus lo) is polled ``--polls``
times by each poller in turn, in one run:

- strandwatch's SNMP source (built-in BER codec), static columns every poll;
- the same with its production setting (``static_refresh_polls: 10``);
- the same through pysnmp (``use_pysnmp_for_v2c``), the path it had before;
- the same over SNMPv3 authPriv (SHA-256, AES-128), with the built-in USM and through pysnmp;
- ``prometheus-snmp-exporter`` (Debian package) with a module walking the
  same 12 IF-MIB columns, scraped over HTTP;
- ``snmpbulkwalk`` (net-snmp), one process per column.

Each reads the 12 IF-MIB columns ifName, ifAlias, ifHighSpeed, ifOperStatus,
ifHC{In,Out}{Octets,UcastPkts}, if{In,Out}{Discards,Errors} for every
interface. "Varbinds" counts those values, 12 per interface and poll, for
every poller alike (strandwatch also reads ifDescr, sysUpTime and
ifCounterDiscontinuityTime, and snmp_exporter and snmpbulkwalk read past the
end of each column: that work is not counted). CPU is the poller's own user +
system time: this process's for strandwatch, /proc/<pid>/stat for the
exporter, the reaped children's for snmpbulkwalk. The namespaces, veths and
processes are created for the run and removed after it. The whole run
happens inside the namespace (this script re-executes itself there), so
everything talks over that namespace's loopback.

``fabric``: ``--switches`` simulated switches x ``--ports`` ports
(detector/simulator/snmp_agent.py, one agent process) polled every
``--interval`` seconds for ``--duration`` seconds while the counters move;
reports each poll's duration and whether polls fit the interval.

Prints a table, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from collector.schema import INTERFACE  # noqa: E402
from collector.sources.snmp import SnmpConfig, SnmpSource, SnmpTarget  # noqa: E402

IF_ENTRY = "1.3.6.1.2.1.2.2.1"
IFX_ENTRY = "1.3.6.1.2.1.31.1.1.1"
COLUMNS = {
    "ifName": (f"{IFX_ENTRY}.1", "DisplayString"),
    "ifAlias": (f"{IFX_ENTRY}.18", "DisplayString"),
    "ifHighSpeed": (f"{IFX_ENTRY}.15", "gauge"),
    "ifOperStatus": (f"{IF_ENTRY}.8", "gauge"),
    "ifHCInOctets": (f"{IFX_ENTRY}.6", "counter"),
    "ifHCOutOctets": (f"{IFX_ENTRY}.10", "counter"),
    "ifHCInUcastPkts": (f"{IFX_ENTRY}.7", "counter"),
    "ifHCOutUcastPkts": (f"{IFX_ENTRY}.11", "counter"),
    "ifInDiscards": (f"{IF_ENTRY}.13", "counter"),
    "ifOutDiscards": (f"{IF_ENTRY}.19", "counter"),
    "ifInErrors": (f"{IF_ENTRY}.14", "counter"),
    "ifOutErrors": (f"{IF_ENTRY}.20", "counter"),
}
SNMPD_PORT = 1161
V3_AUTH_KEY = "bench-auth-passphrase"
V3_PRIV_KEY = "bench-priv-passphrase"
EXPORTER_PORT = 9116
NET_SNMP_ENV = {**os.environ, "MIBS": "", "MIBDIRS": "/nonexistent"}
TICKS = os.sysconf("SC_CLK_TCK")


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return done.stdout


# --- compare: snmpd in a namespace ---------------------------------------------------------------


def compare(args: argparse.Namespace) -> dict:
    """Create the namespaces, re-run this script inside the agent's, and clean up."""
    if os.geteuid() != 0:
        raise SystemExit("compare needs root: it creates network namespaces")
    for tool in ("ip", "prometheus-snmp-exporter", "snmpbulkwalk"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"compare needs {tool}")
    tag = f"{os.getpid()}"
    agent, peer = f"swbench-agent-{tag}", f"swbench-peer-{tag}"
    created = []
    try:
        for namespace in (agent, peer):
            run("ip", "netns", "add", namespace)
            created.append(namespace)
            run("ip", "-n", namespace, "link", "set", "lo", "up")
        for i in range(1, args.ports + 1):
            run("ip", "link", "add", f"va{i}", "netns", agent, "type", "veth", "peer", "name", f"vb{i}",
                "netns", peer)
            run("ip", "-n", agent, "link", "set", f"va{i}", "up")
            run("ip", "-n", peer, "link", "set", f"vb{i}", "up")
        inside = [sys.executable, __file__, "_inside", "--polls", str(args.polls), "--ports", str(args.ports)]
        done = subprocess.run(["ip", "netns", "exec", agent, *inside], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"the run inside {agent} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout)
    finally:
        for namespace in reversed(created):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def inside(args: argparse.Namespace) -> dict:
    """Inside the agent namespace: start snmpd and snmp_exporter, poll with each tool, report."""
    workdir = Path(tempfile.mkdtemp(prefix="strandwatch-bench-"))
    processes: list[subprocess.Popen] = []
    try:
        (workdir / "snmpd.conf").write_text(
            f"agentaddress udp:127.0.0.1:{SNMPD_PORT}\nrocommunity public 127.0.0.1\n"
            f'createUser bench SHA-256 "{V3_AUTH_KEY}" AES "{V3_PRIV_KEY}"\nrouser bench priv\n'
        )
        snmpd = subprocess.Popen(
            ["/usr/sbin/snmpd", "-f", "-Lf", str(workdir / "snmpd.log"), "-C", "-c", str(workdir / "snmpd.conf")],
            env={**NET_SNMP_ENV, "SNMP_PERSISTENT_DIR": str(workdir / "persist")},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        processes.append(snmpd)
        (workdir / "snmp.yml").write_text(exporter_config())
        exporter = subprocess.Popen(
            ["prometheus-snmp-exporter", f"--config.file={workdir / 'snmp.yml'}",
             f"--web.listen-address=127.0.0.1:{EXPORTER_PORT}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        processes.append(exporter)
        wait_for_snmpd()
        interfaces = args.ports + 1
        results = {
            "interfaces": interfaces,
            "columns": len(COLUMNS),
            "polls": args.polls,
            "snmpd_cpu_seconds": {},
            "pollers": {},
        }
        runs = [
            ("strandwatch", lambda: asyncio.run(poll_strandwatch(args.polls, interfaces, static_refresh_polls=1))),
            ("strandwatch (static_refresh_polls: 10)",
             lambda: asyncio.run(poll_strandwatch(args.polls, interfaces, static_refresh_polls=10))),
            ("strandwatch through pysnmp", lambda: asyncio.run(
                poll_strandwatch(max(3, args.polls // 10), interfaces, static_refresh_polls=1, pysnmp=True))),
            ("strandwatch SNMPv3 SHA-256/AES-128", lambda: asyncio.run(
                poll_strandwatch(args.polls, interfaces, static_refresh_polls=1, version3=True))),
            ("strandwatch SNMPv3 SHA-256/AES-128 through pysnmp", lambda: asyncio.run(
                poll_strandwatch(max(3, args.polls // 10), interfaces, static_refresh_polls=1, pysnmp=True,
                                 version3=True))),
            ("snmp_exporter", lambda: poll_exporter(args.polls, interfaces, exporter.pid)),
            ("snmpbulkwalk", lambda: poll_bulkwalk(max(3, args.polls // 4), interfaces)),
        ]
        for name, poller in runs:
            agent_before = cpu_of(snmpd.pid)
            results["pollers"][name] = poller()
            results["snmpd_cpu_seconds"][name] = round(cpu_of(snmpd.pid) - agent_before, 3)
        exporter_rate = results["pollers"]["snmp_exporter"]["varbinds_per_cpu_second"]
        for report in results["pollers"].values():
            report["cpu_efficiency_vs_snmp_exporter"] = round(report["varbinds_per_cpu_second"] / exporter_rate, 2)
        return results
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def wait_for_snmpd() -> None:
    deadline = time.monotonic() + 20
    while subprocess.run(
        ["snmpget", "-v2c", "-c", "public", "-t", "0.3", "-r", "0", f"127.0.0.1:{SNMPD_PORT}", "1.3.6.1.2.1.1.3.0"],
        capture_output=True, env=NET_SNMP_ENV,
    ).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError("snmpd did not answer within 20 s")
    url = f"http://127.0.0.1:{EXPORTER_PORT}/"
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("snmp_exporter did not answer within 20 s") from None
            time.sleep(0.1)


def exporter_config() -> str:
    """snmp_exporter 0.21's module format (no generator): walk the 12 columns, one metric each."""
    lines = ["if_mib:", "  version: 2", "  auth:", "    community: public", "  max_repetitions: 25",
             "  retries: 1", "  timeout: 5s", "  walk:"]
    lines += [f"  - {oid}" for oid, _ in COLUMNS.values()]
    lines.append("  metrics:")
    for name, (oid, kind) in COLUMNS.items():
        lines += [f"  - name: {name}", f"    oid: {oid}", f"    type: {kind}", f"    help: {name}",
                  "    indexes:", "    - labelname: ifIndex", "      type: gauge"]
    return "\n".join(lines) + "\n"


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def report(varbinds: int, wall: float, cpu: float, **extra: object) -> dict:
    return {
        "varbinds": varbinds,
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "varbinds_per_second": round(varbinds / wall),
        "varbinds_per_cpu_second": round(varbinds / cpu) if cpu else None,
        **extra,
    }


async def poll_strandwatch(
    polls: int, interfaces: int, static_refresh_polls: int, pysnmp: bool = False, version3: bool = False
) -> dict:
    target = SnmpTarget("agent", "127.0.0.1", SNMPD_PORT)
    if version3:
        target = SnmpTarget("agent", "127.0.0.1", SNMPD_PORT, version="3", user="bench", auth_protocol="sha256",
                            auth_key=V3_AUTH_KEY, priv_protocol="aes", priv_key=V3_PRIV_KEY)
    source = SnmpSource(SnmpConfig((target,), static_refresh_polls=static_refresh_polls),
                        use_pysnmp_for_v2c=pysnmp, use_pysnmp_for_v3=pysnmp)
    try:
        await source.collect(time.time_ns())  # learn the table size and open the socket
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(polls):
            points = await source.collect(time.time_ns())
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await source.close()
    seen = sum(1 for p in points if p.measurement == INTERFACE)
    if seen != interfaces:
        raise RuntimeError(f"strandwatch saw {seen} interfaces, expected {interfaces}")
    return report(polls * interfaces * len(COLUMNS), wall, cpu)


def poll_exporter(polls: int, interfaces: int, pid: int) -> dict:
    url = f"http://127.0.0.1:{EXPORTER_PORT}/snmp?module=if_mib&target=127.0.0.1:{SNMPD_PORT}"
    body = urllib.request.urlopen(url, timeout=30).read().decode()  # warm up, and check
    samples = sum(1 for line in body.splitlines() if line.startswith("ifHCInOctets{"))
    if samples != interfaces:
        raise RuntimeError(f"snmp_exporter returned {samples} ifHCInOctets samples, expected {interfaces}")
    wall, cpu = time.perf_counter(), cpu_of(pid)
    for _ in range(polls):
        urllib.request.urlopen(url, timeout=30).read()
    wall, cpu = time.perf_counter() - wall, cpu_of(pid) - cpu
    return report(polls * interfaces * len(COLUMNS), wall, cpu)


def poll_bulkwalk(polls: int, interfaces: int) -> dict:
    def walk(oid: str) -> str:
        return subprocess.run(
            ["snmpbulkwalk", "-v2c", "-c", "public", "-Cr25", "-Oqn", f"127.0.0.1:{SNMPD_PORT}", oid],
            capture_output=True, text=True, env=NET_SNMP_ENV, check=True,
        ).stdout

    if len(walk(COLUMNS["ifHCInOctets"][0]).splitlines()) != interfaces:
        raise RuntimeError("snmpbulkwalk did not see every interface")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    for _ in range(polls):
        for oid, _ in COLUMNS.values():
            walk(oid)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return report(polls * interfaces * len(COLUMNS), wall, cpu, processes=polls * len(COLUMNS))


# --- fabric: simulated switches ------------------------------------------------------------------


def fabric(args: argparse.Namespace) -> dict:
    from detector.simulator.snmp_agent import COUNTER_COLUMNS, CounterBoard, PortSpec, SimulatedSwitchAgents, SwitchSpec

    switches = [
        SwitchSpec(f"sw{s:03d}", [PortSpec(p + 1, f"swp{p + 1}", f"port {p + 1}", 400_000) for p in range(args.ports)])
        for s in range(args.switches)
    ]
    with CounterBoard(switches) as board, SimulatedSwitchAgents(board) as agents:
        agent_pid = agents.pid
        targets = [SnmpTarget(name, host, port, timeout=2, deadline=args.interval * 0.9)
                   for name, (host, port) in agents.endpoints.items()]
        octets = COUNTER_COLUMNS.index("ifHCInOctets")
        polls = asyncio.run(poll_fabric(targets, board, octets, args, agent_pid))
    durations = [p["wall_seconds"] for p in polls]
    return {
        "switches": args.switches,
        "ports": args.ports,
        "interval_seconds": args.interval,
        "polls": polls,
        "max_poll_seconds": max(durations),
        "median_poll_seconds": sorted(durations)[len(durations) // 2],
        "all_fit_the_interval": all(p["wall_seconds"] < args.interval and p["targets_up"] == args.switches
                                    for p in polls),
    }


async def poll_fabric(targets: list[SnmpTarget], board, octets: int, args: argparse.Namespace, agent_pid: int):
    source = SnmpSource(SnmpConfig(tuple(targets), interval=args.interval))
    polls = []
    try:
        next_poll = time.monotonic()
        end = next_poll + args.duration
        while next_poll < end:
            await asyncio.sleep(max(0.0, next_poll - time.monotonic()))
            board.counters[:, :, octets] += 50_000_000_000  # ~40 Gb/s per port over 10 s
            board.uptime_ticks[:] += int(args.interval * 100)
            wall, cpu, agent_cpu = time.perf_counter(), time.process_time(), cpu_of(agent_pid)
            points = await source.collect(time.time_ns())
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            up = sum(1 for p in points if p.measurement == "strandwatch_source" and p.fields["up"] == 1)
            polls.append({
                "wall_seconds": round(wall, 3),
                "poller_cpu_seconds": round(cpu, 3),
                "agent_cpu_seconds": round(cpu_of(agent_pid) - agent_cpu, 3),
                "interface_points": sum(1 for p in points if p.measurement == INTERFACE),
                "targets_up": up,
            })
            next_poll += args.interval
    finally:
        await source.close()
    return polls


# --- output ---------------------------------------------------------------------------------------


def print_compare(results: dict) -> None:
    print(f"snmpd in a network namespace: {results['interfaces']} interfaces x {results['columns']} IF-MIB columns;"
          f" {results['polls']} polls each (fewer for the slow ones)")
    print(f"{'poller':52} {'varbinds/s':>11} {'varbinds/CPU-s':>15} {'vs exporter':>12} {'snmpd CPU-s':>12}")
    for name, r in results["pollers"].items():
        print(f"{name:52} {r['varbinds_per_second']:>11,} {r['varbinds_per_cpu_second']:>15,}"
              f" {r['cpu_efficiency_vs_snmp_exporter']:>11.2f}x {results['snmpd_cpu_seconds'][name]:>12}")


def print_fabric(results: dict) -> None:
    print(f"{results['switches']} simulated switches x {results['ports']} ports, a poll every"
          f" {results['interval_seconds']} s")
    for i, poll in enumerate(results["polls"]):
        print(f"poll {i}: {poll['wall_seconds']:.2f} s wall, poller {poll['poller_cpu_seconds']:.2f} CPU-s,"
              f" agent {poll['agent_cpu_seconds']:.2f} CPU-s, {poll['interface_points']} interface points,"
              f" {poll['targets_up']} targets up")
    verdict = "fit" if results["all_fit_the_interval"] else "do NOT fit"
    print(f"max {results['max_poll_seconds']:.2f} s, median {results['median_poll_seconds']:.2f} s: polls {verdict}"
          f" the {results['interval_seconds']} s interval")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="compare", choices=["compare", "fabric", "_inside"])
    parser.add_argument("--ports", type=int, default=64, help="interfaces per agent (default 64)")
    parser.add_argument("--polls", type=int, default=40, help="compare: polls per poller (default 40)")
    parser.add_argument("--switches", type=int, default=200, help="fabric: simulated switches (default 200)")
    parser.add_argument("--interval", type=float, default=10.0, help="fabric: seconds between polls (default 10)")
    parser.add_argument("--duration", type=float, default=60.0, help="fabric: seconds to run (default 60)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.mode == "_inside":
        print(json.dumps(inside(args)))
        return
    results = compare(args) if args.mode == "compare" else fabric(args)
    if args.json:
        print(json.dumps(results, indent=2))
    elif args.mode == "compare":
        print_compare(results)
    else:
        print_fabric(results)


if __name__ == "__main__":
    main()
