"""``strandwatch evaluate``: the detector against the simulator's ground truth, over many scenarios.

    strandwatch evaluate [--quick | --random N [--random-draw K]] [--scenario NAME ...] [--seed-offset N]
                         [--drop-rows SHARE] [--jitter SECONDS] [--without MEASUREMENT ...]
                         [--workers N] [--format table|json] [--list]

runs seeded simulator scenarios of different shapes (cluster sizes, leaves and
spines, NICs per host, GPU models, sampling intervals, job mixes, each kind of
network trouble alone, each confounder alone, a switch reboot), detects each
one with the same ``detect`` the offline command uses, and scores it with
:func:`detector.evaluation.evaluate`. Per scenario and over all of them it
prints:

- episode precision, recall and F1 (a detected network episode matches a true
  one when both name the same job and overlap in time);
- root-cause link accuracy (the first blamed link is one of the true links);
- the network dollar error against the truth;
- on confounder-only scenarios (no network trouble injected), the dollars
  charged to the network as a share of what the confounders really cost
  (beyond the contention the truth itself holds: jobs whose rings share an
  uplink slow each other with no event injected).

Goals (the issue's): F1 >= 0.95, link accuracy >= 0.95, |dollar error| <= 5%
(over all scenarios together and in each scenario with network loss of at
least ``MIN_DOLLARS_FOR_ERROR``), confounder false dollars <= 1%. Exit status 0
when every goal is met, 1 when one is missed, 2 for bad arguments.

``--seed-offset N`` adds N to every scenario's seed: the same shapes with other
jobs, placements and events, to check that the figures are not those of one draw.
``--random N`` runs N shapes drawn at random instead (draw ``--random-draw K``, the
same N shapes for the same K): shapes the default set does not hold, leaves with
far fewer uplinks than host ports among them (:func:`random_scenarios`).
``--drop-rows``, ``--jitter`` and ``--without`` make the telemetry imperfect the
way real collectors do before the detector sees it (:class:`Imperfections`): lost
samples, clocks a few seconds off, a source not collected at all.

Scenarios run straight through ``simulate()`` (no sockets), in parallel worker
processes; the default set takes a few minutes on two cores, ``--quick`` well
under a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from typing import Any, Callable, Sequence, TextIO

import numpy as np
import pandas as pd

from detector.batch import MEASUREMENTS
from detector.simulator.config import CONFOUNDERS, GPU_MODELS, NETWORK_CAUSES, SCHEDULED_KINDS, SimConfig

GOAL_F1 = 0.95
GOAL_LINK_ACCURACY = 0.95
GOAL_DOLLAR_ERROR = 0.05
GOAL_CONFOUNDER_FALSE_SHARE = 0.01
MIN_DOLLARS_FOR_ERROR = 2.0
"""A scenario's own dollar error is held to the goal only when its true network loss is at least this much:
a few cents of truth make any relative error meaningless."""

MIXED = "mixed"
NETWORK_ONLY = "network"
CONFOUNDER_ONLY = "confounder"


@dataclass(frozen=True, slots=True)
class Imperfections:
    """What real telemetry has and the simulator's does not: lost samples, clock jitter, a missing source."""

    drop_rows: float = 0.0
    """The share of all samples (rows) lost, at random."""
    jitter_s: float = 0.0
    """Every sample's time moved by up to this many seconds either way, at random."""
    without: tuple[str, ...] = ()
    """Measurements that are not collected at all."""

    def apply(self, frames: dict[str, pd.DataFrame], seed: int) -> dict[str, pd.DataFrame]:
        """The frames as the detector would get them (the same for the same seed)."""
        if not (self.drop_rows or self.jitter_s or self.without):
            return frames
        rng = np.random.default_rng(seed)
        out = {}
        for measurement, frame in frames.items():
            if measurement in self.without:
                continue
            frame = frame[rng.random(len(frame)) >= self.drop_rows]
            if self.jitter_s:
                moved = pd.to_timedelta(rng.uniform(-self.jitter_s, self.jitter_s, len(frame)), unit="s")
                frame = frame.assign(time=frame["time"] + moved)
            out[measurement] = frame.reset_index(drop=True)
        return out

    def describe(self) -> str:
        parts = [f"{self.drop_rows:.0%} of rows dropped" if self.drop_rows else "",
                 f"times moved up to {self.jitter_s:g} s" if self.jitter_s else "",
                 f"without {', '.join(self.without)}" if self.without else ""]
        return "; ".join(part for part in parts if part)


