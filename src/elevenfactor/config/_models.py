"""The model side of the project file: providers, deployments (with their retry, breaker and
price), and routes (failover chains, weights, rules, cache, escalation)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from elevenfactor.config._cache import CacheConfig

__all__ = [
    "BreakerConfig",
    "DeploymentConfig",
    "ErrorClass",
    "FailoverConfig",
    "PriceConfig",
    "ProviderConfig",
    "RetryConfig",
    "RouteConfig",
    "RouteRule",
    "RouteTarget",
]

ErrorClass = Literal[
    "rate_limit",
    "server_error",
    "timeout",
    "connection",
    "context_window",
    "content_filter",
    "malformed_response",
    "circuit_open",
    "auth",
    "bad_request",
]


_RETRY_ON: tuple[ErrorClass, ...] = (
    "rate_limit",
    "server_error",
    "timeout",
    "connection",
    "malformed_response",
)
_FAILOVER_ON: tuple[ErrorClass, ...] = (
    "rate_limit",
    "server_error",
    "timeout",
    "connection",
    "circuit_open",
    "content_filter",
    "malformed_response",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryConfig(_Strict):
    """Retries with exponential backoff and full jitter; Retry-After is honoured up to a cap."""

    attempts: int = Field(default=2, ge=1, le=20, description="Total attempts, first included.")
    backoff_base: float = Field(
        default=0.25,
        ge=0,
        description="Backoff cap in seconds before the first retry; doubles each retry.",
    )
    backoff_max: float = Field(
        default=8.0, ge=0, description="Upper bound in seconds on the backoff cap."
    )
    max_retry_after: float = Field(
        default=30.0, ge=0, description="A longer Retry-After fails over instead of waiting."
    )
    on: list[ErrorClass] = Field(
        default_factory=lambda: list(_RETRY_ON), description="Error classes that are retried."
    )


class BreakerConfig(_Strict):
    """Open after ``failures`` consecutive failures; refuse calls for ``cooldown`` seconds."""

    failures: int = Field(
        default=5, ge=1, description="Consecutive failures that open the breaker."
    )
    cooldown: float = Field(
        default=30.0,
        gt=0,
        description="Seconds the open breaker refuses calls before a trial call.",
    )


class PriceConfig(_Strict):
    """Prices in currency units (USD for the shipped list prices) per million tokens, and per
    request. A change of any of them is a new price version; old call records keep theirs."""

    input_per_mtok: float = Field(ge=0, description="Price per million input tokens.")
    output_per_mtok: float = Field(ge=0, description="Price per million output tokens.")
    cached_input_per_mtok: float | None = Field(
        default=None,
        ge=0,
        description="Price per million input tokens read from the provider's prompt cache;"
        " None: the input price.",
    )
    per_request: float = Field(default=0.0, ge=0, description="Fixed price of each request.")


class ProviderConfig(_Strict):
    """A provider account: its type (an entry point name), endpoint and credentials."""

    type: str = Field(description="Provider type: the name of a registered provider entry point.")
    base_url: str | None = Field(
        default=None, description="API endpoint; None: the provider's default."
    )
    api_key: SecretStr | None = Field(default=None, description="API key (use ${VAR}).")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra HTTP headers sent with every request."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Provider-specific options.")


class DeploymentConfig(_Strict):
    """One model at one provider, with its parameters and resilience policy."""

    provider: str = Field(description="Name of a provider under `providers:`.")
    model: str = Field(description="The model id at the provider.")
    context_window: int | None = Field(
        default=None, gt=0, description="Context window in tokens; None: the provider's value."
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Default model parameters; a request's settings override them.",
    )
    price: PriceConfig | None = Field(
        default=None,
        description="This deployment's price; None: `prices:` by deployment name, then by"
        " model id, then the shipped list price of the model id, else unpriced.",
    )
    max_output_tokens: int | None = Field(
        default=None,
        gt=0,
        description="The model's output cap in tokens: the output reserved against budgets for"
        " a request that sets no max_tokens (when params has none); None: the context window,"
        " else 4096.",
    )
    timeout: float = Field(default=60.0, gt=0, description="Seconds per attempt.")
    first_token_timeout: float | None = Field(
        default=None, gt=0, description="Seconds to wait for a stream's first chunk; None: timeout."
    )
    retry: RetryConfig = Field(default_factory=RetryConfig)
    breaker: BreakerConfig | None = Field(default_factory=BreakerConfig)
    tags: list[str] = Field(
        default_factory=list, description="Free-form labels for the deployment (informational)."
    )


class FailoverConfig(_Strict):
    """Which error classes move a chain to its next deployment."""

    on: list[ErrorClass] = Field(
        default_factory=lambda: list(_FAILOVER_ON),
        description="Error classes that move on to the next deployment.",
    )
    context_window: Literal["larger", "next", "fail"] = Field(
        default="larger",
        description="On context_window: skip to a deployment with a larger context window.",
    )


class RouteTarget(_Strict):
    """A weighted target of a route."""

    model: str = Field(description="A model or another route.")
    weight: float = Field(
        default=1.0, gt=0, description="Relative weight; share of requests proportional to it."
    )


class RouteRule(_Strict):
    """Send matching requests to ``use`` (a route or a model): those carrying all of ``tags``,
    whose estimated prompt size is within ``min_prompt_tokens``..``max_prompt_tokens`` and that
    offer tools (``tools: true``) or not (``tools: false``). Every condition given must hold;
    a rule needs at least one. Rules are tried in order and the first match wins.

    The prompt size is estimated, not tokenized: UTF-8 bytes of the messages and tool
    definitions divided by 4, which is close enough to choose a model by.

    ```yaml
    routes:
      default:
        chain: [strong]
        rules:
          - {max_prompt_tokens: 2000, tools: false, use: cheap}
          - {tags: [batch], use: cheap}
    ```
    """

    tags: list[str] = Field(
        default_factory=list,
        description="Request tags that must all be present for the rule to match.",
    )
    min_prompt_tokens: int | None = Field(
        default=None, ge=0, description="Match prompts of at least this many estimated tokens."
    )
    max_prompt_tokens: int | None = Field(
        default=None, ge=0, description="Match prompts of at most this many estimated tokens."
    )
    tools: bool | None = Field(
        default=None, description="true: match requests offering tools; false: without tools."
    )
    use: str = Field(description="The route or model that matching requests go to.")

    @model_validator(mode="after")
    def _some_condition(self) -> RouteRule:
        if (
            not self.tags
            and self.min_prompt_tokens is None
            and self.max_prompt_tokens is None
            and self.tools is None
        ):
            raise ValueError(
                "a rule needs at least one of tags, min_prompt_tokens, max_prompt_tokens, tools"
            )
        return self

    @property
    def by_content(self) -> bool:
        """Whether matching needs the request's messages and settings (not just its tags)."""
        return (
            self.min_prompt_tokens is not None
            or self.max_prompt_tokens is not None
            or self.tools is not None
        )


