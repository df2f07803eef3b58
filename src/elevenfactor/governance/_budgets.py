"""Budget definitions: what a budget covers (its scope), how much (``limit``, USD) per which
window, and what happens when it is reached.

Scopes: ``org``; ``team:NAME``, ``user:NAME`` and ``key:NAME`` (resolved to ids when the budget
is set: they must exist in the organisation); ``agent:NAME``; ``model:NAME`` (a route or a
deployment: a call matches if it asks for the route or may reach the deployment); ``run`` (every
run). A budget is one per ``(organisation, scope, window)``: setting it again updates it.

Only admins set, read and delete budgets; each change is a ledger entry in the same transaction.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from elevenfactor.errors import NotFound, RequestError
from elevenfactor.governance._names import check_id, check_name
from elevenfactor.governance._windows import WINDOWS
from elevenfactor.store import Executor

__all__ = [
    "SCOPE_KINDS",
    "Budget",
    "budget_from_row",
    "changed",
    "generation",
    "invalid_budget",
    "parse_scope",
    "resolve_scope",
]

SCOPE_KINDS = ("org", "team", "user", "key", "agent", "model", "run")
_MODEL_NAME = re.compile(r"^[^\s\x00-\x1f]{1,200}$")
_GENERATION = [0]


def changed() -> None:
    """Note that budgets or kill switches changed through this process: every gate of the
    process reloads them on its next use, not after its refresh interval."""
    _GENERATION[0] += 1


def generation() -> int:
    """How many changes this process has made (see ``changed``)."""
    return _GENERATION[0]


@dataclass(frozen=True, slots=True)
class Budget:
    """A budget. ``kind``/``target`` are its scope resolved (an id for teams, users and keys; a
    name for agents and models; empty for ``org`` and ``run``)."""

    id: str
    org_id: str
    scope: str
    kind: str
    target: str
    window: str
    limit: float
    soft: bool
    alerts: tuple[float, ...]
    on_exceed: str
    webhook: str | None
    created_by: str
    created_at: float
    updated_at: float

    @property
    def thresholds(self) -> tuple[float, ...]:
        """The alert thresholds (a soft budget always alerts when it is reached)."""
        if self.soft and 1.0 not in self.alerts:
            return (*self.alerts, 1.0)
        return self.alerts

    def to_dict(self) -> dict[str, Any]:
        """The budget as the API shows it."""
        return {
            "id": self.id,
            "object": "budget",
            "scope": self.scope,
            "limit": self.limit,
            "window": self.window,
            "soft": self.soft,
            "alerts": list(self.alerts),
            "on_exceed": self.on_exceed,
            "webhook": self.webhook,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


BUDGET_COLUMNS = (
    "id, org_id, scope, kind, target, time_window, limit_usd, soft, alerts, on_exceed, webhook,"
    " created_by, created_at, updated_at"
)


def budget_from_row(r: Sequence[Any]) -> Budget:
    """A ``Budget`` from a row of ``BUDGET_COLUMNS``."""
    return Budget(
        str(r[0]),
        str(r[1]),
        str(r[2]),
        str(r[3]),
        str(r[4]),
        str(r[5]),
        float(r[6]),
        bool(r[7]),
        tuple(float(x) for x in orjson.loads(r[8])),
        str(r[9]),
        r[10],
        str(r[11]),
        float(r[12]),
        float(r[13]),
    )


def invalid_budget(field: str, message: str, hint: str | None = None) -> RequestError:
    """A ``RequestError`` ``invalid_budget`` naming ``field``."""
    return RequestError(f"{field}: {message}", code="invalid_budget", param=field, hint=hint)


_SCOPE_HINT = (
    "use org, team:NAME, user:NAME, key:NAME, agent:NAME, model:NAME (a route or deployment) or run"
)


def parse_scope(
    scope: str, *, kinds: Sequence[str] = SCOPE_KINDS, run_ids: bool = False
) -> tuple[str, str]:
    """``(kind, name)`` of a scope such as ``user:alice`` (``name`` is empty for ``org`` and,
    unless ``run_ids`` (kill switches: ``run:ID``), for ``run``); ``invalid_budget`` naming
    ``scope`` otherwise."""
    if not isinstance(scope, str):
        raise invalid_budget("scope", "must be a string", _SCOPE_HINT)
    kind, sep, name = scope.partition(":")
    if kind not in kinds:
        allowed = ", ".join(kinds)
        raise invalid_budget("scope", f"unknown scope {scope!r:.80}; the kinds are {allowed}")
    if kind == "org" or (kind == "run" and not run_ids):
        if sep:
            raise invalid_budget("scope", f"{kind!r} takes no name; got {scope!r:.80}")
        return kind, ""
    if not name:
        raise invalid_budget("scope", f"{kind!r} needs a name: {kind}:NAME", _SCOPE_HINT)
    if kind == "model":
        if not _MODEL_NAME.fullmatch(name):
            raise invalid_budget("scope", f"{name!r:.80} is not a model or route name")
    elif kind in ("agent", "run"):
        check_id(name, "scope")
    elif kind == "key":
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
            check_id(name, "scope")
    else:
        check_name(name, "scope")
    return kind, name


async def resolve_scope(db: Executor, org_id: str, kind: str, name: str) -> tuple[str, str]:
    """``(canonical scope, target)`` for a parsed scope: teams, users and keys must exist in the
    organisation (``NotFound`` naming the scope otherwise) and resolve to their ids."""
    if kind in ("org", "run"):
        return kind, ""
    if kind in ("agent", "model"):
        return f"{kind}:{name}", name
    if kind == "team":
        row = await db.fetchone(
            "SELECT id, name FROM teams WHERE org_id = ? AND name = ?", (org_id, name)
        )
        hint = "`elevenfactor teams list` shows them"
    elif kind == "user":
        row = await db.fetchone(
            "SELECT id, name FROM users WHERE org_id = ? AND (name = ? OR id = ?)",
            (org_id, name, name),
        )
        hint = "`elevenfactor users list` shows them"
    else:
        rows = await db.fetchall(
            "SELECT k.id, k.name, k.prefix FROM api_keys k JOIN users u ON u.id = k.user_id"
            " WHERE u.org_id = ? AND (k.name = ? OR k.id = ? OR k.prefix = ?)"
            " AND k.revoked_at IS NULL",
            (org_id, name, name, name),
        )
        if len(rows) > 1:
            raise invalid_budget(
                "scope",
                f"{len(rows)} keys match {name!r}",
                hint="name the key by its prefix (`elevenfactor keys list` shows them)",
            )
        row = (rows[0][0], name) if rows else None
        hint = "`elevenfactor keys list` shows the active keys"
    if row is None:
        raise NotFound(f"scope {kind}:{name}: no {kind} {name!r} in this organisation", hint=hint)
    return f"{kind}:{row[1]}", str(row[0])


def check_limit(limit: Any) -> float:
    """A limit in USD: a finite number above zero."""
    if isinstance(limit, bool) or not isinstance(limit, (int, float)):
        raise invalid_budget("limit", f"must be a number of USD; got {limit!r:.40}")
    value = float(limit)
    if not math.isfinite(value) or value <= 0:
        raise invalid_budget("limit", f"must be a finite amount of USD above 0; got {limit!r}")
    return value


def check_window(window: Any) -> str:
    """One of ``WINDOWS``."""
    if window not in WINDOWS:
        raise invalid_budget(
            "window", f"unknown window {window!r:.40}; one of {', '.join(WINDOWS)}"
        )
    return str(window)


def check_alerts(alerts: Sequence[Any]) -> tuple[float, ...]:
    """Alert thresholds: fractions of the limit in (0, 1], sorted, without duplicates."""
    out: set[float] = set()
    for a in alerts:
        ok = not isinstance(a, bool) and isinstance(a, (int, float))
        if not ok or not math.isfinite(float(a)) or not 0 < float(a) <= 1:
            raise invalid_budget(
                "alerts", f"a threshold is a fraction of the limit in (0, 1]; got {a!r:.40}"
            )
        out.add(float(a))
    if len(out) > 20:
        raise invalid_budget("alerts", "at most 20 thresholds")
    return tuple(sorted(out))


def check_on_exceed(policy: Any) -> str:
    """``refuse``, ``downgrade:ROUTE`` or ``approve:GROUP``."""
    if policy == "refuse":
        return "refuse"
    kind, _, name = str(policy).partition(":") if isinstance(policy, str) else ("", "", "")
    if kind == "downgrade" and name and _MODEL_NAME.fullmatch(name):
        return f"downgrade:{name}"
    if kind == "approve" and name:
        check_name(name, "on_exceed")
        return f"approve:{name}"
    raise invalid_budget(
        "on_exceed", f"unknown policy {policy!r:.60}; use refuse, downgrade:ROUTE or approve:GROUP"
    )


WEBHOOK_PATTERN = (
    r"^https?://(?:[A-Za-z0-9._~%!$&'()*+,;=:-]*@)?"
    r"(?:[A-Za-z0-9._~%!$&'()*+,;=-]+|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
    r"(?:[/?#][^\s\x00-\x1f]*)?$"
)
"""An http(s) URL: an ASCII host name or a bracketed IPv6 address, an optional port (at most
65535), then any path, query and fragment without whitespace or control characters."""
_WEBHOOK = re.compile(WEBHOOK_PATTERN)


def check_webhook(url: Any) -> str | None:
    """An http(s) URL with a host (or None)."""
    if url is None:
        return None
    bad = not isinstance(url, str) or len(url) > 2000 or _WEBHOOK.fullmatch(url) is None
    try:
        parts = urlsplit(url) if not bad else None
        _ = parts.port if parts is not None else None  # out of range: ValueError
    except ValueError:  # "http://[", a port over 65535
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid_budget("webhook", f"must be an http(s) URL with a host; got {url!r:.80}")
    return str(url)


def new_budget_id() -> str:
    """A fresh budget id."""
    return "bud_" + uuid.uuid4().hex[:16]


def now() -> float:
    """The wall clock (a seam for tests)."""
    return time.time()
