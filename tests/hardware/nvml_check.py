"""Check the gpu and jobs sources against a real NVIDIA GPU and ``nvidia-smi``.

Not a pytest module (CI machines have no GPU): run it by hand on a GPU host,
from the repository root, with a Python that has ``nvidia-ml-py`` and, for the
load phases, PyTorch with CUDA::

    python3 tests/hardware/nvml_check.py [--out DIR]

Four phases on GPU 0, each read by :class:`GpuSource` once a second:

- ``idle``: identity, memory, compute mode and performance state must equal
  what ``nvidia-smi`` prints.
- ``matmul``: large bf16 matrix products keep every SM busy; utilization and
  SM activity must both be high.
- ``spin``: one thread block spinning (``torch.cuda._sleep``) keeps a kernel
  resident all the time on one SM; utilization must read high while SM activity
  stays low. This is the case the ``sm_active`` field exists for: a job
  spinning in a collective that waits for the network.
- ``after``: the load process is gone again.

The load processes run with ``SLURM_JOB_ID`` in their environment, so the jobs
source must map the GPU to that job through the process list NVML gives.
It then prints what a poll cost this process in CPU time, per phase, and what
each NVML call the backend makes costs on its own. Exit status 0 when every
check holds, 1 when one fails, 2 when no GPU is visible. ``--out`` receives the
line protocol of every poll and a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pynvml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from collector.lineprotocol import encode, parse  # noqa: E402
from collector.schema import Point  # noqa: E402
from collector.sources.gpu import NVIDIA_SMI_PROCESS, GpuSource, ProcessTable  # noqa: E402
from collector.sources.gpu.nvml import NVLINK_FIELDS, PCIE_FIELDS  # noqa: E402
from collector.sources.jobs import JobsSource  # noqa: E402

JOB_ID = "4242"
HOST = "nvml-check"

_LOADS = {
    "matmul": (
        "import torch,sys\n"
        "a=torch.randn(8192,8192,device='cuda',dtype=torch.bfloat16)\n"
        "b=a@a; torch.cuda.synchronize(); print('ready',flush=True)\n"
        "while True:\n"
        "    for _ in range(50): b=a@a\n"
        "    torch.cuda.synchronize()\n"
    ),
    "spin": (
        "import torch\n"
        "torch.cuda._sleep(1000); torch.cuda.synchronize(); print('ready',flush=True)\n"
        "while True:\n"
        "    torch.cuda._sleep(200_000_000); torch.cuda.synchronize()\n"
    ),
}
"""Python programs that load GPU 0 until killed and print ``ready`` once the GPU is in use."""

_SMI_FIELDS = "index,uuid,name,memory.total,memory.used,compute_mode,pstate,utilization.gpu,power.draw"


@dataclass
class Phase:
    name: str
    points: list[Point] = field(default_factory=list)
    smi: list[dict[str, str]] = field(default_factory=list)
    load_pid: int | None = None
    poll_cpu_s: list[float] = field(default_factory=list)
    """This process's CPU time (user + system, all threads) in each poll of the two sources."""

    def gpu_fields(self, name: str) -> list[float]:
        return [p.fields[name] for p in self.points if p.measurement == "nvidia_smi" and name in p.fields]


def nvidia_smi() -> dict[str, str]:
    """GPU 0 as ``nvidia-smi --query-gpu`` prints it."""
    text = subprocess.run(
        ["nvidia-smi", "-i", "0", f"--query-gpu={_SMI_FIELDS}", "--format=csv,noheader,nounits"],
        check=True, capture_output=True, text=True,
    ).stdout
    return dict(zip(_SMI_FIELDS.split(","), (value.strip() for value in text.strip().split(","))))


