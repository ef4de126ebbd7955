"""Writes strandwatch's Grafana dashboards (JSON) and alert rules (YAML) from one description.

The files in ``dashboards/strandwatch/`` and ``alerting/`` are generated here and
committed, so Grafana provisioning needs nothing but the files. Edit this
script, run ``python dashboards/build.py``, commit both; tests/test_dashboards.py
fails when the committed files and this script disagree, and runs every query
below against a real InfluxDB loaded with a simulated cluster.

Queries are InfluxQL (served by InfluxDB 1.x, 2.x through DBRP mappings, and
3.x). Every panel filters on the template variables it can: ``$site`` (any
measurement; series without a ``site`` tag match "All"), ``$switch`` (the SNMP
``agent_host`` of a switch, the ``switch`` tag of results), ``$host`` and
``$job``. Each variable's "All" is the regex ``.*``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
DATASOURCE_UID = "strandwatch-influxdb"
DATASOURCE = {"type": "influxdb", "uid": DATASOURCE_UID}
EXPRESSIONS_UID = "__expr__"
SCHEMA_VERSION = 39
FOLDER = "strandwatch"
TAGS = ["strandwatch"]

SITE = '"site" =~ /^$site$/'
SWITCH = '"agent_host" =~ /^$switch$/'
RESULT_SWITCH = '"switch" =~ /^$switch$/'
HOST = '"host" =~ /^$host$/'
JOB = '"job" =~ /^$job$/'
NETWORK = "\"cause\" = 'network'"

DASHBOARD_UIDS = {
    "overview": "strandwatch-overview",
    "fabric": "strandwatch-fabric",
    "gpus": "strandwatch-gpus",
    "stranded": "strandwatch-stranded",
    "collector": "strandwatch-collector",
}


def where(*conditions: str) -> str:
    return " AND ".join((*conditions, "$timeFilter"))


def rate(field: str) -> str:
    """Per-second rate of a raw counter; Counter32 wraps and resets give no (negative) value."""
    return f'non_negative_derivative(max("{field}"), 1s)'


# --- template variables ----------------------------------------------------

def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
        "query": query, "definition": query, "refresh": 2, "sort": 1,
        "multi": True, "includeAll": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [], "hide": 0, "regex": "", "skipUrlSync": False,
    }


VARIABLES = [
    _variable("site", "Site", 'SHOW TAG VALUES FROM "nvidia_smi" WITH KEY = "site"'),
    _variable("switch", "Switch", f'SHOW TAG VALUES FROM "interface" WITH KEY = "agent_host" WHERE {SITE}'),
    _variable("host", "Host", f'SHOW TAG VALUES FROM "nvidia_smi" WITH KEY = "host" WHERE {SITE}'),
    _variable("job", "Job", f'SHOW TAG VALUES FROM "job_gpu" WITH KEY = "job" WHERE {SITE}'),
]


# --- panels ------------------------------------------------------------------

def target(query: str, ref_id: str = "A", alias: str = "", result_format: str = "time_series") -> dict[str, Any]:
    item: dict[str, Any] = {
        "refId": ref_id, "datasource": DATASOURCE, "rawQuery": True, "query": query,
        "resultFormat": result_format,
    }
    if alias:
        item["alias"] = alias
    return item


def panel(kind: str, title: str, targets: list[dict[str, Any]], width: int, height: int,
          description: str = "", unit: str = "", **extra: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit} if unit else {}
    return {
        "type": kind, "title": title, "description": description, "datasource": DATASOURCE,
        "targets": targets, "gridPos": {"w": width, "h": height},
        "fieldConfig": {"defaults": defaults, "overrides": []}, "options": extra.pop("options", {}),
        **extra,
    }


def stat(title: str, query: str, unit: str, description: str, time_from: str | None = None,
         width: int = 6) -> dict[str, Any]:
    extra: dict[str, Any] = {"options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                                         "colorMode": "value", "graphMode": "none", "textMode": "auto"}}
    if time_from:
        extra["timeFrom"] = time_from
    return panel("stat", title, [target(query)], width, 4, description, unit, **extra)


def timeseries(title: str, targets: list[dict[str, Any]], unit: str, description: str,
               width: int = 12, height: int = 8, stacked: bool = False) -> dict[str, Any]:
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 20 if stacked else 0,
              "stacking": {"mode": "normal" if stacked else "none", "group": "A"}, "spanNulls": False}
    result = panel("timeseries", title, targets, width, height, description, unit,
                   options={"legend": {"displayMode": "table", "placement": "right", "calcs": ["max", "mean"]},
                            "tooltip": {"mode": "multi", "sort": "desc"}})
    result["fieldConfig"]["defaults"]["custom"] = custom
    return result


def heatmap(title: str, query: str, alias: str, unit: str, description: str, **extra: Any) -> dict[str, Any]:
    """A heatmap whose rows are the query's series (one per port or host), not computed buckets."""
    return panel("heatmap", title, [target(query, alias=alias)], 24, 10, description, unit, options={
        "calculate": False, "yAxis": {"axisPlacement": "left"}, "rowsFrame": {"layout": "auto"},
        "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64, "exponent": 0.5, "fill": "dark-orange"},
        "cellGap": 1, "legend": {"show": True}, "tooltip": {"show": True, "yHistogram": False},
    }, **extra)


