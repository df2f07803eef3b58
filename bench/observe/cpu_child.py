"""The child side of ``bench.observe.cpu``: one mode's application, driven through ASGI.

The process builds the real application as ``elevenfactor serve`` would (``create_app``, the
store, the JSON log line to a file, metrics, tracing from the ``OTEL_*`` environment) and sends
it calls with the scope uvicorn would hand it, timing the CPU they take; see ``cpu.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.observe.run import _body

__all__ = ["child"]


async def _lifespan(app: Any) -> tuple[asyncio.Task[None], asyncio.Queue[dict[str, Any]]]:
    """Start the app's lifespan; the task and the queue that ends it."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started = asyncio.Event()

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()
        elif message["type"] == "lifespan.startup.failed":
            raise RuntimeError(message.get("message") or "startup failed")

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, receive, send))
    await inbox.put({"type": "lifespan.startup"})
    await asyncio.wait_for(started.wait(), 60)
    return task, inbox


def _scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50123),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"user-agent", b"bench"),
        ],
        "state": {},
    }


async def _one(app: Any, body: bytes) -> int:
    """One request through ASGI; its status (raises on a broken answer)."""
    sent = False
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    status = 0
    ended = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never  # the client stays: the answer ends the exchange
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, ended
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            ended = True

    await app(_scope(body), receive, send)
    never.cancel()
    if status != 200 or not ended:
        raise RuntimeError(f"status {status}, ended {ended}")
    return status


def _flush_tracing() -> int:
    from elevenfactor.observe import _tracing

    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    if endpoint.endswith(os.environ.get("BENCH_CLOSED", "-")):
        return 0  # the collector is down: exports fail in the background, nothing to wait for
    for batcher in _tracing._batchers:
        batcher.force_flush(30_000)
    return sum(getattr(b, "exported", 0) for b in _tracing._batchers)


def _export_threads_cpu() -> float:
    """CPU seconds the span export threads used so far."""
    from elevenfactor.observe import _tracing

    total = 0.0
    for batcher in _tracing._batchers:
        ident = batcher._thread.ident
        if ident is not None and batcher._thread.is_alive():
            total += time.clock_gettime(time.pthread_getcpuclockid(ident))
    return total


class _Switch:
    """Turns the mode's observability off and on again inside one process (``--paired``):
    logs to ``warning`` and back, metrics off and on, the tracer away and back."""

    def __init__(self) -> None:
        import logging

        from elevenfactor.observe import _metrics, _tracing

        self.root = logging.getLogger()
        self.level = self.root.level
        self.metrics = _metrics.enabled()
        self.tracer = _tracing.TRACER

    def __call__(self, on: bool) -> None:
        import logging

        from elevenfactor.observe import _metrics, _tracing

        only = os.environ.get("BENCH_TOGGLE")  # logs, metrics or tracing: that one alone
        if only in (None, "logs"):
            self.root.setLevel(self.level if on else logging.WARNING)
        if self.metrics and only in (None, "metrics"):
            _metrics.configure(enabled=on)
        if only in (None, "tracing"):
            _tracing.TRACER = self.tracer if on else None


_GC = {"t0": 0.0, "spent": 0.0, "runs": [0, 0, 0]}


def _gc_timer(phase: str, info: dict[str, int]) -> None:
    """A ``gc.callbacks`` hook: the CPU the collector takes, and its runs by generation."""
    if phase == "start":
        _GC["t0"] = time.thread_time()
    else:
        _GC["spent"] += time.thread_time() - _GC["t0"]  # type: ignore[operator]
        _GC["runs"][info["generation"]] += 1  # type: ignore[index]


async def _timed(app: Any, body: bytes, n: int, lat: list[float]) -> float:
    """``n`` calls; the main thread's CPU seconds (the export thread is counted apart)."""
    perf = time.perf_counter
    cpu0 = time.thread_time()
    for _ in range(n):
        t = perf()
        await _one(app, body)
        lat.append(perf() - t)
    return time.thread_time() - cpu0


def _profile_diff(off: Any, on: Any) -> None:
    """The functions whose own CPU time grew most from the off blocks to the on blocks."""
    import pstats

    def table(prof: Any) -> dict[tuple[str, int, str], tuple[int, float]]:
        stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
        return {fn: (cc, tt) for fn, (cc, nc, tt, ct, callers) in stats.items()}

    a, b = table(off), table(on)
    rows = sorted(
        ((v[1] - a.get(fn, (0, 0.0))[1], v[0] - a.get(fn, (0, 0.0))[0], fn) for fn, v in b.items()),
        reverse=True,
    )
    print("own CPU s, calls: on minus off", file=sys.stderr)
    for dt, dn, fn in rows[:40]:
        print(f"{dt:+8.3f} {dn:+8d}  {fn[0]}:{fn[1]}({fn[2]})", file=sys.stderr)


