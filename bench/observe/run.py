"""The servers and the measurements of ``bench.observe``.

One mock upstream; ``elevenfactor serve`` seven times on it, differing only in observability:

- ``ef-off``: no ``OTEL_*`` variable (tracing off: the SDK is not even imported),
  ``ELEVENFACTOR_METRICS=false`` and logs at ``warning`` (no line per call) — the floor, what
  the gateway costs with nothing observed;
- ``ef-logs``: the JSON line per call at ``info`` (scrubbed), nothing else; ``ef-metrics``:
  logs and Prometheus metrics; ``ef-trace``: logs and OTLP tracing;
- ``ef-on``: all three, exporting to a live OTLP receiver (``bench.observe.receiver``) — the figure
  the issue's target is about; ``ef-sampled``: the same with 10 % of traces sampled
  (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``), what a busy deployment would run;
- ``ef-down``: both, with the collector down (the OTLP endpoint is a closed port): what a dead
  collector costs on the request path (spans are dropped and counted, nothing waits).

Every server but the floor logs JSON lines at ``info`` to a file (with trace and span ids
when tracing is on). The peer is the LiteLLM proxy without and with its OpenTelemetry callback
(``callbacks: ["otel"]``) exporting to the same receiver. Latency: sequential POSTs on one
keep-alive connection from a client process (``bench.gateway.client``), rounds interleaved and
rotated.
Throughput: ``wrk`` with 16 connections; server CPU per request from the process tree's CPU
time over the ``wrk`` run.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.gateway.procs import free_port, stop, wait_http
from bench.gateway.targets import (
    MODEL,
    REPO,
    Target,
    start_elevenfactor,
    start_litellm,
    start_upstream,
)
from bench.gateway.wrk import run_wrk
from bench.guards.gateway import latency
from bench.stats import median

__all__ = ["EF_TARGETS", "MODES", "ObserveRun"]

MODES = ("plain", "stream")
EF_TARGETS = ("ef-off", "ef-logs", "ef-metrics", "ef-trace", "ef-on", "ef-sampled", "ef-down")
METRICS_TOKEN = "bench-metrics-token-0123456789abcdef"
STREAM_CHUNKS = 20


def _body(*, stream: bool) -> str:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello to the benchmark, briefly."}],
        "max_tokens": 64,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))


def _env(name: str, receiver: int, closed: int) -> dict[str, str]:
    tracing = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "elevenfactor-bench",
    }
    down = {**tracing, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed}"}
    sampled = {
        **tracing,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    }
    logs_off = {"ELEVENFACTOR_LOG_LEVEL": "warning"}  # no line per call
    metrics_off = {"ELEVENFACTOR_METRICS": "false"}
    metrics_on = {"ELEVENFACTOR_METRICS": "true", "ELEVENFACTOR_METRICS_TOKEN": METRICS_TOKEN}
    return {
        "ef-off": {**metrics_off, **logs_off},
        "ef-logs": metrics_off,
        "ef-metrics": metrics_on,
        "ef-trace": {**tracing, **metrics_off},
        "ef-on": {**tracing, **metrics_on},
        "ef-sampled": {**sampled, **metrics_on},
        "ef-down": {**down, **metrics_on},
    }[name]


@contextlib.contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    """``extra`` in ``os.environ`` while a peer starts (its launcher copies the environment)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


