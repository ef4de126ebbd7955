"""Grafana provisioning: files match their generator, dashboards are well formed, and every query finds data.

A simulated cluster (3 h, 64 GPUs) plus the detector's results go into a real
InfluxDB 1.6 (Debian's influxd) over ``/write``; each panel and alert query is
sent to ``/query`` with Grafana's macros and template variables substituted the
way Grafana does, with "now" set to a moment when the network strands a job.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from collector.frames import points_to_frames
from collector.lineprotocol import encode
from collector.schema import Point
from detector.detect import detect
from detector.results import STRANDED_COMPUTE, result_points
from detector.simulator import SimConfig, simulate
from tests.influx_fixture import influx_server  # noqa: F401  (pytest fixture)

ROOT = Path(__file__).resolve().parent.parent
PROVISIONING = ROOT / "dashboards"
DATABASE = "strandwatch"
SITE = "lab"

_spec = importlib.util.spec_from_file_location("dashboards_build", PROVISIONING / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

DASHBOARD_FILES = sorted((PROVISIONING / "dashboards" / "strandwatch").glob("*.json"))
RULES_FILE = PROVISIONING / "alerting" / "strandwatch-rules.yaml"


def _dashboards() -> list[dict]:
    return [json.loads(path.read_text()) for path in DASHBOARD_FILES]


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES_FILE.read_text())["groups"] for rule in group["rules"]]


# --- files and structure ---------------------------------------------------------


def test_committed_files_are_the_generators_output():
    for path, text in build.render().items():
        assert path.exists(), f"{path} missing: run python dashboards/build.py"
        assert path.read_text() == text, f"{path} differs from dashboards/build.py's output: rebuild it"


def test_provisioning_files_follow_grafanas_format():
    datasource = yaml.safe_load((PROVISIONING / "datasources" / "strandwatch.yaml").read_text())
    assert datasource["apiVersion"] == 1
    (source,) = datasource["datasources"]
    assert source["uid"] == build.DATASOURCE_UID and source["type"] == "influxdb"
    assert source["jsonData"]["dbName"] and "version" not in source["jsonData"]  # InfluxQL, not Flux

    provider = yaml.safe_load((PROVISIONING / "dashboards" / "provider.yaml").read_text())
    assert provider["apiVersion"] == 1
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"].endswith("/strandwatch")

    rules = yaml.safe_load(RULES_FILE.read_text())
    assert rules["apiVersion"] == 1
    for group in rules["groups"]:
        assert {"orgId", "name", "folder", "interval", "rules"} <= group.keys()
        for rule in group["rules"]:
            assert {"uid", "title", "condition", "data", "noDataState", "execErrState", "for", "labels",
                    "annotations"} <= rule.keys()
            refs = [item["refId"] for item in rule["data"]]
            assert rule["condition"] in refs and len(set(refs)) == len(refs)
            for item in rule["data"]:
                assert {"refId", "datasourceUid", "relativeTimeRange", "model"} <= item.keys()
                assert item["model"]["refId"] == item["refId"]
                if item["datasourceUid"] == "__expr__":
                    assert item["model"]["type"] in ("reduce", "threshold", "math")
                    assert item["model"]["expression"] in refs
                else:
                    assert item["datasourceUid"] == build.DATASOURCE_UID
                    assert item["relativeTimeRange"]["from"] > 0
            assert rule["annotations"]["summary"] and rule["annotations"]["runbook"]
    assert len({rule["uid"] for rule in _rules()}) == len(_rules()) == 5


# Grafana's dashboard model (schemaVersion 39), the parts provisioning relies on.
_DASHBOARD_KEYS = {"uid": str, "title": str, "schemaVersion": int, "version": int, "panels": list,
                   "templating": dict, "time": dict, "tags": list, "timezone": str, "refresh": str}
_PANEL_KEYS = {"id": int, "type": str, "title": str, "gridPos": dict, "targets": list, "datasource": dict,
               "fieldConfig": dict, "options": dict}
_PANEL_TYPES = {"stat", "timeseries", "table", "heatmap", "bargauge", "state-timeline"}


def _check_keys(item: dict, keys: dict, where: str) -> None:
    for key, kind in keys.items():
        assert key in item, f"{where}: no {key!r}"
        assert isinstance(item[key], kind), f"{where}: {key!r} is {type(item[key]).__name__}, not {kind.__name__}"


def test_dashboards_are_well_formed():
    dashboards = _dashboards()
    assert {board["uid"] for board in dashboards} == set(build.DASHBOARD_UIDS.values())
    for board in dashboards:
        where = board["uid"]
        _check_keys(board, _DASHBOARD_KEYS, where)
        assert board["schemaVersion"] >= 36 and len(board["uid"]) <= 40
        variables = {variable["name"]: variable for variable in board["templating"]["list"]}
        assert set(variables) == {"site", "switch", "host", "job"}
        for variable in variables.values():
            assert variable["type"] == "query" and variable["datasource"]["uid"] == build.DATASOURCE_UID
            assert variable["query"].startswith("SHOW TAG VALUES") and variable["includeAll"]
        ids, cells = set(), set()
        for panel in board["panels"]:
            label = f"{where} panel {panel.get('title')!r}"
            _check_keys(panel, _PANEL_KEYS, label)
            assert panel["type"] in _PANEL_TYPES, label
            assert panel["id"] not in ids, f"{label}: duplicate id"
            ids.add(panel["id"])
            grid = panel["gridPos"]
            assert set(grid) == {"h", "w", "x", "y"} and 0 < grid["w"] and grid["x"] + grid["w"] <= 24, label
            for column in range(grid["x"], grid["x"] + grid["w"]):
                for row in range(grid["y"], grid["y"] + grid["h"]):
                    assert (column, row) not in cells, f"{label} overlaps another panel"
                    cells.add((column, row))
            assert panel["targets"], f"{label}: no query"
            ref_ids = [target["refId"] for target in panel["targets"]]
            assert len(set(ref_ids)) == len(ref_ids), f"{label}: duplicate refId"
            for target in panel["targets"]:
                assert target["datasource"] == {"type": "influxdb", "uid": build.DATASOURCE_UID}, label
                assert target["rawQuery"] and target["query"].startswith("SELECT"), label
                assert "$timeFilter" in target["query"], f"{label}: query ignores the time range"
                assert "$site" in target["query"], f"{label}: query ignores $site"
            if "repeat" in panel:
                assert panel["repeat"] in variables, label


# --- every query against a real InfluxDB -----------------------------------------


@pytest.fixture(scope="module")
def scenario(influx_server):  # noqa: F811
    points, sim = simulate(SimConfig(seed=1))
    result = detect(points_to_frames(points), sim.topology, sim.allocations)
    results = result_points(result)
    extra = _job_and_health_points(sim)
    everything = [Point(p.measurement, {**p.tags, "site": SITE}, p.fields, p.time_ns)
                  for p in [*points, *results, *extra]]
    influx_server.query(f'CREATE DATABASE "{DATABASE}"')
    influx_server.write(encode(everything), DATABASE)
    network = [p for p in results if p.measurement == STRANDED_COMPUTE and p.tags["cause"] == "network"]
    last = max(network, key=lambda p: p.time_ns)
    now_ms = last.time_ns // 1_000_000 + int(sim.config.interval_s * 1000)
    return {"sim": sim, "now_ms": now_ms, "start_ms": int(sim.config.start.timestamp() * 1000),
            "job": last.tags["job"], "switch": last.tags["switch"],
            "host": next(a.host for a in sim.allocations if a.job == last.tags["job"])}


def _job_and_health_points(sim) -> list[Point]:
    """What the jobs source and the collector's self-monitoring write; the simulator leaves both out.

    One switch stops answering for the last 20 minutes, so health panels see a target down.
    """
    step = int(sim.config.interval_s * 1e9)
    start = int(sim.config.start.timestamp() * 1e9)
    end = start + sim.config.steps * step
    down_switch, down_from = sorted(sim.topology.switches)[0], end - 20 * 60 * 10**9
    points = []
    for time_ns in range(start + step, end + 1, step):
        for allocation in sim.allocations:
            begins = pd.Timestamp(allocation.start).value
            ends = pd.Timestamp(allocation.end).value if allocation.end else end + 1
            if begins <= time_ns < ends:
                points += [Point("job_gpu", {"host": allocation.host, "index": str(gpu), "job": allocation.job},
                                 {"allocated": 1, "source": "file"}, time_ns) for gpu in allocation.gpus]
        for source, targets in (("snmp", sorted(sim.topology.switches)), ("gpu", sorted(sim.topology.hosts))):
            for name in targets:
                up = 0 if (name == down_switch and time_ns >= down_from) else 1
                points.append(Point("strandwatch_source", {"source": source, "target": name},
                                    {"up": up, "duration_seconds": 0.05 + 0.01 * up, "points": 40 * up}, time_ns))
        points.append(Point("strandwatch_ingest", {"component": "ingester", "host": "collector01"},
                            {"points_written": 6000, "spool_depth": 0, "lag_seconds": 1.5}, time_ns))
    return points


def _interval(range_ms: int, max_data_points: int = 1000, minimum_ms: int = 30_000) -> str:
    """Grafana's $__interval: range / max data points, rounded to a nice step, at least the source's interval."""
    raw = max(range_ms / max_data_points, minimum_ms)
    nice = [30_000, 60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000]
    chosen = next((step for step in nice if step >= raw), nice[-1])
    return f"{chosen // 1000}s"


def _duration_ms(text: str) -> int:
    number, unit = int(text[:-1]), text[-1]
    return number * {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[unit]


def _substitute(query: str, start_ms: int, end_ms: int, values: dict[str, str]) -> str:
    """The query as Grafana sends it: macros expanded, variables as regex-escaped alternatives (or .* for All)."""
    text = query.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    text = text.replace("$__interval", _interval(end_ms - start_ms))
    for name in ("site", "switch", "host", "job"):
        value = values.get(name)
        text = text.replace(f"${name}", ".*" if value is None else re.escape(value).replace("/", "\\/"))
    assert "$" not in text.replace("$|", "|").replace("$/", "/"), f"unexpanded macro in {text}"
    return text


def _has_data(answer: dict) -> bool:
    for result in answer["results"]:
        for series in result.get("series", []):
            if any(value is not None for row in series["values"] for value in row[1:]):
                return True
    return False


def _panel_queries(board: dict):
    for panel in board["panels"]:
        for target in panel["targets"]:
            yield panel, target["query"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("selection", ["all", "one"])
def test_every_panel_query_returns_data(influx_server, scenario, selection):  # noqa: F811
    values = {} if selection == "all" else {
        "site": SITE, "switch": scenario["switch"], "host": scenario["host"], "job": scenario["job"]}
    now, first = scenario["now_ms"], scenario["start_ms"]
    empty = []
    for board in _dashboards():
        for variable in board["templating"]["list"]:
            answer = influx_server.query(_substitute(variable["query"], first, now, values), DATABASE)
            assert _has_data(answer) or answer["results"][0].get("series"), f"variable {variable['name']} empty"
        for panel, query in _panel_queries(board):
            start = now - _duration_ms(panel["timeFrom"]) if "timeFrom" in panel else first
            text = _substitute(query, start, now, values)
            if not _has_data(influx_server.query(text, DATABASE)):
                empty.append(f"{board['uid']} / {panel['title']}: {text}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


@pytest.mark.timeout(60)
def test_every_alert_query_returns_data_and_fires_where_it_should(influx_server, scenario):  # noqa: F811
    now = scenario["now_ms"]
    for rule in _rules():
        (query,) = [item for item in rule["data"] if item["datasourceUid"] == build.DATASOURCE_UID]
        start = now - query["relativeTimeRange"]["from"] * 1000
        answer = influx_server.query(_substitute(query["model"]["query"], start, now, {}), DATABASE)
        assert _has_data(answer), f"alert {rule['uid']} has no data"
    target_down = next(rule for rule in _rules() if rule["uid"] == "strandwatch-collector-target-down")
    query = target_down["data"][0]["model"]["query"]
    answer = influx_server.query(_substitute(query, now - 300_000, now, {}), DATABASE)
    lasts = {series["tags"]["target"]: series["values"][-1][1] for series in answer["results"][0]["series"]}
    assert [target for target, up in lasts.items() if up < 1] == [sorted(scenario["sim"].topology.switches)[0]]


def test_all_matches_series_without_the_tag(influx_server):  # noqa: F811
    """'All' is the regex .*, which must keep series that have no site tag at all."""
    influx_server.query('CREATE DATABASE "untagged"')
    influx_server.write('nvidia_smi,host=n1,index=0 sm_active=50 1000000000000\n', "untagged")
    answer = influx_server.query(
        _substitute('SELECT last("sm_active") FROM "nvidia_smi" WHERE "site" =~ /^$site$/ AND $timeFilter',
                    0, 2_000_000, {}), "untagged")
    assert _has_data(answer)
