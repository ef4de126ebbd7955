"""What the node agent costs a GPU host: CPU time and resident memory of its process.

The host: 8 GPUs and 8 RoCE NICs, polled every ``--interval`` seconds (1 s by
default) for ``--duration`` seconds (60 s by default). Goals: under 1% of one
core, under 60 MB resident.

- GPUs: NVML replaced at the pynvml function boundary by the test double
  (``tests/fake_nvml.py``): the NVML backend, GPM, XID event draining, field
  values and the source above them run as on a real host; the driver's own
  cost of each NVML call is not in the figure (no GPU here).
- NICs: a sysfs tree of 8 mlx5 devices (``counters/`` and ``hw_counters/``,
  as a ConnectX-6/7 has them) in a temporary directory, every counter file
  rewritten by this (parent) process every interval so that the agent reads
  moving values; the kernel's cost of producing real sysfs counters is not in
  the figure.
- Ethtool: the recorded mlx5 ``ethtool -S`` of ``tests/fixtures/ethtool`` plus
  32 channels of per-queue counters (about 1,000 statistics per NIC, as mlx5
  has), replayed through the ``EthtoolBackend`` seam with moving values: the
  filtering and point building are measured, the ioctls are not.
- Jobs: Slurm mapping of each GPU's process through a fake ``/proc``.
- Output: every batch encoded as line protocol and written to /dev/null.

The agent runs in a child process (this script with ``--child``); the child
measures its own CPU time (user + system, all threads) and resident memory
over the steady state (after start-up and the first poll), and its peak
resident set over the whole run. Run from the repository root::

    .venv/bin/python benchmarks/agent_overhead.py [--duration 60] [--interval 1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPUS = 8
NICS = 8
CHANNELS = 32

PORT_COUNTERS = (
    "excessive_buffer_overrun_errors", "link_downed", "link_error_recovery", "local_link_integrity_errors",
    "multicast_rcv_packets", "multicast_xmit_packets", "port_rcv_constraint_errors", "port_rcv_data",
    "port_rcv_errors", "port_rcv_packets", "port_rcv_remote_physical_errors", "port_rcv_switch_relay_errors",
    "port_xmit_constraint_errors", "port_xmit_data", "port_xmit_discards", "port_xmit_packets", "port_xmit_wait",
    "symbol_error", "unicast_rcv_packets", "unicast_xmit_packets", "VL15_dropped",
)
HW_COUNTERS = (
    "duplicate_request", "implied_nak_seq_err", "lifespan", "local_ack_timeout_err", "np_cnp_sent",
    "np_ecn_marked_roce_packets", "out_of_buffer", "out_of_sequence", "packet_seq_err", "req_cqe_error",
    "req_cqe_flush_error", "req_remote_access_errors", "req_remote_invalid_request", "resp_cqe_error",
    "resp_cqe_flush_error", "resp_local_length_error", "resp_remote_access_errors", "rnr_nak_retry_err",
    "roce_adp_retrans", "roce_adp_retrans_to", "roce_slow_restart", "roce_slow_restart_cnps",
    "roce_slow_restart_trans", "rp_cnp_handled", "rp_cnp_ignored", "rx_atomic_requests", "rx_icrc_encapsulated",
    "rx_read_requests", "rx_write_requests",
)


# --- the parent: the host's sysfs tree, the child, the report -----------------------

def make_sysfs(root: Path) -> list[Path]:
    """8 mlx5 RoCE devices laid out as the kernel lays them out; returns their counter files."""
    files = []
    for nic in range(NICS):
        device = f"mlx5_{nic}"
        pci = root / "devices" / "pci0000:00" / f"0000:{0x17 + nic:02x}:00.0"
        port = pci / "infiniband" / device / "ports" / "1"
        for sub, names in (("counters", PORT_COUNTERS), ("hw_counters", HW_COUNTERS)):
            (port / sub).mkdir(parents=True)
            for name in names:
                path = port / sub / name
                path.write_text("0\n")
                files.append(path)
        for name, text in (("state", "4: ACTIVE"), ("phys_state", "5: LinkUp"), ("rate", "400 Gb/sec (4X NDR)"),
                           ("link_layer", "Ethernet")):
            (port / name).write_text(text + "\n")
        (pci / "net" / f"ens{nic}np0").mkdir(parents=True)
        (pci / "net" / f"ens{nic}np0" / "dev_port").write_text("0\n")
        (pci / "infiniband" / device / "device").symlink_to(pci)
        (root / "class" / "infiniband").mkdir(parents=True, exist_ok=True)
        (root / "class" / "infiniband" / device).symlink_to(pci / "infiniband" / device)
    return files


def make_proc(root: Path) -> None:
    """One Slurm task per GPU, in a cgroup v2 path."""
    for gpu in range(GPUS):
        directory = root / str(50_000 + gpu)
        directory.mkdir(parents=True)
        (directory / "cgroup").write_text(f"0::/system.slice/slurmstepd.scope/job_7{gpu // 4}/step_0/user/task_{gpu}\n")


def run_parent(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="strandwatch-agent-bench-") as tmp:
        root = Path(tmp)
        counter_files = make_sysfs(root / "sys")
        make_proc(root / "proc")
        child = subprocess.Popen(
            [sys.executable, __file__, "--child", "--root", str(root), "--duration", str(args.duration),
             "--interval", str(args.interval)],
            cwd=REPO, stdout=subprocess.PIPE, text=True,
        )
        step = 0
        while child.poll() is None:
            step += 1
            for index, path in enumerate(counter_files):
                path.write_text(f"{(1 << 33) + step * (index + 1) * 1_000_003}\n")
            time.sleep(args.interval)
        stdout, _ = child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"the agent child failed with status {child.returncode}")
        return json.loads(stdout)


def report(result: dict) -> str:
    lines = [
        f"node agent, {GPUS} GPUs (NVML test double) + {NICS} mlx5 NICs (sysfs tree, replayed ethtool -S),"
        f" interval {result['interval_s']:g} s, {result['polls']} polls in {result['steady_wall_s']:.1f} s",
        f"  CPU (steady state, all threads): {result['steady_cpu_s']:.3f} s"
        f" = {result['cpu_percent_of_one_core']:.2f} % of one core   (goal < 1 %)",
        f"  CPU per poll: {1000 * result['cpu_per_poll_s']:.2f} ms",
        f"  start-up (imports, first poll): {result['startup_cpu_s']:.2f} s CPU",
        f"  resident: {result['rss_end_mb']:.1f} MB at the end, peak {result['peak_rss_mb']:.1f} MB   (goal < 60 MB)",
        f"  points per poll: {result['points_per_poll']}",
        "  mean poll duration per source (ms): "
        + ", ".join(f"{name} {1000 * seconds:.2f}" for name, seconds in result["source_seconds"].items()),
    ]
    return "\n".join(lines)


# --- the child: the agent ------------------------------------------------------------

def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class ReplayedMlx5:
    """``ethtool -S`` of 8 mlx5 NICs: the recorded statistics plus 32 channels, values moving."""

    def __init__(self, interfaces: list[str]) -> None:
        recorded = {}
        lines = (REPO / "tests" / "fixtures" / "ethtool" / "ens1f0np0.txt").read_text().splitlines()[1:]
        for line in lines:
            name, _, value = line.strip().rpartition(": ")
            recorded[name] = int(value)
        for channel in range(CHANNELS):
            for name in ("packets", "bytes", "csum_complete", "csum_unnecessary", "csum_none", "xdp_drop",
                         "lro_packets", "lro_bytes", "removed_vlan_packets", "wqe_err", "mpwqe_filler_cqes",
                         "buff_alloc_err", "cqe_compress_blks", "cache_reuse", "cache_full", "arfs_err"):
                recorded[f"rx{channel}_{name}"] = channel
            for name in ("packets", "bytes", "tso_packets", "tso_bytes", "nop", "csum_none", "stopped", "wake",
                         "dropped", "cqe_err", "recover", "cqes"):
                recorded[f"tx{channel}_{name}"] = channel
        self.names = list(recorded)
        self.base = list(recorded.values())
        self._interfaces = interfaces
        self.step = 0

    def interfaces(self) -> list[str]:
        self.step += 1
        return list(self._interfaces)

    def driver(self, ifname: str) -> str:
        return "mlx5_core"

    def stats(self, ifname: str) -> dict[str, int]:
        return {name: value + self.step for name, value in zip(self.names, self.base)}

    def close(self) -> None:
        pass


def run_child(args: argparse.Namespace) -> dict:
    started_cpu = cpu_seconds()
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "tests"))
    from fake_nvml import MIB, FakeNvml, h100

    from collector.agent import build_sources, parse_config, run_agent
    from collector.bus import InProcessBus
    from collector.lineprotocol import encode
    from collector.schema import COLLECTOR_HEALTH
    from collector.sources.ethtool import EthtoolSource

    root = Path(args.root)
    gpus = [h100(index, sm_active_fraction=0.5, processes=[(50_000 + index, 70_000 * MIB)]) for index in range(GPUS)]
    nvml = FakeNvml(gpus)
    nvml.install(setattr)
    config = parse_config({
        "host": "gpu-node-bench",
        "interval_s": args.interval,
        "sources": {
            "rdma": {"sysfs_root": str(root / "sys")},
            "ethtool": {"sysfs_root": str(root / "sys")},
            "gpu": {},
            "jobs": {"proc_root": str(root / "proc")},
        },
    })
    sources = build_sources(config)
    for source in sources:
        if isinstance(source, EthtoolSource):
            source.backend.close()
            source.backend = ReplayedMlx5([f"ens{nic}np0" for nic in range(NICS)])

    async def run() -> dict:
        bus = InProcessBus()
        subscription = bus.subscribe()
        stop = asyncio.Event()
        polls = 0
        points = 0
        durations: dict[str, list[float]] = {}
        steady: dict[str, float] = {}
        null = open(os.devnull, "w")

        async def consume() -> None:
            nonlocal polls, points
            seen_health = 0
            async for delivery in subscription:
                null.write(encode(delivery.points))
                points += len(delivery.points)
                for point in delivery.points:
                    if point.measurement == COLLECTOR_HEALTH:
                        durations.setdefault(point.tags["source"], []).append(point.fields["duration_seconds"])
                        seen_health += 1
                await delivery.ack()
                if seen_health == len(sources):
                    seen_health = 0
                    polls += 1
                    nvml.advance(args.interval)
                    if polls == 1:
                        steady.update(cpu=cpu_seconds(), wall=time.monotonic(), points=points)
                    elif time.monotonic() - steady["wall"] >= args.duration:
                        stop.set()

        consumer = asyncio.create_task(consume())
        await run_agent(config, bus, stop, handle_signals=False, sources=sources)
        end_cpu, end_wall = cpu_seconds(), time.monotonic()
        await bus.close()
        await consumer
        steady_polls = polls - 1
        return {
            "interval_s": args.interval,
            "polls": steady_polls,
            "steady_wall_s": end_wall - steady["wall"],
            "steady_cpu_s": end_cpu - steady["cpu"],
            "cpu_percent_of_one_core": 100 * (end_cpu - steady["cpu"]) / (end_wall - steady["wall"]),
            "cpu_per_poll_s": (end_cpu - steady["cpu"]) / max(steady_polls, 1),
            "startup_cpu_s": steady["cpu"] - started_cpu,
            "points_per_poll": (points - steady["points"]) // max(steady_polls, 1),
            "source_seconds": {name: sum(values) / len(values) for name, values in durations.items()},
            "rss_end_mb": rss_mb(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of steady-state polling (default 60)")
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval in seconds (default 1)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.duration <= 0 or args.interval <= 0 or args.duration > 3600:
        parser.error("--duration must be in (0, 3600] and --interval positive")
    if args.child:
        print(json.dumps(run_child(args)))
        return
    result = run_parent(args)
    print(json.dumps(result, indent=2) if args.json else report(result))


if __name__ == "__main__":
    main()
