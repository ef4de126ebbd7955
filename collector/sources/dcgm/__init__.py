"""GPU metrics scraped from NVIDIA's DCGM exporter (``nvidia_smi``, ``nvidia_smi_mig``, ``job_gpu``).

Public API: :class:`DcgmSource` (the source), :func:`points_from_samples` and
:data:`FIELD_MAP` (the DCGM -> strandwatch mapping), and the Prometheus text
parser :func:`parse_text` with its :class:`Sample`, :class:`Scrape` and
:class:`PrometheusFormatError`.
"""

from __future__ import annotations

from collector.sources.dcgm.mapping import FIELD_MAP, HOST_LABELS, points_from_samples
from collector.sources.dcgm.prometheus import PrometheusFormatError, Sample, Scrape, parse_text
from collector.sources.dcgm.source import DEFAULT_URL, DcgmSource, ScrapeError

__all__ = [
    "DEFAULT_URL",
    "FIELD_MAP",
    "HOST_LABELS",
    "DcgmSource",
    "PrometheusFormatError",
    "Sample",
    "ScrapeError",
    "Scrape",
    "parse_text",
    "points_from_samples",
]
