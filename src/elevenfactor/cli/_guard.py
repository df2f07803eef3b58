"""``guard``: guard policies as files: list and show them, test one on a text or a tool call,
measure one on a labelled corpus, and list the kinds the detectors know.

Policies live in the project's ``guards.dir`` (``policies/`` next to the project file) beside
the shipped ``default``; ``guards:`` in the project file says which applies where. A reference
whose version is not the file on disk is looked up among the versions recorded in the store.

``guard test`` exits 0 when the verdict is allow, monitor or redact, 3 for escalate and 4 for
block (the most severe over the stages tested); every command exits 2 on an error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from elevenfactor.cli._common import (
    config_option,
    err_console,
    handle_errors,
    json_option,
    print_error,
    print_json,
    print_table,
    project_from,
    run,
    settings_from,
    with_store,
)
from elevenfactor.config import Settings
from elevenfactor.errors import ConfigError, RequestError, StoreError
from elevenfactor.governance._guard_eval import (
    check_stages,
    evaluate,
    read_corpus,
    split_findings,
    spread,
)
from elevenfactor.governance._guard_pii import PII_KINDS
from elevenfactor.governance._guard_pipeline import pipeline_for, verdict_record
from elevenfactor.governance._guard_secrets import SECRET_KINDS
from elevenfactor.governance._guard_types import ACTIONS, STAGES, Finding, Stage, Verdict
from elevenfactor.governance._policy_book import PolicyBook, parse_policy_ref, shipped_default
from elevenfactor.governance._policy_info import policy_attachments, policy_info
from elevenfactor.governance._policy_load import load_policy_dir
from elevenfactor.governance._policy_model import Policy
from elevenfactor.store import Store, pending

__all__ = ["EXIT_BLOCK", "EXIT_ESCALATE", "guard"]

T = TypeVar("T")

EXIT_ESCALATE = 3
"""``guard test``'s exit status when the verdict is ``escalate``."""
EXIT_BLOCK = 4
"""``guard test``'s exit status when the verdict is ``block``."""


@click.group(name="guard")
def guard() -> None:
    """Guard policies: list, show, test one on a text, measure one on a corpus."""


def _base(settings: Settings) -> Path:
    source = settings.resolved_config_file()
    return source.resolve().parent if source is not None else Path.cwd()


def _from_store(settings: Settings, fn: Callable[[Store], Awaitable[T]], first: ConfigError) -> T:
    """``fn`` with the store; ``first`` (the error without the store) when the store has no
    policy versions or cannot be opened."""

    async def main(store: Store) -> T:
        if "m018_policies" in await pending(store):
            raise first  # no versions recorded there
        return await fn(store)

    try:
        return run(with_store(settings, main))
    except StoreError:
        raise first from None


def _load(config: Path | None) -> tuple[Settings, PolicyBook]:
    """The project's policies; when a label or reference pins a version that is not the file
    on disk, the book is opened with the versions recorded in the store."""
    settings = settings_from(config)
    cfg, base = project_from(settings).guards, _base(settings)
    source = str(settings.resolved_config_file() or "the project file")
    try:
        return settings, PolicyBook.load(cfg, base, source=source)
    except ConfigError as exc:
        first = exc
    opened = _from_store(settings, lambda s: PolicyBook.open(cfg, base, s, source=source), first)
    return settings, opened


def _resolve(settings: Settings, book: PolicyBook, ref: str) -> Policy:
    """The policy ``ref`` names: on disk, else a version recorded in the store."""
    try:
        return book.get(ref)
    except ConfigError as exc:
        if parse_policy_ref(ref)[1] is None:
            raise
        return _from_store(settings, lambda store: book.resolve(ref, store), exc)


@guard.command("list")
@config_option
@json_option
@handle_errors
def list_cmd(config: Path | None, as_json: bool) -> None:
    """The policies on disk and the shipped default: id, version, labels, where `guards:`
    attaches them, rules per stage. Invalid files are reported after the list (exit 2)."""
    settings = settings_from(config)
    cfg = project_from(settings).guards
    errors: list[ConfigError] = []
    base = _base(settings)
    found = load_policy_dir(base / cfg.dir, root=base, errors=errors)
    found.setdefault("default", shipped_default())
    attached = policy_attachments(cfg)
    infos = [policy_info(found[pid], cfg, attached) for pid in sorted(found)]
    if as_json:
        print_json({"data": infos, "errors": [e.to_dict() for e in errors]})
    else:
        rows = [
            (
                i["id"],
                i["version"],
                ", ".join(i["labels"]),
                ", ".join(i["attached"]),
                "; ".join(
                    f"{stage}: " + ", ".join(f"{r['rule']}→{r['action']}" for r in rules)
                    for stage, rules in i["stages"].items()
                ),
                i["file"],
            )
            for i in infos
        ]
        columns = ("id", "version", "labels", "attached", "rules", "file")
        print_table("Guard policies", columns, rows)
        for exc in errors:
            print_error(exc)
    if errors:
        sys.exit(2)


