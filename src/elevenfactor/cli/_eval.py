"""``elevenfactor eval``: run eval suites as durable runs and gate CI on them; list, show and
chart stored results (thin over ``elevenfactor.evals``).

Exit codes of ``eval run``: 0 — every case reached its pass-rate threshold and, with
``--baseline``, no case regressed; 1 — the gate failed (a threshold missed, a regression, or a
budget stopped the eval); 2 — a usage, configuration or other error (the project's
convention: ``error[code]: message`` on stderr).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from elevenfactor.cli._admin import as_option, run_as
from elevenfactor.cli._common import (
    bar,
    config_option,
    err_console,
    handle_errors,
    json_option,
    print_json,
    print_table,
    project_from,
    run,
    settings_from,
    when,
    with_store,
)
from elevenfactor.config import ProjectConfig, Settings
from elevenfactor.errors import ConfigError, RequestError
from elevenfactor.evals._html import html_report
from elevenfactor.evals._load import load_suite
from elevenfactor.evals._program_input import EvalInput, eval_input
from elevenfactor.evals._report import Drift, case_rows, drift, totals
from elevenfactor.evals._results import Comparison, SuiteResult, compare
from elevenfactor.evals._runner import EvalOutcome, execute_eval, precheck, start_eval
from elevenfactor.evals._store import EvalRecord, get_result, list_results, suite_history
from elevenfactor.evals._suite import Suite
from elevenfactor.governance import Principal, principal_for_user
from elevenfactor.store import Store, require_migrated

__all__ = ["eval_group"]


@click.group("eval")
def eval_group() -> None:
    """Run eval suites (evals/*.yaml) as durable runs; list, show and chart their results."""


def _project_dir(settings: Settings) -> Path:
    source = settings.resolved_config_file()
    return source.resolve().parent if source is not None else Path.cwd()


def _suite(settings: Settings, project: ProjectConfig, given: str) -> Suite:
    base = _project_dir(settings)
    path = Path(given)
    if not path.is_file():
        for ext in (".yaml", ".yml"):
            candidate = base / project.evals.dir / f"{given}{ext}"
            if candidate.is_file():
                path = candidate
                break
        else:
            raise ConfigError(
                f"no suite file {given!r}",
                expected=f"a path, or a suite id in {base / project.evals.dir}",
            )
    return load_suite(path, root=base)


def _baseline(path: Path) -> SuiteResult:
    try:
        data = orjson.loads(path.read_bytes())
        return SuiteResult.from_dict(data.get("result", data))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RequestError(
            f"--baseline {path}: not a saved eval result ({type(exc).__name__}: {exc})",
            param="baseline",
            hint="save one with `elevenfactor eval run SUITE --save-baseline FILE`",
        ) from None


def _history(records: list[EvalRecord]) -> list[tuple[float, float]]:
    return [(r.finished_at, r.pass_rate) for r in records if r.status != "error"]


def _money(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _print_result(result: SuiteResult, status: str) -> None:
    rows = case_rows(result)
    print_table(
        f"eval {result.suite_id} ({result.suite_version})",
        ["case", "passed", "pass rate", "failed scorers", "cost $", "latency ms"],
        [
            (
                r.case_id,
                f"{r.passes}/{r.runs}",
                f"{r.pass_rate:.0%} (>= {r.threshold:.0%})",
                "; ".join(r.failures)[:300],
                _money(r.cost_usd),
                "" if r.latency_ms is None else f"{r.latency_ms:.0f}",
            )
            for r in rows
        ],
    )
    t = totals(result)
    err_console.print(
        f"{status}: {t['cases_passed']}/{t['cases']} cases passed ({t['pass_rate']:.0%}),"
        f" {t['runs']} runs, cost ${t['cost_usd'] or 0:.6f}",
        highlight=False,
    )


def _print_comparison(comparison: Comparison, drifts: list[Drift]) -> None:
    for r in comparison.regressions:
        err_console.print(
            f"regression: {r.case_id} {r.kind.replace('_', ' ')} ({r.before:.0%} -> {r.after:.0%})",
            highlight=False,
        )
    for d in drifts:
        err_console.print(
            f"note: {d.case_id} {d.metric} up {d.before:.6g} -> {d.after:.6g} (not gated)",
            highlight=False,
        )
    if comparison.ok:
        err_console.print("no regression against the baseline", highlight=False)


async def _release_id(settings: Settings, store: Store) -> str | None:
    """The id of the release the eval runs under (``ReleaseNotFound`` for an unknown
    ``--release``), or None."""
    from elevenfactor.runtime._release import applicable_release

    await require_migrated(store)
    found = await applicable_release(store, settings)
    return found.id if found is not None else None


async def _run_eval(
    settings: Settings,
    project: ProjectConfig,
    store: Store,
    as_user: str,
    payload: dict[str, Any],
    resume: str,
    show_progress: bool,
) -> tuple[EvalOutcome, list[tuple[float, float]]]:
    await require_migrated(store)
    principal = await principal_for_user(store, as_user)
    await precheck(settings, project, store, payload)
    run_id, resumed = await start_eval(store, principal, payload, resume)
    total = len(EvalInput.parse(payload).items())
    if resumed:
        err_console.print(f"resuming eval run {run_id}", highlight=False)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=not show_progress,
        transient=False,
    ) as bar_:
        task = bar_.add_task(f"eval {payload['suite']['id']}", total=total)
        outcome = await execute_eval(
            settings,
            project,
            store,
            principal,
            run_id,
            resumed=resumed,
            progress=lambda done: bar_.update(task, completed=min(done, total)),
        )
    records = await suite_history(store, principal, str(payload["suite"]["id"]))
    return outcome, _history(records)


@eval_group.command("run")
@click.argument("suite")
@click.option("--model", default=None, help="A route or deployment replacing the target's.")
@click.option("--prompt", default=None, help="Pin a prompt version: NAME@VERSION or NAME@LABEL.")
@click.option(
    "--release",
    default=None,
    help="The release to evaluate (id, id prefix or name): the files must be its; recorded with"
    " the result and the runs. Default: the release that applies (ELEVENFACTOR_RELEASE, else the"
    " active one of ELEVENFACTOR_ENVIRONMENT), if any.",
)
@click.option("--tag", "tags", multiple=True, help="Only cases carrying this tag (repeatable).")
@click.option("--repeats", type=int, default=None, help="Runs per case (overrides the suite).")
@click.option("--concurrency", type=int, default=4, show_default=True, help="Cases at once.")
@click.option(
    "--baseline",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="A saved result (--save-baseline) to compare with: regressions fail the gate.",
)
@click.option(
    "--save-baseline",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write this result as JSON, to compare later runs with.",
)
@click.option(
    "--html",
    "html_out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write a self-contained HTML report here.",
)
@click.option(
    "--resume",
    default="auto",
    show_default=True,
    help="auto: continue an unfinished eval run of the same arguments; new; or a run id.",
)
@click.option("--tolerance", type=float, default=0.0, show_default=True, help="Pass-rate drop "
              "allowed against the baseline before it is a regression.")  # fmt: skip
@as_option
@config_option
@json_option
@handle_errors
def eval_run(
    suite: str,
    model: str | None,
    prompt: str | None,
    release: str | None,
    tags: tuple[str, ...],
    repeats: int | None,
    concurrency: int,
    baseline: Path | None,
    save_baseline: Path | None,
    html_out: Path | None,
    resume: str,
    tolerance: float,
    as_user: str,
    config: Path | None,
    as_json: bool,
) -> None:
    """Run SUITE (a suite id in evals/ or a file) as a durable eval run in this process, print
    a table of its cases and exit 0 (passed), 1 (gate failed) or 2 (error)."""
    settings = settings_from(config, release=release)  # --release pins this process
    project = project_from(settings)
    loaded = _suite(settings, project, suite)
    before = _baseline(baseline) if baseline is not None else None
    release_id = run(with_store(settings, lambda s: _release_id(settings, s)))
    payload = eval_input(
        loaded, model=model, prompt=prompt, release=release_id, tags=tags, repeats=repeats,
        concurrency=concurrency,
    )  # fmt: skip
    show = not as_json and err_console.is_terminal
    outcome, history = run(
        with_store(
            settings,
            lambda s: _run_eval(settings, project, s, as_user, payload, resume, show),
        )
    )
    result = outcome.result
    error = outcome.error
    if result is None:  # the run failed before storing a result: a configuration error
        code = error.get("code") if error else "eval_failed"
        message = error.get("message") if error else outcome.run.status
        err_console.print(f"[bold red]error\\[{code}][/]: {escape(str(message))}", highlight=False)
        sys.exit(1 if code == "budget_exceeded" else 2)
    status = outcome.record.status if outcome.record is not None else "failed"
    comparison = compare(before, result, tolerance=tolerance) if before is not None else None
    drifts = drift(before, result) if before is not None else []
    gate_ok = status == "passed" and (comparison is None or comparison.ok)
    if save_baseline is not None:
        save_baseline.write_bytes(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2))
    if html_out is not None:
        page = html_report(
            result, status=status, comparison=comparison, drifts=drifts, history=history
        )
        html_out.write_text(page, encoding="utf-8")
    if as_json:
        print_json(
            {
                "run_id": outcome.run.id,
                "resumed": outcome.resumed,
                "status": status,
                "gate": "passed" if gate_ok else "failed",
                "error": error,
                "record": outcome.record.to_dict() if outcome.record is not None else None,
                "cases": [r.to_dict() for r in case_rows(result)],
                "comparison": comparison.to_dict() if comparison is not None else None,
                "drift": [d.to_dict() for d in drifts],
            }
        )
    else:
        _print_result(result, status)
        if error is not None:
            err_console.print(
                f"error[{error.get('code')}]: {error.get('message')}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        if comparison is not None:
            _print_comparison(comparison, drifts)
        click.echo(f"eval run {outcome.run.id}: gate {'passed' if gate_ok else 'failed'}")
    if not gate_ok:
        sys.exit(1)


@eval_group.command("list")
@click.option("--suite", default=None, help="Only results of this suite.")
@click.option("--limit", type=int, default=50, show_default=True)
@as_option
@config_option
@json_option
@handle_errors
def eval_list(
    suite: str | None, limit: int, as_user: str, config: Path | None, as_json: bool
) -> None:
    """List the stored eval results --as may see, newest first."""
    found = run_as(config, as_user, lambda s, p: list_results(s, p, suite=suite, limit=limit))
    if as_json:
        print_json([r.to_dict() for r in found])
        return
    print_table(
        "eval results",
        ["id", "suite", "version", "status", "pass rate", "cases", "cost $", "prompt", "model",
         "release", "finished"],
        [
            (r.id, r.suite, r.suite_version, r.status, f"{r.pass_rate:.0%}",
             f"{r.cases_passed}/{r.cases}", _money(r.cost_usd), r.prompt, r.model, r.release,
             when(r.finished_at))
            for r in found
        ],
    )  # fmt: skip


@eval_group.command("show")
@click.argument("result_id")
@click.option("--html", "html_out", type=click.Path(path_type=Path, dir_okay=False))
@as_option
@config_option
@json_option
@handle_errors
def eval_show(
    result_id: str, html_out: Path | None, as_user: str, config: Path | None, as_json: bool
) -> None:
    """Show one stored eval result (its eval run's id): its cases, or --json, or --html."""

    async def main(store: Store, p: Principal) -> tuple[EvalRecord, list[EvalRecord]]:
        record = await get_result(store, p, result_id)
        return record, await suite_history(store, p, record.suite)

    record, history = run_as(config, as_user, main)
    assert record.result is not None
    if html_out is not None:
        page = html_report(record.result, status=record.status, history=_history(history))
        html_out.write_text(page, encoding="utf-8")
    if as_json:
        print_json(record.to_dict())
        return
    click.echo(
        f"eval {record.id}: {record.suite} {record.suite_version} {record.status}"
        + (f" ({record.error})" if record.error else "")
    )
    _print_result(record.result, record.status)


@eval_group.command("history")
@click.argument("suite")
@click.option("--limit", type=int, default=30, show_default=True)
@as_option
@config_option
@json_option
@handle_errors
def eval_history(suite: str, limit: int, as_user: str, config: Path | None, as_json: bool) -> None:
    """The pass rate and cost of SUITE's stored results over time, oldest first."""
    found = run_as(config, as_user, lambda s, p: suite_history(s, p, suite, limit=limit))
    if as_json:
        print_json([r.to_dict() for r in found])
        return
    print_table(
        f"history of {suite}",
        ["finished", "pass rate", "", "cases", "cost $", "version", "prompt", "release", "id"],
        [
            (when(r.finished_at), f"{r.pass_rate:.0%}", bar(r.pass_rate),
             f"{r.cases_passed}/{r.cases}", _money(r.cost_usd), r.suite_version, r.prompt,
             r.release, r.id)
            for r in found
        ],
    )  # fmt: skip
