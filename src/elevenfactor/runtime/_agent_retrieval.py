"""An agent's retrieval (RAG), as journaled steps (the agent's ``retrieval:``):

- ``retrieve``: before its first model request a run searches the index for its input (hybrid
  BM25 + vectors by default, in its owner's organisation only); the hits go into the context's
  passages section, each under its id (``[c3f2...]``), and the step records them;
- citations: the ids the answer cites that were retrieved are kept in the run's result
  (``citations``: id, document, heading path);
- ``grounding``: with ``grounding_route``, a model on that route checks that the cited passages
  support the answer (an entailment check; the step records its verdict, and an unsupported
  answer is flagged in the result: ``grounding.supported`` false, with the claims it found
  unsupported).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from elevenfactor.context import Item
from elevenfactor.context._retrieve import Retrieval
from elevenfactor.models import Message, SystemMessage, UserMessage
from elevenfactor.runtime._agent_context import input_query
from elevenfactor.runtime._agent_memory import embedders_of
from elevenfactor.runtime._agent_session import owner_of
from elevenfactor.runtime._context import RunContext
from elevenfactor.store import Store

if TYPE_CHECKING:
    from elevenfactor.runtime._agent import AgentDeps
    from elevenfactor.runtime._agent_spec import AgentSpec

__all__ = ["Judge", "cite", "ground", "passage_item", "retrieve_passages"]

Judge = Callable[[RunContext, str, list[Message]], Awaitable[str]]
"""A metered model call of the run: ``(ctx, route, request) -> text``."""

_CITED = re.compile(r"\[([A-Za-z0-9_.:-]{1,80})\]")
_GROUNDING = (
    "You check whether an answer is supported by the passages it cites. Reply with JSON only: "
    '{"supported": true|false, "unsupported": ["claims of the answer the passages do not '
    'support"]}.'
)


def _retrieval(deps: AgentDeps, store: Store) -> Retrieval:
    if deps.retrieval_backend is None:
        raise RuntimeError("retrieval is not configured for this runtime")
    keep = deps.registry.project.retrieval.keep_versions
    return Retrieval(store, deps.retrieval_backend, embedders_of(deps), keep_versions=keep)


async def retrieve_passages(
    ctx: RunContext, deps: AgentDeps, spec: AgentSpec, messages: Sequence[Message]
) -> tuple[list[Item], list[dict[str, Any]]]:
    """The passages retrieved for the run's input, as context items and as hits."""
    if spec.retrieval is None:
        return [], []
    query = input_query(messages)
    if not query:
        return [], []
    hits = await ctx.step(
        "retrieve", _search, deps, ctx.store, owner_of(ctx).org_id, spec.retrieval.index, query,
        spec.retrieval.k, dict(spec.retrieval.filters), spec.retrieval.mode, kind="retrieval",
    )  # fmt: skip
    return [passage_item(h) for h in hits], list(hits)


def passage_item(hit: dict[str, Any]) -> Item:
    """A retrieved hit as a context item: its id, ``(document) text``, its score."""
    return Item(str(hit["chunk_id"]), f"({hit['document']}) {hit['text']}", float(hit["score"]))


async def _search(
    deps: AgentDeps,
    store: Store,
    org_id: str,
    index: str,
    query: str,
    k: int,
    filters: dict[str, str],
    mode: str,
) -> list[dict[str, Any]]:
    found = await _retrieval(deps, store).search(
        index,
        query,
        org_id=org_id,
        k=k,
        filters=filters or None,
        mode=mode,  # type: ignore[arg-type]
    )
    return [h.to_dict() for h in found]


def cite(answer: str, hits: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The retrieved passages ``answer`` cites (``[id]``), in order of first citation."""
    by_id = {str(h["chunk_id"]): h for h in hits}
    out: list[dict[str, Any]] = []
    for found in _CITED.findall(answer):
        hit = by_id.get(found)
        if hit is not None and all(c["id"] != found for c in out):
            out.append(
                {"id": found, "document": hit["document"], "heading_path": hit["heading_path"]}
            )
    return out


async def ground(
    ctx: RunContext,
    spec: AgentSpec,
    answer: str,
    cited: Sequence[dict[str, Any]],
    hits: Sequence[dict[str, Any]],
    judge: Judge,
) -> dict[str, Any] | None:
    """The grounding verdict on ``answer`` (None without ``grounding_route`` or citations)."""
    if spec.retrieval is None or spec.retrieval.grounding_route is None or not cited:
        return None
    texts = {str(h["chunk_id"]): str(h["text"]) for h in hits}
    passages = "\n".join(f"[{c['id']}] {texts[c['id']]}" for c in cited)
    request: list[Message] = [
        SystemMessage(content=_GROUNDING),
        UserMessage(content=f"Passages:\n{passages}\n\nAnswer:\n{answer}"),
    ]
    raw = await judge(ctx, spec.retrieval.grounding_route, request)
    verdict = await ctx.step("grounding", _verdict, raw, kind="grounding")
    return dict(verdict)


def _verdict(raw: str) -> dict[str, Any]:
    """The judge's reply as a verdict; a reply that is not the JSON asked for counts as not
    supported (and says so), never as supported."""
    text = raw.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return {"supported": False, "unsupported": [], "note": "the judge's reply was not JSON"}
    if not isinstance(data, dict) or not isinstance(data.get("supported"), bool):
        return {"supported": False, "unsupported": [], "note": "the judge's reply had no verdict"}
    claims = data.get("unsupported")
    listed = [str(c) for c in claims] if isinstance(claims, list) else []
    return {"supported": data["supported"], "unsupported": listed}