@guard.command("show")
@click.argument("ref", metavar="REF")
@click.option("--source", "show_source", is_flag=True, help="Print the policy file itself.")
@config_option
@json_option
@handle_errors
def show_cmd(ref: str, show_source: bool, config: Path | None, as_json: bool) -> None:
    """A policy's rules per stage and its breakers. REF: ID, ID@LABEL or ID@VERSION."""
    settings, book = _load(config)
    policy = _resolve(settings, book, ref)
    info = policy_info(policy, book.config)
    spec = policy.spec
    if as_json:
        extra = {"source": policy.source} if show_source else {}
        print_json({**info, "spec": spec.model_dump(mode="json", by_alias=True), **extra})
        return
    if show_source:
        err_console.print(f"# {policy.ref}  {policy.file}", highlight=False, soft_wrap=True)
        click.echo(policy.source, nl=not policy.source.endswith("\n"))
        return
    click.echo(
        f"{policy.ref}  {policy.file}"
        + (f"  labels: {', '.join(info['labels'])}" if info["labels"] else "")
    )
    if spec.description:
        click.echo(spec.description)
    rows = [
        (stage, r["rule"], r["kind"], r["action"], json.dumps(r["options"]) if r["options"] else "")
        for stage, rules in info["stages"].items()
        for r in rules
    ]
    print_table(f"Rules of {policy.ref}", ("stage", "rule", "kind", "action", "options"), rows)
    dumped = spec.model_dump(mode="json", exclude_none=True)
    dumped["policy"] = {k: dumped[k] for k in ("on_error", "keep_original")}
    groups = [(f"breakers.{k}", v) for k, v in dumped["breakers"].items()]
    groups += [(k, dumped[k]) for k in ("escalate", "policy")]
    print_table(
        "Breakers and settings",
        ("what", "settings"),
        [(name, ", ".join(f"{k}={v}" for k, v in values.items())) for name, values in groups],
    )


def _read_input(value: str) -> str:
    if value == "-":
        return sys.stdin.read()
    if not value.startswith("@"):
        return value
    path = Path(value[1:])
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not valid UTF-8"
        raise RequestError(
            f"cannot read {path}: {reason}",
            code="guard_input_invalid",
            param="input",
            hint="--input TEXT, @FILE or - (stdin)",
        ) from None


def _tool_args(args_json: str | None) -> dict[str, Any]:
    try:
        args = json.loads(args_json) if args_json is not None else {}
    except json.JSONDecodeError as exc:
        raise RequestError(
            f"--args is not valid JSON: {exc.msg} at column {exc.colno}",
            code="guard_input_invalid",
            param="args",
        ) from None
    if not isinstance(args, dict):
        raise RequestError("--args must be a JSON object", code="guard_input_invalid", param="args")
    return args


def _stages(stage: str | None, has_text: bool, has_tool: bool) -> list[Stage]:
    if stage == "all":
        return list(STAGES)
    if stage is not None:
        return [cast(Stage, stage)]
    stages: list[Stage] = ["input", "output"] if has_text else []
    return [*stages, "tool_call"] if has_tool else stages


def _where(text: str, findings: Sequence[Finding]) -> str:
    spots = []
    for f in findings[:8]:
        if f.start < 0:
            spots.append("whole text")
        else:
            line = text.count("\n", 0, f.start) + 1
            spots.append(f"{line}:{f.start - (text.rfind(chr(10), 0, f.start) + 1) + 1}")
    return ", ".join(dict.fromkeys(spots)) + (" …" if len(findings) > 8 else "")


def _print_stage(
    policy: Policy, stage: Stage, verdict: Verdict, content: str, *, include_calls: bool
) -> None:
    """The verdict at one stage, then a row per rule: action, kinds, where, why."""
    entries = [
        e for e in pipeline_for([policy]).entries(stage) if include_calls or not e.guard.tool_call
    ]
    by = f" (rule {verdict.rule})" if verdict.rule else "" if entries else " (no rules)"
    click.echo(f"{stage}: {verdict.action}{by}, {verdict.extra.get('elapsed_us', 0)} µs")
    rows = []
    for entry, found in zip(entries, split_findings(entries, verdict), strict=True):
        if found is None:
            rows.append((entry.label, "allow", "", "", "no finding"))
            continue
        kinds = ", ".join(sorted({f.kind for f in found}))
        why = "; ".join(dict.fromkeys(f.detail for f in found if f.detail))
        action = "error" if "guard_error" in kinds else entry.guard.action
        rows.append((entry.label, action, kinds, _where(content, found), why))
    if rows:
        print_table(f"{policy.ref} at {stage}", ("rule", "action", "kinds", "where", "why"), rows)
    if verdict.action == "redact" and verdict.content is not None:
        click.echo(f"redacted {stage}:\n{verdict.content}")