class ObserveRun:
    """The receiver, the upstream, the servers and the interleaved rounds."""

    def __init__(self, workdir: Path, *, peer: bool) -> None:
        self.workdir = workdir
        self.peer = peer
        self.targets: list[Target] = []
        self.receiver_port = free_port()
        self.receiver: subprocess.Popen[bytes] | None = None
        self.latency: list[dict[str, dict[str, Any]]] = []
        self.load: list[dict[str, dict[str, Any]]] = []
        self.notes: dict[str, Any] = {}

    def start(self) -> None:
        """Start the receiver, the mock and every server."""
        log = (self.workdir / "receiver.log").open("wb")
        self.receiver = subprocess.Popen(
            [sys.executable, "-m", "bench.observe.receiver", "--port", str(self.receiver_port)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_http(self.receiver_port, "/stats", self.receiver, 30)
        upstream = start_upstream(self.workdir, STREAM_CHUNKS, 0.0)
        self.targets.append(upstream)
        closed = free_port()  # nothing listens there: the collector is down
        for name in EF_TARGETS:
            env = _env(name, self.receiver_port, closed)
            self.targets.append(start_elevenfactor(self.workdir, upstream.port, name=name, env=env))
        if self.peer:
            self._start_peers(upstream.port)

    def _start_peers(self, upstream_port: int) -> None:
        from bench.observe.peer import LITELLM_OTEL_CONFIG, ensure_litellm_otel

        try:
            install = ensure_litellm_otel()
        except RuntimeError as exc:
            self.notes["peer"] = f"unavailable: {exc}"
            return
        self.notes["peer"] = f"litellm {install.version}"
        self.targets.append(start_litellm(self.workdir, upstream_port, install, name="litellm-off"))
        otel = {
            "OTEL_EXPORTER": "otlp_http",
            "OTEL_ENDPOINT": f"http://127.0.0.1:{self.receiver_port}/v1/traces",
            "OTEL_SERVICE_NAME": "litellm-bench",
        }
        with _environ(otel):
            self.targets.append(
                start_litellm(
                    self.workdir,
                    upstream_port,
                    install,
                    name="litellm-otel",
                    config=LITELLM_OTEL_CONFIG,
                )
            )

    def round(
        self,
        rnd: int,
        n: int,
        warmup: int,
        peer_n: int,
        seconds: float,
        advance: Callable[[], None],
    ) -> None:
        """Every target and mode once (latency), then ``wrk`` on each, order rotated."""
        bodies = {mode: _body(stream=mode == "stream") for mode in MODES}
        k = rnd % len(self.targets)
        order = self.targets[k:] + self.targets[:k]
        row: dict[str, dict[str, Any]] = {}
        for target in order:
            count = peer_n if target.name.startswith("litellm") else n
            for mode in MODES:
                row.setdefault(target.name, {})[mode] = latency(
                    target, bodies[mode], count, max(1, warmup * count // n)
                )
                advance()
        self.latency.append(row)
        loads: dict[str, dict[str, Any]] = {}
        for target in order:
            if target.name.startswith("litellm"):
                advance()
                continue
            cpu0 = target.cpu()
            out = run_wrk(
                target.url,
                bodies["plain"],
                target.headers,
                connections=16,
                seconds=seconds,
                script_dir=self.workdir,
            )
            cpu = target.cpu() - cpu0
            out["cpu_us_per_request"] = cpu * 1e6 / out["requests"] if out["requests"] else None
            loads[target.name] = out
            advance()
        self.load.append(loads)

    def checks(self) -> dict[str, Any]:
        """Did tracing and metrics really run? Receiver counts and a scrape of ``ef-on``."""
        out: dict[str, Any] = {}
        time.sleep(2.0)  # let the batch processors flush
        try:
            out["receiver"] = _get_json(f"http://127.0.0.1:{self.receiver_port}/stats")
        except OSError as exc:
            out["receiver"] = {"error": str(exc)}
        on = next((t for t in self.targets if t.name == "ef-on"), None)
        if on is not None:
            req = urllib.request.Request(
                f"http://127.0.0.1:{on.port}/metrics",
                headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    text = resp.read().decode()
                out["ef_on_metrics"] = _scraped(text)
            except OSError as exc:
                out["ef_on_metrics"] = {"error": str(exc)}
        return out

    def summary(self) -> dict[str, Any]:
        """Medians over rounds of p50/p99 per target and mode; added against ``ef-off`` and
        against the direct call; wrk req/s and CPU per request."""
        names = [t.name for t in self.targets]
        lat: dict[str, Any] = {}
        for name in names:
            for mode in MODES:
                per = [r[name][mode]["latency_us"] for r in self.latency if name in r]
                lat.setdefault(name, {})[mode] = {
                    q: median([x[q] for x in per]) for q in ("p50", "p99")
                }
        added: dict[str, Any] = {}
        for name in names:
            if name == "direct":
                continue
            base = "litellm-off" if name.startswith("litellm") else "ef-off"
            for against in (base, "direct"):
                if name == against:
                    continue
                for mode in MODES:
                    added.setdefault(name, {}).setdefault(f"vs {against}", {})[mode] = {
                        q: median(
                            [
                                r[name][mode]["latency_us"][q] - r[against][mode]["latency_us"][q]
                                for r in self.latency
                            ]
                        )
                        for q in ("p50", "p99")
                    }
        load = {
            name: {
                "rps": median([r[name]["rps"] for r in self.load if name in r]),
                "cpu_us_per_request": median(
                    [r[name]["cpu_us_per_request"] for r in self.load if name in r]
                ),
                "errors": sum(r[name]["errors"] for r in self.load if name in r),
            }
            for name in names
            if any(name in r for r in self.load)
        }
        return {"latency_us": lat, "added_us": added, "load": load}

    def stop(self) -> None:
        """Stop every server and the receiver."""
        for target in self.targets:
            target.stop()
        if self.receiver is not None:
            stop(self.receiver)


def _scraped(text: str) -> dict[str, Any]:
    """A few totals from a ``/metrics`` scrape (parsed with prometheus_client's parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith(("_total", "_count")):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    keep = {k: v for k, v in totals.items() if "request" in k or "dropped" in k or "call" in k}
    return {"families": len(list(text_string_to_metric_families(text))), "totals": keep}
