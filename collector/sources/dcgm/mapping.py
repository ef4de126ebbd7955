"""DCGM exporter samples to strandwatch points.

dcgm-exporter names its metrics after DCGM's field ids (``DCGM_FI_*``) and its
labels after the GPU (``gpu``, ``UUID``, ``modelName``, ``hostname`` or, before
version 3.3, ``Hostname``), the MIG instance (``GPU_I_ID``, ``GPU_I_PROFILE``)
and, on Kubernetes, the pod holding the GPU (``pod``, ``namespace``,
``container``). The fields the detector and Telegraf's ``nvidia_smi`` know are
renamed to their names and units (:data:`FIELD_MAP`); every other ``DCGM_*``
metric is kept as a float under its lowercased name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from collector.schema import NVIDIA_SMI, FieldValue, Point
from collector.sources.dcgm.prometheus import Sample
from collector.sources.gpu import NVIDIA_SMI_MIG
from collector.sources.jobs import job_point

FIELD_MAP: dict[str, tuple[str, float, type]] = {
    "DCGM_FI_DEV_GPU_UTIL": ("utilization_gpu", 1, int),
    "DCGM_FI_DEV_MEM_COPY_UTIL": ("utilization_memory", 1, int),
    "DCGM_FI_PROF_SM_ACTIVE": ("sm_active", 100, float),
    "DCGM_FI_PROF_SM_OCCUPANCY": ("sm_occupancy", 100, float),
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": ("gr_engine_active", 100, float),
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": ("tensor_active", 100, float),
    "DCGM_FI_PROF_DRAM_ACTIVE": ("dram_active", 100, float),
    "DCGM_FI_DEV_FB_USED": ("memory_used", 1, int),
    "DCGM_FI_DEV_FB_FREE": ("memory_free", 1, int),
    "DCGM_FI_DEV_FB_RESERVED": ("memory_reserved", 1, int),
    "DCGM_FI_DEV_FB_TOTAL": ("memory_total", 1, int),
    "DCGM_FI_DEV_POWER_USAGE": ("power_draw", 1, float),
    "DCGM_FI_DEV_GPU_TEMP": ("temperature_gpu", 1, int),
    "DCGM_FI_DEV_MEMORY_TEMP": ("temperature_memory", 1, int),
    "DCGM_FI_DEV_SM_CLOCK": ("clocks_current_sm", 1, int),
    "DCGM_FI_DEV_MEM_CLOCK": ("clocks_current_memory", 1, int),
    "DCGM_FI_DEV_XID_ERRORS": ("xid_last", 1, int),
    "DCGM_FI_PROF_NVLINK_TX_BYTES": ("nvlink_tx_bytes_per_second", 1, float),
    "DCGM_FI_PROF_NVLINK_RX_BYTES": ("nvlink_rx_bytes_per_second", 1, float),
    "DCGM_FI_PROF_PCIE_TX_BYTES": ("pcie_tx_bytes_per_second", 1, float),
    "DCGM_FI_PROF_PCIE_RX_BYTES": ("pcie_rx_bytes_per_second", 1, float),
}
"""DCGM metric -> (field, factor, type). The PROF ratios (0..1) become % like
nvidia-smi's; DCGM's NVLink and PCIe PROF fields are rates, hence the names."""

HOST_LABELS = ("hostname", "Hostname")
"""The exporter's host label, current name first."""

_POD_LABELS = ("namespace", "pod", "container")


@dataclass(slots=True)
class _Gpu:
    """What the samples of one GPU (or one MIG instance) add up to."""

    tags: dict[str, str]
    mig: bool
    fields: dict[str, FieldValue] = field(default_factory=dict)
    pods: dict[str, dict[str, str]] = field(default_factory=dict)
    """Job id -> the pod labels of a job holding this GPU."""


def _field(sample: Sample) -> tuple[str, FieldValue] | None:
    """The field of one sample, ``None`` for a value line protocol cannot carry (NaN, ±Inf)."""
    if not math.isfinite(sample.value):
        return None
    mapped = FIELD_MAP.get(sample.name)
    if mapped is None:
        return sample.name.lower(), sample.value
    name, factor, kind = mapped
    if kind is int:
        return name, round(sample.value * factor)
    # Rounded so that a ratio of 0.118 reads 11.8 %, not 11.799999999999999.
    return name, round(sample.value * factor, 10) if factor != 1 else sample.value


def points_from_samples(
    samples: list[Sample],
    host: str,
    time_ns: int,
    use_host_label: bool = True,
    jobs: bool = True,
    job_label: str | None = None,
) -> list[Point]:
    """``nvidia_smi`` points per GPU, ``nvidia_smi_mig`` per MIG instance, ``job_gpu`` per pod and GPU.

    Samples without a ``gpu`` label (the exporter's own metrics, NVSwitch and
    CPU entities) and metrics not named ``DCGM_*`` are left out. ``host`` tags
    the points unless ``use_host_label`` and the samples carry a host label. A metric seen
    several times for one GPU (one series per pod on a shared GPU) counts once.
    The job of a pod is ``namespace/pod``, or the value of ``job_label`` where
    the sample has that label (a pod label the exporter was told to export).
    """
    gpus: dict[tuple[str, ...], _Gpu] = {}
    for sample in samples:
        labels = sample.labels
        index = labels.get("gpu")
        if index is None or not sample.name.startswith("DCGM_"):
            continue
        gpu_host = next((labels[name] for name in HOST_LABELS if labels.get(name)), host) if use_host_label else host
        instance = labels.get("GPU_I_ID", "")
        key = (gpu_host, index, labels.get("UUID", ""), instance)
        gpu = gpus.get(key)
        if gpu is None:
            tags = {
                "host": gpu_host, "index": index, "uuid": labels.get("UUID", ""), "name": labels.get("modelName", ""),
            }
            if instance:
                tags["gpu_instance_id"] = instance
                if labels.get("GPU_I_PROFILE"):
                    tags["profile"] = labels["GPU_I_PROFILE"]
            gpu = gpus[key] = _Gpu(tags, mig=bool(instance))
            if labels.get("DCGM_FI_DRIVER_VERSION"):
                gpu.fields["driver_version"] = labels["DCGM_FI_DRIVER_VERSION"]
        named = _field(sample)
        if named is not None:
            gpu.fields.setdefault(*named)
        if jobs and labels.get("pod"):
            job = labels.get(job_label) if job_label else None
            job = job or f"{labels.get('namespace', '')}/{labels['pod']}"
            gpu.pods.setdefault(job, {name: labels[name] for name in _POD_LABELS if labels.get(name)})

    points: list[Point] = []
    for gpu in gpus.values():
        fields = gpu.fields
        if "memory_total" not in fields and "memory_used" in fields and "memory_free" in fields:
            fields["memory_total"] = fields["memory_used"] + fields["memory_free"] + fields.get("memory_reserved", 0)
        if len(fields) > ("driver_version" in fields):
            points.append(Point(NVIDIA_SMI_MIG if gpu.mig else NVIDIA_SMI, dict(gpu.tags), fields, time_ns))
        for job, pod in gpu.pods.items():
            point = job_point(
                gpu.tags["host"], gpu.tags["index"], job, "kubernetes", time_ns, gpu.tags.get("gpu_instance_id"),
            )
            point.fields.update(pod)
            points.append(point)
    return points
