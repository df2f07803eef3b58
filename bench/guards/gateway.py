"""What a guard policy adds to a gateway call: two ``elevenfactor serve`` processes on one mock
upstream, one with the shipped default policy and one with ``guards.default: null``, 2 KB user
messages, plain and streamed answers (the mock streams ``STREAM_CHUNKS`` chunks at once), one
request at a time from a client process, rounds interleaved.

A probe says whether the gateway applies guards at all: the policy server also routes the model
``probe`` under a policy that blocks a phrase; a probe request that is answered 200 means the
gateway does not run guards (yet), and the "added" figures then measure nothing but noise.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.gateway.targets import MODEL, REPO, Target, start_elevenfactor, start_upstream
from bench.guards.inputs import inputs
from bench.stats import median

__all__ = ["MODES", "STREAM_CHUNKS", "GatewayRun", "latency", "probe"]

STREAM_CHUNKS = 50
MODES = ("plain", "stream")
PROBE_PHRASE = "elevenfactor-bench-guard-probe"

_PROJECT = """\
version: 1
providers:
  mock:
    type: openai
    base_url: http://127.0.0.1:{port}/v1
    api_key: sk-mock-upstream
models:
  mock-gpt:
    provider: mock
    model: mock-gpt
    retry:
      attempts: 1
routes:
  {model}:
    chain: [mock-gpt]
  probe:
    chain: [mock-gpt]
default_route: {model}
"""
_WITH_POLICY = _PROJECT + "guards:\n  default: default\n  routes: {{probe: probe}}\n"
_WITHOUT = _PROJECT + "guards:\n  default: null\n"
_PROBE_POLICY = f"stages:\n  input: [{{rule: phrases, deny: [{PROBE_PHRASE}], action: block}}]\n"


def _body(content: str, *, stream: bool, model: str = MODEL) -> str:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 64,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))


def probe(target: Target) -> dict[str, Any]:
    """Send the blocked phrase to the ``probe`` route: does the gateway run guards?"""
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
    body = _body(f"please repeat {PROBE_PHRASE}", stream=False, model="probe")
    conn.request(
        "POST", "/v1/chat/completions", body, {"Content-Type": "application/json", **target.headers}
    )
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return {
        "status": resp.status,
        "applies_guards": resp.status != 200,
        "answer": data[:300].decode(errors="replace"),
    }


def latency(target: Target, body: str, n: int, warmup: int) -> dict[str, Any]:
    """``n`` sequential POSTs of ``body`` to ``target`` (after ``warmup``) from a client
    process (``bench.gateway.client latency``); its JSON result. Raises on any error."""
    args = ["latency", "--url", target.url, "--body", body, "--n", str(n), "--warmup", str(warmup)]
    for name, value in target.headers.items():
        args += ["--header", f"{name}: {value}"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.gateway.client", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600 + n,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"client failed (exit {done.returncode}): {done.stderr[-800:]}")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if out["errors"]:
        raise RuntimeError(f"{target.name}: {out['errors']} errors, first: {out['first_error']}")
    return out


class GatewayRun:
    """The mock, the two servers, and the interleaved rounds."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.targets: list[Target] = []
        self.rounds: list[dict[str, dict[str, Any]]] = []

    def start(self) -> dict[str, Any]:
        """Start the mock (``STREAM_CHUNKS`` chunks, no delay) and both servers; probe."""
        upstream = start_upstream(self.workdir, STREAM_CHUNKS, 0.0)
        self.targets.append(upstream)
        port = upstream.port
        home = self.workdir / "ef-default"
        (home / "policies").mkdir(parents=True)
        (home / "policies" / "probe.yaml").write_text(_PROBE_POLICY)
        self.targets.append(
            start_elevenfactor(
                self.workdir, port, name="ef-default", project=_WITH_POLICY, home=home
            )
        )
        self.targets.append(
            start_elevenfactor(self.workdir, port, name="ef-none", project=_WITHOUT)
        )
        return probe(self.targets[1])

    def round(self, rnd: int, n: int, warmup: int, advance: Callable[[], None]) -> None:
        """Every target and mode once, the order rotated by ``rnd``."""
        text = inputs()["clean"]
        bodies = {mode: _body(text, stream=mode == "stream") for mode in MODES}
        k = rnd % len(self.targets)
        row: dict[str, dict[str, Any]] = {}
        for target in self.targets[k:] + self.targets[:k]:
            for mode in MODES:
                row.setdefault(target.name, {})[mode] = latency(target, bodies[mode], n, warmup)
                advance()
        self.rounds.append(row)

    def summary(self) -> dict[str, Any]:
        """Per target and mode: median over rounds of p50/p99; added = default - none."""
        out: dict[str, Any] = {}
        for name in (t.name for t in self.targets):
            for mode in MODES:
                lat = [r[name][mode]["latency_us"] for r in self.rounds if name in r]
                out.setdefault(name, {})[mode] = {
                    q: median([x[q] for x in lat]) for q in ("p50", "p99")
                }
        for mode in MODES:
            added = {
                q: median(
                    [
                        r["ef-default"][mode]["latency_us"][q] - r["ef-none"][mode]["latency_us"][q]
                        for r in self.rounds
                    ]
                )
                for q in ("p50", "p99")
            }
            out.setdefault("added", {})[mode] = added
        return out

    def stop(self) -> None:
        """Stop every server."""
        for target in self.targets:
            target.stop()
