"""The machinery under the ``local`` provider: the vocabulary, model instances, generation.

One ``Pool`` per (GGUF file, context size) and provider: a vocabulary loaded without weights
(tokenizer and chat template, so prompts are measured before they wait for a model), a list of
``Instance``s (each its own llama.cpp context on its own worker thread, loaded on first use; the
weights are memory-mapped, so instances share them) and the ``Admission`` in front of them.

Generation stops within a token of its cancel flag or deadline: a stopping criterion checks them
after every token, and llama.cpp's abort callback checks them while a long prompt is evaluated.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elevenfactor.errors import ConfigError
from elevenfactor.models._admission import Admission

__all__ = [
    "Aborted",
    "Cancelled",
    "Generated",
    "Instance",
    "Job",
    "Pool",
    "Prompt",
    "Vocab",
    "grammar_for",
    "load_llama",
]

_LOAD_LOCK = threading.Lock()
_DEFAULTS: dict[str, Any] = {  # llama-cpp-python's chat-completion defaults, kept as before
    "temperature": 0.2,
    "top_p": 0.95,
    "repeat_penalty": 1.1,
    "max_tokens": None,
}


class Cancelled(Exception):
    """Raised inside the worker thread when the caller has gone away."""


class Aborted(Exception):
    """Raised inside the worker thread when generation reached its deadline with no output."""


def load_llama(
    path: Path,
    n_ctx: int,
    n_threads: int,
    seed: int | None,
    extra: bool,
    *,
    vocab_only: bool = False,
    n_batch: int = 512,
) -> Any:
    """A ``llama_cpp.Llama`` for ``path`` (weights memory-mapped; no extra buffers unless asked)."""
    import llama_cpp
    import llama_cpp.llama_cpp as low

    kwargs: dict[str, Any] = {
        "model_path": str(path),
        "n_ctx": n_ctx,
        "n_batch": min(n_batch, n_ctx),
        "n_threads": n_threads,
        "vocab_only": vocab_only,
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


@dataclass(slots=True)
class Prompt:
    """A rendered, tokenised prompt and the stop strings its chat template needs."""

    tokens: list[int]
    stop: list[str]


class Vocab:
    """The tokenizer and chat template of a GGUF file, loaded once without the weights.

    ``max_token_bytes`` (the longest token's text) turns a byte count into a lower bound on the
    token count: no tokenisation needed to refuse a prompt that cannot fit.
    """

    def __init__(self, llama: Any) -> None:
        self.llama = llama
        n = llama.n_vocab()
        self.max_token_bytes = max(
            1, max(len(llama.detokenize([i], special=True)) for i in range(n))
        )
        self.formatter: Any = None
        if template := llama.metadata.get("tokenizer.chat_template"):
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            eos, bos = (
                llama.detokenize([t], special=True).decode("utf-8", "ignore")
                for t in (llama.token_eos(), llama.token_bos())
            )
            self.formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)

    def min_tokens(self, n_bytes: int) -> int:
        """A lower bound on the tokens of any text of ``n_bytes`` bytes."""
        return -(-n_bytes // self.max_token_bytes)

    def encode(self, messages: list[dict[str, str]]) -> Prompt:
        """Render ``messages`` with the chat template and tokenise the result (thread-safe)."""
        if self.formatter is not None:
            res = self.formatter(messages=messages)
            stop = res.stop if isinstance(res.stop, list) else [res.stop] if res.stop else []
            tokens = self.llama.tokenize(
                res.prompt.encode("utf-8"), add_bos=not res.added_special, special=True
            )
            return Prompt(tokens, stop)
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        text += "<|im_start|>assistant\n"
        return Prompt(self.llama.tokenize(text.encode("utf-8"), special=True), ["<|im_end|>"])


@dataclass(slots=True)
class Job:
    """One admitted generation: what to run and until when; ``cancel`` stops it."""

    prompt: Prompt
    kwargs: dict[str, Any]
    deadline: float  # time.monotonic() by which generation stops
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(slots=True)
class Generated:
    """What a finished generation produced."""

    text: str
    finish: str
    prompt_tokens: int
    completion_tokens: int


class Instance:
    """One llama.cpp context with its own worker thread; loaded on first use."""

    def __init__(self, load: Callable[[], Any], n_ctx: int) -> None:
        self.load, self.n_ctx = load, n_ctx
        self.llama: Any = None
        self.loads = 0
        self.generated = 0  # non end-of-generation tokens of the current job
        self.busy_until_stopped = threading.Lock()
        self._stop: Callable[[], bool] = _never
        self._abort: Any = None
        self._executor: ThreadPoolExecutor | None = None

    def _ensure(self) -> Any:
        if self.llama is None:
            import llama_cpp
            import llama_cpp.llama_cpp as low

            llama = self.load()
            self.loads += 1
            self._abort = low.ggml_abort_callback(lambda _data: self._stop())
            low.llama_set_abort_callback(llama._ctx.ctx, self._abort, None)
            original, vocab = llama.generate, llama._model.vocab

            def counting(*args: Any, **kwargs: Any) -> Any:
                inner = original(*args, **kwargs)
                try:
                    for token in inner:
                        if not llama_cpp.llama_vocab_is_eog(vocab, token):
                            self.generated += 1
                        yield token
                finally:
                    inner.close()

            llama.generate = counting  # completion tokens counted as sampled, not re-tokenised
            self.llama = llama
        return self.llama

    def submit(self, fn: Callable[[Any], Any]) -> Future[Any]:
        """Run ``fn(llama)`` on this instance's worker thread."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="elevenfactor-llama")

        def job() -> Any:
            with self.busy_until_stopped:
                return fn(self._ensure())

        return self._executor.submit(job)

    def generate(
        self, llama: Any, job: Job, grammar: Any, emit: Callable[[str], None] | None
    ) -> Generated:
        """Generate on the worker thread until done, cancelled or past the job's deadline."""
        from llama_cpp import StoppingCriteriaList

        fired: list[bool] = []

        def stop(*_args: Any) -> bool:
            if job.cancel.is_set() or time.monotonic() >= job.deadline:
                fired.append(True)
                return True
            return False

        self.generated = 0
        self._stop = stop
        kwargs = {**_DEFAULTS, **job.kwargs}
        kwargs["stop"] = [*(kwargs.get("stop") or []), *job.prompt.stop]
        text: list[str] = []
        finish = "stop"
        try:
            if stop():
                raise RuntimeError("stopped before the prompt was evaluated")
            stream = llama.create_completion(
                prompt=job.prompt.tokens,
                stream=True,
                stopping_criteria=StoppingCriteriaList([stop]),
                grammar=grammar,
                **kwargs,
            )
            try:
                for chunk in stream:
                    choice = chunk["choices"][0]
                    if piece := choice.get("text") or "":
                        text.append(piece)
                        if emit is not None:
                            emit(piece)
                    finish = choice.get("finish_reason") or finish
            finally:
                stream.close()
        except RuntimeError:
            if not fired:
                raise
        finally:
            self._stop = _never
        if job.cancel.is_set():
            raise Cancelled
        if fired:  # the generation deadline: keep what there is, as if max_tokens was reached
            if not text:
                raise Aborted
            finish = "length"
        return Generated("".join(text), finish, len(job.prompt.tokens), self.generated)

    async def close(self) -> None:
        """Free the model on its own thread and stop the thread."""
        if self._executor is None:
            return
        executor, self._executor = self._executor, None

        def free() -> None:
            with self.busy_until_stopped:
                if self.llama is not None:
                    self.llama.close()
                self.llama = None

        await asyncio.wrap_future(executor.submit(free))
        executor.shutdown(wait=False)


def _never() -> bool:
    return False


def grammar_for(response_format: dict[str, Any] | None) -> Any:
    """The llama.cpp grammar for a ``{"type": "json_object", "schema"?: ...}`` format, or None."""
    if response_format is None:
        return None
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    schema = response_format.get("schema")
    if schema is not None:
        try:
            return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        except Exception:
            pass
    return LlamaGrammar.from_string(JSON_GBNF, verbose=False)


class Pool:
    """The vocabulary, the instances and the admission queue of one loaded model file."""

    def __init__(
        self,
        load: Callable[..., Any],
        n_ctx: int,
        *,
        instances: int,
        express: int,
        express_n_ctx: int,
        max_queue: int,
    ) -> None:
        self.n_ctx, self.express_n_ctx = n_ctx, express_n_ctx
        self._load = load
        self.instances = [Instance(lambda: load(n_ctx=n_ctx), n_ctx) for _ in range(instances)] + [
            Instance(lambda: load(n_ctx=express_n_ctx, express=True), express_n_ctx)
            for _ in range(express)
        ]
        self.admission = Admission(instances, express, max_queue=max_queue)
        self._vocab: Vocab | None = None
        self._vocab_lock = threading.Lock()
        self.cancels: set[threading.Event] = set()

    def vocab_now(self) -> Vocab:
        """The vocabulary, loading it on first use (blocking; call from a thread)."""
        with self._vocab_lock:
            if self._vocab is None:
                self._vocab = Vocab(self._load(n_ctx=512, vocab_only=True))
            return self._vocab

    async def vocab(self) -> Vocab:
        """The vocabulary; the first call loads it on a thread."""
        if self._vocab is not None:
            return self._vocab
        return await asyncio.to_thread(self.vocab_now)

    @property
    def loads(self) -> int:
        """How many instances have been loaded (an instance loads once)."""
        return sum(i.loads for i in self.instances)

    async def close(self) -> None:
        """Stop in-flight work and free every instance."""
        for event in list(self.cancels):
            event.set()
        for instance in self.instances:
            await instance.close()
        if self._vocab is not None:
            self._vocab.llama.close()
            self._vocab = None
