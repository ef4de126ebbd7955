"""How well the detector did, against a simulation's ground truth.

Measures, for network loss (the only loss the detector charges to the fabric):

- episode precision, recall and F1: a detected network episode matches a true
  one when both name the same job and their time spans overlap; true episodes
  that lost less than ``min_gpu_seconds`` (the detector's own floor for
  reporting) need not be found, but finding them is no false positive;
- root-cause link accuracy: among matched detected episodes, the share whose
  first blamed link is one of the true episode's responsible links (either end
  of an uplink counts);
- network dollars detected versus true, and the relative error;
- false network dollars: what the detector charged to the network in intervals
  when the job was truly held up by a confounder (checkpoint, input stall, slow
  host, hung job) and not by the network, and how many confounder episodes it
  blamed on the network that way; and, unexplained, what it charged to the
  network outside every true network episode of the job.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Iterable, Protocol, Sequence

import pandas as pd

from detector.attribution import NETWORK
from detector.detect import DetectionResult
from detector.jobs import Allocation
from detector.topology import Topology

TRUE_NETWORK_CAUSES = frozenset({"network", "congestion", "link_degradation", "pfc_storm"})
"""Ground-truth causes (and their ``kind/variant`` forms' kinds) that are network loss."""


class TrueEpisodeLike(Protocol):
    job: str
    start: datetime
    end: datetime
    cause: str
    links: Sequence[str]
    gpu_seconds_lost: float


def is_network_cause(cause: str) -> bool:
    return cause.split("/", 1)[0] in TRUE_NETWORK_CAUSES


@dataclass(frozen=True, slots=True)
class Accuracy:
    true_episodes: int
    """True network episodes of at least ``min_gpu_seconds``."""
    detected_episodes: int
    matched_detected: int
    matched_true: int
    precision: float
    recall: float
    f1: float
    link_accuracy: float | None
    true_gpu_seconds: float
    detected_gpu_seconds: float
    true_dollars: float
    detected_dollars: float
    dollar_error: float | None
    """(detected - true) / true network dollars; None when the truth has none."""
    false_network_dollars: float
    unexplained_network_dollars: float
    """Network dollars charged outside every true network episode of the job (inside a confounder's or not)."""
    confounders_blamed_on_network: int
    confounder_episodes: int

    def to_dict(self) -> dict:
        return {key: (round(value, 4) if isinstance(value, float) else value) for key, value in asdict(self).items()}

    def rows(self) -> list[tuple[str, str]]:
        """(measure, value) pairs for a printed table."""
        def pct(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.1%}"
        return [
            ("network episodes (true / detected)", f"{self.true_episodes} / {self.detected_episodes}"),
            ("precision", pct(self.precision)),
            ("recall", pct(self.recall)),
            ("F1", pct(self.f1)),
            ("root-cause link accuracy", pct(self.link_accuracy)),
            ("network GPU-seconds (true / detected)",
             f"{self.true_gpu_seconds:,.0f} / {self.detected_gpu_seconds:,.0f}"),
            ("network dollars (true / detected)", f"${self.true_dollars:,.2f} / ${self.detected_dollars:,.2f}"),
            ("network dollar error", "n/a" if self.dollar_error is None else f"{self.dollar_error:+.1%}"),
            ("false network dollars on confounders", f"${self.false_network_dollars:,.2f}"),
            ("network dollars outside true network episodes", f"${self.unexplained_network_dollars:,.2f}"),
            ("confounder episodes blamed on network",
             f"{self.confounders_blamed_on_network} of {self.confounder_episodes}"),
        ]


def evaluate(
    result: DetectionResult, truth: Iterable[TrueEpisodeLike], topology: Topology, allocations: Iterable[Allocation],
    min_gpu_seconds: float = 60.0,
) -> Accuracy:
    """Score a detection against the true episodes of the same scenario."""
    truth = list(truth)
    true_network = [t for t in truth if is_network_cause(t.cause)]
    required = {i for i, t in enumerate(true_network) if t.gpu_seconds_lost >= min_gpu_seconds}
    confounders = [t for t in truth if not is_network_cause(t.cause)]
    detected = result.network_episodes
    peers = _uplink_peers(topology)

    matched_detected = 0
    link_hits = 0
    matched_true: set[int] = set()
    for episode in detected:
        overlaps = [i for i, t in enumerate(true_network) if t.job == episode.job and _overlap(episode, t)]
        if not overlaps:
            continue
        matched_detected += 1
        matched_true.update(overlaps)
        true_links = {link for i in overlaps for link in true_network[i].links}
        true_links |= {peers[link] for link in true_links if link in peers}
        if episode.links and episode.links[0] in true_links:
            link_hits += 1

    precision = matched_detected / len(detected) if detected else (1.0 if not required else 0.0)
    recall = len(matched_true & required) / len(required) if required else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0

    models = _job_models(topology, allocations)
    true_seconds = sum(t.gpu_seconds_lost for t in true_network)
    true_dollars = sum(t.gpu_seconds_lost / 3600 * result.prices.gpu_hour(models.get(t.job, "")) for t in true_network)
    totals = result.totals()
    error = (totals["dollars_lost"] - true_dollars) / true_dollars if true_dollars > 0 else None
    false_dollars, unexplained, blamed = _false_network(result, true_network, confounders)
    return Accuracy(
        true_episodes=len(required), detected_episodes=len(detected),
        matched_detected=matched_detected, matched_true=len(matched_true & required),
        precision=precision, recall=recall, f1=f1,
        link_accuracy=link_hits / matched_detected if matched_detected else None,
        true_gpu_seconds=true_seconds, detected_gpu_seconds=totals["gpu_seconds_lost"],
        true_dollars=true_dollars, detected_dollars=totals["dollars_lost"], dollar_error=error,
        false_network_dollars=false_dollars, unexplained_network_dollars=unexplained,
        confounders_blamed_on_network=blamed,
        confounder_episodes=len(confounders),
    )


def _overlap(a, b) -> bool:
    return _ts(a.start) < _ts(b.end) and _ts(b.start) < _ts(a.end)


def _ts(value) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _uplink_peers(topology: Topology) -> dict[str, str]:
    """Each end of an uplink -> the other end: both name one physical link."""
    peers = {}
    for switch in topology.switches.values():
        for uplink in switch.uplinks:
            if uplink.peer is not None and uplink.peer_port is not None:
                near, far = topology.link_id(switch.name, uplink.port), topology.link_id(uplink.peer, uplink.peer_port)
                peers[near], peers[far] = far, near
    return peers


def _job_models(topology: Topology, allocations: Iterable[Allocation]) -> dict[str, str]:
    models = {}
    for allocation in allocations:
        host = topology.hosts.get(allocation.host)
        if host is not None:
            models.setdefault(allocation.job, host.gpu_model)
    return models


def _false_network(result: DetectionResult, true_network: list, confounders: list) -> tuple[float, float, int]:
    """Network dollars charged inside true confounder episodes and outside any true network episode, the
    dollars charged outside any true network episode at all, and the confounder episodes so blamed."""
    losses = result.losses
    charged = losses[(losses["episode"] >= 0) & (losses["cause"] == NETWORK)]
    if charged.empty:
        return 0.0, 0.0, 0
    step = pd.Timedelta(seconds=result.step_s)
    inside_confounders = unexplained = 0.0
    blamed = set()
    for row in charged.itertuples(index=False):
        end, start = row.time, row.time - step
        if any(t.job == row.job and _ts(t.start) < end and start < _ts(t.end) for t in true_network):
            continue
        dollars = result.prices.dollars(row.gpu_seconds_lost, row.model, row.energy_joules)
        unexplained += dollars
        hits = [i for i, t in enumerate(confounders) if t.job == row.job and _ts(t.start) < end and start < _ts(t.end)]
        if hits:
            inside_confounders += dollars
            blamed.update(hits)
    return inside_confounders, unexplained, len(blamed)
