"""Tracing end to end: a real ``elevenfactor serve`` exporting OTLP/HTTP to a real receiver on
loopback, the official ``openai`` client sending a ``traceparent``, a recording upstream that
must receive one too; a run that parks on an approval and resumes in the same trace; and a
collector that is down costing the requests nothing while the lost spans are counted. On SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from openai import AsyncOpenAI

from tests.conftest import free_port
from tests.support.otlp_receiver import OTLPReceiver, Span
from tests.support.recording_upstream import RecordingUpstream
from tests.support.serve import EXE, ROOT, migrated, wait_for

pytestmark = pytest.mark.integration

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{CALLER_SPAN}-01"


class HeaderUpstream(RecordingUpstream):
    """The recording upstream, keeping each request's headers too."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[dict[str, str]] = []

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        return await super()._chat(request)


class TracedServer:
    """``elevenfactor serve --dev`` with OTLP export configured, its stdout kept in a file."""

    def __init__(self, home: Path, db_url: str, project: str, **env: str) -> None:
        (home / "elevenfactor.yaml").write_text(project)
        self.home, self.db_url, self.env = home, db_url, env
        self.out = home / "stdout.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = ""

    def start(self) -> None:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ELEVENFACTOR_", "OTEL_"))}
        env.update(
            DATABASE_URL=self.db_url,
            PYTHONPATH=str(ROOT),
            ELEVENFACTOR_IN_PROCESS_WORKER="true",
            ELEVENFACTOR_DRAIN_SECONDS="0",
            EFFECT_LOG=str(self.home / "effects.log"),
            OTEL_BSP_SCHEDULE_DELAY="50",
            **self.env,
        )
        with self.out.open("ab") as out:
            self.proc = subprocess.Popen(
                [EXE, "serve", "--dev", "--port", str(port)],
                cwd=self.home,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(self.base + "/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, "server ready", proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(timeout=30) == 0

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for raw in self.out.read_bytes().splitlines():
            try:
                out.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                continue
        return out


def _project(up: RecordingUpstream) -> str:
    return f"""
providers: {{up: {{type: openai, base_url: "{up.base_url}", api_key: k}}}}
models: {{gpt: {{provider: up, model: up-model, retry: {{attempts: 1}}}}}}
routes: {{default: {{chain: [gpt]}}}}
programs: ["tests.support.programs:programs"]
"""


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as rx:
        yield rx


async def _in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def test_a_gateway_call_is_traced_from_the_caller_to_the_upstream(
    store_url: str, tmp_path: Path, receiver: OTLPReceiver
) -> None:
    await migrated(store_url)
    up = HeaderUpstream()
    async with up:
        srv = TracedServer(
            tmp_path, store_url, _project(up), OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint
        )
        await _in_thread(srv.start)
        try:
            client = AsyncOpenAI(
                base_url=srv.base + "/v1",
                api_key="dev",
                max_retries=0,
                default_headers={"traceparent": TRACEPARENT},
            )
            raw = await client.chat.completions.with_raw_response.create(
                model="default", messages=[{"role": "user", "content": "hello there"}]
            )
            assert raw.headers["x-trace-id"] == TRACE
            answer = raw.parse()
            assert answer.choices[0].message.content == "hello there"
            await client.close()

            server: Span = await _in_thread(
                receiver.wait_for,
                lambda s: s.name == "POST /v1/chat/completions",
                "the request's server span",
            )
            chat: Span = await _in_thread(
                receiver.wait_for, lambda s: s.name == "chat up-model", "the model call's span"
            )
        finally:
            await _in_thread(srv.stop)
    assert server.trace_id == chat.trace_id == TRACE
    assert server.parent_id == CALLER_SPAN and server.kind == 2  # SERVER
    assert server.service == "elevenfactor"
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == "/v1/chat/completions"
    assert server.attributes["http.response.status_code"] == 200
    assert chat.parent_id == server.span_id and chat.kind == 3  # CLIENT
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.system"] == "openai"
    assert chat.attributes["gen_ai.request.model"] == "up-model"
    assert chat.attributes["gen_ai.response.model"] == "up-model"
    assert chat.attributes["gen_ai.usage.input_tokens"] == 10
    assert chat.attributes["gen_ai.usage.output_tokens"] == 5
    assert chat.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    names = [n for n, _ in server.events]
    assert not chat.events and not any(n.startswith("gen_ai.content") for n in names)  # no content
    # Governance decisions: a stage that allowed with nothing firing and an admission no budget
    # covers are attributes (decisions with something to tell are events: see the unit tests).
    assert server.attributes["elevenfactor.guard.input"] == "allow"
    assert server.attributes["elevenfactor.guard.output"] == "allow"
    assert server.attributes["elevenfactor.budget.decision"] == "admitted"
    assert not [n for n in names if n in ("elevenfactor.guard", "elevenfactor.budget")]
    # The upstream was told the trace: our model-call span is its parent.
    [sent] = up.headers
    assert sent["traceparent"] == f"00-{TRACE}-{chat.span_id}-01"
    # The log line of the call carries the trace and the request's span.
    [line] = [x for x in srv.lines() if x.get("event") == "model_call"]
    assert line["trace_id"] == TRACE and line["span_id"] == server.span_id


async def test_a_run_parked_on_an_approval_resumes_in_the_same_trace(
    store_url: str, tmp_path: Path, receiver: OTLPReceiver
) -> None:
    await migrated(store_url)
    up = HeaderUpstream()
    async with up:
        srv = TracedServer(
            tmp_path, store_url, _project(up), OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint
        )
        await _in_thread(srv.start)
        try:
            async with httpx.AsyncClient(base_url=srv.base, timeout=30) as http:
                created = await http.post(
                    "/v1/runs",
                    json={"program": "transfer", "input": {"to": "mallory", "amount": 100}},
                    headers={"traceparent": TRACEPARENT},
                )
                assert created.status_code == 201, created.text
                rid = created.json()["id"]
                deadline = time.monotonic() + 30
                while True:
                    pending = (await http.get("/v1/approvals")).json()["data"]
                    if pending:
                        break
                    assert time.monotonic() < deadline, "the run did not park"
                    await asyncio.sleep(0.05)
                decided = await http.post(
                    f"/v1/approvals/{pending[0]['id']}", json={"action": "approve"}
                )
                assert decided.status_code == 200, decided.text
                while (await http.get(f"/v1/runs/{rid}")).json()["status"] != "succeeded":
                    assert time.monotonic() < deadline, "the run did not finish"
                    await asyncio.sleep(0.05)
            runs: list[Span] = await _in_thread(
                receiver.wait_all, lambda s: s.name == "run transfer", 2, "both executions"
            )
            submit = await _in_thread(receiver.wait_for, lambda s: s.name == "POST /v1/runs")
        finally:
            await _in_thread(srv.stop)
    assert {s.trace_id for s in runs} == {submit.trace_id} == {TRACE}
    assert submit.parent_id == CALLER_SPAN
    assert {s.parent_id for s in runs} == {submit.span_id}  # both: children of the submission
    assert {s.attributes["elevenfactor.run.id"] for s in runs} == {rid}
    outcomes = sorted(str(s.attributes["elevenfactor.run.outcome"]) for s in runs)
    assert outcomes == ["parked", "succeeded"]
    events = [name for s in runs for name, _ in s.events]
    assert "elevenfactor.approval.created" in events and "elevenfactor.approval.resolved" in events
    [created_event] = [a for s in runs for n, a in s.events if n.endswith(".created")]
    assert created_event["elevenfactor.approval.group"] == "finance"
    assert "mallory" not in repr([s.attributes for s in runs] + [s.events for s in runs])


async def test_a_collector_that_is_down_costs_the_requests_nothing_and_drops_are_counted(
    store_url: str, tmp_path: Path
) -> None:
    await migrated(store_url)
    closed = free_port()  # nothing listens there
    up = HeaderUpstream()
    async with up:
        srv = TracedServer(
            tmp_path,
            store_url,
            _project(up),
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{closed}",
            OTEL_EXPORTER_OTLP_TIMEOUT="1",
        )
        await _in_thread(srv.start)
        try:
            client = AsyncOpenAI(base_url=srv.base + "/v1", api_key="dev", max_retries=0)
            slowest = 0.0
            for i in range(30):
                started = time.monotonic()
                answer = await client.chat.completions.create(
                    model="default", messages=[{"role": "user", "content": f"hi {i}"}]
                )
                slowest = max(slowest, time.monotonic() - started)
                assert answer.choices[0].message.content == f"hi {i}"
            await client.close()
            assert slowest < 1.0, f"a request took {slowest:.3f}s with the collector down"

            def dropped() -> dict[str, Any] | None:
                found = [x for x in srv.lines() if x.get("event") == "trace_spans_dropped"]
                return found[0] if found else None

            warning = await _in_thread(wait_for, dropped, "the dropped-spans warning", 30)
        finally:
            await _in_thread(srv.stop)
    assert warning["level"] == "warning" and warning["dropped"] >= 1
    assert warning["reason"] == "export failed"
    assert len(up.headers) == 30 and all("traceparent" in h for h in up.headers)
