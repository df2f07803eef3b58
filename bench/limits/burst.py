"""The overshoot load, run as its own process: N concurrent POSTs to each of several servers at
once, printing one JSON object (status and error code counts per server) on stdout.

Every connection is opened first (N concurrent GETs of a health path per server, on connections
kept alive), then all POSTs are released together, so the servers see them as close together as
one client process can send them.

Run: ``python -m bench.limits.burst --spec '[{"url": ..., "headers": {...}, "health": ...}]'
--per 100 --body '{...}'``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import uvloop

__all__ = ["main", "run_burst"]


def _code(status: int, data: bytes) -> str:
    if status == 200:
        return "ok"
    try:
        err = orjson.loads(data).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return f"HTTP {status}"
    if isinstance(err, dict):
        return str(err.get("code") or err.get("type") or f"HTTP {status}")
    return f"HTTP {status}"


class _Barrier:
    """Releases everyone once ``n`` have arrived (asyncio.Barrier is Python 3.11+ too, but
    this one also says when the POSTs were released)."""

    def __init__(self, n: int) -> None:
        self.n, self.event, self.released = n, asyncio.Event(), 0.0

    async def wait(self) -> None:
        self.n -= 1
        if self.n == 0:
            self.released = time.perf_counter()
            self.event.set()
        await self.event.wait()


async def _one_server(
    session: aiohttp.ClientSession, spec: dict[str, Any], per: int, body: bytes, go: _Barrier
) -> dict[str, Any]:
    parts = urlsplit(spec["url"])
    health = f"{parts.scheme}://{parts.netloc}{spec['health']}"
    headers = {"Content-Type": "application/json", **spec.get("headers", {})}
    statuses: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    samples: dict[str, str] = {}

    async def one() -> None:
        async with session.get(health) as warm:  # opens (or reuses) one connection
            await warm.read()
        await go.wait()
        try:
            async with session.post(spec["url"], data=body, headers=headers) as resp:
                data = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            statuses["error"] += 1
            codes["client_error"] += 1
            samples.setdefault("client_error", repr(exc)[:300])
            return
        statuses[str(status)] += 1
        code = _code(status, data)
        codes[code] += 1
        if code != "ok":
            samples.setdefault(code, data[:400].decode(errors="replace"))

    await asyncio.gather(*(one() for _ in range(per)))
    return {
        "url": spec["url"],
        "status": dict(statuses),
        "codes": dict(codes),
        "samples": samples,
    }


async def run_burst(specs: list[dict[str, Any]], per: int, body: bytes) -> dict[str, Any]:
    """``per`` concurrent POSTs of ``body`` to each server in ``specs``, released together."""
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=300)
    go = _Barrier(per * len(specs))  # every warm-up GET done: its connection is in the pool
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",)
    ) as session:
        servers = await asyncio.gather(*(_one_server(session, s, per, body, go) for s in specs))
        seconds = time.perf_counter() - go.released
    total: Counter[str] = Counter()
    for s in servers:
        total.update(s["codes"])
    return {"servers": servers, "codes": dict(total), "seconds": round(seconds, 3)}


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--spec", required=True, help="JSON list of {url, headers, health}")
    ap.add_argument("--per", type=int, default=100, help="concurrent requests per server")
    ap.add_argument("--body", required=True, help="the JSON request body")
    args = ap.parse_args(argv)
    out = uvloop.run(run_burst(orjson.loads(args.spec), args.per, args.body.encode()))
    sys.stdout.buffer.write(orjson.dumps(out) + b"\n")


if __name__ == "__main__":
    main()
