"""Simulation.frames: the simulator's telemetry as wide frames equals points_to_frames of its points."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from collector.frames import points_to_frames
from collector.schema import ETHTOOL, INFINIBAND, INTERFACE, NVIDIA_SMI
from detector.simulator import FRAME_MEASUREMENTS, SimConfig, Simulation

# Every scheduled event kind and a reboot (counters restart, Counter32 wraps) in 3 h at 60 s.
EVENTFUL = SimConfig(seed=3, duration=timedelta(hours=3), interval_s=60, switch_reboot=True)


def points_frames(config: SimConfig, first: int, steps: int) -> dict[str, pd.DataFrame]:
    sim = Simulation(config)
    for _ in range(first):
        sim.step()
    points = []
    for _ in range(steps):
        points.extend(sim.points(sim.step()))
    return {m: f for m, f in points_to_frames(points).items() if m in FRAME_MEASUREMENTS}


def test_frames_equal_points_to_frames_over_a_scenario_with_every_event():
    sim = Simulation(EVENTFUL)
    frames = sim.frames(EVENTFUL.steps)
    expected = points_frames(EVENTFUL, 0, EVENTFUL.steps)
    assert sorted(frames) == sorted(expected) == sorted(FRAME_MEASUREMENTS)
    for measurement in FRAME_MEASUREMENTS:
        pd.testing.assert_frame_equal(frames[measurement], expected[measurement], check_exact=True)
    assert sim.finished


def test_consecutive_calls_continue_the_clock_and_match_points():
    config = SimConfig(duration=timedelta(minutes=20), interval_s=60, hosts=4, leaves=2)
    sim = Simulation(config)
    sim.frames(5)
    second = sim.frames(7, measurements=(INTERFACE, NVIDIA_SMI))
    assert sorted(second) == [INTERFACE, NVIDIA_SMI]
    expected = points_frames(config, 5, 7)
    for measurement in (INTERFACE, NVIDIA_SMI):
        pd.testing.assert_frame_equal(second[measurement], expected[measurement], check_exact=True)
    assert sim.steps_done == 12


def test_bad_arguments_are_named():
    sim = Simulation(SimConfig(duration=timedelta(minutes=10)))
    with pytest.raises(ValueError, match="steps must be >= 1"):
        sim.frames(0)
    with pytest.raises(ValueError, match="unknown measurements"):
        sim.frames(1, measurements=(INFINIBAND, ETHTOOL, "nvidia_smi_process"))
