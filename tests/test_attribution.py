"""Attribution lays out what all jobs share once; each job's rows must still depend on that job alone."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from collector.frames import points_to_frames
from collector.lineprotocol import parse_file
from detector.attribution import attribute
from detector.congestion import link_congestion
from detector.jobs import Allocation, load_jobs
from detector.telemetry import load_telemetry
from detector.topology import Topology

FIXTURES = Path(__file__).parent / "fixtures" / "detect"


@pytest.fixture(scope="module")
def scenario():
    frames = points_to_frames(parse_file(FIXTURES / "telemetry.lp"))
    topology = Topology.load(FIXTURES / "topology.yaml")
    telemetry = load_telemetry(frames)
    return telemetry, link_congestion(telemetry, topology), topology, load_jobs(FIXTURES / "jobs.csv")


def test_another_job_changes_no_row_of_the_others(scenario):
    """A job on a GPU no one uses, sharing a host with eval-b and listed first: the others' rows stay bit for bit."""
    telemetry, congestion, topology, allocations = scenario
    alone = attribute(telemetry, congestion, topology, allocations).intervals
    extra = Allocation("aa-extra", "node02", (1,), datetime(2026, 3, 2, 10, 2, tzinfo=timezone.utc), None)
    together = attribute(telemetry, congestion, topology, [extra, *allocations]).intervals
    others = together[together["job"] != "aa-extra"].reset_index(drop=True)
    pd.testing.assert_frame_equal(others, alone, check_exact=True, check_dtype=False)
    added = together[together["job"] == "aa-extra"]
    assert len(added) > 0 and (added["time"] > pd.Timestamp(extra.start)).all() and (added["n_gpus"] == 1).all()


def test_a_gpu_listed_twice_is_sampled_once(scenario):
    """Overlapping spans of one GPU in one job: its samples count once in the job's busy level."""
    telemetry, congestion, topology, allocations = scenario
    once = attribute(telemetry, congestion, topology, allocations).intervals
    twice = attribute(telemetry, congestion, topology, [*allocations, replace(allocations[0], gpus=(0,))]).intervals
    pd.testing.assert_series_equal(twice["busy"], once["busy"], check_exact=True)
    pd.testing.assert_series_equal(twice["kernel"], once["kernel"], check_exact=True)