@dataclass(frozen=True, slots=True)
class Scenario:
    """One seeded simulator run and what it is there to check."""

    name: str
    config: SimConfig
    kind: str
    """``mixed`` (every event kind), ``network`` (network trouble only) or ``confounder`` (no network trouble)."""
    about: str
    imperfections: Imperfections = Imperfections()
    """What is done to the simulated telemetry before the detector sees it (nothing by default)."""


def with_seed_offset(scenario: Scenario, offset: int) -> Scenario:
    """The scenario with ``offset`` added to its seed, named ``name+offset``."""
    config = scenario.config.with_(seed=scenario.config.seed + offset)
    return replace(scenario, name=f"{scenario.name}+{offset}", config=config)


def _hours(value: float) -> timedelta:
    return timedelta(hours=value)


NETWORK_KINDS = tuple(kind for kind in SCHEDULED_KINDS if kind.split("/")[0] in NETWORK_CAUSES)
CONFOUNDER_KINDS = tuple(kind for kind in SCHEDULED_KINDS if kind in CONFOUNDERS)
"""The scheduled event kinds of each family (checkpoints come on their own schedule)."""


def default_scenarios() -> list[Scenario]:
    """The full set: shapes, then each network kind alone, then each confounder alone."""
    base = SimConfig()
    scenarios = [
        Scenario("default", base, MIXED, "8 hosts x 8 H100, 2 leaves, 2 spines, 3 h at 30 s"),
        Scenario("seed-2-reboot", base.with_(seed=2, switch_reboot=True), MIXED, "another seed, a switch reboots"),
        Scenario("seed-3-reboot", base.with_(seed=3, switch_reboot=True), MIXED, "another seed, a switch reboots"),
        Scenario("interval-10s", base.with_(seed=4, interval_s=10, duration=_hours(1.5)), MIXED,
                 "10 s sampling"),
        Scenario("interval-60s", base.with_(seed=5, interval_s=60, duration=_hours(4)), MIXED, "60 s sampling"),
        Scenario("large-4-leaves", base.with_(seed=6, hosts=32, leaves=4, duration=_hours(2)), MIXED,
                 "32 hosts (256 GPUs), 4 leaves"),
        Scenario("3-leaves-3-spines", base.with_(seed=7, hosts=12, leaves=3, spines=3, uplinks_per_leaf=6),
                 MIXED, "3 leaves, 3 spines, 6 uplinks per leaf"),
        Scenario("contended-uplinks", base.with_(seed=107, hosts=12, leaves=3, spines=3, uplinks_per_leaf=6),
                 MIXED, "the same shape; rings share uplinks all the time, a host turns slow on them"),
        Scenario("2-nics-per-host", base.with_(seed=8, nics_per_host=2), MIXED, "8 GPUs share 2 NICs per host"),
        Scenario("a100-4-gpus", base.with_(seed=9, gpu_model="A100", gpus_per_host=4, nics_per_host=4), MIXED,
                 "A100, 4 GPUs and 4 NICs per host"),
        Scenario("h200-short-jobs", base.with_(seed=10, gpu_model="H200", job_mean_hours=1.0), MIXED,
                 "H200, jobs end and restart often"),
        Scenario("b200-16-hosts", base.with_(seed=11, gpu_model="B200", hosts=16, leaves=2, spines=4), MIXED,
                 "B200, 16 hosts, 4 spines"),
    ]
    for offset, kind in enumerate(NETWORK_KINDS):
        scenarios.append(Scenario(f"only-{kind.split('/')[-1]}", base.with_(seed=20 + offset, event_kinds=(kind,)),
                                  NETWORK_ONLY, f"{kind} events only (checkpoints on top)"))
    for offset, kind in enumerate(CONFOUNDER_KINDS):
        scenarios.append(Scenario(f"only-{kind}", base.with_(seed=30 + offset, event_kinds=(kind,),
                                                             checkpoints=False),
                                  CONFOUNDER_ONLY, f"{kind} events only, no checkpoints"))
    scenarios.append(Scenario("only-checkpoint", base.with_(seed=33, events=False), CONFOUNDER_ONLY,
                              "periodic checkpoints only"))
    scenarios.append(Scenario("only-confounders", base.with_(
        seed=34, event_kinds=tuple(kind for kind in CONFOUNDERS if kind != "checkpoint"), switch_reboot=True),
        CONFOUNDER_ONLY, "every confounder, checkpoints, a switch reboot"))
    return scenarios


