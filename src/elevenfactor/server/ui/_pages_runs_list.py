"""``GET /ui/runs``: the runs the signed-in principal may see, newest first, filtered.

Filters (the query string, validated by ``RunsListQuery``; a malformed one is a 400 page with
its error code, the form kept so it can be fixed): ``status``; ``program`` (a program or agent
name); ``owner`` (a user name — admins, and members of a team that shares its runs; anyone
else gets a 403 unless it names themselves); ``since``/``until`` (UTC, a date or a date and
time; ``until`` excludes that instant, or includes the whole day when it is a date);
``min_cost``/``max_cost`` (US dollars, inclusive, counting child runs); ``tag``. Pages of
``limit`` rows (1-200, default 50) follow each other with ``before``/``after`` cursors. The
SQL is in ``_runs_query``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Annotated, Any
from urllib.parse import urlencode

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic import StringConstraints as SC
from starlette.responses import Response

from elevenfactor.errors import PermissionDenied, RequestError
from elevenfactor.governance import Principal
from elevenfactor.server._schemas import Id, Name, RunStatus, parse_query
from elevenfactor.server.ui._page import Page, ui_page
from elevenfactor.server.ui._runs_query import (
    Cursor,
    RunFilter,
    RunPage,
    list_run_page,
    owner_id,
)

__all__ = ["ROUTES", "RunsListQuery", "runs_list"]

STATUSES = ("queued", "running", "waiting", "succeeded", "failed", "cancelled")
_FINAL = frozenset({"succeeded", "failed", "cancelled"})
_DAY = dt.timedelta(days=1)
_WHEN_HELP = "a date (2026-12-02) or a date and time (2026-12-02T09:41), in UTC"


def _instant(text: str, end: bool = False) -> float:
    """Epoch seconds of ``text`` (UTC unless it names an offset); a date alone is its
    midnight, or the next midnight when ``end`` (so ``until`` a day includes that day)."""
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            return (start + _DAY if end else start).timestamp()
        when = dt.datetime.fromisoformat(text)
        return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()
    except (ValueError, OverflowError):
        raise ValueError(f"expected {_WHEN_HELP}") from None


def _check_when(text: str) -> str:
    _instant(text)
    _instant(text, end=True)
    return text


When = Annotated[str, SC(max_length=40), AfterValidator(_check_when)]
Usd = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]


class RunsListQuery(BaseModel):
    """``GET /ui/runs`` query string: the runs list's filters and page (all optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: RunStatus | None = Field(default=None, description="Only runs in this status.")
    program: Id | None = Field(default=None, description="Only runs of this program or agent.")
    owner: Name | None = Field(
        default=None,
        description="Only runs of this user (admins; members of a team that shares its runs).",
    )
    since: When | None = Field(default=None, description=f"Created at or after: {_WHEN_HELP}.")
    until: When | None = Field(
        default=None, description="Created before this instant (a date: up to its end)."
    )
    min_cost: Usd | None = Field(default=None, description="At least this many US dollars.")
    max_cost: Usd | None = Field(default=None, description="At most this many US dollars.")
    tag: Id | None = Field(default=None, description="Only runs carrying this tag.")
    before: Annotated[str, SC(max_length=240)] | None = Field(
        default=None, description="The page older than this cursor (an Older link's)."
    )
    after: Annotated[str, SC(max_length=240)] | None = Field(
        default=None, description="The page newer than this cursor (a Newer link's)."
    )
    limit: Annotated[int, Field(ge=1, le=200)] = Field(default=50, description="Rows a page.")

    def filters(self) -> dict[str, str]:
        """The filters as query parameters (no cursor), for the pager's links."""
        out = {
            k: str(v)
            for k, v in self.model_dump(exclude={"before", "after", "limit"}).items()
            if v is not None
        }
        if self.limit != 50:
            out["limit"] = str(self.limit)
        return out


def may_filter_owner(p: Principal) -> bool:
    """Whether ``p`` sees other users' runs, so that an owner filter means something."""
    return p.is_admin or p.unscoped or (p.team_shares and p.team_id is not None)


def _check(q: RunsListQuery, p: Principal) -> tuple[RunFilter, Cursor | None, Cursor | None]:
    """The filter (its owner not resolved yet) and the cursors; what pydantic cannot check
    alone (pairs of fields, who may filter by owner) is a ``RequestError``."""
    if q.before is not None and q.after is not None:
        raise RequestError(
            "give 'before' or 'after', not both", code="invalid_value", param="after"
        )
    since = _instant(q.since) if q.since else None
    until = _instant(q.until, end=True) if q.until else None
    if since is not None and until is not None and since >= until:
        raise RequestError(
            "'since' must be earlier than 'until'", code="invalid_value", param="until"
        )
    if q.min_cost is not None and q.max_cost is not None and q.min_cost > q.max_cost:
        raise RequestError(
            "'min_cost' must not exceed 'max_cost'", code="invalid_value", param="max_cost"
        )
    if q.owner is not None and q.owner != p.user_name and not may_filter_owner(p):
        raise PermissionDenied(
            "only admins and members of a team that shares its runs can list other users' runs",
            param="owner",
            hint="leave Owner empty to list your runs",
        )
    before = Cursor.parse(q.before, "before") if q.before else None
    after = Cursor.parse(q.after, "after") if q.after else None
    f = RunFilter(
        status=q.status,
        program=q.program,
        since=since,
        until=until,
        min_cost=q.min_cost,
        max_cost=q.max_cost,
        tag=q.tag,
    )
    return f, before, after


async def _run_page(page: Page, q: RunsListQuery) -> tuple[RunPage, str | None]:
    """The page of runs, or none and a notice when the owner filter names nobody."""
    p = page.user.principal
    f, before, after = _check(q, p)
    if q.owner is not None:
        user_id = await owner_id(page.store, p, q.owner)
        if user_id is None:
            return RunPage([], None, None), f"No runs owned by {q.owner!r} that you may see."
        f = dataclasses.replace(f, user_id=user_id)
    found = await list_run_page(page.store, p, f, before=before, after=after, limit=q.limit)
    return found, None


def _href(params: dict[str, str], key: str, cursor: Cursor | None) -> str | None:
    """The list with the same filters from ``cursor`` on (``before``/``after``)."""
    if cursor is None:
        return None
    return "/ui/runs?" + urlencode({**params, key: str(cursor)})


@ui_page("runs")
async def runs_list(page: Page) -> Response:
    """``GET /ui/runs``: the filter form, the table of runs and the pager."""
    items = [(k, v) for k, v in page.request.query_params.multi_items() if v != ""]
    context: dict[str, Any] = {
        "form": {k: v[:240] for k, v in items},
        "statuses": STATUSES,
        "final": _FINAL,
        "owner_filter": may_filter_owner(page.user.principal),
        "now": time.time(),
    }
    try:
        q = parse_query(RunsListQuery, items)
        found, notice = await _run_page(page, q)
    except RequestError as exc:
        if exc.http_status != 400:
            raise
        return page.render("runs_list.html", status=400, error=exc, result=None, **context)
    params = q.filters()
    return page.render(
        "runs_list.html",
        error=None,
        result=found,
        notice=notice,
        older=_href(params, "before", found.older),
        newer=_href(params, "after", found.newer),
        newest=("/ui/runs?" + urlencode(params)) if found.newer is not None else None,
        **context,
    )


ROUTES: list[tuple[str, Any, list[str]]] = [("/ui/runs", runs_list, ["GET"])]
"""The runs list's route."""