def table(title: str, query: str, description: str, width: int = 12, height: int = 8,
          result_format: str = "table", **extra: Any) -> dict[str, Any]:
    return panel("table", title, [target(query, result_format=result_format)], width, height, description,
                 options={"showHeader": True, "cellHeight": "sm"}, **extra)


def bar_gauge(title: str, query: str, alias: str, description: str, width: int = 8) -> dict[str, Any]:
    return panel("bargauge", title, [target(query, alias=alias)], width, 9, description, "currencyUSD", options={
        "reduceOptions": {"calcs": ["sum"], "fields": "", "values": False},
        "orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True,
    })


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ids and gridPos x/y: panels fill rows of 24 columns left to right, in order."""
    x = y = row_height = 0
    for number, item in enumerate(panels, start=1):
        width, height = item["gridPos"]["w"], item["gridPos"]["h"]
        if x + width > 24:
            x, y, row_height = 0, y + row_height, 0
        item["id"] = number
        item["gridPos"] = {"h": height, "w": width, "x": x, "y": y}
        x += width
        row_height = max(row_height, height)
    return panels


def dashboard(key: str, title: str, description: str, panels: list[dict[str, Any]],
              time_from: str = "now-6h") -> dict[str, Any]:
    return {
        "uid": DASHBOARD_UIDS[key], "title": title, "description": description, "tags": TAGS,
        "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": True, "graphTooltip": 1,
        "timezone": "utc", "refresh": "1m", "time": {"from": time_from, "to": "now"},
        "timepicker": {}, "fiscalYearStartMonth": 0, "liveNow": False, "weekStart": "",
        "templating": {"list": VARIABLES}, "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "links": [{"title": "strandwatch", "type": "dashboards", "tags": TAGS, "asDropdown": True,
                   "includeVars": True, "keepTime": True}],
        "panels": layout(panels),
    }


def overview() -> dict[str, Any]:
    lost = f'SELECT sum("dollars_lost") FROM "stranded_compute" WHERE {where(NETWORK, SITE, JOB)}'
    return dashboard("overview", "strandwatch / Overview",
                     "What the network cost today and this week, and what is stranded right now.", [
        stat("Network-stranded $, last 24 h", lost, "currencyUSD",
             "GPU time lost to the network in the last 24 hours, priced ($/GPU-hour setting).", "24h"),
        stat("Network-stranded $, last 7 days", lost, "currencyUSD",
             "GPU time lost to the network in the last 7 days, priced.", "7d"),
        stat("GPUs stranded now",
             'SELECT sum("gpus") FROM (SELECT last("gpus") AS "gpus" FROM "stranded_compute" '
             f'WHERE {where(NETWORK, SITE, JOB)} GROUP BY "job")', "none",
             "GPUs of jobs losing time to the network in the last 2 minutes.", "2m"),
        stat("Worst link score now",
             f'SELECT max("score") FROM "link_congestion" WHERE {where(SITE, RESULT_SWITCH)}', "none",
             "Highest congestion score of any link in the last 2 minutes (1 = congested). "
             "The table below names it.", "2m"),
        table("Worst links now",
              'SELECT top("score", "agent_host", "ifName", "top_signal", 5) FROM "link_congestion" '
              f'WHERE {where(SITE, RESULT_SWITCH)}',
              "The five most congested links in the last 5 minutes and their strongest signal.", width=8,
              timeFrom="5m"),
        timeseries("$ lost by cause", [target(
            'SELECT sum("dollars_lost") FROM "stranded_compute" '
            f'WHERE {where(SITE, JOB)} GROUP BY time($__interval), "cause" fill(0)', alias="$tag_cause")],
            "currencyUSD", "Dollars lost per interval; only 'network' is the fabric's fault, the other "
            "causes (checkpoints, input stalls, slow hosts, hung jobs) are shown for context.", width=16,
            stacked=True),
        timeseries("GPU busy (cluster mean)", [
            target(f'SELECT mean("sm_active") FROM "nvidia_smi" WHERE {where(SITE, HOST)} '
                   "GROUP BY time($__interval) fill(none)", "A", alias="SM active"),
            target(f'SELECT mean("utilization_gpu") FROM "nvidia_smi" WHERE {where(SITE, HOST)} '
                   "GROUP BY time($__interval) fill(none)", "B", alias="utilization.gpu"),
        ], "percent", "SM active is real work; utilization.gpu stays high while NCCL spins in a collective.",
            width=12),
        table("Top network episodes",
              'SELECT "dollars_lost", "gpu_seconds_lost", "job", "end", "links", "evidence" '
              f'FROM "stranded_episode" WHERE {where(NETWORK, SITE, JOB)}',
              "Episodes in the time range, newest first: job, price, blamed links, evidence.", width=12,
              transformations=[{"id": "sortBy", "options": {"sort": [{"field": "dollars_lost", "desc": True}]}}]),
    ])


def fabric() -> dict[str, Any]:
    ports = f"WHERE {where(SITE, SWITCH)}"
    by_port = 'GROUP BY time($__interval), "agent_host", "ifName" fill(none)'
    nic = f"WHERE {where(SITE, HOST)}"
    by_nic = 'GROUP BY time($__interval), "host", "device" fill(none)'
    return dashboard("fabric", "strandwatch / Fabric",
                     "Per-link utilization and congestion, and the counters behind them.", [
        heatmap("Egress utilization by port: $switch",
                f'SELECT {rate("ifHCOutOctets")} * 8 / 1000000000 FROM "interface" WHERE '
                f'{where(SITE, SWITCH)} {by_port}',
                "$tag_ifName", "Gbits", "Each row a port of the switch; compare with the port speed "
                "(ifHighSpeed). One heatmap per switch selected.", repeat="switch", repeatDirection="v",
                maxPerRow=1),
        heatmap("Congestion score by link",
                f'SELECT max("score") FROM "link_congestion" WHERE {where(SITE, RESULT_SWITCH)} {by_port}',
                "$tag_agent_host:$tag_ifName", "none",
                "The detector's score per link (1 = congested); links without a cell were quiet."),
        timeseries("Discards /s", [target(
            f'SELECT {rate("ifOutDiscards")} + {rate("ifInDiscards")} FROM "interface" {ports} {by_port}',
            alias="$tag_agent_host:$tag_ifName")], "pps", "ifIn/OutDiscards: drops, usually congestion on egress."),
        timeseries("Errors /s", [target(
            f'SELECT {rate("ifInErrors")} + {rate("ifOutErrors")} FROM "interface" {ports} {by_port}',
            alias="$tag_agent_host:$tag_ifName")], "pps", "ifIn/OutErrors: a degrading cable or optic."),
        timeseries("PFC pauses received by hosts /s (priority 3)", [target(
            f'SELECT {rate("rx_prio3_pause")} FROM "ethtool" {nic} '
            'GROUP BY time($__interval), "host", "interface" fill(none)', alias="$tag_host:$tag_interface")],
            "pps", "Pauses a host receives are fabric back-pressure (RoCE's usual priority 3; pauses a host "
            "sends mean the host is slow, see the GPUs dashboard)."),
        timeseries("ECN marks and CNPs /s", [
            target(f'SELECT {rate("np_ecn_marked_roce_packets")} FROM "infiniband" {nic} {by_nic}', "A",
                   alias="ECN $tag_host:$tag_device"),
            target(f'SELECT {rate("np_cnp_sent")} FROM "infiniband" {nic} {by_nic}', "B",
                   alias="CNP $tag_host:$tag_device"),
        ], "pps", "RoCE congestion control at the receiving NICs: switches marked packets, NICs asked senders "
                  "to slow down."),
        timeseries("Transmit wait (ticks/s)", [target(
            f'SELECT {rate("port_xmit_wait")} FROM "infiniband" {nic} {by_nic}',
            alias="$tag_host:$tag_device")], "none", "port_xmit_wait: time a NIC had data and no credit.",
            width=24),
    ])


def gpus() -> dict[str, Any]:
    gpu_where = where(SITE, HOST)
    per_gpu = 'GROUP BY time($__interval), "host", "index"'
    return dashboard("gpus", "strandwatch / GPUs", "GPU activity by host, and allocated GPUs against idle ones.", [
        heatmap("SM active by host",
                f'SELECT mean("sm_active") FROM "nvidia_smi" WHERE {gpu_where} '
                'GROUP BY time($__interval), "host" fill(none)', "$tag_host", "percent",
                "Mean SM activity of each host's GPUs; rows are hosts."),
        timeseries("GPUs: total, allocated, idle", [
            target('SELECT count("busy") FROM (SELECT mean("sm_active") AS "busy" FROM "nvidia_smi" '
                   f'WHERE {gpu_where} {per_gpu}) WHERE $timeFilter GROUP BY time($__interval)', "A", alias="total"),
            target('SELECT count("allocated") FROM (SELECT max("allocated") AS "allocated" FROM "job_gpu" '
                   f'WHERE {where(SITE, HOST, JOB)} {per_gpu}) WHERE $timeFilter GROUP BY time($__interval)',
                   "B", alias="allocated"),
            target('SELECT count("busy") FROM (SELECT mean("sm_active") AS "busy" FROM "nvidia_smi" '
                   f'WHERE {gpu_where} {per_gpu}) WHERE "busy" < 5 AND $timeFilter GROUP BY time($__interval)',
                   "C", alias="idle (SM active < 5 %)"),
        ], "none", "Allocated comes from job_gpu (scheduler or jobs file); idle GPUs that are allocated are "
                   "stranded, whatever the cause.", width=12),
        timeseries("Waiting in kernels by host (utilization.gpu - SM active)", [target(
            'SELECT mean("utilization_gpu") - mean("sm_active") FROM "nvidia_smi" WHERE ' + gpu_where +
            ' GROUP BY time($__interval), "host" fill(none)', alias="$tag_host")],
            "percent", "A kernel runs but the SMs idle: typically NCCL spinning in a collective while the "
            "network is slow.", width=12),
        timeseries("Power draw by host (W)", [target(
            f'SELECT sum("power_draw") FROM (SELECT mean("power_draw") AS "power_draw" FROM "nvidia_smi" '
            f'WHERE {gpu_where} {per_gpu}) WHERE $timeFilter GROUP BY time($__interval), "host"',
            alias="$tag_host")], "watt", "Sum over each host's GPUs.", width=12),
        timeseries("PFC pauses sent by hosts /s (slow receivers)", [target(
            f'SELECT {rate("tx_prio3_pause")} FROM "ethtool" WHERE {gpu_where} '
            'GROUP BY time($__interval), "host", "interface" fill(none)', alias="$tag_host:$tag_interface")],
            "pps", "A host sending pauses cannot keep up: a host problem, not the fabric's.", width=12),
        table("GPUs per job",
              'SELECT count("allocated") AS "gpus" FROM (SELECT last("allocated") AS "allocated" FROM "job_gpu" '
              f'WHERE {where(SITE, HOST, JOB)} GROUP BY "job", "host", "index") GROUP BY "job"',
              "GPUs each job held in the time range.", width=24, height=7,
              transformations=[{"id": "merge", "options": {}}]),
    ])


def stranded() -> dict[str, Any]:
    net = f'FROM "stranded_compute" WHERE {where(NETWORK, SITE, JOB, RESULT_SWITCH)}'
    return dashboard("stranded", "strandwatch / Stranded compute",
                     "Where GPU time went: episodes per job and cause, dollars by job, link and switch.", [
        panel("state-timeline", "Episode timeline (GPU-seconds lost per interval)", [target(
            'SELECT sum("gpu_seconds_lost") FROM "stranded_compute" '
            f'WHERE {where(SITE, JOB)} GROUP BY time($__interval), "job", "cause" fill(none)',
            alias="$tag_job $tag_cause")], 24, 10,
            "One row per job and cause; colour is GPU-seconds lost. Network rows are the fabric's fault.", "s",
            options={"mergeValues": False, "showValue": "never", "alignValue": "left", "rowHeight": 0.8,
                     "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"}}),
        bar_gauge("Network $ by job", f'SELECT sum("dollars_lost") {net} GROUP BY "job"', "$tag_job",
                  "Network loss per job over the time range."),
        bar_gauge("Network $ by link", f'SELECT sum("dollars_lost") {net} GROUP BY "link"', "$tag_link",
                  "Each interval's loss goes to the link blamed first."),
        bar_gauge("Network $ by switch", f'SELECT sum("dollars_lost") {net} GROUP BY "switch"', "$tag_switch",
                  "The switches of those links."),
        timeseries("Network GPU-hours lost per interval", [target(
            f'SELECT sum("gpu_seconds_lost") / 3600 {net} GROUP BY time($__interval), "job" fill(none)',
            alias="$tag_job")], "h", "Stacked by job.", width=12, stacked=True),
        table("Episodes",
              'SELECT "job", "cause", "dollars_lost", "gpu_seconds_lost", "gpus", "end", "confidence", "links", '
              f'"evidence" FROM "stranded_episode" WHERE {where(SITE, JOB)}',
              "Every episode in the range, all causes; 'evidence' names the counters that rose and where.",
              width=12),
    ])


def collector() -> dict[str, Any]:
    targets_where = where(SITE, '"target" =~ /^$switch$|^$host$/')
    by_source = 'GROUP BY time($__interval), "source" fill(none)'
    return dashboard("collector", "strandwatch / Collector health",
                     "Are all targets polled, how long polls take, how much is written, is ingest keeping up.", [
        stat("Targets up", 'SELECT sum("up") FROM (SELECT last("up") AS "up" FROM "strandwatch_source" '
             f'WHERE {targets_where} GROUP BY "source", "target")', "none",
             "Targets whose last poll in the last 5 minutes succeeded.", "5m"),
        stat("Targets polled", 'SELECT count("up") FROM (SELECT last("up") AS "up" FROM "strandwatch_source" '
             f'WHERE {targets_where} GROUP BY "source", "target")', "none",
             "Targets that reported in the last 5 minutes; fewer than expected means an agent is gone.", "5m"),
        stat("Ingest lag", f'SELECT max("lag_seconds") FROM "strandwatch_ingest" WHERE {where(SITE)}', "s",
             "Now minus the newest point the ingester wrote, worst instance, last 5 minutes.", "5m"),
        stat("Spool depth", f'SELECT max("spool_depth") FROM "strandwatch_ingest" WHERE {where(SITE)}', "none",
             "Batches waiting on disk for the bus or the store, worst instance, last 5 minutes.", "5m"),
        table("Targets", 'SELECT last("up") AS "up", last("duration_seconds") AS "duration_seconds", '
              f'last("points") AS "points" FROM "strandwatch_source" WHERE {targets_where} '
              'GROUP BY "source", "target"', "Last poll of each target.", width=8, height=9,
              transformations=[{"id": "merge", "options": {}}]),
        timeseries("Poll duration (worst target)", [target(
            f'SELECT max("duration_seconds") FROM "strandwatch_source" WHERE {targets_where} {by_source}',
            alias="$tag_source")], "s", "A poll longer than the interval falls behind.", width=8),
        timeseries("Points collected", [target(
            f'SELECT sum("points") FROM "strandwatch_source" WHERE {targets_where} {by_source}',
            alias="$tag_source")], "none", "Points per interval, by source.", width=8),
        timeseries("Ingest: points written, spool depth, lag", [
            target(f'SELECT sum("points_written") FROM "strandwatch_ingest" WHERE {where(SITE)} '
                   'GROUP BY time($__interval), "host" fill(none)', "A", alias="written $tag_host"),
            target(f'SELECT max("spool_depth") FROM "strandwatch_ingest" WHERE {where(SITE)} '
                   'GROUP BY time($__interval), "host" fill(none)', "B", alias="spool $tag_host"),
            target(f'SELECT max("lag_seconds") FROM "strandwatch_ingest" WHERE {where(SITE)} '
                   'GROUP BY time($__interval), "host" fill(none)', "C", alias="lag s $tag_host"),
        ], "none", "From strandwatch_ingest (agents and ingesters).", width=24),
    ])


DASHBOARDS = {"overview": overview, "fabric": fabric, "gpus": gpus, "stranded": stranded, "collector": collector}


# --- alert rules -----------------------------------------------------------------

def _rule(uid: str, title: str, query: str, seconds: int, reducer: str, operator: str, threshold: float,
          pending: str, severity: str, summary: str, runbook: str, no_data: str = "OK") -> dict[str, Any]:
    return {
        "uid": uid, "title": title, "condition": "C",
        "data": [
            {"refId": "A", "datasourceUid": DATASOURCE_UID,
             "relativeTimeRange": {"from": seconds, "to": 0},
             "model": {"refId": "A", "datasource": DATASOURCE, "rawQuery": True, "query": query,
                       "resultFormat": "time_series", "intervalMs": 30000, "maxDataPoints": 43200}},
            {"refId": "B", "datasourceUid": EXPRESSIONS_UID, "relativeTimeRange": {"from": 0, "to": 0},
             "model": {"refId": "B", "type": "reduce", "expression": "A", "reducer": reducer,
                       "settings": {"mode": "dropNN"}, "datasource": {"type": "__expr__", "uid": EXPRESSIONS_UID}}},
            {"refId": "C", "datasourceUid": EXPRESSIONS_UID, "relativeTimeRange": {"from": 0, "to": 0},
             "model": {"refId": "C", "type": "threshold", "expression": "B",
                       "conditions": [{"evaluator": {"type": operator, "params": [threshold]}}],
                       "datasource": {"type": "__expr__", "uid": EXPRESSIONS_UID}}},
        ],
        "noDataState": no_data, "execErrState": "Error", "for": pending,
        "labels": {"team": "fabric", "severity": severity, "product": "strandwatch"},
        "annotations": {"summary": summary, "runbook": runbook,
                        "dashboardUid": DASHBOARD_UIDS["stranded"] if "stranded" in uid
                        else DASHBOARD_UIDS["collector"] if uid.startswith("strandwatch-collector")
                        or uid.startswith("strandwatch-ingest") else DASHBOARD_UIDS["fabric"]},
        "isPaused": False,
    }


def alert_rules() -> dict[str, Any]:
    return {"apiVersion": 1, "groups": [{
        "orgId": 1, "name": "strandwatch", "folder": FOLDER, "interval": "1m", "rules": [
            _rule("strandwatch-stranded-dollars", "Network-stranded compute above $50/hour",
                  f'SELECT sum("dollars_lost") FROM "stranded_compute" WHERE {NETWORK} AND $timeFilter',
                  3600, "last", "gt", 50, "5m", "warning",
                  "The network cost {{ humanize $values.B.Value }} $ of GPU time in the last hour.",
                  "Open the Stranded compute dashboard: the top job and link name the episode. Check the blamed "
                  "links on the Fabric dashboard (discards, ECN, pauses); move or rebalance the job, or drain "
                  "a degrading link. The threshold is a setting: edit it to your cluster's price of an hour."),
            _rule("strandwatch-link-congested", "Link congested for 10 minutes",
                  'SELECT min("score") FROM "link_congestion" WHERE $timeFilter GROUP BY "agent_host", "ifName"',
                  120, "min", "gt", 1, "10m", "warning",
                  "{{ $labels.agent_host }}:{{ $labels.ifName }} has been congested (score >= 1) for 10 minutes.",
                  "Look at the link's utilization and discards on the Fabric dashboard. An uplink at line rate "
                  "with ECN marks is oversubscription or an ECMP collision: spread the traffic (more uplinks, "
                  "better hashing, job placement). Errors point to a bad cable or optic."),
            _rule("strandwatch-link-errors", "Link error rate rising",
                  f'SELECT {rate("ifInErrors")} FROM "interface" WHERE $timeFilter '
                  'GROUP BY time(1m), "agent_host", "ifName"',
                  900, "mean", "gt", 1, "5m", "warning",
                  "{{ $labels.agent_host }}:{{ $labels.ifName }} receives {{ humanize $values.B.Value }} "
                  "errored frames/s.",
                  "A link taking errors retransmits and slows every job crossing it. Check the optic's DOM "
                  "readings and the NIC's symbol_error on the far end; reseat or replace the cable, or drain "
                  "the port."),
            _rule("strandwatch-collector-target-down", "Collector target down",
                  'SELECT last("up") FROM "strandwatch_source" WHERE $timeFilter GROUP BY "source", "target"',
                  300, "last", "lt", 1, "5m", "critical",
                  "{{ $labels.source }} cannot read {{ $labels.target }}.",
                  "Check the target is reachable from the agent (SNMP credentials, UDP 161, the host's agent "
                  "running); the agent's log names the error. Until it is back, stranded compute on it is "
                  "not measured.", no_data="NoData"),
            _rule("strandwatch-ingest-behind", "Ingest falling behind",
                  'SELECT max("lag_seconds") FROM "strandwatch_ingest" WHERE $timeFilter GROUP BY "host"',
                  300, "last", "gt", 120, "5m", "critical",
                  "{{ $labels.host }} writes points {{ humanize $values.B.Value }} s behind.",
                  "The store or the bus is slower than the collectors: look at spool depth and points written "
                  "on the Collector health dashboard; check the store's disk and the broker. Spooled batches "
                  "are delivered once it catches up.", no_data="NoData"),
        ]}]}


def render() -> dict[Path, str]:
    """Every generated file and its text."""
    files = {HERE / "dashboards" / "strandwatch" / f"{key}.json": json.dumps(build(), indent=2) + "\n"
             for key, build in DASHBOARDS.items()}
    files[HERE / "alerting" / "strandwatch-rules.yaml"] = (
        "# Generated by dashboards/build.py: edit that script, not this file.\n"
        + yaml.safe_dump(alert_rules(), sort_keys=False, width=110, allow_unicode=True))
    return files


def main() -> int:
    for path, text in render().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path.relative_to(HERE.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
