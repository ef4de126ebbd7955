"""The dcgm source against a real HTTP server on loopback serving dcgm-exporter scrapes."""

from __future__ import annotations

import http.server
import math
import threading
import time
from pathlib import Path

import pytest
import yaml

from golden_files import assert_golden
from collector.lineprotocol import encode
from collector.schema import COLLECTOR_HEALTH, JOB_GPU, NVIDIA_SMI
from collector.sources.base import Source
from collector.sources.dcgm import (
    FIELD_MAP,
    DcgmSource,
    PrometheusFormatError,
    Sample,
    parse_text,
    points_from_samples,
)
from collector.sources.gpu import NVIDIA_SMI_MIG

FIXTURES = Path(__file__).parent / "fixtures" / "dcgm"
SAMPLE_CONFIG = Path(__file__).parents[1] / "collector" / "sources" / "dcgm" / "sample.yaml"
SHARED_COUNTERS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "dcgm" / "default-counters.csv"
T = 1_767_225_600_000_000_000


class Exporter:
    """A loopback HTTP server answering /metrics with whatever the test sets."""

    def __init__(self) -> None:
        self.body = b""
        self.status = 200
        self.delay_s = 0.0
        self.requests = 0
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                exporter.requests += 1
                time.sleep(exporter.delay_s)
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                self.send_response(exporter.status)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(exporter.body)))
                self.end_headers()
                try:
                    self.wfile.write(exporter.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the source stopped reading: too large, or it timed out

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def serve(self, fixture: str) -> None:
        self.body = (FIXTURES / fixture).read_bytes()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def exporter():
    server = Exporter()
    yield server
    server.close()


def by_measurement(points):
    found: dict[str, list] = {}
    for point in points:
        found.setdefault(point.measurement, []).append(point)
    return found


# --- the Prometheus text format ------------------------------------------------

def test_parser_reads_help_type_escapes_special_values_and_timestamps():
    scrape = parse_text(
        "# A free comment\n"
        "# HELP up_total Whether the \\\\target\\\\ is up.\\nSecond line.\n"
        "# TYPE up_total counter\n"
        '\n  up_total{job="a \\"quoted\\" \\\\ name\\nnext",le="+Inf",} 1.5e3 1767225600123\r\n'
        "plain NaN\n"
        "plain_inf{} +Inf\n"
        "neg -Inf -5\n"
        'spaced { a = "1" , b="2" }\t42\n'
        "colon:name .5\n"
    )
    first, nan, inf, neg, spaced, colon = scrape.samples
    assert first == Sample("up_total", {"job": 'a "quoted" \\ name\nnext', "le": "+Inf"}, 1500.0, 1767225600123)
    assert scrape.types == {"up_total": "counter"}
    assert scrape.helps["up_total"] == "Whether the \\target\\ is up.\nSecond line."
    assert nan.name == "plain" and math.isnan(nan.value) and nan.labels == {}
    assert inf.value == math.inf and neg.value == -math.inf and neg.timestamp_ms == -5
    assert spaced.labels == {"a": "1", "b": "2"} and spaced.value == 42
    assert colon.value == 0.5


@pytest.mark.parametrize(
    "line, reason",
    [
        ('m{a="1"', "expected ',' or '}'"),
        ('m{a="1" b="2"} 1', "expected ',' or '}'"),
        ('m{a=1} 1', "malformed label"),
        ('m{a="\\x"} 1', "unknown escape"),
        ('m{a="1",a="2"} 1', "appears twice"),
        ("m", "no value"),
        ("m 1_000", "not a number"),
        ("m one", "not a number"),
        ("m 1 12.5", "not an integer of milliseconds"),
        ("m 1 2 3", "text after the timestamp"),
        ("9m 1", "must start with a metric name"),
        ("m-x 1", "unexpected '-'"),
        ("# TYPE m countr", "unknown metric type"),
        ("# TYPE m gauge\n# TYPE m gauge", "second TYPE line"),
    ],
)
def test_parser_names_the_line_and_the_problem(line, reason):
    with pytest.raises(PrometheusFormatError, match=reason) as caught:
        parse_text(f"# HELP ok fine\nok 1\n{line}\n", source="exporter")
    assert str(caught.value).startswith(f"exporter:{3 + line.count(chr(10))}:")


# --- mapping -------------------------------------------------------------------

def test_every_default_dcgm_field_maps_to_a_field():
    """Each metric of dcgm-exporter's default list lands somewhere, mapped or lowercased."""
    if not SHARED_COUNTERS.is_file():
        pytest.fail(f"shared fixtures not found at {SHARED_COUNTERS}")
    names: set[str] = set()  # the list names some fields twice, commented out and not
    for line in SHARED_COUNTERS.read_text().splitlines():
        line = line.strip().lstrip("#").strip()
        if line.startswith("DCGM_") and line.count(",") >= 2:
            name, kind = (part.strip() for part in line.split(",")[:2])
            if kind != "label":
                names.add(name)
    samples = [Sample(name, {"gpu": "0", "UUID": "GPU-x", "modelName": "m"}, 1.0) for name in sorted(names)]
    (point,) = points_from_samples(samples, "node1", T)
    assert len(point.fields) == len(names) + 1  # + memory_total, derived
    for name in ("sm_active", "sm_occupancy", "utilization_gpu", "memory_used", "power_draw", "temperature_gpu",
                 "clocks_current_sm", "clocks_current_memory", "xid_last", "pcie_tx_bytes_per_second",
                 "dcgm_fi_dev_nvlink_bandwidth_total", "dcgm_exp_xid_errors_count"):
        assert name in point.fields, name
    assert point.fields["sm_active"] == 100.0  # a ratio of 1 is 100 %
    # Mapped, though not in the default list.
    assert set(FIELD_MAP) - names == {
        "DCGM_FI_DEV_FB_TOTAL", "DCGM_FI_PROF_NVLINK_TX_BYTES", "DCGM_FI_PROF_NVLINK_RX_BYTES",
    }


def test_nan_and_infinite_values_are_left_out_and_samples_without_gpu_ignored():
    samples = [
        Sample("DCGM_FI_DEV_GPU_UTIL", {"gpu": "0"}, math.nan),
        Sample("DCGM_FI_DEV_POWER_USAGE", {"gpu": "0"}, math.inf),
        Sample("DCGM_FI_DEV_GPU_TEMP", {"gpu": "0"}, 40),
        Sample("DCGM_FI_DEV_GPU_TEMP", {"nvswitch": "0"}, 50),  # an NVSwitch entity
        Sample("go_goroutines", {"gpu": "0"}, 12),
    ]
    (point,) = points_from_samples(samples, "node1", T)
    assert point.fields == {"temperature_gpu": 40}
    assert point.tags == {"host": "node1", "index": "0", "uuid": "", "name": ""}


# --- the source, over HTTP -----------------------------------------------------

async def test_kubernetes_scrape_gives_gpus_with_sm_activity_and_pods_as_jobs(exporter):
    exporter.serve("k8s-h100.prom")
    source = DcgmSource("ignored-host", exporter.url)
    assert isinstance(source, Source)
    points = await source.collect(T)
    found = by_measurement(points)

    gpus = found[NVIDIA_SMI]
    assert [p.tags["index"] for p in gpus] == ["0", "1", "2", "3"]
    gpu0 = gpus[0]
    assert gpu0.tags == {
        "host": "gpu-node-07", "index": "0", "uuid": "GPU-8a0f3c2e-1d4b-4e6a-9f21-5c7d0e3b9a10",
        "name": "NVIDIA H100 80GB HBM3",
    }
    fields = gpu0.fields
    # Busy in utilization terms, but the SMs are mostly idle: a job waiting on the network.
    assert fields["utilization_gpu"] == 100 and fields["sm_active"] == pytest.approx(6.2531)
    assert fields["sm_occupancy"] == pytest.approx(1.5625)
    assert (fields["memory_used"], fields["memory_free"], fields["memory_reserved"]) == (60123, 20918, 518)
    assert fields["memory_total"] == 60123 + 20918 + 518
    assert fields["power_draw"] == pytest.approx(612.345) and fields["temperature_gpu"] == 61
    assert (fields["clocks_current_sm"], fields["clocks_current_memory"]) == (1980, 2619)
    assert fields["nvlink_tx_bytes_per_second"] == 96123456789.0
    assert fields["dcgm_fi_dev_total_energy_consumption"] == 91234567890123.0  # unmapped: lowercased, float
    assert fields["driver_version"] == "550.90.07"
    assert {type(v) for k, v in fields.items() if k in ("utilization_gpu", "memory_used", "temperature_gpu")} == {int}

    jobs = found[JOB_GPU]
    assert [(p.tags["index"], p.tags["job"]) for p in jobs] == [
        ("0", "research/llama-70b-pretrain-worker-3"), ("1", "research/llama-70b-pretrain-worker-3"),
        ("2", "jupyter/notebook-alice-0"), ("2", "jupyter/notebook-bob-0"),
    ]
    assert jobs[0].tags == {"host": "gpu-node-07", "index": "0", "job": "research/llama-70b-pretrain-worker-3"}
    assert jobs[0].fields == {
        "allocated": 1, "source": "kubernetes", "namespace": "research",
        "pod": "llama-70b-pretrain-worker-3", "container": "pytorch",
    }
    # The time-sliced GPU's series appear once per pod; its fields count once.
    assert gpus[2].fields["sm_active"] == pytest.approx(35.2211)

    health = points[-1]
    assert health.measurement == COLLECTOR_HEALTH
    assert health.tags == {"source": "dcgm", "target": exporter.url}
    assert health.fields["up"] == 1 and health.fields["points"] == 8
    assert_golden("dcgm_k8s.lp", encode(points[:-1]))


async def test_legacy_hostname_label_mig_instances_and_timestamps(exporter):
    exporter.serve("legacy-a100-mig.prom")
    points = await DcgmSource("node1", exporter.url).collect(T)
    found = by_measurement(points)
    parent, whole = found[NVIDIA_SMI]
    assert parent.tags["host"] == "dgx-a100-03" and parent.tags["index"] == "0"
    assert "utilization_gpu" not in parent.fields and parent.fields["power_draw"] == pytest.approx(287.113)
    assert whole.fields["xid_last"] == 63 and whole.fields["sm_active"] == pytest.approx(9.375)
    big, small = found[NVIDIA_SMI_MIG]
    assert big.tags == {
        "host": "dgx-a100-03", "index": "0", "uuid": "GPU-1c9e0b7a-33f2-4d5e-8a6b-0f0e0d0c0b00",
        "name": "NVIDIA A100-SXM4-80GB", "gpu_instance_id": "1", "profile": "3g.40gb",
    }
    assert big.fields == {
        "memory_free": 9000, "memory_used": 31448, "memory_total": 40448, "gr_engine_active": 91.3,
        "sm_active": 81.25,
    }
    assert small.tags["gpu_instance_id"] == "2" and small.fields["sm_active"] == 0.0
    assert all(p.time_ns == T for p in points)  # stamped with the poll, not the exporter's clock
    assert JOB_GPU not in found
    assert_golden("dcgm_legacy_mig.lp", encode(points[:-1]))


async def test_host_label_and_jobs_can_be_turned_off_and_a_pod_label_names_the_job(exporter):
    exporter.serve("k8s-h100.prom")
    points = await DcgmSource("node9", exporter.url, use_hostname_label=False, jobs=False).collect(T)
    assert {p.tags["host"] for p in points[:-1]} == {"node9"}
    assert JOB_GPU not in by_measurement(points)

    exporter.body = exporter.body.replace(b'pod="llama', b'job_name="llama-70b",pod="llama')
    points = await DcgmSource("node9", exporter.url, job_label="job_name").collect(T)
    assert [p.tags["job"] for p in by_measurement(points)[JOB_GPU]] == [
        "llama-70b", "llama-70b", "jupyter/notebook-alice-0", "jupyter/notebook-bob-0",
    ]


async def test_counters_move_between_scrapes(exporter):
    exporter.serve("k8s-h100.prom")
    source = DcgmSource("node1", exporter.url)
    first = by_measurement(await source.collect(T))[NVIDIA_SMI][0]
    exporter.body = exporter.body.replace(b"} 91234567890123", b"} 91234577890123")
    second = by_measurement(await source.collect(T + 10**10))[NVIDIA_SMI][0]
    delta = second.fields["dcgm_fi_dev_total_energy_consumption"] - first.fields["dcgm_fi_dev_total_energy_consumption"]
    assert delta == 10_000_000  # mJ in 10 s: 1 kW


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda e: setattr(e, "body", b"DCGM_FI_DEV_GPU_UTIL{gpu=\"0\" 97\n"), ":1: expected ','"),
        (lambda e: setattr(e, "status", 503), "HTTP 503"),
        (lambda e: setattr(e, "body", b"\xff\xfe not text"), "not utf-8 text"),
        (lambda e: setattr(e, "body", b"x 1\n" * 1000), "larger than max_bytes"),
        (lambda e: setattr(e, "delay_s", 1.0), "timed out"),
    ],
)
async def test_a_bad_scrape_marks_the_poll_down_and_says_why(exporter, caplog, setup, message):
    exporter.serve("legacy-a100-mig.prom")
    setup(exporter)
    source = DcgmSource("node1", exporter.url, timeout_s=0.3, max_bytes=2000)
    points = await source.collect(T)
    assert [p.measurement for p in points] == [COLLECTOR_HEALTH]
    assert points[0].fields["up"] == 0
    assert any(message in record.getMessage() for record in caplog.records), [r.getMessage() for r in caplog.records]


async def test_an_exporter_that_is_not_there_marks_the_poll_down(exporter):
    url = exporter.url
    exporter.close()
    points = await DcgmSource("node1", url, timeout_s=1).collect(T)
    assert points[-1].fields["up"] == 0


def test_sample_config_builds_a_source_and_bad_options_are_named():
    options = yaml.safe_load(SAMPLE_CONFIG.read_text())["dcgm"]
    source = DcgmSource.from_config("node1", options)
    assert source.url == "http://localhost:9400/metrics" and source.timeout_s == 5.0
    with pytest.raises(ValueError, match="unknown option.*endpoint"):
        DcgmSource.from_config("node1", {"endpoint": "x"})
    with pytest.raises(ValueError, match="url must be an http"):
        DcgmSource("node1", "localhost:9400")
    with pytest.raises(ValueError, match="timeout_s must be a positive"):
        DcgmSource("node1", timeout_s=0)
    with pytest.raises(ValueError, match="max_bytes must be a positive"):
        DcgmSource("node1", max_bytes="1M")
    with pytest.raises(ValueError, match="jobs must be true or false"):
        DcgmSource.from_config("node1", {"jobs": "yes"})