class RouteConfig(_Strict):
    """A named route: a failover chain, or weighted targets, optionally preceded by routing
    rules, optionally escalating to a stronger route, optionally cached.

    ```yaml
    routes:
      default:
        chain: [cheap]
        validator: json         # or nonempty, or package.module:attr
        escalate_to: strong     # on a failure or a rejected answer
        cache: {ttl: 300}
    ```
    """

    chain: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Models to try in order, failing over to the next; exclusive with weights.",
    )
    weights: list[RouteTarget] | None = Field(default=None, min_length=1)
    rules: list[RouteRule] = Field(
        default_factory=list,
        description="Rules that send matching requests elsewhere (by tags, prompt size, tools); "
        "the first match wins.",
    )
    failover: FailoverConfig = Field(default_factory=FailoverConfig)
    cache: CacheConfig | None = Field(
        default=None, description="Cache the route's complete answers; None: only on request."
    )
    validator: str | None = Field(
        default=None,
        description="Check each answer with 'json', 'nonempty' or a 'package.module:attr' "
        "callable; a rejected answer is escalated to `escalate_to`.",
    )
    escalate_to: str | None = Field(
        default=None,
        description="The route or model that answers when this route fails or its answer is "
        "rejected by `validator`.",
    )

    @model_validator(mode="after")
    def _one_shape(self) -> RouteConfig:
        if (self.chain is None) == (self.weights is None):
            raise ValueError("a route needs exactly one of 'chain' or 'weights'")
        if self.validator is not None:
            if self.escalate_to is None:
                raise ValueError("'validator' needs 'escalate_to': where rejected answers go")
            if self.validator not in ("json", "nonempty") and ":" not in self.validator:
                raise ValueError(
                    f"unknown validator {self.validator!r}: use 'json', 'nonempty' or "
                    "'package.module:attr'"
                )
        return self
