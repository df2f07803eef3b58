"""Time ranges of the cost and quality pages: ``24h``, ``7d``, ``30d`` or a custom
``since``/``until``, and the hour or day buckets a chart draws (UTC).

The query models validate what the pages' filter forms send (an empty field is "not given");
anything else — an unknown range, a malformed date, ``since`` after ``until``, a range that
would draw too many buckets — is a 400 page naming the parameter.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import StringConstraints as SC

from elevenfactor.errors import RequestError
from elevenfactor.governance import parse_when

__all__ = [
    "MAX_BUCKETS",
    "RANGES",
    "RANGE_LABELS",
    "RangeQuery",
    "TimeRange",
    "bucket_keys",
    "bucket_label",
    "resolve_range",
]

RANGES = {"24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}
"""The preset ranges: how far back from now."""
RANGE_LABELS = (("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days"),
                ("custom", "Custom (since/until)"))  # fmt: skip
MAX_SPAN = 400 * 86400.0
"""The longest custom range (seconds)."""
MAX_BUCKETS = 800
"""The most buckets a chart draws (31 days by the hour, or a year by the day)."""

When = Annotated[str, SC(pattern=r"^[0-9A-Za-z:.+\-]{1,40}$")]


class RangeQuery(BaseModel):
    """The time range of a page: a preset (``24h``, ``7d``, ``30d``) back from now, or
    ``custom`` with ``since`` (required) and ``until`` (default now) — each an ISO date or
    date-time (UTC unless it names a zone; ``2026-12-01`` or ``2026-12-01T09:30`` as a browser's
    date inputs send them), a duration back from now (``12h``) or epoch seconds. ``since`` and
    ``until`` are ignored for the presets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    range: Literal["24h", "7d", "30d", "custom"] = Field(default="7d")
    since: When | None = None
    until: When | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        """An empty form field means the parameter was not given."""
        return None if value == "" else value


@dataclass(frozen=True, slots=True)
class TimeRange:
    """``[since, until)`` in epoch seconds, and the preset it came from (or ``custom``)."""

    since: float
    until: float
    preset: str

    @property
    def span(self) -> float:
        """Its length in seconds."""
        return self.until - self.since


def resolve_range(q: RangeQuery, now: float | None = None) -> TimeRange:
    """The range ``q`` names; a ``RequestError`` (``ui_bad_range``) naming the parameter for a
    custom range without ``since``, with a time that cannot be read, with ``since`` not before
    ``until``, or longer than 400 days."""
    now = time.time() if now is None else now
    if q.range != "custom":
        return TimeRange(now - RANGES[q.range], now, q.range)
    if q.since is None:
        raise RequestError(
            "a custom range needs 'since'",
            code="ui_bad_range",
            param="since",
            hint="pick a preset range, or fill in Since",
        )
    since = _when(q.since, "since", now)
    until = _when(q.until, "until", now) if q.until is not None else now
    if since >= until:
        raise RequestError("'since' must be before 'until'", code="ui_bad_range", param="since")
    if until - since > MAX_SPAN:
        raise RequestError(
            "a range is at most 400 days", code="ui_bad_range", param="since"
        )  # fmt: skip
    return TimeRange(since, until, "custom")


def _when(text: str, param: str, now: float) -> float:
    try:
        return parse_when(text, param, now)
    except RequestError as exc:
        raise RequestError(
            exc.message,
            code="ui_bad_range",
            param=param,
            hint="a date such as 2026-12-01 or 2026-12-01T09:30 (UTC), or 12h, 7d",
        ) from None


def _floor(ts: float, per: str) -> dt.datetime:
    moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    if per == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def bucket_keys(per: str, span: TimeRange) -> list[str]:
    """The keys of every ``hour`` or ``day`` bucket ``span`` touches, oldest first, spelt as
    the cost report spells them (``2026-12-01T13:00``, ``2026-12-01``); ``RequestError``
    ``ui_too_many_buckets`` naming ``per`` beyond ``MAX_BUCKETS``."""
    if per not in ("hour", "day"):
        raise RequestError(f"unknown bucket {per!r}", code="invalid_value", param="per")
    step = dt.timedelta(hours=1) if per == "hour" else dt.timedelta(days=1)
    start, end = _floor(span.since, per), dt.datetime.fromtimestamp(span.until, dt.UTC)
    count = int((end - start) / step) + 1
    if count > MAX_BUCKETS:
        raise RequestError(
            f"{count} {per} buckets are too many to draw (at most {MAX_BUCKETS})",
            code="ui_too_many_buckets",
            param="per",
            hint="choose day buckets, or a shorter range",
        )
    fmt = "%Y-%m-%dT%H:00" if per == "hour" else "%Y-%m-%d"
    # Never a step past ``end``: the bucket after the last of year 9999 cannot be represented.
    keys = [at.strftime(fmt) for at in (start + i * step for i in range(count)) if at < end]
    return keys or [start.strftime(fmt)]


def bucket_label(key: str) -> str:
    """A bucket key shortened for an axis: ``12-01 13h`` (hour), ``12-01`` (day)."""
    if len(key) == 16 and key[10] == "T":
        return f"{key[5:10]} {key[11:13]}h"
    if len(key) == 10:
        return key[5:]
    return key
