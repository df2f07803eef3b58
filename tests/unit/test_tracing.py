"""Tracing in-process, with the SDK's in-memory exporter: the span tree of runs (executions,
live steps, tool and GenAI model spans), trace continuity across parks and crashes, replayed
steps not re-spanned, child runs, approval events, logs with trace ids, and tracing off costing
nothing (the SDK not even imported). Run state on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from elevenfactor.config import DeploymentConfig, ProjectConfig, ProviderConfig
from elevenfactor.errors import ConfigError
from elevenfactor.models import (
    AssistantMessage,
    FunctionModel,
    Message,
    ModelRegistry,
    ModelSettings,
    Response,
    ToolCall,
    ToolMessage,
    Usage,
    wrap_deployment,
)
from elevenfactor.observe import _tracing as tracing
from elevenfactor.observe._logs import JsonHandler, emit
from elevenfactor.observe._trace_genai import content_events
from elevenfactor.observe._trace_runs import run_trace
from elevenfactor.runtime import (
    Agent,
    AgentDeps,
    AgentSpec,
    Programs,
    RunContext,
    Worker,
    approval,
    claim_run,
    decide_approval,
    get_run,
    list_approvals,
    run_child,
    submit_run,
)
from elevenfactor.store import Store
from elevenfactor.tools import FunctionToolset
from tests.support.principals import reviewer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRICED = DeploymentConfig(provider="test", model="scripted-1", retry={"attempts": 1}, breaker=None)
lookups = FunctionToolset(name="lookups")


@lookups.tool(risk="read")
def balance(account: str) -> int:
    """The balance of an account."""
    return {"alice": 120}.get(account, 0)


def look_up_then_answer(messages: Sequence[Message], _: ModelSettings) -> Response:
    usage = Usage(input_tokens=100, output_tokens=20)
    done = [m.content for m in messages if isinstance(m, ToolMessage)]
    if not done:
        call = ToolCall(id="c0", name="balance", arguments=json.dumps({"account": "alice"}))
        return Response(
            message=AssistantMessage(tool_calls=[call]), finish_reason="tool_calls", usage=usage
        )
    return Response(message=AssistantMessage(content=f"alice has {done[0]}"), usage=usage)


def clerk(handler: Any = look_up_then_answer) -> tuple[Programs, FunctionModel]:
    model = FunctionModel(handler, name="m")
    project = ProjectConfig(providers={"test": ProviderConfig(type="test")}, models={"m": PRICED})
    registry = ModelRegistry(project, deployments={"m": wrap_deployment(model, "test", PRICED)})
    spec = AgentSpec(name="clerk", model="m", tools=[{"toolset": "lookups"}])
    programs = Programs()
    programs.register("clerk", Agent(spec, AgentDeps(registry, {"lookups": lookups}, {})))
    return programs, model


class Spans:
    """The spans exported so far (flushed first)."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def all(self) -> list[ReadableSpan]:
        for b in tracing._batchers:
            assert b.force_flush(5000)
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all() if s.name == name]


@pytest.fixture
def spans() -> Iterator[Spans]:
    exporter = InMemorySpanExporter()
    assert tracing.setup_tracing(exporters=[exporter], content=False)
    try:
        yield Spans(exporter)
    finally:
        tracing.shutdown_tracing(1.0)
    assert tracing.TRACER is None


