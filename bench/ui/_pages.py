"""The pages the bench renders, who renders them, and each page's JSON API peer (where the API
has the same read), resolved against a seeded store's metadata."""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from bench.ui._plan import RARE_PROGRAM, RARE_TAG

__all__ = ["PAGES", "PageSpec", "older_link", "page_n", "peer_path"]

Resolve = Callable[[dict[str, Any], httpx.AsyncClient, dict[str, str]], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class PageSpec:
    """One page measured: ``path`` (or how to find it), ``who`` signs in (``admin`` or
    ``member``), ``peer`` the JSON API request doing the same read, if any."""

    name: str
    who: str
    path: str = ""
    resolve: Resolve | None = None
    peer: str | None = None


_OLDER = re.compile(r'<a\b[^>]*href="([^"]+)"[^>]*>\s*Older\b', re.I)


def older_link(page: str) -> str | None:
    """The href of the runs list's "Older" pager link, or None."""
    m = _OLDER.search(page)
    return html.unescape(m.group(1)) if m else None


async def page_n(client: httpx.AsyncClient, headers: dict[str, str], start: str, n: int) -> str:
    """The URL of page ``n`` of a list, by following its "Older" links from ``start`` (what a
    user paging back does: each link carries the keyset cursor of the page before)."""
    url = start
    for i in range(n - 1):
        resp = await client.get(url, headers=headers)
        link = older_link(resp.text) if resp.status_code == 200 else None
        if link is None:
            raise LookupError(f"no Older link on page {i + 1} ({url}: {resp.status_code})")
        url = link
    return url


async def _page_100(meta: dict[str, Any], client: httpx.AsyncClient, h: dict[str, str]) -> str:
    return await page_n(client, h, "/ui/runs", 100)


async def _long_run(meta: dict[str, Any], client: httpx.AsyncClient, h: dict[str, str]) -> str:
    return f"/ui/runs/{meta['long_run']}"


async def _approval(meta: dict[str, Any], client: httpx.AsyncClient, h: dict[str, str]) -> str:
    return f"/ui/approvals/{meta['pending_approval']}"


def _run_peer(meta: dict[str, Any]) -> str:
    return f"/v1/runs/{meta['long_run']}"


PAGES: tuple[PageSpec, ...] = (
    PageSpec("runs", "admin", "/ui/runs", peer="/v1/runs?limit=50"),
    PageSpec("runs status=failed", "admin", "/ui/runs?status=failed",
             peer="/v1/runs?status=failed&limit=50"),
    PageSpec(f"runs program={RARE_PROGRAM}", "admin", f"/ui/runs?program={RARE_PROGRAM}",
             peer=f"/v1/runs?program={RARE_PROGRAM}&limit=50"),
    PageSpec("runs min_cost=0.05", "admin", "/ui/runs?min_cost=0.05"),
    PageSpec(f"runs tag={RARE_TAG}", "admin", f"/ui/runs?tag={RARE_TAG}"),
    PageSpec("runs page 100", "admin", resolve=_page_100),
    PageSpec("runs", "member", "/ui/runs", peer="/v1/runs?limit=50"),
    PageSpec("run (51 steps)", "member", resolve=_long_run, peer="{run}"),
    PageSpec("run (51 steps)", "admin", resolve=_long_run, peer="{run}"),
    PageSpec("approvals", "admin", "/ui/approvals", peer="/v1/approvals"),
    PageSpec("approvals", "member", "/ui/approvals", peer="/v1/approvals"),
    PageSpec("approval", "admin", resolve=_approval),
    PageSpec("cost 7d by model", "admin", "/ui/cost?range=7d&by=model",
             peer="/v1/cost?by=model&per=day&since=7d"),
    PageSpec("cost 30d by user", "admin", "/ui/cost?range=30d&by=user",
             peer="/v1/cost?by=user&per=day&since=30d"),
    PageSpec("cost 30d", "member", "/ui/cost?range=30d", peer="/v1/cost?per=day&since=30d"),
    PageSpec("quality", "admin", "/ui/quality", peer="/v1/evals?limit=50"),
    PageSpec("quality", "member", "/ui/quality", peer="/v1/evals?limit=50"),
    PageSpec("health", "admin", "/ui/health", peer="/readyz"),
    PageSpec("health", "member", "/ui/health", peer="/readyz"),
)  # fmt: skip
"""Every page measured, in report order."""


def peer_path(spec: PageSpec, meta: dict[str, Any]) -> str | None:
    """The peer request of ``spec`` for this store."""
    if spec.peer == "{run}":
        return _run_peer(meta)
    return spec.peer