def start_load(kind: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SLURM_JOB_ID": JOB_ID, "CUDA_VISIBLE_DEVICES": "0"}
    load = subprocess.Popen([sys.executable, "-c", _LOADS[kind]], stdout=subprocess.PIPE, text=True, env=env)
    assert load.stdout is not None
    if load.stdout.readline().strip() != "ready":
        load.kill()
        raise RuntimeError(f"the {kind} load did not start (exit status {load.wait()})")
    return load


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def poll(phase: Phase, gpu: GpuSource, jobs: JobsSource, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = time.time_ns()
        cpu_before = _cpu_s()
        gpu_points, job_points = await asyncio.gather(gpu.collect(now), jobs.collect(now))
        phase.poll_cpu_s.append(_cpu_s() - cpu_before)
        phase.points.extend(gpu_points + job_points)
        phase.smi.append(nvidia_smi())
        await asyncio.sleep(1.0)


async def run_phases(seconds: float) -> list[Phase]:
    table = ProcessTable()
    gpu = GpuSource(HOST, process_table=table)
    jobs = JobsSource(HOST, table)
    phases = []
    try:
        for name in ("idle", "matmul", "spin", "after"):
            phase = Phase(name)
            load = start_load(name) if name in _LOADS else None
            phase.load_pid = load.pid if load else None
            try:
                await poll(phase, gpu, jobs, seconds)
            finally:
                if load is not None:
                    load.kill()
                    load.wait()
            phases.append(phase)
    finally:
        await gpu.close()
    return phases


class Checks:
    def __init__(self) -> None:
        self.results: list[dict[str, object]] = []

    def check(self, phase: str, what: str, ok: bool, seen: object) -> None:
        self.results.append({"phase": phase, "check": what, "ok": bool(ok), "seen": seen})
        print(f"{'ok  ' if ok else 'FAIL'} {phase:7} {what}: {seen}")

    @property
    def passed(self) -> bool:
        return all(result["ok"] for result in self.results)


def check_identity(checks: Checks, phase: Phase) -> None:
    point = next(p for p in phase.points if p.measurement == "nvidia_smi" and p.tags["index"] == "0")
    smi = phase.smi[0]
    checks.check(phase.name, "uuid equals nvidia-smi", point.tags["uuid"] == smi["uuid"], point.tags["uuid"])
    checks.check(phase.name, "name equals nvidia-smi", point.tags["name"] == smi["name"], point.tags["name"])
    checks.check(phase.name, "memory_total equals nvidia-smi (MiB)",
                 abs(point.fields["memory_total"] - float(smi["memory.total"])) <= 1,
                 (point.fields["memory_total"], smi["memory.total"]))
    checks.check(phase.name, "compute_mode equals nvidia-smi",
                 point.tags["compute_mode"] == smi["compute_mode"], (point.tags["compute_mode"], smi["compute_mode"]))
    checks.check(phase.name, "pstate is P0..P15", point.tags["pstate"] in {f"P{n}" for n in range(16)},
                 point.tags["pstate"])
    health = [p for p in phase.points if p.measurement == "strandwatch_source" and p.tags["source"] == "gpu"]
    checks.check(phase.name, "every gpu poll up", all(p.fields["up"] == 1 for p in health),
                 [p.fields["up"] for p in health])


def check_load(checks: Checks, phase: Phase, *, sm_high: bool) -> None:
    utilization = phase.gpu_fields("utilization_gpu")[2:]
    checks.check(phase.name, "utilization_gpu >= 90 under load", bool(utilization) and min(utilization) >= 90,
                 utilization)
    sm_active = phase.gpu_fields("sm_active")[2:]
    if sm_high:
        checks.check(phase.name, "sm_active >= 50 with every SM busy", bool(sm_active) and min(sm_active) >= 50,
                     sm_active)
    else:
        checks.check(phase.name, "sm_active <= 10 with one block spinning", bool(sm_active) and max(sm_active) <= 10,
                     sm_active)
    pids = {p.tags["pid"] for p in phase.points if p.measurement == NVIDIA_SMI_PROCESS}
    checks.check(phase.name, "load process in nvidia_smi_process", str(phase.load_pid) in pids,
                 {"load": phase.load_pid, "seen": sorted(pids)})
    job_points = [p for p in phase.points if p.measurement == "job_gpu"]
    checks.check(phase.name, f"jobs source maps GPU 0 to job {JOB_ID}",
                 any(p.tags["job"] == JOB_ID and p.tags["index"] == "0" for p in job_points),
                 sorted({(p.tags["index"], p.tags["job"]) for p in job_points}))


def nvml_call_costs(repeat: int = 200) -> dict[str, float]:
    """Median CPU microseconds of each NVML call the backend makes per GPU and poll, on GPU 0, and of
    each counter field alone (the PCIe ones are read only with ``pcie: true``)."""
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    buffer = pynvml.nvmlGpmSampleAlloc()
    calls = {
        "utilization": lambda: pynvml.nvmlDeviceGetUtilizationRates(handle),
        "memory": lambda: pynvml.nvmlDeviceGetMemoryInfo(handle),
        "power": lambda: pynvml.nvmlDeviceGetPowerUsage(handle),
        "pstate": lambda: pynvml.nvmlDeviceGetPerformanceState(handle),
        "compute_mode": lambda: pynvml.nvmlDeviceGetComputeMode(handle),
        "mig_mode": lambda: pynvml.nvmlDeviceGetMigMode(handle),
        "processes": lambda: pynvml.nvmlDeviceGetComputeRunningProcesses(handle),
        "gpm_sample": lambda: pynvml.nvmlGpmSampleGet(handle, buffer),
        "field_values": lambda: pynvml.nvmlDeviceGetFieldValues(handle, [(f, s) for _, f, s in NVLINK_FIELDS]),
        **{f"field_values({name} alone)": (lambda f=f, s=s: pynvml.nvmlDeviceGetFieldValues(handle, [(f, s)]))
           for name, f, s in NVLINK_FIELDS + PCIE_FIELDS},
        "temperature": lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
        "clock_sm": lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
        "clock_memory": lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
    }
    costs = {}
    for name, call in calls.items():
        spent = []
        for _ in range(repeat):
            before = time.process_time()
            call()
            spent.append(time.process_time() - before)
        costs[name] = 1e6 * statistics.median(spent)
    pynvml.nvmlGpmSampleFree(buffer)
    pynvml.nvmlShutdown()
    return costs


def check_round_trip(checks: Checks, phases: list[Phase]) -> str:
    points = [p for phase in phases for p in phase.points]
    text = encode(points)
    back = parse(text, source_name="nvml_check")
    checks.check("all", "line protocol parses back to the same points", list(back) == points, len(points))
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for the line protocol and the JSON summary")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds each phase is polled")
    args = parser.parse_args()
    try:
        nvidia_smi()
    except (OSError, subprocess.CalledProcessError) as err:
        print(f"no GPU visible: nvidia-smi failed: {err}")
        return 2
    phases = asyncio.run(run_phases(args.seconds))
    checks = Checks()
    by_name = {phase.name: phase for phase in phases}
    check_identity(checks, by_name["idle"])
    check_load(checks, by_name["matmul"], sm_high=True)
    check_load(checks, by_name["spin"], sm_high=False)
    after = by_name["after"]
    stale = [p for p in after.points[len(after.points) // 2:] if p.measurement == NVIDIA_SMI_PROCESS
             and p.tags["pid"] in {str(by_name[name].load_pid) for name in _LOADS}]
    checks.check("after", "no load process listed once it exited", not stale, len(stale))
    text = check_round_trip(checks, phases)
    for phase in phases:
        # The first poll of a run initialises NVML and registers for events: a one-off, not a poll's cost.
        steady = phase.poll_cpu_s[1:] if phase.name == "idle" else phase.poll_cpu_s
        print(f"cpu  {phase.name:7} {1000 * statistics.median(steady):.2f} ms per poll (median of {len(steady)}), "
              f"first poll {1000 * phase.poll_cpu_s[0]:.2f} ms")
    costs = nvml_call_costs()
    per_poll = sum(value for name, value in costs.items() if "alone" not in name)
    print("cpu  NVML calls (median us): " + ", ".join(f"{name} {value:.0f}" for name, value in costs.items())
          + f"; a poll's calls {per_poll:.0f}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "nvml_check.lp").write_text(text)
        summary = {
            "checks": checks.results,
            "poll_cpu_s": {phase.name: phase.poll_cpu_s for phase in phases},
            "nvml_call_cpu_us": costs,
            "nvidia_smi": {phase.name: phase.smi for phase in phases},
        }
        (args.out / "nvml_check.json").write_text(json.dumps(summary, indent=1))
    print("all checks hold" if checks.passed else "some checks failed")
    return 0 if checks.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