async def _paired(app: Any, body: bytes, args: argparse.Namespace) -> dict[str, Any]:
    """Blocks of calls with the mode off and on in turn (off, on, on, off, ...), so both see the
    same machine at nearly the same time; the on side also pays the export thread's CPU."""
    switch = _Switch()
    block = args.block
    cpu = {False: 0.0, True: 0.0}
    lat: dict[bool, list[float]] = {False: [], True: []}
    diffs: list[float] = []
    profiles: dict[bool, Any] = {}
    if args.profile:
        import cProfile

        profiles = {on: cProfile.Profile(time.thread_time) for on in (False, True)}
    gc.callbacks.append(_gc_timer)
    gc_spent = {False: 0.0, True: 0.0}
    gc_runs = {False: [0, 0, 0], True: [0, 0, 0]}
    export0 = _export_threads_cpu()
    for i in range(max(1, args.n // block)):
        order = (False, True) if i % 2 == 0 else (True, False)
        pair = {}
        for on in order:
            switch(on)
            if profiles:
                profiles[on].enable()
            gc0, runs0 = _GC["spent"], list(_GC["runs"])  # type: ignore[call-overload]
            pair[on] = await _timed(app, body, block, lat[on])
            gc_spent[on] += _GC["spent"] - gc0  # type: ignore[operator]
            for g in range(3):
                gc_runs[on][g] += _GC["runs"][g] - runs0[g]  # type: ignore[index]
            if profiles:
                profiles[on].disable()
            cpu[on] += pair[on]
        diffs.append((pair[True] - pair[False]) / block)
    if profiles:
        _profile_diff(profiles[False], profiles[True])
    switch(True)
    exported = _flush_tracing()
    export = _export_threads_cpu() - export0
    n = max(1, args.n // block) * block
    for side in lat.values():
        side.sort()
    return {
        "off_cpu_us": cpu[False] * 1e6 / n,
        "on_cpu_us": cpu[True] * 1e6 / n,
        "export_thread_cpu_us": export * 1e6 / n,
        "added_cpu_us": (cpu[True] - cpu[False] + export) * 1e6 / n,
        "added_cpu_us_median_pair": statistics.median(diffs) * 1e6 + export * 1e6 / n,
        "off_p50_us": lat[False][len(lat[False]) // 2] * 1e6,
        "on_p50_us": lat[True][len(lat[True]) // 2] * 1e6,
        "spans_per_call": exported / n,
        "gc_off_us": gc_spent[False] * 1e6 / n,
        "gc_on_us": gc_spent[True] * 1e6 / n,
        "gc_runs_off": gc_runs[False],
        "gc_runs_on": gc_runs[True],
    }


async def _child_main(args: argparse.Namespace) -> dict[str, Any]:
    from elevenfactor.cli._common import project_from, settings_from
    from elevenfactor.observe import configure_logging
    from elevenfactor.observe._tracing import setup_tracing, shutdown_tracing
    from elevenfactor.server._app import create_app
    from elevenfactor.server._runner import prepare_store

    settings = settings_from(None)
    project = project_from(settings)
    log = Path(os.environ["ELEVENFACTOR_DATA_DIR"]) / "serve.log"
    stream = log.open("a", buffering=8192)
    configure_logging(settings.log_level, stream, scrub=settings.log_scrub)
    await prepare_store(settings.resolved_database_url(), auto_migrate=True)
    traced = setup_tracing(content=settings.trace_content and settings.record_payloads)
    app = create_app(settings, project)
    task, inbox = await _lifespan(app)
    # The call records go to the store in batches by the clock (every 50 ms): the same work in
    # every mode, but its share of a call follows the call's wall time. Written at the end.
    recorder = app.state.gateway.recorder
    recorder.interval, recorder.batch = 3600.0, 1 << 30
    out: dict[str, Any] = {}
    try:
        for mode in args.stream_modes.split(","):
            body = _body(stream=mode == "stream").encode()
            for _ in range(args.warmup):
                await _one(app, body)
            _flush_tracing()
            # The start-up heap (a few hundred thousand objects) out of the collector's way: a
            # full collection of it takes tens of ms, whenever it happens to fall, which would
            # drown the per-call figures. What the calls themselves leave for it still counts.
            gc.collect()
            gc.freeze()
            if args.paired:
                out[mode] = await _paired(app, body, args)
                continue
            exported0 = _flush_tracing()
            lat: list[float] = []
            if args.profile:
                import cProfile
                import pstats

                prof = cProfile.Profile(time.thread_time)
                prof.enable()
            cpu0, wall0, export0 = time.process_time(), time.perf_counter(), _export_threads_cpu()
            await _timed(app, body, args.n, lat)
            exported = _flush_tracing() - exported0
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            export_thread = _export_threads_cpu() - export0
            if args.profile:
                prof.disable()
                stats = pstats.Stats(prof, stream=sys.stderr)
                stats.sort_stats("tottime").print_stats(35)
                stats.sort_stats("cumulative").print_stats(60)
            lat.sort()
            out[mode] = {
                "cpu_us": cpu * 1e6 / args.n,
                "wall_us": wall * 1e6 / args.n,
                "p50_us": lat[len(lat) // 2] * 1e6,
                "spans_per_call": exported / args.n,
                "export_thread_cpu_us": export_thread * 1e6 / args.n,
            }
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(task, 30)
        if traced:
            shutdown_tracing(5.0)
        stream.close()
    return out


def child(args: argparse.Namespace) -> None:
    """Run the mode configured by the environment; print its figures as one JSON line."""
    import uvloop

    result = uvloop.run(_child_main(args))
    print(json.dumps(result))
