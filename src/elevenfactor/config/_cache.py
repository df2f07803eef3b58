"""The exact response cache of a route (``routes.NAME.cache``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CacheConfig"]


class CacheConfig(BaseModel):
    """Serve repeated identical requests to the route from a cache of its complete answers.

    The key is the SHA-256 of the normalised request (messages, tools, tool choice, response
    format and every sampling setting; not ``stream``, ``user`` or tags), the route's model
    versions (the deployments' model ids and params) and the prompt version. Answers live in
    Redis when ``REDIS_URL`` is set, else in the store. A request that may answer differently
    each time (temperature above 0, or unset, without a ``seed``) is not cached unless
    ``nondeterministic`` is true or the request itself asks with ``cache: {ttl: N}``.

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
