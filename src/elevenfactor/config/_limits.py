"""Rate limits (``limits:``): requests and tokens per minute per key, user, team, model and
deployment."""

from __future__ import annotations

from collections.abc import Collection

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LimitsConfig", "RateLimitConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimitConfig(_Strict):
    """Requests and tokens per minute; a kind left out is not limited. The shape of ``key``,
    ``user`` and ``team`` and of every entry of ``keys``, ``users``, ``teams``, ``models`` and
    ``deployments``."""

    rpm: int | None = Field(default=None, gt=0, description="Requests per minute.")
    tpm: int | None = Field(
        default=None,
        gt=0,
        description="Tokens per minute: prompt plus completion, reserved as the prompt estimate"
        " plus max_tokens and corrected by the real usage after the call.",
    )

    def over(self, default: RateLimitConfig) -> RateLimitConfig:
        """This override on top of ``default``: kinds set here win, the others are the default's."""
        return RateLimitConfig(
            rpm=self.rpm if self.rpm is not None else default.rpm,
            tpm=self.tpm if self.tpm is not None else default.tpm,
        )

    @property
    def empty(self) -> bool:
        """No kind is limited."""
        return self.rpm is None and self.tpm is None


class LimitsConfig(_Strict):
    """Rate limits: requests and tokens per minute, shared across processes through Redis when
    ``REDIS_URL`` is set (in-process otherwise).

    A limit of N per minute is a bucket of N that refills continuously at N/60 per second (the
    generic cell rate algorithm): a full bucket admits a burst of N at once, then calls are
    admitted as capacity refills, so over any span of ``t`` seconds at most ``N + N * t / 60``
    are admitted. A request takes one unit of every ``rpm`` limit that applies and its estimated
    tokens (prompt + ``max_tokens``) of every ``tpm`` limit, all or nothing; after the call the
    real token count corrects the reservation. A request over a limit waits in a priority queue
    for capacity up to its deadline, else gets 429 ``rate_limit_exceeded`` with ``Retry-After``.

    Defaults (``key``, ``user``, ``team``) apply to each key, user and team separately; an
    override by name (``keys``, ``users``, ``teams``) replaces the kinds it sets and keeps the
    default's others. ``models`` limit what clients ask for (a route or a model, across all
    callers); ``deployments`` limit the calls that reach one deployment under ``models:``,
    whichever route sent them, and failover moves on to the next deployment when one cannot
    admit a call in time.

    ```yaml
    limits:
      key: {rpm: 600, tpm: 200000}
      user: {rpm: 120}
      users: {alice: {rpm: 1200}}
      teams: {research: {tpm: 1000000}}
      models: {gpt-4o: {rpm: 500, tpm: 300000}}
      deployments: {openai-primary: {rpm: 3000}}
      max_wait: 10
    ```
    """

    key: RateLimitConfig = Field(
        default_factory=RateLimitConfig, description="The limit of every API key, each on its own."
    )
    user: RateLimitConfig = Field(
        default_factory=RateLimitConfig, description="The limit of every user, each on its own."
    )
    team: RateLimitConfig = Field(
        default_factory=RateLimitConfig, description="The limit of every team, each on its own."
    )
    keys: dict[str, RateLimitConfig] = Field(
        default_factory=dict, description="Per API key name: overrides of `key`."
    )
    users: dict[str, RateLimitConfig] = Field(
        default_factory=dict, description="Per user name: overrides of `user`."
    )
    teams: dict[str, RateLimitConfig] = Field(
        default_factory=dict, description="Per team name: overrides of `team`."
    )
    models: dict[str, RateLimitConfig] = Field(
        default_factory=dict,
        description="Per route or model name (as clients ask for it): one limit over all callers.",
    )
    deployments: dict[str, RateLimitConfig] = Field(
        default_factory=dict,
        description="Per deployment (a name under `models:`): the calls that reach it, whichever"
        " route sent them; provider 429s and x-ratelimit-* headers pause it too.",
    )
    max_wait: float = Field(
        default=10.0,
        ge=0,
        description="Seconds a request may wait for capacity when it brings no deadline of its"
        " own (x-elevenfactor-timeout); 0: refuse at once when over a limit.",
    )

    @property
    def configured(self) -> bool:
        """Whether any limit is set (False: callers skip the limiter entirely)."""
        return bool(
            self.keys or self.users or self.teams or self.models or self.deployments
        ) or not (self.key.empty and self.user.empty and self.team.empty)

    def unknown_reference(
        self, models: Collection[str], routes: Collection[str]
    ) -> tuple[str, str, list[str]] | None:
        """The first name that refers to nothing, as (key, name, known names), or None.

        ``limits.models`` may name routes and models; ``limits.deployments`` only models.
        """
        targets = set(models) | set(routes)
        for name in self.models:
            if name not in targets:
                return f"limits.models.{name}", name, sorted(targets)
        for name in self.deployments:
            if name not in models:
                return f"limits.deployments.{name}", name, sorted(models)
        return None
