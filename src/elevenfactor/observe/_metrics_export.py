"""The Prometheus exposition of ``/metrics``: every process's metrics plus the store gauges.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``serve --workers N``), the process answering a scrape
aggregates the files every server process writes (``MultiProcessCollector``: counters and
histograms summed, including those of processes that have exited, so totals never go back;
gauges as their spec says); otherwise it reports its own registry (with the process and GC
collectors of ``prometheus_client``). The text format is chosen from ``Accept``: OpenMetrics
when the scraper asks for it, else the Prometheus text format 0.0.4.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["multiprocess_dir", "render"]


def multiprocess_dir() -> str | None:
    """The multi-process metrics directory, if this process writes to one."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _Joined:
    """A collector yielding the process metrics, then ``extra`` families."""

    def __init__(self, process: Any, extra: Sequence[Any]) -> None:
        self.process = process
        self.extra = extra

    def collect(self) -> Iterator[Any]:
        yield from self.process.collect()
        yield from self.extra


def _process_collector() -> Any:
    from prometheus_client import REGISTRY
    from prometheus_client.multiprocess import MultiProcessCollector

    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    return MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]


def render(extra: Sequence[Any] = (), accept: str | None = None) -> tuple[bytes, str]:
    """The exposition body and its content type, for a scraper sending ``accept``."""
    from prometheus_client.exposition import choose_encoder

    from elevenfactor.observe import _metrics

    _metrics._load()  # the metrics exist (at zero) even before the first call
    encoder, content_type = choose_encoder(accept or "")
    return encoder(_Joined(_process_collector(), extra)), content_type