def tid(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def sid(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


async def stored_trace(store: Store, rid: str) -> tuple[str, str | None]:
    row = await store.fetchone("SELECT trace_id, traceparent FROM runs WHERE id = ?", (rid,))
    assert row is not None
    return row[0], row[1]


# -- off costs nothing --------------------------------------------------------------------------


def test_off_by_default_the_sdk_is_never_imported() -> None:
    code = (
        "import sys\n"
        "import elevenfactor.server._app, elevenfactor.runtime, elevenfactor.tools._mcp\n"
        "import elevenfactor.models.providers.openai, elevenfactor.models.providers.anthropic\n"
        "from elevenfactor.observe import _tracing\n"
        "assert _tracing.setup_tracing() is False and _tracing.TRACER is None\n"
        "assert _tracing.dropped_spans() == 0\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_SDK_DISABLED"] = "true"  # disabled wins over an endpoint
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"
    env["PYTHONPATH"] = ROOT
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_which_environment_turns_tracing_on() -> None:
    assert not tracing.configured({})
    assert tracing.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert tracing.configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert tracing.configured({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.configured({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.configured(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}
    )
    # With tracing off every hook is a no-op.
    assert tracing.TRACER is None
    with tracing.span("x") as sp:
        assert sp is None
    assert tracing.current_ids() is None and tracing.traceparent() is None


def test_a_protocol_that_cannot_work_is_a_clear_config_error() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    try:
        import opentelemetry.exporter.otlp.proto.grpc  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError) as err:
            tracing.setup_tracing(env=env)
        assert "opentelemetry-exporter-otlp-proto-grpc" in (err.value.hint or "")
    env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/json"
    with pytest.raises(ConfigError, match="unsupported OTLP protocol"):
        tracing.setup_tracing(env=env)
    with pytest.raises(ConfigError, match="unknown exporter"):
        tracing.setup_tracing(env={"OTEL_TRACES_EXPORTER": "zipkin"})
    assert tracing.TRACER is None


# -- context, ids, logs -------------------------------------------------------------------------


def test_a_span_continues_an_incoming_traceparent_and_logs_carry_its_ids(spans: Spans) -> None:
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    stream = io.StringIO()
    logger = logging.getLogger("tests.tracing")
    logger.propagate, logger.handlers = False, [JsonHandler(stream)]
    logger.setLevel(logging.INFO)
    try:
        with tracing.span("GET /x", "server", parent=tracing.extract(incoming)) as sp:
            assert sp is not None
            ids = tracing.current_ids()
            emit(logger, logging.INFO, "inside", {"event": "inside"})
            logger.info("plain", extra={"event": "plain"})
            assert tracing.traceparent() == f"00-{ids[0]}-{ids[1]}-01" if ids else False
        emit(logger, logging.INFO, "outside", {"event": "outside"})
    finally:
        logger.handlers, logger.propagate = [], True
    [got] = spans.named("GET /x")
    assert tid(got) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert parent_of(got) == 0x00F067AA0BA902B7
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    for line in lines[:2]:
        assert line["trace_id"] == tid(got) and line["span_id"] == f"{sid(got):016x}"
    assert "span_id" not in lines[2] and "trace_id" not in lines[2]
    assert tracing.extract("00-zz-bad-01") is None and tracing.extract(None) is None


def test_a_root_span_takes_the_trace_id_we_chose(spans: Spans) -> None:
    want = "0af7651916cd43dd8448eb211c80319c"
    with tracing.span("root", trace_id=want), tracing.span("child"):
        pass
    assert {tid(s) for s in spans.all()} == {want}


def test_content_goes_on_spans_only_when_allowed(spans: Spans) -> None:
    with tracing.span("off") as sp:
        content_events(b'{"messages": "hi"}', b"hello", sp)
    tracing.CONTENT = True
    try:
        with tracing.span("on") as sp:
            content_events(b'{"messages": "hi"}', b"hello", sp)
    finally:
        tracing.CONTENT = False
    [off] = spans.named("off")
    [on] = spans.named("on")
    assert not off.events
    assert [e.name for e in on.events] == ["gen_ai.content.prompt", "gen_ai.content.completion"]
    assert on.events[1].attributes == {"gen_ai.completion": "hello"}


# -- runs -------------------------------------------------------------------------------------


async def test_an_agent_run_is_one_trace_of_live_steps_tools_and_model_calls(
    store: Store, spans: Spans
) -> None:
    programs, _ = clerk()
    rid = await submit_run(store, "clerk", "how much has alice?")
    trace_id, parent = await stored_trace(store, rid)
    assert parent is None and len(trace_id) == 32  # submitted outside any span: a new trace
    await Worker(store, programs).run_until_idle()
    assert (await get_run(store, rid)).status == "succeeded"
    all_spans = spans.all()
    assert {tid(s) for s in all_spans} == {trace_id}
    [run] = spans.named("invoke_agent clerk")
    assert run.parent is None
    attrs = dict(run.attributes or {})
    assert attrs["elevenfactor.run.id"] == rid and attrs["elevenfactor.run.attempt"] == 1
    assert attrs["gen_ai.agent.name"] == "clerk"
    assert attrs["elevenfactor.run.outcome"] == "succeeded"
    [tool] = spans.named("execute_tool balance")
    assert parent_of(tool) == sid(run) and tool.attributes["gen_ai.tool.name"] == "balance"  # type: ignore[index]
    steps = [s for s in all_spans if s.name.startswith("step model")]
    chats = spans.named("chat m")
    assert len(steps) == len(chats) == 2
    assert {parent_of(c) for c in chats} == {sid(s) for s in steps}
    assert all(parent_of(s) == sid(run) for s in steps)
    chat = dict(chats[0].attributes or {})
    assert chat["gen_ai.operation.name"] == "chat"
    assert chat["gen_ai.request.model"] == "m"
    assert (chat["gen_ai.usage.input_tokens"], chat["gen_ai.usage.output_tokens"]) == (100, 20)
    reasons = {r for c in chats for r in (c.attributes or {})["gen_ai.response.finish_reasons"]}  # type: ignore[union-attr]
    assert reasons == {"tool_calls", "stop"}
    assert all(not s.events for s in chats)  # no content: not allowed by default
    assert all(not s.events for s in steps)


async def test_a_runs_model_steps_carry_prompt_and_completion_only_when_allowed(
    store: Store, spans: Spans
) -> None:
    programs, _ = clerk()
    tracing.CONTENT = True
    try:
        rid = await submit_run(store, "clerk", "how much has alice?")
        await Worker(store, programs).run_until_idle()
    finally:
        tracing.CONTENT = False
    assert (await get_run(store, rid)).status == "succeeded"
    steps = [s for s in spans.all() if s.name.startswith("step model")]
    assert len(steps) == 2
    for step in steps:
        assert [e.name for e in step.events] == [
            "gen_ai.content.prompt",
            "gen_ai.content.completion",
        ]
    prompt = str((steps[0].events[0].attributes or {})["gen_ai.prompt"])
    assert "how much has alice?" in prompt
    answer = str((steps[1].events[1].attributes or {})["gen_ai.completion"])
    assert "alice has 120" in answer


async def test_a_resumed_run_continues_its_trace_and_replayed_steps_get_no_span(
    store: Store, spans: Spans
) -> None:
    gate, reached = asyncio.Event(), asyncio.Event()

    async def slow_second_turn(messages: Sequence[Message], s: ModelSettings) -> Response:
        if any(isinstance(m, ToolMessage) for m in messages):
            reached.set()
            await gate.wait()
        return look_up_then_answer(messages, s)

    programs, _ = clerk(slow_second_turn)
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    rid = await submit_run(store, "clerk", "how much has alice?", traceparent=incoming)
    assert await stored_trace(store, rid) == (incoming[3:35], incoming)
    lease = await claim_run(store, "w1", ["default"], 30)
    assert lease is not None
    task = asyncio.create_task(Worker(store, programs).execute(lease))
    await reached.wait()
    task.cancel()  # the worker dies during the second model request
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.execute("UPDATE runs SET lease_expires_at = 0 WHERE id = ?", (rid,))
    gate.set()
    await Worker(store, programs).run_until_idle()  # another worker takes it over
    assert (await get_run(store, rid)).status == "succeeded"
    runs = spans.named("invoke_agent clerk")
    assert len(runs) == 2
    assert {tid(s) for s in spans.all()} == {incoming[3:35]}
    assert {parent_of(r) for r in runs} == {0x00F067AA0BA902B7}  # both: children of the caller
    assert len(spans.named("execute_tool balance")) == 1  # executed once, replayed after
    first, second = sorted(runs, key=lambda s: s.start_time or 0)
    assert first.attributes["elevenfactor.run.outcome"] == "lease_lost"  # type: ignore[index]
    assert second.attributes["elevenfactor.run.outcome"] == "succeeded"  # type: ignore[index]
    tools_in_second = [s for s in spans.all() if parent_of(s) == sid(second)]
    assert "execute_tool balance" not in {s.name for s in tools_in_second}


async def test_a_run_submitted_inside_a_span_stores_it_and_child_runs_join_the_trace(
    store: Store, spans: Spans
) -> None:
    programs = Programs()

    @programs.workflow("child")
    async def child(ctx: RunContext, n: int) -> int:
        return await ctx.step("double", lambda: n * 2)

    @programs.workflow("parent")
    async def parent(ctx: RunContext, n: int) -> int:
        return int(await run_child(ctx, "child", n)) + 1

    with tracing.span("POST /v1/runs", "server") as request:
        rid = await submit_run(store, "parent", 20)
    assert request is not None
    trace_id, stored = await stored_trace(store, rid)
    assert stored == tracing.traceparent(request)
    await Worker(store, programs).run_until_idle()
    assert (await get_run(store, rid)).status == "succeeded"
    assert {tid(s) for s in spans.all()} == {trace_id}
    parents = spans.named("run parent")
    assert len(parents) == 2  # parked on the child, then resumed
    assert {parent_of(p) for p in parents} == {sid(spans.named("POST /v1/runs")[0])}
    # Each execution of the parent issues the (idempotent) submission; the first made the child.
    submits = sorted(spans.named("step subrun child"), key=lambda s: s.start_time or 0)
    assert {parent_of(s) for s in submits} == {sid(p) for p in parents}
    [child_run] = spans.named("run child")
    assert parent_of(child_run) == sid(submits[0])
    assert {p.attributes["elevenfactor.run.outcome"] for p in parents} == {"parked", "succeeded"}  # type: ignore[index]


async def test_an_approval_gate_is_an_event_and_the_resumed_run_stays_in_the_trace(
    store: Store, spans: Spans
) -> None:
    programs = Programs()

    @programs.workflow("transfer")
    async def transfer(ctx: RunContext, args: dict[str, Any]) -> bool:
        decision = await approval(ctx, "transfer", {"arguments": args}, group="finance")
        return decision.approved

    rid = await submit_run(store, "transfer", {"to": "mallory", "iban": "SECRET-IBAN"})
    worker = Worker(store, programs)
    await worker.run_until_idle()
    [pending] = await list_approvals(store)
    await decide_approval(store, pending.id, "approve", by=reviewer("alice", "finance"))
    await worker.run_until_idle()
    assert (await get_run(store, rid)).status == "succeeded"
    first, second = sorted(spans.named("run transfer"), key=lambda s: s.start_time or 0)
    assert tid(first) == tid(second) == (await stored_trace(store, rid))[0]
    [created] = [e for e in first.events if e.name == "elevenfactor.approval.created"]
    assert created.attributes == {
        "elevenfactor.approval.id": pending.id,
        "elevenfactor.approval.group": "finance",
        "elevenfactor.approval.name": "transfer",
    }
    [resolved] = [e for e in second.events if e.name == "elevenfactor.approval.resolved"]
    assert (resolved.attributes or {})["elevenfactor.approval.decision"] == "approve"
    assert "SECRET-IBAN" not in repr([s.to_json() for s in spans.all()])


def test_run_trace_prefers_the_current_span_then_a_valid_header() -> None:
    assert run_trace("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")[1] is not None
    new_id, parent = run_trace("garbage")
    assert parent is None and len(new_id) == 32
    zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
    assert run_trace(zero)[1] is None


async def test_mcp_requests_carry_the_trace_in_meta_and_header_and_our_server_continues_it(
    spans: Spans,
) -> None:
    import httpx2

    from elevenfactor.observe._trace_mcp import traced_tool_call, traceparent_header

    with tracing.span("execute_tool x") as sp:
        tp = tracing.traceparent(sp)
    assert tp is not None
    params = {"name": "x", "arguments": {}, "_meta": {"traceparent": tp}}
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
    request = httpx2.Request("POST", "http://127.0.0.1/mcp", content=body.encode())
    await traceparent_header(request)  # the client's HTTP transport copies _meta to the header
    assert request.headers["traceparent"] == tp

    class Params:  # a stdio request: no HTTP span, the trace in _meta
        meta = {"traceparent": tp}

    async def work() -> int:
        return 42

    assert await traced_tool_call("x", None, Params(), work()) == 42
    [client] = spans.named("execute_tool x")
    [server] = spans.named("tools/call x")
    assert tid(server) == tid(client) and parent_of(server) == sid(client)
    assert (server.attributes or {})["mcp.method.name"] == "tools/call"


def test_a_malformed_or_oversized_traceparent_starts_a_new_trace_without_a_log_line(
    spans: Spans, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for header in ("x" * 9000, "00-zz-yy-01", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"):
        context = tracing.extract(header, "k=v," * 2000)
        with tracing.span("request", "server", parent=context) as sp:
            assert sp is not None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len({tid(s) for s in spans.named("request")}) == 3


def test_governance_decisions_with_something_to_tell_are_events_the_rest_attributes(
    spans: Spans,
) -> None:
    from elevenfactor.observe._trace_events import budget_event, guard_event

    with tracing.span("request", "server"):
        guard_event("input", "allow", "default@1", "", [])
        guard_event("output", "redact", "default@1", "secrets", [
            {"policy": "default@1", "rule": "secrets", "action": "redact"}
        ])  # fmt: skip
        budget_event("admitted")
        budget_event("admitted", budgets=["org:acme"], amount=0.25)
    [request] = spans.named("request")
    attrs = dict(request.attributes or {})
    assert attrs["elevenfactor.guard.input"] == "allow"
    assert attrs["elevenfactor.budget.decision"] == "admitted"
    events = {e.name: dict(e.attributes or {}) for e in request.events}
    assert set(events) == {"elevenfactor.guard", "elevenfactor.budget"}
    assert events["elevenfactor.guard"]["elevenfactor.guard.stage"] == "output"
    assert events["elevenfactor.guard"]["elevenfactor.guard.fired"] == ("default@1/secrets:redact",)
    assert events["elevenfactor.budget"]["elevenfactor.budget.ids"] == ("org:acme",)
    assert events["elevenfactor.budget"]["elevenfactor.budget.hold_amount"] == 0.25
