"""The run page's buttons: cancel, retry and replay, each a form that redirects back to the
run with a notice.

- **Cancel run** (an unfinished run): ``cancel_run`` as ``POST /v1/runs/{id}/cancel`` does —
  at once when queued or waiting; a running run stops at its next step.
- **Retry** (a failed or cancelled run): the runtime retries within a run (a failed attempt
  runs again up to the run's ``max_attempts``), but a finished run is sealed in the ledger and
  has no resubmit. So the dashboard submits a **new run** with the same program, input, tags,
  queue, priority and attempts, owned by whoever retries, with the id ``<original>:retry-<n>``
  (``n`` the next free number when the page was drawn, carried by the form): the id links the
  two (each page lists the other), and submitting the same form twice is idempotent (the same
  id, the same run; a number taken by someone else's run meanwhile is ``run_conflict``).
- **Replay** (a finished run): a deterministic replay (``replay_run``) — the program
  re-executed from the journal with no model or tool call, nothing written — whose verdict
  comes back as the notice: identical, or the first step where it diverged.

Notices travel in the redirect's query string as codes from a fixed list (``Notice``) with
ids the page re-reads, so a link cannot put words of its own on the page.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlencode

import orjson
from starlette.responses import Response

from elevenfactor.errors import RequestError
from elevenfactor.governance import check_id
from elevenfactor.runtime import cancel_run, get_run, submit_run
from elevenfactor.runtime._replay import replay_run
from elevenfactor.server.ui._page import Page, ui_page
from elevenfactor.server.ui._run_data import retry_ids, retry_root
from elevenfactor.store import get_blob

__all__ = ["ACTION_ROUTES", "DIVERGENCE_REASONS", "NOTICES", "Notice", "Reason"]

Notice = Literal["cancelled", "cancel_requested", "retried", "replay_identical", "replay_diverged"]
Reason = Literal[
    "step", "missing", "extra", "output", "request", "result", "write", "parked", "payload",
    "error",
]  # fmt: skip
DIVERGENCE_REASONS: dict[str, str] = {
    "step": "the program issued another step there",
    "missing": "the program issued a step the journal does not have",
    "extra": "the journal has a step the program did not issue",
    "output": "a recomputed output differs from the recorded one",
    "request": "a model request differs from every recorded one",
    "result": "the result or error differs",
    "write": "the program tried to write an event",
    "parked": "the program parked",
    "payload": "a recorded output is gone (erased)",
    "error": "the program raised where the run did not",
}
NOTICES: dict[str, str] = {
    "cancelled": "Run cancelled.",
    "cancel_requested": "Cancel requested: the run stops at its next step.",
    "retried": "Retry submitted as a new run",
    "replay_identical": "Deterministic replay: identical. Every step and the result were"
    " reproduced from the journal, with no model or tool call.",
    "replay_diverged": "Deterministic replay diverged",
}


def _back(page: Page, run_id: str, **params: str) -> Response:
    query = urlencode({k: v for k, v in params.items() if v}, safe=":")
    return page.redirect(f"/ui/runs/{run_id}" + (f"?{query}" if query else ""))


def _run_id(page: Page) -> str:
    return check_id(page.request.path_params["run_id"], "run_id")


@ui_page("runs")
async def cancel(page: Page) -> Response:
    """``POST /ui/runs/{id}/cancel``: cancel an unfinished run."""
    await page.form()
    run_id = _run_id(page)
    p = page.user.principal
    reason = f"cancelled from the dashboard by {p.label}"
    info = await cancel_run(page.store, run_id, reason, p)
    if page.gw.worker is not None and info.status == "running":
        page.gw.worker.request_cancel(run_id, reason)
    return _back(
        page, run_id, notice="cancelled" if info.status == "cancelled" else "cancel_requested"
    )


@ui_page("runs")
async def retry(page: Page) -> Response:
    """``POST /ui/runs/{id}/retry``: submit a failed or cancelled run again, as a new run."""
    form = await page.form()
    store, p = page.store, page.user.principal
    info = await get_run(store, _run_id(page), p)
    if info.status not in ("failed", "cancelled"):
        raise RequestError(
            f"run {info.id} is {info.status}; only failed or cancelled runs can be retried",
            code="ui_retry_not_allowed",
            status=409,
        )
    programs = page.gw.programs
    if programs is None:
        raise RequestError("this server runs no programs", code="retry_unavailable", status=503)
    programs.get(info.program)  # ProgramNotFound when it is no longer deployed
    if page.gw.release is not None:  # the files on disk must still be the served release's
        await page.gw.release.check_disk()
    root, _ = retry_root(info.id)
    ids = retry_ids(root)
    n = form.get("retry", "")
    if not (re.fullmatch("[0-9]{1,3}", n) and 1 <= int(n) <= len(ids)):
        raise RequestError(
            f"the form's retry number {n[:20]!r} is not one of 1 to {len(ids)}",
            code="ui_bad_form",
            hint="reload the run page and press Retry again",
        )
    row = await store.fetchone("SELECT tags FROM runs WHERE id = ?", (info.id,))
    data = await get_blob(store, info.input_hash)
    if data is None:
        raise RequestError(
            f"the input of run {info.id} was erased; it cannot be retried",
            code="ui_retry_input_erased",
            status=409,
        )
    new_id = await submit_run(
        store,
        info.program,
        orjson.loads(data),
        queue=info.queue,
        priority=info.priority,
        run_id=ids[int(n) - 1],
        max_attempts=info.max_attempts,
        owner=p,
        tags=tuple(orjson.loads(row[0])) if row and row[0] else (),
    )
    if page.gw.worker is not None:
        page.gw.worker.notify()
    return _back(page, info.id, notice="retried", run=new_id)


@ui_page("runs")
async def replay(page: Page) -> Response:
    """``POST /ui/runs/{id}/replay``: replay a finished run deterministically; its verdict
    comes back as the notice."""
    await page.form()
    run_id = _run_id(page)
    programs = page.gw.programs
    if programs is None:
        raise RequestError("this server runs no programs", code="replay_unavailable", status=503)
    report = await replay_run(page.store, programs, run_id, page.user.principal)
    d = report.divergence
    if d is None:
        return _back(page, run_id, notice="replay_identical")
    reason = d.reason if d.reason in DIVERGENCE_REASONS else ""
    return _back(page, run_id, notice="replay_diverged", step=d.step_id or "", reason=reason)


ACTION_ROUTES: list[tuple[str, object, list[str]]] = [
    ("/ui/runs/{run_id}/cancel", cancel, ["POST"]),
    ("/ui/runs/{run_id}/retry", retry, ["POST"]),
    ("/ui/runs/{run_id}/replay", replay, ["POST"]),
]
