"""``runs feedback``: give feedback on a run, or list its feedback (thin over
``elevenfactor.runtime._feedback``)."""

from __future__ import annotations

from pathlib import Path

import click

from elevenfactor.cli._admin import as_option, run_as
from elevenfactor.cli._common import (
    config_option,
    handle_errors,
    json_option,
    print_json,
    print_table,
    when,
)
from elevenfactor.errors import RequestError
from elevenfactor.runtime._feedback import Feedback, FeedbackPage, add_feedback, list_feedback

__all__ = ["feedback"]


@click.command("feedback")
@click.argument("run_id")
@click.option("--score", type=float, default=None, help="A number (no imposed scale: 0-1, 1/-1).")
@click.option("--label", default=None, help="A name such as `correct` or `hallucination`.")
@click.option("--comment", default=None, help="Free text (at most 4000 characters).")
@click.option("--list", "listing", is_flag=True, help="List the run's feedback instead.")
@click.option("--limit", type=int, default=100, show_default=True, help="With --list.")
@click.option("--before", default=None, help="With --list: older than this feedback id.")
@as_option
@config_option
@json_option
@handle_errors
def feedback(
    run_id: str,
    score: float | None,
    label: str | None,
    comment: str | None,
    listing: bool,
    limit: int,
    before: str | None,
    as_user: str,
    config: Path | None,
    as_json: bool,
) -> None:
    """Give feedback on RUN_ID as --as (a score, a label and/or a comment), or --list it."""
    if listing:
        if score is not None or label is not None or comment is not None:
            raise RequestError(
                "--list takes no --score, --label or --comment", code="invalid_value", param="list"
            )
        page: FeedbackPage = run_as(
            config,
            as_user,
            lambda s, p: list_feedback(s, p, run_id, limit=limit, before=before),
        )
        if as_json:
            print_json({"data": [f.to_dict() for f in page.data], "has_more": page.has_more})
            return
        print_table(
            f"feedback on {run_id}",
            ["id", "score", "label", "comment", "source", "user", "at"],
            [
                (f.id, f.score, f.label, f.comment, f.source, f.user_id, when(f.created_at))
                for f in page.data
            ],
        )
        if page.has_more:
            click.echo(f"more: --before {page.data[-1].id}")
        return
    given: Feedback = run_as(
        config,
        as_user,
        lambda s, p: add_feedback(s, p, run_id, score=score, label=label, comment=comment),
    )
    if as_json:
        print_json(given.to_dict())
        return
    click.echo(f"feedback {given.id} on run {run_id} recorded")
