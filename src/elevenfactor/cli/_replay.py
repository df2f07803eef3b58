"""``elevenfactor replay``: deterministic and what-if replay of recorded runs (thin over
``elevenfactor.runtime._replay*``).

``replay RUN`` re-executes RUN from its journal with no model or tool call and checks that
every step and the result come out byte for byte; ``--model``, ``--prompt``, ``--policy`` or
``--release`` (exactly one) runs it again as a new run with that change, tools pinned to the
recording (``--live-tools``: the tools run for real), executed by a worker of this
process, and reports how it diverged. ``--runs QUERY`` does either for many runs.

Exit codes: 0 — every deterministic replay was identical, or the what-if report was written;
1 — a deterministic replay diverged (a defect: the program no longer reproduces its run);
2 — a usage, configuration or other error (``error[code]: message`` on stderr).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from elevenfactor.cli._admin import as_option
from elevenfactor.cli._common import (
    config_option,
    err_console,
    handle_errors,
    json_option,
    print_json,
    print_table,
    project_from,
    run,
    settings_from,
    with_store,
)
from elevenfactor.config import ProjectConfig, Settings
from elevenfactor.errors import RequestError
from elevenfactor.governance import principal_for_user
from elevenfactor.runtime._replay_batch import BatchOutcome, replay_many, what_if_many
from elevenfactor.runtime._replay_html import html_replay
from elevenfactor.runtime._replay_runs import select_runs
from elevenfactor.runtime._replay_whatif import WhatIf
from elevenfactor.runtime._service import running
from elevenfactor.store import Store, require_migrated

__all__ = ["replay"]


async def _replay(
    settings: Settings,
    project: ProjectConfig,
    store: Store,
    as_user: str,
    run_id: str | None,
    query: str | None,
    options: WhatIf,
    concurrency: int,
    show: bool,
) -> BatchOutcome:
    await require_migrated(store)
    principal = await principal_for_user(store, as_user)
    ids = [run_id] if run_id is not None else await select_runs(store, principal, query or "")
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=not show or len(ids) < 2,
    ) as bar_:
        task = bar_.add_task("replay", total=len(ids))

        def progress(done: int, total: int) -> None:
            bar_.update(task, completed=done, total=total)

        # the runtime a worker runs (meter, limiter, recorder): the programs issue the steps
        # they issued when the runs were recorded; a replay makes no call through them
        async with running(settings, project, store) as rt:
            if not options.is_what_if:
                return await replay_many(store, rt.programs, principal, ids, progress)
            recorder = rt.deps.recorder if rt.deps is not None else None
            return await what_if_many(
                store, rt.programs, principal, ids, options, concurrency=concurrency,
                progress=progress, flush=recorder.flush if recorder is not None else None,
            )  # fmt: skip


def _print(outcome: BatchOutcome, single: bool) -> None:
    if outcome.batch_id is None:
        print_table(
            "deterministic replay",
            ["run", "program", "status", "steps", "identical", "first divergence"],
            [
                (
                    r.run_id, r.program, r.status, f"{r.replayed}/{r.steps}",
                    "yes" if r.identical else "NO",
                    "" if r.divergence is None
                    else f"{r.divergence.step_id or ''} {r.divergence.reason}: "
                    f"{r.divergence.message}",
                )
                for r in outcome.deterministic
            ],
        )  # fmt: skip
        if single and outcome.deterministic and outcome.deterministic[0].diff:
            click.echo(outcome.deterministic[0].diff)
    else:
        print_table(
            "what-if replay",
            ["run", "what-if run", "status", "diverged", "first differing step", "cost delta",
             "latency delta ms"],
            [
                (
                    r.run_id, r.replay_run_id, f"{r.status} -> {r.replay_status}",
                    "yes" if r.diverged else "no",
                    "" if r.divergence is None
                    else f"{r.divergence.step_id} {r.divergence.reason}: {r.divergence.message}",
                    f"{r.cost_delta:+.6f}", f"{r.latency_delta_ms:+.1f}",
                )
                for r in outcome.what_if
            ],
        )  # fmt: skip
        if single and outcome.what_if and outcome.what_if[0].output_diff:
            click.echo(outcome.what_if[0].output_diff)
    summary = outcome.summary()
    shown = {k: v for k, v in summary.items() if k not in ("worst", "skipped", "object")}
    err_console.print(", ".join(f"{k} {v}" for k, v in shown.items()), highlight=False)
    for s in outcome.skipped:
        err_console.print(f"skipped {s['run_id']}: {s['message']}", highlight=False, markup=False)


@click.command("replay")
@click.argument("run_id", required=False)
@click.option("--runs", "query", default=None, metavar="QUERY",
              help="Replay the runs selected: program=NAME status=succeeded|failed|cancelled|"
              "finished since=7d until=... tag=TAG limit=100.")  # fmt: skip
@click.option("--model", default=None, help="What-if: a route or deployment replacing the agent's.")
@click.option("--prompt", default=None, help="What-if: another version, NAME@VERSION or @LABEL.")
@click.option("--policy", default=None, help="What-if: another guard policy, NAME@VERSION.")
@click.option("--release", default=None, help="What-if: run under this release's manifest.")
@click.option("--live-tools", is_flag=True, help="What-if: run the tools for real (not pinned).")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
              help="What-if runs executed at once.")  # fmt: skip
@click.option("--html", "html_out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write a self-contained HTML report here.")  # fmt: skip
@as_option
@config_option
@json_option
@handle_errors
def replay(
    run_id: str | None,
    query: str | None,
    model: str | None,
    prompt: str | None,
    policy: str | None,
    release: str | None,
    live_tools: bool,
    concurrency: int,
    html_out: Path | None,
    as_user: str,
    config: Path | None,
    as_json: bool,
) -> None:
    """Replay RUN_ID (or the runs --runs selects): deterministically, or with one change."""
    if (run_id is None) == (query is None):
        raise RequestError("give a RUN_ID or --runs QUERY (one of them)", param="run")
    options = WhatIf(model, prompt, policy, release, live_tools)
    if options.is_what_if:
        options.check()
    settings = settings_from(config)
    project = project_from(settings)
    show = not as_json and err_console.is_terminal
    outcome = run(
        with_store(
            settings,
            lambda s: _replay(
                settings, project, s, as_user, run_id, query, options, concurrency, show
            ),
        )
    )
    reports: list[dict[str, Any]] = [
        r.to_dict() for r in (outcome.deterministic or outcome.what_if)
    ]
    single = run_id is not None
    if single and outcome.skipped:
        s = outcome.skipped[0]
        raise RequestError(s["message"], code=s["code"])
    if html_out is not None:
        page = (
            html_replay(reports[0])
            if single and reports
            else html_replay(outcome.summary(), reports)
        )
        html_out.write_text(page, encoding="utf-8")
    if as_json:
        print_json(reports[0] if single and reports else {**outcome.summary(), "data": reports})
    else:
        _print(outcome, single)
    if any(not r.identical for r in outcome.deterministic):
        sys.exit(1)
