"""What a call is limited by: ``LimitKey`` (one rpm or tpm limit), ``limits_for`` (the limits of
one call from ``limits:``), and the wait policy of a call (``LimitWait``, ``priority_of``)."""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from elevenfactor.config import LimitsConfig, ProjectConfig, RateLimitConfig
from elevenfactor.errors import RequestError

__all__ = [
    "PRIORITIES",
    "LimitKey",
    "LimitWait",
    "limit_wait",
    "limits_for",
    "priority_of",
]

#: The named priorities; any int may be used too (higher is served first).
PRIORITIES = {"high": 10, "normal": 0, "low": -10}


def priority_of(value: str | int | None, *, param: str = "priority") -> int:
    """A queue priority from ``high``, ``normal``, ``low`` or an integer (a header's text
    included); None: normal. Anything else is a ``RequestError`` naming ``param``."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in PRIORITIES:
            return PRIORITIES[text]
        try:
            return int(text)
        except ValueError:
            pass
    raise RequestError(
        f"invalid priority {value!r}",
        param=param,
        hint="use high, normal, low or an integer (higher is served first)",
    )


@dataclass(frozen=True, slots=True)
class LimitKey:
    """One limit: ``name`` (``user:alice``, ``model:gpt-4o``...), its kind and its value.

    ``window`` is the period in seconds (60: per minute); tests use shorter ones.
    """

    name: str
    kind: Literal["rpm", "tpm"]
    value: int
    window: float = 60.0

    @property
    def id(self) -> str:
        """The storage key of the limit: ``name:kind``."""
        return f"{self.name}:{self.kind}"

    def cost(self, tokens: int) -> int:
        """What a request of ``tokens`` takes of this limit."""
        return 1 if self.kind == "rpm" else tokens

    def details(self) -> dict[str, Any]:
        """The limit as ``LimitExceeded`` details: limit, kind, value."""
        return {"limit": self.name, "kind": self.kind, "value": self.value}


@dataclass(frozen=True, slots=True)
class LimitWait:
    """How long the current call may wait for capacity and how it ranks among waiters:
    ``deadline`` in ``time.monotonic()`` seconds, ``priority`` higher first."""

    deadline: float
    priority: int = 0


#: The wait policy of the current call, read by the deployment limiter (set by the caller around
#: a model call; unset: ``client_timeout`` or ``limits.max_wait`` from now, priority 0).
limit_wait: contextvars.ContextVar[LimitWait | None] = contextvars.ContextVar(
    "elevenfactor_limit_wait", default=None
)


def _pairs(limit: RateLimitConfig, name: str) -> list[LimitKey]:
    out: list[LimitKey] = []
    if limit.rpm is not None:
        out.append(LimitKey(name, "rpm", limit.rpm))
    if limit.tpm is not None:
        out.append(LimitKey(name, "tpm", limit.tpm))
    return out


def _scoped(
    default: RateLimitConfig, overrides: dict[str, RateLimitConfig], scope: str, who: str | None
) -> list[LimitKey]:
    if who is None:
        return []
    override = overrides.get(who)
    limit = default if override is None else override.over(default)
    return _pairs(limit, f"{scope}:{who}") if not limit.empty else []


def limits_for(
    config: LimitsConfig | ProjectConfig,
    *,
    key_name: str | None = None,
    user_name: str | None = None,
    team_name: str | None = None,
    route: str | None = None,
    deployments: Sequence[str] = (),
) -> list[LimitKey]:
    """Every limit that applies to one call; empty when none is configured (skip the limiter).

    ``route`` is the name the client asked for. ``deployments``: deployments whose limits the
    caller enforces itself; leave it empty when the model registry was built with the limiter
    (its deployment wrappers enforce them, so failover can move on).
    """
    if isinstance(config, ProjectConfig):
        config = config.limits
    if not config.configured:
        return []
    keys = [
        *_scoped(config.key, config.keys, "key", key_name),
        *_scoped(config.user, config.users, "user", user_name),
        *_scoped(config.team, config.teams, "team", team_name),
    ]
    if route is not None and (limit := config.models.get(route)) is not None:
        keys += _pairs(limit, f"model:{route}")
    for name in deployments:
        if (limit := config.deployments.get(name)) is not None:
            keys += _pairs(limit, f"deployment:{name}")
    return keys
