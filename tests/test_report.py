"""The weekly report: written from a store holding a simulated cluster and the detector's results, rendered in
headless Chromium, its PDF rasterized with pdftoppm."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from contextlib import ExitStack
from datetime import timedelta

import pandas as pd
import pytest

from collector.frames import points_to_frames
from collector.schema import Point
from collector.store import EmbeddedStore
from collector.store.rollup import Resolution, Rollups
from detector.detect import detect
from detector.report import (RollupReader, StoreReader, add_report_arguments, build_tables, load_report_data,
                             open_reader, parse_span, run_report)
from detector.results import write_results
from detector.simulator import SimConfig, simulate

SECTIONS = ("summary", "summary_week_over_week", "utilization_by_day", "network_loss_by_job", "network_loss_by_link",
            "network_loss_by_switch", "top_network_episodes", "loss_by_cause")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    points, sim = simulate(SimConfig(seed=1, duration=timedelta(hours=3)))
    result = detect(points_to_frames(points), sim.topology, sim.allocations)
    with EmbeddedStore(root / "store.db") as store:
        store.write(points)
        write_results(store, result)
    parser = argparse.ArgumentParser()
    add_report_arguments(parser)
    assert run_report(parser.parse_args(["--store", str(root / "store.db"), "--since", "3h",
                                         "--output", str(root / "out")])) == 0
    return root, result, sim


def test_tables_match_the_detector(report):
    root, result, _ = report
    out = root / "out"
    by_job = pd.read_csv(out / "network_loss_by_job.csv")
    expected = result.network_breakdown()["job"]
    assert dict(zip(by_job["job"], by_job["dollars_lost"])) == pytest.approx(
        {job: row["dollars_lost"] for job, row in expected.items()}, abs=0.02)
    assert by_job["dollars_lost"].sum() == pytest.approx(result.totals()["dollars_lost"], abs=0.05)
    for name in SECTIONS[1:]:
        assert (out / f"{name}.csv").stat().st_size > 0
    episodes = pd.read_csv(out / "top_network_episodes.csv")
    assert len(episodes) == len(result.network_episodes) and episodes["evidence"].str.len().min() > 0


def test_html_has_its_sections_and_renders_in_chromium(report):
    root, _, _ = report
    page = (root / "out" / "report.html").read_text()
    for section in SECTIONS:
        assert f"id='{section}'" in page
    assert page.count("<img ") >= 5 and "data:image/png;base64," in page
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed")
    shot = root / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={root / 'chromium'}", f"--screenshot={shot}", "--window-size=1200,2400",
                    (root / "out" / "report.html").as_uri()], check=True, capture_output=True, timeout=60)
    from matplotlib import image

    pixels = image.imread(shot)
    assert pixels.shape[:2] == (2400, 1200)
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05, "screenshot is blank"
    red = ((rgb[..., 0] > 0.75) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)).mean()
    assert red > 0.005, "no plot bars visible in the screenshot"


def test_pdf_converts_to_its_pages(report):
    root, _, _ = report
    if shutil.which("pdftoppm") is None:
        pytest.fail("poppler-utils is not installed")
    info = subprocess.run(["pdfinfo", str(root / "out" / "report.pdf")], check=True, capture_output=True, text=True)
    pages = int(next(line.split()[-1] for line in info.stdout.splitlines() if line.startswith("Pages:")))
    assert "pts (A4)" in info.stdout  # the front page, A4 landscape
    subprocess.run(["pdftoppm", "-r", "30", "-png", str(root / "out" / "report.pdf"), str(root / "page")],
                   check=True, timeout=60)
    rendered = sorted(root.glob("page-*.png"))
    # front page + 5 figures + one page per table at least
    assert len(rendered) == pages >= 1 + 5 + 7


def test_spans_and_bad_input():
    assert parse_span("7d") == pd.Timedelta(days=7) and parse_span("90m") == pd.Timedelta(minutes=90)
    with pytest.raises(ValueError, match="--since"):
        parse_span("last week")
    parser = argparse.ArgumentParser()
    add_report_arguments(parser)
    assert run_report(parser.parse_args(["--store", "/nonexistent/x.db", "--output", "/tmp/x"])) == 1


def job_gpu_points(sim, end_ns: int) -> list[Point]:
    """What the jobs source would have written for the simulated allocations (the simulator leaves it out)."""
    step = int(sim.config.interval_s * 1e9)
    start = int(sim.config.start.timestamp() * 1e9)
    points = []
    for time_ns in range(start + step, end_ns + 1, step):
        for allocation in sim.allocations:
            ends = pd.Timestamp(allocation.end).value if allocation.end else end_ns + 1
            if pd.Timestamp(allocation.start).value <= time_ns < ends:
                points += [Point("job_gpu", {"host": allocation.host, "index": str(gpu), "job": allocation.job},
                                 {"allocated": 1, "source": "file"}, time_ns) for gpu in allocation.gpus]
    return points


@pytest.fixture(scope="module")
def rolled_up(report, tmp_path_factory):
    """A copy of the report's store with job_gpu points and its 1 min and 1 h rollups, complete up to the newest
    sample."""
    root, _, sim = report
    path = tmp_path_factory.mktemp("rollups") / "metrics.db"
    shutil.copy(root / "store.db", path)
    with EmbeddedStore(path, retention=None) as raw:
        end = raw.time_range("nvidia_smi").last + pd.Timedelta(seconds=1)
        raw.write(job_gpu_points(sim, end.value))
        rollups = Rollups(raw, [Resolution(timedelta(minutes=1), None), Resolution(timedelta(hours=1), None)])
        rollups.update(now=end)
        rollups.close()
    return path, end, sim


@pytest.mark.parametrize(("since", "steps"), [("3h", {3600, 60, "raw"}), ("100m", {3600, 60, "raw"}),
                                               ("47m", {60, "raw"})])
def test_rollups_give_the_tables_of_raw_points(rolled_up, since, steps):
    """Whole hours from the 1 h rollup, the edges from 1 min rows and raw points: the same tables within rounding."""
    path, end, sim = rolled_up
    with EmbeddedStore(path, read_only=True) as raw, ExitStack() as stack:
        reader = open_reader(raw, stack)
        assert isinstance(reader, RollupReader) and [step for step, _ in reader.levels] == [
            pd.Timedelta(hours=1), pd.Timedelta(minutes=1)]
        start = end - parse_span(since)
        read = reader.read_series("nvidia_smi", start, end, ("sm_active", "utilization_gpu"))
        assert set(read["seconds"]) == {sim.config.interval_s if step == "raw" else step for step in steps}
        from_rollups = build_tables(load_report_data(reader, start, end))
        from_raw = build_tables(load_report_data(StoreReader(raw), start, end))
    for name, table in from_raw.items():
        pd.testing.assert_frame_equal(from_rollups[name], table, check_exact=False, rtol=1e-6, atol=0.051,
                                      obj=name)
    days = from_rollups["utilization_by_day"]
    gpus = sim.config.hosts * sim.config.gpus_per_host
    assert days["gpus"].max() == gpus and days["allocated_gpus"].max() > 0
    assert days["gpu_hours"].sum() == pytest.approx(parse_span(since) / pd.Timedelta(hours=1) * gpus, abs=0.1)


def test_a_store_without_rollups_is_read_raw(report):
    root, _, _ = report
    with EmbeddedStore(root / "store.db", read_only=True) as raw, ExitStack() as stack:
        assert isinstance(open_reader(raw, stack), StoreReader)
