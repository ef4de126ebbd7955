"""A seeded fabric simulator: GPU jobs on a leaf-spine RoCE cluster, with faults and ground truth.

Public API: :class:`SimConfig` and :class:`Simulation` (``topology``,
``allocations``, ``step()``, ``points()``, ``frames()``, ``ground_truth``, ``board``,
``write_sysfs()``, ``gpu_backend()``, ``ethtool_backend()``, ``export()``),
:func:`simulate` to run a scenario straight through, the ground truth types
:class:`GroundTruth`, :class:`IntervalTruth` and :class:`TrueEpisode`, and the
cause names :data:`NETWORK_CAUSES` and :data:`CONFOUNDERS`. The SNMP agent that
serves the switches lives in :mod:`detector.simulator.snmp_agent`. See
README.md beside this file for the model.
"""

from __future__ import annotations

from detector.simulator.config import (
    CONFOUNDERS,
    GPU_MODELS,
    NETWORK_CAUSES,
    SCHEDULED_KINDS,
    UNALLOCATED,
    SimConfig,
    SimConfigError,
)
from detector.simulator.devices import SimulatedEthtoolBackend, SimulatedGpuBackend
from detector.simulator.frames import FRAME_MEASUREMENTS, FramesDriftError, simulated_frames
from detector.simulator.schedule import Event, Job
from detector.simulator.simulation import Simulation, simulate
from detector.simulator.truth import GroundTruth, IntervalTruth, TrueEpisode

__all__ = [
    "CONFOUNDERS",
    "FRAME_MEASUREMENTS",
    "GPU_MODELS",
    "NETWORK_CAUSES",
    "SCHEDULED_KINDS",
    "UNALLOCATED",
    "Event",
    "FramesDriftError",
    "GroundTruth",
    "IntervalTruth",
    "Job",
    "SimConfig",
    "SimConfigError",
    "SimulatedEthtoolBackend",
    "SimulatedGpuBackend",
    "Simulation",
    "TrueEpisode",
    "simulate",
    "simulated_frames",
]
