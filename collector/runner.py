"""Polls a set of sources together and hands each batch to the bus.

One source failing never costs the others their batch: sources catch device
problems themselves, and anything that still escapes is logged here and the
poll goes on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Sequence

from collector.bus import Bus
from collector.schema import Point
from collector.sources.base import Source

log = logging.getLogger(__name__)


async def poll_sources(sources: Sequence[Source], time_ns: int) -> list[list[Point]]:
    """One batch per source, stamped ``time_ns``; a source that raised gives none."""
    results = await asyncio.gather(*(source.collect(time_ns) for source in sources), return_exceptions=True)
    batches = []
    for source, result in zip(sources, results):
        if isinstance(result, BaseException):
            if isinstance(result, asyncio.CancelledError):
                raise result
            log.error("source %s failed: %s", source.name, result)
            continue
        if result:
            batches.append(result)
    return batches


async def poll_and_publish(sources: Sequence[Source], bus: Bus, time_ns: int) -> int:
    """Polls every source once and publishes each batch; returns the points published."""
    published = 0
    for batch in await poll_sources(sources, time_ns):
        await bus.publish(batch)
        published += len(batch)
    return published
