"""The ``dcgm`` source: scrapes a DCGM exporter's ``/metrics`` every poll."""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.error
import urllib.request
from typing import Any, Mapping
from urllib.parse import urlsplit

from collector.schema import Point, health_point
from collector.sources.dcgm.mapping import points_from_samples
from collector.sources.dcgm.prometheus import PrometheusFormatError, parse_text

log = logging.getLogger(__name__)

DEFAULT_URL = "http://localhost:9400/metrics"
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_BYTES = 16 << 20
"""A scrape of 8 GPUs with every default field is about 100 KB; 16 MiB stops a runaway response."""

_OPTIONS = ("url", "timeout_s", "max_bytes", "use_hostname_label", "jobs", "job_label")


class ScrapeError(Exception):
    """The exporter could not be scraped: unreachable, an HTTP error, too large, not exposition text."""


class DcgmSource:
    """GPU metrics, MIG instances and the pods holding the GPUs, from dcgm-exporter.

    For sites that already run dcgm-exporter (as a DaemonSet beside the GPU
    operator, or as a systemd service): its profiling fields give ``sm_active``
    without the agent opening NVML. ``use_hostname_label`` takes the host tag
    from the exporter's ``hostname``/``Hostname`` label (the agent's host where
    it is missing); ``jobs`` emits ``job_gpu`` points for GPUs a pod holds.
    """

    name = "dcgm"

    def __init__(
        self,
        host: str,
        url: str = DEFAULT_URL,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
        use_hostname_label: bool = True,
        jobs: bool = True,
        job_label: str | None = None,
    ) -> None:
        if not host:
            raise ValueError("dcgm source: host must be a non-empty string")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"dcgm source: url must be an http:// or https:// URL, got {url!r}")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
            raise ValueError(f"dcgm source: timeout_s must be a positive number of seconds, got {timeout_s!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"dcgm source: max_bytes must be a positive integer, got {max_bytes!r}")
        if job_label is not None and (not isinstance(job_label, str) or not job_label):
            raise ValueError(f"dcgm source: job_label must be a label name, got {job_label!r}")
        self.host = host
        self.url = url
        self.timeout_s = float(timeout_s)
        self.max_bytes = max_bytes
        self.use_hostname_label = use_hostname_label
        self.jobs = jobs
        self.job_label = job_label
        # The exporter runs on this node: never send the scrape through an http_proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @classmethod
    def from_config(cls, host: str, options: Mapping[str, Any]) -> DcgmSource:
        """Build from the ``dcgm:`` block of a config file (see ``sample.yaml``)."""
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"dcgm source: unknown option(s) {unknown}; known: {list(_OPTIONS)}")
        for flag in ("use_hostname_label", "jobs"):
            if not isinstance(options.get(flag, True), bool):
                raise ValueError(f"dcgm source: {flag} must be true or false, got {options[flag]!r}")
        return cls(host, **options)

    def fetch(self) -> str:
        """The exposition text, read whole; :class:`ScrapeError` when it cannot be had."""
        request = urllib.request.Request(self.url, headers={"Accept": "text/plain; version=0.0.4"})
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                body = response.read(self.max_bytes + 1)
                charset = response.headers.get_content_charset() or "utf-8"
        except urllib.error.HTTPError as err:
            raise ScrapeError(f"{self.url}: HTTP {err.code} {err.reason}") from err
        except (urllib.error.URLError, OSError) as err:
            reason = err.reason if isinstance(err, urllib.error.URLError) else err
            raise ScrapeError(f"{self.url}: {reason}") from err
        if len(body) > self.max_bytes:
            raise ScrapeError(f"{self.url}: the response is larger than max_bytes ({self.max_bytes})")
        try:
            return body.decode(charset)
        except (UnicodeDecodeError, LookupError) as err:
            raise ScrapeError(f"{self.url}: the response is not {charset} text: {err}") from err

    def read(self, time_ns: int) -> list[Point]:
        """One blocking scrape turned into points."""
        scrape = parse_text(self.fetch(), source=self.url)
        return points_from_samples(
            scrape.samples, self.host, time_ns, self.use_hostname_label, self.jobs, self.job_label
        )

    async def collect(self, time_ns: int) -> list[Point]:
        started = time.perf_counter()
        up = 1
        points: list[Point] = []
        try:
            points = await asyncio.to_thread(self.read, time_ns)
        except (ScrapeError, PrometheusFormatError) as err:
            log.warning("dcgm: %s", err)
            up = 0
        health = health_point(self.name, self.url, time_ns, up=up, duration_s=time.perf_counter() - started,
                              points=len(points))
        return [*points, health]

    async def close(self) -> None:
        """Nothing to release: every scrape opens and closes its own connection."""
