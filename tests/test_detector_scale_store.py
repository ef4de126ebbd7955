"""The scale benchmark's store: what it keeps on disk reads back as the simulation's frames."""

from __future__ import annotations

import importlib.util
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from detector.simulator import FRAME_MEASUREMENTS, SimConfig, Simulation

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "detector_scale.py"
# Four half-hour chunks: a read spans several, each with its own codes for its text and times.
CONFIG = SimConfig(seed=3, duration=timedelta(hours=2), interval_s=60, hosts=4, leaves=2)


@pytest.fixture(scope="module")
def scale():
    spec = importlib.util.spec_from_file_location("detector_scale", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_reads_return_the_simulations_rows_in_range_and_only_the_fields_asked(scale, tmp_path):
    expected = Simulation(CONFIG).frames(CONFIG.steps)
    store = scale.SimulatedStore(Simulation(CONFIG), tmp_path)
    start = pd.Timestamp(CONFIG.start) + pd.Timedelta(minutes=25)
    end = start + pd.Timedelta(minutes=50)
    for measurement in FRAME_MEASUREMENTS:
        frame = expected[measurement]
        inside = frame[(frame["time"] >= start) & (frame["time"] < end)].reset_index(drop=True)
        pd.testing.assert_frame_equal(store.read(measurement, start, end), inside, check_exact=True)
    numeric = [name for name in expected["interface"].columns
               if name != "time" and pd.api.types.is_numeric_dtype(expected["interface"][name])]
    assert set(numeric) <= set(store.field_names())
    read = store.read("interface", start, end, fields=["ifHCInOctets"])
    text = [name for name in expected["interface"].columns if name != "time" and name not in numeric]
    assert list(read.columns) == ["time", *text, "ifHCInOctets"]


def test_a_read_deletes_the_files_before_its_start(scale, tmp_path):
    store = scale.SimulatedStore(Simulation(CONFIG), tmp_path)
    start = pd.Timestamp(CONFIG.start)
    store.read("interface", start, start + pd.Timedelta(hours=1))
    held = {path.name for path in tmp_path.iterdir()}
    store.read("interface", start + pd.Timedelta(hours=1), start + pd.Timedelta(hours=2))
    assert held - {path.name for path in tmp_path.iterdir()} == {"0"}
