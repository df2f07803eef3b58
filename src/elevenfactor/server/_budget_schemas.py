"""Schemas of the budget and kill-switch endpoints: request bodies and query strings (validated
with them) and the answers (for the OpenAPI document). Kept apart from ``_schemas`` to keep
modules small; the same rules apply (strict types, bounded strings, unknown fields refused)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictBool
from pydantic import StringConstraints as SC

from elevenfactor.governance._budgets import WEBHOOK_PATTERN
from elevenfactor.server._schemas import Text, _Schema

__all__ = [
    "BudgetCreate",
    "BudgetList",
    "BudgetObject",
    "BudgetUpdate",
    "KillCreate",
    "KillCreated",
    "KillLiftQuery",
    "KillList",
    "KillQuery",
    "KillSwitchObject",
]

_PRINTABLE = r"[^\s\x00-\x1f]{1,200}"
Money = Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)]
Fraction = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False, strict=True)]
Scope = Annotated[
    str, SC(pattern=rf"^(org|run|(team|user|key|agent|model):{_PRINTABLE})$", max_length=210)
]
KillScope = Annotated[str, SC(pattern=rf"^(team|user|key|agent|run):{_PRINTABLE}$", max_length=210)]
Window = Literal["day", "week", "month", "total", "run"]
OnExceed = Annotated[
    str,
    SC(pattern=rf"^(refuse|downgrade:{_PRINTABLE}|approve:[A-Za-z0-9][A-Za-z0-9._-]{{0,63}})$"),
]
Webhook = Annotated[str, SC(pattern=WEBHOOK_PATTERN, max_length=2000)]
Reason = Annotated[Text, SC(min_length=1, max_length=1000)]

_SCOPE = (
    "`org`, `team:NAME`, `user:NAME`, `key:NAME`, `agent:NAME`, `model:NAME` (a route or"
    " deployment) or `run` (every run)."
)


class BudgetCreate(_Schema):
    """``POST /v1/admin/budgets``: set the budget of a scope and window (again: update it)."""

    scope: Scope = Field(description=_SCOPE)
    limit: Money = Field(description="USD per window, > 0.")
    window: Window = Field(
        default="month",
        description="UTC calendar `day`, `week` (from Monday) or `month`; `total`; or `run`"
        " (each run separately).",
    )
    soft: StrictBool = Field(default=False, description="Let calls through past it, but alert.")
    alerts: list[Fraction] = Field(
        default_factory=list,
        max_length=20,
        description="Fractions of the limit in (0, 1]; each fires once per window.",
    )
    on_exceed: OnExceed = Field(
        default="refuse", description="`refuse`, `downgrade:ROUTE` or `approve:GROUP`."
    )
    webhook: Webhook | None = Field(default=None, description="Alerts are POSTed here (JSON).")


class BudgetUpdate(_Schema):
    """``PATCH /v1/admin/budgets/{id}``: only the fields given change (``webhook: null``
    removes the webhook)."""

    limit: Money | None = None
    soft: StrictBool | None = None
    alerts: list[Fraction] | None = Field(default=None, max_length=20)
    on_exceed: OnExceed | None = None
    webhook: Webhook | None = None


class KillCreate(_Schema):
    """``POST /v1/admin/kills``: stop every new call of a scope."""

    scope: KillScope = Field(description="`key:NAME`, `user:NAME`, `team:NAME`, `agent:NAME` or"
                             " `run:ID`.")  # fmt: skip
    reason: Reason


class KillLiftQuery(_Schema):
    """``DELETE /v1/admin/kills/{id}`` query string: why (recorded with the switch)."""

    reason: Reason


class KillQuery(_Schema):
    """``GET /v1/admin/kills`` query string."""

    all: Literal["true", "false"] = Field(default="false", description="Lifted switches too.")


class BudgetObject(BaseModel):
    """A budget and its current window."""

    id: str
    object: Literal["budget"]
    scope: str
    limit: float
    window: str
    soft: bool
    alerts: list[float]
    on_exceed: str
    webhook: str | None
    created_by: str
    created_at: float
    updated_at: float
    window_key: str = Field(description="The current window (`run:*`: every run's, summed).")
    spent: float
    reserved: float = Field(description="Held for calls in flight.")
    remaining: float
    resets_at: float | None = Field(description="Epoch seconds; null for `total` and `run`.")
    resets_at_iso: str | None


class BudgetList(BaseModel):
    """Budgets."""

    object: Literal["list"]
    data: list[BudgetObject]


class KillSwitchObject(BaseModel):
    """A kill switch."""

    id: str
    object: Literal["kill_switch"]
    scope: str
    reason: str
    created_by: str
    created_at: float
    active: bool
    lifted_by: str | None
    lifted_at: float | None
    lift_reason: str | None


class KillCreated(KillSwitchObject):
    """The switch, and the runs it cancelled."""

    runs: list[str] = Field(description="Queued and running runs cancelled (parked runs stay).")


class KillList(BaseModel):
    """Kill switches, newest first."""

    object: Literal["list"]
    data: list[KillSwitchObject]