def quick_scenarios() -> list[Scenario]:
    """A small set for tests: one mixed, one network-only and one confounder-only scenario, 1 h each."""
    base = SimConfig(duration=_hours(1.5))
    return [
        Scenario("quick-mixed", base.with_(seed=1, switch_reboot=True), MIXED, "default shape, 1.5 h, a reboot"),
        Scenario("quick-congestion", base.with_(seed=21, hosts=6, nics_per_host=4,
                                                event_kinds=("congestion/oversubscription", "pfc_storm")),
                 NETWORK_ONLY, "6 hosts, 4 NICs each, oversubscription and PFC storms"),
        Scenario("quick-confounders", base.with_(seed=34, event_kinds=("input_stall", "slow_host", "hung_job")),
                 CONFOUNDER_ONLY, "every confounder"),
    ]


def random_scenarios(count: int, draw: int = 1) -> list[Scenario]:
    """``count`` shapes drawn at random, the same for the same ``draw``.

    2-4 leaves, 2-4 spines, 1-4 uplinks per spine and leaf (of 400 or 800 Gb/s), 2-6 hosts per
    leaf, 4 or 8 GPUs and 1-8 NICs per host, every GPU model, 10-60 s for 1-4 h, jobs of 1-8 h
    on average, a switch reboot in about a third. Half are mixed, a quarter network-only and a
    quarter confounder-only (one or two kinds each). Nothing keeps a leaf's uplinks up to its host
    ports: many draws are oversubscribed, some far (16:1), which the default set is not.
    """
    rng = random.Random(draw)
    scenarios = []
    for index in range(count):
        leaves, spines = rng.choice([2, 2, 3, 4]), rng.choice([2, 3, 4])
        uplinks = spines * rng.choice([1, 2, 3, 4])
        hosts = leaves * rng.choice([2, 3, 4, 6])
        gpus_per_host = rng.choice([4, 8, 8])
        nics = rng.choice([n for n in (1, 2, 4, 8) if gpus_per_host % n == 0])
        interval = rng.choice([10, 15, 30, 30, 60])
        hours = rng.choice([1.5, 2, 3, 4]) if interval >= 30 else rng.choice([1, 1.5, 2])
        kind = rng.choice([MIXED, MIXED, NETWORK_ONLY, CONFOUNDER_ONLY])
        kinds = SCHEDULED_KINDS if kind == MIXED else tuple(
            rng.sample(NETWORK_KINDS if kind == NETWORK_ONLY else CONFOUNDER_KINDS, rng.choice([1, 2])))
        config = SimConfig(
            seed=1000 + draw * 100 + index, duration=_hours(hours), interval_s=interval, leaves=leaves, spines=spines,
            uplinks_per_leaf=uplinks, hosts=hosts, gpus_per_host=gpus_per_host, nics_per_host=nics,
            gpu_model=rng.choice(list(GPU_MODELS)),
            job_mean_hours=rng.choice([1.0, 3.0, 8.0]), event_kinds=kinds,
            checkpoints=kind != CONFOUNDER_ONLY or rng.random() < 0.5, switch_reboot=rng.random() < 0.3,
            uplink_gbps=rng.choice([400, 800]),
        )
        oversubscription = (hosts // leaves) * nics * config.host_link_gbps / (uplinks * config.uplink_gbps)
        scenarios.append(Scenario(
            f"random-{draw}-{index}", config, kind,
            f"{hosts} hosts x {gpus_per_host} {config.gpu_model}, {nics} NIC(s) each, {leaves} leaves, {spines} "
            f"spines, {uplinks} uplinks per leaf ("
            + (f"oversubscribed {oversubscription:g}:1" if oversubscription > 1 else "non-blocking")
            + f"), {hours:g} h at {interval} s"))
    return scenarios


@dataclass(slots=True)
class ScenarioResult:
    """One scenario's scores, with the counts needed to pool them."""

    name: str
    kind: str
    about: str
    gpus: int
    intervals: int
    true_episodes: int
    detected_episodes: int
    matched_detected: int
    matched_true: int
    link_hits: int
    precision: float
    recall: float
    f1: float
    link_accuracy: float | None
    true_dollars: float
    detected_dollars: float
    dollar_error: float | None
    false_network_dollars: float
    """Network dollars charged where the truth had none: inside confounder episodes, or anywhere outside the truth's
    network episodes on a confounder-only scenario."""
    confounder_dollars: float
    """What the confounders truly cost (their GPU time at the job's price)."""
    confounders_blamed_on_network: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def confounder_false_share(self) -> float | None:
        return self.false_network_dollars / self.confounder_dollars if self.confounder_dollars > 0 else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["confounder_false_share"] = self.confounder_false_share
        return {key: round(value, 4) if isinstance(value, float) else value for key, value in data.items()}


def run_scenario(scenario: Scenario) -> ScenarioResult:
    """Simulate, detect and score one scenario."""
    from collector.frames import points_to_frames
    from detector.detect import detect
    from detector.evaluation import evaluate, is_network_cause
    from detector.simulator import simulate

    seconds = {}
    began = time.perf_counter()
    points, sim = simulate(scenario.config)
    seconds["simulate"] = time.perf_counter() - began
    began = time.perf_counter()
    frames = scenario.imperfections.apply(points_to_frames(points), scenario.config.seed)
    del points
    seconds["frames"] = time.perf_counter() - began
    began = time.perf_counter()
    result = detect(frames, sim.topology, sim.allocations)
    seconds["detect"] = time.perf_counter() - began
    truth = sim.ground_truth.episodes
    accuracy = evaluate(result, truth, sim.topology, sim.allocations)

    models = {a.job: sim.topology.hosts[a.host].gpu_model for a in sim.allocations if a.host in sim.topology.hosts}
    confounder_dollars = sum(t.gpu_seconds_lost / 3600 * result.prices.gpu_hour(models.get(t.job, ""))
                             for t in truth if not is_network_cause(t.cause))
    # Without injected network trouble, whatever the network is charged beyond the truth's own contention
    # (jobs whose rings share an uplink) is false.
    false_dollars = accuracy.false_network_dollars
    if scenario.kind == CONFOUNDER_ONLY or accuracy.true_dollars == 0:
        false_dollars = accuracy.unexplained_network_dollars
    matched = accuracy.matched_detected
    return ScenarioResult(
        name=scenario.name, kind=scenario.kind, about=scenario.about,
        gpus=scenario.config.hosts * scenario.config.gpus_per_host, intervals=scenario.config.steps,
        true_episodes=accuracy.true_episodes, detected_episodes=accuracy.detected_episodes,
        matched_detected=matched, matched_true=accuracy.matched_true,
        link_hits=round((accuracy.link_accuracy or 0.0) * matched),
        precision=accuracy.precision, recall=accuracy.recall, f1=accuracy.f1, link_accuracy=accuracy.link_accuracy,
        true_dollars=accuracy.true_dollars, detected_dollars=accuracy.detected_dollars,
        dollar_error=accuracy.dollar_error, false_network_dollars=false_dollars,
        confounder_dollars=confounder_dollars,
        confounders_blamed_on_network=accuracy.confounders_blamed_on_network, seconds=seconds,
    )


@dataclass(frozen=True, slots=True)
class Summary:
    """All scenarios pooled: episodes and dollars added up, then the ratios."""

    scenarios: int
    precision: float
    recall: float
    f1: float
    link_accuracy: float | None
    dollar_error: float | None
    worst_dollar_error: float | None
    """The largest |error| of a scenario with at least MIN_DOLLARS_FOR_ERROR of true network loss (signed)."""
    confounder_false_share: float | None
    """False network dollars over the confounders' cost, on confounder-only scenarios."""
    confounders_blamed_on_network: int
    goals: dict[str, bool]

    @property
    def met(self) -> bool:
        return all(self.goals.values())


def summarize(results: Sequence[ScenarioResult]) -> Summary:
    detected = sum(r.detected_episodes for r in results)
    matched_detected = sum(r.matched_detected for r in results)
    true = sum(r.true_episodes for r in results)
    matched_true = sum(r.matched_true for r in results)
    precision = matched_detected / detected if detected else (1.0 if not true else 0.0)
    recall = matched_true / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    link_accuracy = sum(r.link_hits for r in results) / matched_detected if matched_detected else None
    true_dollars = sum(r.true_dollars for r in results)
    error = (sum(r.detected_dollars for r in results if r.true_dollars > 0) - true_dollars) / true_dollars \
        if true_dollars > 0 else None
    errors = [r.dollar_error for r in results if r.dollar_error is not None and r.true_dollars >= MIN_DOLLARS_FOR_ERROR]
    worst = max(errors, key=abs) if errors else None
    confounder_runs = [r for r in results if r.kind == CONFOUNDER_ONLY]
    confounder_cost = sum(r.confounder_dollars for r in confounder_runs)
    false_share = sum(r.false_network_dollars for r in confounder_runs) / confounder_cost \
        if confounder_cost > 0 else None
    goals = {
        f"F1 >= {GOAL_F1:.0%}": f1 >= GOAL_F1,
        f"link accuracy >= {GOAL_LINK_ACCURACY:.0%}": link_accuracy is None or link_accuracy >= GOAL_LINK_ACCURACY,
        f"|dollar error| <= {GOAL_DOLLAR_ERROR:.0%} (pooled and per scenario)":
            (error is None or abs(error) <= GOAL_DOLLAR_ERROR) and (worst is None or abs(worst) <= GOAL_DOLLAR_ERROR),
        f"confounder false dollars <= {GOAL_CONFOUNDER_FALSE_SHARE:.0%}":
            false_share is None or false_share <= GOAL_CONFOUNDER_FALSE_SHARE,
    }
    return Summary(len(results), precision, recall, f1, link_accuracy, error, worst, false_share,
                   sum(r.confounders_blamed_on_network for r in results), goals)


def evaluate_scenarios(
    scenarios: Sequence[Scenario], workers: int = 1,
    on_result: Callable[[ScenarioResult], None] | None = None,
) -> list[ScenarioResult]:
    """Run the scenarios (in ``workers`` processes when more than one), in the given order."""
    results: dict[str, ScenarioResult] = {}
    if workers <= 1 or len(scenarios) <= 1:
        for scenario in scenarios:
            results[scenario.name] = result = run_scenario(scenario)
            if on_result:
                on_result(result)
    else:
        # Largest first, so a big scenario does not start last and hold up the end.
        ordered = sorted(scenarios, key=lambda s: -s.config.steps * s.config.hosts * s.config.gpus_per_host)
        with ProcessPoolExecutor(max_workers=min(workers, len(scenarios))) as pool:
            futures = [pool.submit(run_scenario, scenario) for scenario in ordered]
            for future in as_completed(futures):
                result = future.result()
                results[result.name] = result
                if on_result:
                    on_result(result)
    return [results[scenario.name] for scenario in scenarios]


# Command line -----------------------------------------------------------------------------------


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``evaluate`` subcommand's options."""
    parser.add_argument("--quick", action="store_true", help="a small set of 3 short scenarios (for tests)")
    parser.add_argument("--random", type=int, metavar="N",
                        help="N shapes drawn at random instead of the default set (see --random-draw)")
    parser.add_argument("--random-draw", type=int, default=1, metavar="K",
                        help="which draw of --random: the same K gives the same shapes (default 1)")
    parser.add_argument("--scenario", action="append", metavar="NAME",
                        help="run only this scenario (repeatable; see --list)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--drop-rows", type=float, default=0.0, metavar="SHARE",
                        help="lose this share of all samples, at random (default 0)")
    parser.add_argument("--jitter", type=float, default=0.0, metavar="SECONDS",
                        help="move every sample's time by up to this much either way (default 0)")
    parser.add_argument("--without", action="append", choices=MEASUREMENTS, default=[], metavar="MEASUREMENT",
                        help=f"leave a measurement out (repeatable; one of {', '.join(MEASUREMENTS)})")
    parser.add_argument("--seed-offset", type=int, default=0, metavar="N",
                        help="add N to every scenario's seed: the same shapes, other draws (default 0)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="N",
                        help="scenarios run in parallel (default: the number of CPUs)")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")


def run_evaluate(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``evaluate`` for parsed arguments; print per-scenario and pooled scores; return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    if args.random is not None and (args.random < 1 or args.quick or args.scenario):
        print("strandwatch evaluate: error: --random takes N >= 1 and goes without --quick and --scenario, "
              f"got --random {args.random}" + (" --quick" if args.quick else "") + (" --scenario" if args.scenario else ""),
              file=err)
        return 2
    if args.random is not None:
        available = random_scenarios(args.random, args.random_draw)
    else:
        available = quick_scenarios() if args.quick else default_scenarios()
    if args.list:
        for scenario in available:
            out.write(f"{scenario.name:20} {scenario.kind:10} {scenario.about}\n")
        return 0
    scenarios = available
    if args.scenario:
        by_name = {scenario.name: scenario for scenario in [*default_scenarios(), *quick_scenarios()]}
        unknown = [name for name in args.scenario if name not in by_name]
        if unknown:
            print(f"strandwatch evaluate: error: unknown scenario(s) {', '.join(unknown)} "
                  f"(known: {', '.join(by_name)})", file=err)
            return 2
        scenarios = [by_name[name] for name in dict.fromkeys(args.scenario)]
    if args.workers < 1:
        print(f"strandwatch evaluate: error: --workers must be >= 1, got {args.workers}", file=err)
        return 2
    if args.seed_offset < 0:
        print(f"strandwatch evaluate: error: --seed-offset must be >= 0, got {args.seed_offset}", file=err)
        return 2
    if args.seed_offset:
        scenarios = [with_seed_offset(scenario, args.seed_offset) for scenario in scenarios]
    if not 0 <= args.drop_rows < 1 or args.jitter < 0:
        print(f"strandwatch evaluate: error: --drop-rows must be in [0, 1) and --jitter >= 0, got {args.drop_rows} "
              f"and {args.jitter}", file=err)
        return 2
    imperfections = Imperfections(args.drop_rows, args.jitter, tuple(dict.fromkeys(args.without)))
    scenarios = [replace(scenario, imperfections=imperfections) for scenario in scenarios]

    began = time.perf_counter()

    def progress(result: ScenarioResult) -> None:
        if args.format == "table":
            print(f"  done {result.name} ({sum(result.seconds.values()):.0f} s)", file=err, flush=True)

    results = evaluate_scenarios(scenarios, args.workers, progress)
    summary = summarize(results)
    elapsed = time.perf_counter() - began
    if args.format == "json":
        json.dump({"scenarios": [r.to_dict() for r in results],
                   "summary": {**{key: (round(value, 4) if isinstance(value, float) else value)
                                  for key, value in asdict(summary).items()}, "met": summary.met},
                   "telemetry": imperfections.describe() or "as simulated",
                   "seconds": round(elapsed, 1)}, out, indent=2)
        out.write("\n")
    else:
        out.write(format_table(results, summary, elapsed, imperfections.describe()))
    return 0 if summary.met else 1


def format_table(results: Sequence[ScenarioResult], summary: Summary, elapsed: float, telemetry: str = "") -> str:
    def pct(value: float | None, signed: bool = False) -> str:
        if value is None:
            return "-"
        return f"{value:+.1%}" if signed else f"{value:.0%}"

    header = ("scenario", "kind", "GPUs", "true", "found", "prec", "recall", "F1", "links", "true $", "found $",
              "$ error", "false $", "conf $", "s")
    rows = []
    for r in results:
        rows.append((r.name, r.kind, str(r.gpus), str(r.true_episodes), str(r.detected_episodes), pct(r.precision),
                     pct(r.recall), pct(r.f1), pct(r.link_accuracy), f"{r.true_dollars:.2f}",
                     f"{r.detected_dollars:.2f}", pct(r.dollar_error, True), f"{r.false_network_dollars:.2f}",
                     f"{r.confounder_dollars:.2f}", f"{sum(r.seconds.values()):.0f}"))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row))
             .rstrip() for row in [header, *rows]]
    lines.append("")
    lines.append(f"all {summary.scenarios} scenarios ({elapsed:.0f} s"
                 + (f"; telemetry with {telemetry}" if telemetry else "") + "):")
    lines.append(f"  episode precision {pct(summary.precision)}, recall {pct(summary.recall)}, "
                 f"F1 {summary.f1:.1%}")
    lines.append(f"  root-cause link accuracy {'-' if summary.link_accuracy is None else f'{summary.link_accuracy:.1%}'}")
    lines.append(f"  network dollar error {pct(summary.dollar_error, True)} pooled, "
                 f"worst scenario {pct(summary.worst_dollar_error, True)}")
    share = summary.confounder_false_share
    lines.append(f"  confounder-only scenarios: false network dollars "
                 f"{'-' if share is None else f'{share:.2%}'} of the confounders' cost, "
                 f"{summary.confounders_blamed_on_network} confounder episodes blamed on the network (all scenarios)")
    for goal, met in summary.goals.items():
        lines.append(f"  goal {goal}: {'met' if met else 'MISSED'}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m detector.evaluate_cli``: the evaluate command on its own."""
    parser = argparse.ArgumentParser(prog="strandwatch evaluate", description=__doc__.split("\n")[0])
    add_evaluate_arguments(parser)
    return run_evaluate(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
