"""Where points are kept: the embedded SQLite store by default.

``EmbeddedStore`` is the synchronous store; ``AsyncEmbeddedStore`` runs the
same calls in worker threads for asyncio code. See README.md in this folder
and docs/storage.md.
"""

from __future__ import annotations

from collector.store.embedded import AsyncEmbeddedStore, EmbeddedStore, TimeRange

__all__ = ["AsyncEmbeddedStore", "EmbeddedStore", "TimeRange"]
