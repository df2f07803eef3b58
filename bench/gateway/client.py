"""Load clients, each run in its own process and printing one JSON object on stdout.

``latency``: sequential POSTs on one keep-alive connection (``http.client``, TCP_NODELAY); the
same code measures every target. ``streams``: N concurrent streamed completions (aiohttp on
uvloop), started staggered and kept going back to back for a duration; time to first token
(the first SSE event with non-empty ``content``) is recorded for streams that start after the
ramp-up, so the figures describe N streams in flight, not a cold burst.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import re
import resource
import socket
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import uvloop

from bench.stats import summarize

__all__ = ["main", "run_latency", "run_streams"]

_FIRST_TOKEN = re.compile(rb'"content"\s*:\s*"[^"]')


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _headers(pairs: list[str]) -> dict[str, str]:
    out = {"Content-Type": "application/json"}
    for pair in pairs:
        name, _, value = pair.partition(":")
        out[name.strip()] = value.strip()
    return out


def run_latency(
    url: str, body: bytes, headers: dict[str, str], n: int, warmup: int
) -> dict[str, Any]:
    """``warmup`` then ``n`` sequential requests; latencies in microseconds."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=60)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    path = parts.path or "/"
    lat: list[float] = []
    errors = 0
    first_error: str | None = None
    perf = time.perf_counter_ns
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    for i in range(warmup + n):
        t0 = perf()
        conn.request("POST", path, body, headers)
        resp = conn.getresponse()
        data = resp.read()
        t1 = perf()
        if resp.status != 200 or b'"choices"' not in data:
            errors += 1
            if first_error is None:
                first_error = f"HTTP {resp.status}: {data[:300]!r}"
        if i >= warmup:
            lat.append((t1 - t0) / 1000)
    wall = time.perf_counter() - wall0
    conn.close()
    return {
        "latency_us": summarize(lat),
        "errors": errors,
        "first_error": first_error,
        "requests_sent": warmup + n,
        "client_cpu_pct": round(100 * (_cpu_seconds() - cpu0) / wall, 1),
    }


async def run_streams(
    url: str,
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    duration: float,
    ramp: float,
    settle: float,
) -> dict[str, Any]:
    """``concurrency`` workers streaming back to back for ``duration`` s; TTFT in ms."""
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=300)
    ttft: list[float] = []
    total: list[float] = []
    events: list[int] = []
    errors = 0
    incomplete = 0
    first_error: str | None = None
    started = 0
    perf = time.perf_counter
    t_start = perf()
    measure_from = t_start + ramp + settle
    deadline = t_start + duration

    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",)
    ) as session:

        async def one() -> None:
            nonlocal errors, incomplete, first_error, started
            started += 1
            t0 = perf()
            first: float | None = None
            pieces: list[bytes] = []
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    if resp.status != 200:
                        text = await resp.read()
                        errors += 1
                        if first_error is None:
                            first_error = f"HTTP {resp.status}: {text[:300]!r}"
                        return
                    async for piece in resp.content.iter_any():
                        pieces.append(piece)
                        if first is None and _FIRST_TOKEN.search(b"".join(pieces[-2:])):
                            first = perf()
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors += 1
                if first_error is None:
                    first_error = repr(exc)
                return
            t1 = perf()
            whole = b"".join(pieces)
            if first is None or b"[DONE]" not in whole:
                incomplete += 1
                if first_error is None:
                    first_error = f"incomplete stream: {whole[:300]!r}"
                return
            if t0 >= measure_from:
                ttft.append((first - t0) * 1000)
                total.append((t1 - t0) * 1000)
                events.append(whole.count(b"data:"))

        async def worker(k: int) -> None:
            await asyncio.sleep(ramp * k / concurrency)
            while perf() < deadline:
                await one()

        cpu0, wall0 = _cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        wall = time.perf_counter() - wall0
    return {
        "ttft_ms": summarize(ttft),
        "stream_ms": summarize(total),
        "events_per_stream": summarize([float(e) for e in events]),
        "streams_started": started,
        "streams_measured": len(ttft),
        "errors": errors,
        "incomplete": incomplete,
        "first_error": first_error,
        "client_cpu_pct": round(100 * (_cpu_seconds() - cpu0) / wall, 1),
    }


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.gateway.client {latency,streams} ...``"""
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    for name in ("latency", "streams"):
        p = sub.add_parser(name)
        p.add_argument("--url", required=True)
        p.add_argument("--body", required=True, help="the JSON request body")
        p.add_argument("--header", action="append", default=[], help="'Name: value'")
    lat = sub.choices["latency"]
    lat.add_argument("--n", type=int, default=2000)
    lat.add_argument("--warmup", type=int, default=200)
    st = sub.choices["streams"]
    st.add_argument("--concurrency", type=int, default=256)
    st.add_argument("--duration", type=float, default=6.0)
    st.add_argument("--ramp", type=float, default=0.25)
    st.add_argument("--settle", type=float, default=0.5)
    args = ap.parse_args(argv)
    headers = _headers(args.header)
    body = args.body.encode()
    if args.mode == "latency":
        out = run_latency(args.url, body, headers, args.n, args.warmup)
    else:
        out = uvloop.run(
            run_streams(
                args.url, body, headers, args.concurrency, args.duration, args.ramp, args.settle
            )
        )
    sys.stdout.buffer.write(orjson.dumps(out) + b"\n")


if __name__ == "__main__":
    main()
