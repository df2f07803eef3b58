"""The response cache of a route (``routes.NAME.cache``): exact, and optionally semantic."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CacheConfig", "SemanticCacheConfig"]


class SemanticCacheConfig(BaseModel):
    """Serve a request whose last user message is close in meaning to one answered before.

    Looked up only after an exact miss, for requests the route caches anyway (the same `ttl`
    and `nondeterministic` rules), whose conversation ends with a user message. Everything but
    that message's text must match exactly: the system prompt, earlier turns, tools, settings,
    the model and prompt versions. The text is embedded and the closest answer of the same
    conversation prefix (and scope) is served if its cosine similarity is at least
    `threshold`. Entries live in the store (shared by every process), each for the exact
    cache's `ttl`. A hit is priced as a saving like an exact one and reported with its
    similarity: response headers `x-elevenfactor-cache: semantic` and
    `x-elevenfactor-cache-similarity`, and `<deployment>:semantic_hit@0.9731` in the call
    record's failover path. Forgetting a user (`memory forget`) deletes the entries of the
    questions they asked.

    ```yaml
    routes:
      support:
        chain: [gpt-4o-mini]
        cache:
          ttl: 3600
          semantic: {threshold: 0.95, scope: user}
    ```
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(
        default=0.95,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="Least cosine similarity between the new and the cached question for a"
        " hit (1: the same text). With all-MiniLM-L6-v2 close paraphrases score 0.95-0.99,"
        " while questions that differ in one number or name can score 0.85-0.9: lower it"
        " with care.",
    )
    embedder: str | None = Field(
        default=None,
        min_length=1,
        description="The embedding model (a name under `embeddings.models`); null: the"
        " `embeddings.default` one. Changing it starts an empty cache.",
    )
    scope: Literal["user", "org"] = Field(
        default="user",
        description="Who shares answers: `user` (each user only their own: a paraphrase never"
        " gets an answer written for another user's question) or `org` (everyone in the"
        " organisation: more hits, for routes whose answers hold nothing personal).",
    )
    max_entries: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Most answers kept per conversation prefix and scope; the oldest go first.",
    )
    timeout: float = Field(
        default=2.0,
        gt=0,
        le=60,
        allow_inf_nan=False,
        description="Seconds the lookup (embedding and store query) may take; past them the"
        " call goes to the model as on a miss.",
    )


class CacheConfig(BaseModel):
    """Serve repeated identical requests to the route from a cache of its complete answers.

    The key is the SHA-256 of the normalised request (messages, tools, tool choice, response
    format and every sampling setting; not ``stream``, ``user`` or tags), the route's model
    versions (the deployments' model ids and params) and the prompt version. Answers live in
    Redis when ``REDIS_URL`` is set, else in the store. A request that may answer differently
    each time (temperature above 0, or unset, without a ``seed``) is not cached unless
    ``nondeterministic`` is true or the request itself asks with ``cache: {ttl: N}``.
    With ``semantic``, a request that misses may also be served the answer to a paraphrase.

    ```yaml
    routes:
      default:
        chain: [gpt-4o-mini]
        cache: {ttl: 300}
    ```
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttl: int = Field(
        default=300,
        gt=0,
        le=30 * 86400,
        description="Seconds a cached answer is served; a request's `cache.ttl` overrides it.",
    )
    nondeterministic: bool = Field(
        default=False,
        description="Cache requests that sample (temperature > 0 or unset, no seed) too.",
    )
    semantic: SemanticCacheConfig | None = Field(
        default=None,
        description="Also serve answers to paraphrases (by embedding similarity) after an"
        " exact miss; null: exact matches only.",
    )