@guard.command("test")
@click.argument("ref", metavar="REF")
@click.option(
    "--input", "input_", metavar="TEXT|@FILE|-", help="The text: as is, @FILE, or - (stdin)."
)
@click.option(
    "--stage",
    type=click.Choice([*STAGES, "all"]),
    default=None,
    help="The stage to check (default: input and output; tool_call with --tool).",
)
@click.option("--tool", metavar="NAME", help="A tool call to check at tool_call (with --args).")
@click.option("--args", "args_json", metavar="JSON", help="The tool call's arguments (object).")
@config_option
@json_option
@handle_errors
def test_cmd(
    ref: str,
    input_: str | None,
    stage: str | None,
    tool: str | None,
    args_json: str | None,
    config: Path | None,
    as_json: bool,
) -> None:
    """Run a policy on a text (or a tool call) and show which rules fire, where and why.

    Exit status: 0 allow, monitor or redact; 3 escalate; 4 block. Without --tool, tool_call
    runs the text rules on the input. Relevance rules need a model and report a guard error."""
    if args_json is not None and tool is None:
        raise RequestError("--args needs --tool", code="guard_input_invalid", param="args")
    args = _tool_args(args_json)
    text = _read_input(input_) if input_ is not None else None
    stages = _stages(stage, text is not None, tool is not None)
    if text is None and (not stages or any(s != "tool_call" or tool is None for s in stages)):
        raise RequestError(
            "give the text to check: --input TEXT, @FILE or - (stdin)",
            code="guard_input_invalid",
            param="input",
        )
    settings, book = _load(config)
    policy = _resolve(settings, book, ref)
    results = run(check_stages(policy, stages, text, tool, args))
    worst = max((v.action for _, v, _ in results), key=ACTIONS.index, default="allow")
    if as_json:
        records = [{**verdict_record(st, v), "content": v.content} for st, v, _ in results]
        print_json({"policy": policy.ref, "action": worst, "verdicts": records})
    for st, verdict, content in [] if as_json else results:
        _print_stage(policy, st, verdict, content, include_calls=tool is not None)
    sys.exit({"block": EXIT_BLOCK, "escalate": EXIT_ESCALATE}.get(worst, 0))


def _rate(n: int, d: int, rate: float | None) -> str:
    return f"{n}/{d} {rate:.1%}" if rate is not None else "-"


@guard.command("eval")
@click.argument("ref", metavar="REF")
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option(
    "--stage",
    type=click.Choice(STAGES),
    default="input",
    show_default=True,
    help="The stage rows without `stage` are checked at.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Check N rows evenly spread.")
@config_option
@json_option
@handle_errors
def eval_cmd(
    ref: str, corpus: Path, stage: str, limit: int | None, config: Path | None, as_json: bool
) -> None:
    """Detection and false-positive rates of a policy's rules on a labelled corpus.

    CORPUS: a JSONL file or a directory of them; each line {"text", "label"} (label `benign`
    is a negative, any other a positive), optionally "stage" and "expect": [rule or kind, …]
    (a row with `expect` and no label is a positive when the list is not empty)."""
    settings, book = _load(config)
    policy = _resolve(settings, book, ref)
    samples = spread(read_corpus(corpus), limit)
    columns = (TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, disable=as_json, transient=True) as progress:
        task = progress.add_task("rows", total=len(samples))
        report = evaluate(policy, samples, cast(Stage, stage), lambda: progress.advance(task))
    report["corpus"] = str(corpus)
    if as_json:
        print_json(report)
        return
    rows = [
        (
            r["rule"],
            r["action"],
            _rate(r["tp"], r["tp"] + r["fn"], r["detection_rate"]),
            _rate(r["fp"], r["fp"] + r["tn"], r["false_positive_rate"]),
            "-" if r["precision"] is None else f"{r['precision']:.3f}",
            f"{r['kinds_found']}/{r['kinds_expected']}" if r["kinds_expected"] else "",
        )
        for r in [*report["rules"], report["policy_total"]]
    ]
    title = f"{policy.ref} on {corpus} ({report['rows']} rows, {report['positives']} positive)"
    print_table(
        title, ("rule", "action", "detected", "false positives", "precision", "kinds"), rows
    )
    t = report["check_us"]
    verdicts = ", ".join(f"{a} {n}" for a, n in sorted(report["verdicts"].items()))
    click.echo(
        f"check time: p50 {t['p50'] or 0:.0f} µs, p99 {t['p99'] or 0:.0f} µs; verdicts: {verdicts}"
    )


@guard.command("kinds")
@json_option
def kinds_cmd(as_json: bool) -> None:
    """The PII and secret kinds the detectors know (for a rule's `kinds:`)."""
    if as_json:
        print_json({"pii": list(PII_KINDS), "secrets": list(SECRET_KINDS)})
        return
    rows = [("pii", k) for k in PII_KINDS] + [("secrets", k) for k in SECRET_KINDS]
    print_table("Detector kinds", ("rule", "kind"), rows)
