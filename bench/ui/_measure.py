"""Rendering one page ``n`` times after a warm-up, against its floors, in interleaved rounds:

- **page**: ``GET`` through the ASGI app (the whole request: sign-in by key, handler, SQL,
  template, middleware), timed by the client around the call;
- **sql**: the read statements that page ran (recorded once by the store tap) replayed alone on
  the same store: the page's database time, i.e. the floor no rendering can go under;
- **peer**: the JSON API request that does the same read, where there is one.

Each round times the three in a rotating order, so drift (a checkpoint, the other engineers'
processes) hits them alike.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.stats import percentile
from bench.ui._app import InProcess
from bench.ui._explain import explain_reads
from bench.ui._pages import PageSpec, peer_path

__all__ = ["TARGET_MS", "PageResult", "measure_page"]

TARGET_MS = 100.0
_CODE = re.compile(r'data-code="([^"]+)"|<code>([a-z_]+)</code>')


@dataclass(slots=True)
class PageResult:
    """What one page did on one store."""

    name: str
    who: str
    path: str
    status: str = "ok"
    """``ok``, ``missing`` (404: not built yet, or the seeded id is not visible) or ``error``."""
    detail: str = ""
    page_ms: list[float] = field(default_factory=list)
    sql_ms: list[float] = field(default_factory=list)
    peer_ms: list[float] = field(default_factory=list)
    peer: str | None = None
    reads: int = 0
    writes: int = 0
    bytes: int = 0
    statements: list[str] = field(default_factory=list)
    explain: list[dict[str, Any]] = field(default_factory=list)
    """With ``explain``: each statement timed alone with its plan, slowest first."""

    def summary(self) -> dict[str, Any]:
        """p50/p95 of each series and the verdict against ``TARGET_MS``."""
        out: dict[str, Any] = {
            k: v for k, v in asdict(self).items() if k not in ("page_ms", "sql_ms", "peer_ms")
        }
        for key in ("page_ms", "sql_ms", "peer_ms"):
            values = sorted(getattr(self, key))
            stem = key.removesuffix("_ms")
            out[f"{stem}_p50_ms"] = percentile(values, 50) if values else None
            out[f"{stem}_p95_ms"] = percentile(values, 95) if values else None
        p95 = out["page_p95_ms"]
        out["over_target"] = None if p95 is None else p95 > TARGET_MS
        return out


async def _time(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    await fn()
    return (time.perf_counter() - t0) * 1000.0


def _why(status: int, text: str) -> str:
    m = _CODE.search(text)
    code = next((g for g in m.groups() if g), "") if m else ""
    message = re.search(r'role="alert"><strong>([^<]*)</strong>', text)
    return f"HTTP {status} {code} {message.group(1).strip() if message else ''}".strip()


async def measure_page(
    ip: InProcess,
    spec: PageSpec,
    meta: dict[str, Any],
    *,
    n: int,
    warmup: int,
    explain: bool = False,
    tick: Callable[[], None] = lambda: None,
) -> PageResult:
    """Render ``spec`` ``warmup`` + ``n`` times with its floors; never raises for a page that
    answers badly (that is the result)."""
    headers = ip.headers[meta[spec.who]]
    client = ip.client
    res = PageResult(spec.name, spec.who, spec.path)
    try:
        if spec.resolve is not None:
            res.path = await spec.resolve(meta, client, headers)
    except LookupError as exc:
        res.status, res.detail = "missing", str(exc)
        return res
    for _ in range(max(1, warmup)):
        first = await client.get(res.path, headers=headers)
    if first.status_code != 200:
        res.status = "missing" if first.status_code == 404 else "error"
        res.detail = _why(first.status_code, first.text)
        return res
    res.bytes = len(first.content)
    with ip.tap.recording() as log:
        await client.get(res.path, headers=headers)
    reads = [(m, sql, p) for m, sql, p in log if m != "execute"]
    res.reads, res.writes = len(reads), len(log) - len(reads)
    res.statements = [" ".join(sql.split())[:400] for _, sql, _ in reads]
    res.peer = peer_path(spec, meta)

    async def page() -> None:
        resp = await client.get(res.path, headers=headers)
        if resp.status_code != 200:
            raise RuntimeError(f"{res.path}: {_why(resp.status_code, resp.text)}")

    async def sql() -> None:
        for method, text, params in reads:
            await getattr(ip.store, method)(text, params)

    async def peer() -> None:
        assert res.peer is not None
        resp = await client.get(res.peer, headers=headers)
        if resp.status_code != 200:
            raise RuntimeError(f"peer {res.peer}: HTTP {resp.status_code} {resp.text[:200]}")

    series: list[tuple[list[float], Callable[[], Any]]] = [(res.page_ms, page), (res.sql_ms, sql)]
    if res.peer is not None:
        await peer()  # warm
        series.append((res.peer_ms, peer))
    try:
        for i in range(n):
            k = i % len(series)
            for values, fn in series[k:] + series[:k]:
                values.append(await _time(fn))
            tick()
    except RuntimeError as exc:
        res.status, res.detail = "error", str(exc)
    if explain:
        res.explain = await explain_reads(ip.store, reads)
    return res
