"""``prompts``: prompts as files: list, show, render and diff their versions.

Prompt files live in the project's ``prompts.dir`` (``prompts/`` next to the project file);
labels come from ``prompts.labels``. A reference whose version is not the file on disk now is
looked up among the versions recorded in the store (``DATABASE_URL``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson
from rich.markup import escape
from rich.text import Text

from elevenfactor.cli._common import (
    config_option,
    console,
    err_console,
    handle_errors,
    json_option,
    print_error,
    print_json,
    print_table,
    project_from,
    run,
    settings_from,
    when,
    with_store,
)
from elevenfactor.config import Settings
from elevenfactor.context._prompt_inputs import inputs_from_pairs
from elevenfactor.context._prompts import (
    Prompt,
    PromptRegistry,
    PromptVersion,
    load_prompts,
    parse_ref,
    prompt_diff,
)
from elevenfactor.errors import PromptError, PromptInputError, PromptNotFound
from elevenfactor.store import Store, pending

__all__ = ["prompts"]


@click.group(name="prompts")
def prompts() -> None:
    """Prompts as files: list, show, render and diff their versions."""


def _load(
    config: Path | None, errors: list[PromptError] | None = None
) -> tuple[Settings, PromptRegistry]:
    settings = settings_from(config)
    project = project_from(settings)
    source = settings.resolved_config_file()
    base = source.resolve().parent if source is not None else Path.cwd()
    registry = load_prompts(
        base / project.prompts.dir, project.prompts.labels, root=base, errors=errors
    )
    return settings, registry


def _resolve(settings: Settings, registry: PromptRegistry, *refs: str) -> list[Prompt]:
    """The prompts ``refs`` name: from disk, else from the versions recorded in the store."""
    try:
        return [registry.get(ref) for ref in refs]
    except PromptNotFound as exc:
        if not any(parse_ref(ref)[1] for ref in refs):
            raise
        first = exc

    async def main(store: Store) -> list[Prompt]:
        if "m012_prompts" in await pending(store):
            raise first  # no versions recorded there: what is missing is the version
        return [await registry.resolve(ref, store) for ref in refs]

    return run(with_store(settings, main))


def _info(registry: PromptRegistry, prompt: Prompt) -> dict[str, Any]:
    return {
        "id": prompt.id,
        "version": prompt.version,
        "hash": prompt.full_hash,
        "ref": prompt.ref,
        "labels": list(registry.labels_of(prompt.id, prompt.full_hash)),
        "description": prompt.description,
        "file": prompt.file,
        "origin": prompt.origin,
        "model": prompt.params(),
        "inputs": prompt.inputs,
    }


@prompts.command("list")
@config_option
@json_option
@handle_errors
def list_cmd(config: Path | None, as_json: bool) -> None:
    """The prompts on disk: id, version, the labels pinning it, description, file.

    Invalid files are reported after the list (exit status 2)."""
    errors: list[PromptError] = []
    _, registry = _load(config, errors)
    found = registry.list()
    if as_json:
        data = [_info(registry, p) for p in found]
        print_json({"data": data, "errors": [e.to_dict() for e in errors]})
    else:
        rows = [
            (
                p.id,
                p.version,
                ", ".join(registry.labels_of(p.id, p.full_hash)),
                p.description,
                p.file,
            )
            for p in found
        ]
        print_table("Prompts", ("id", "version", "labels", "description", "file"), rows)
        for exc in errors:
            print_error(exc)
    if errors:
        sys.exit(2)


@prompts.command("versions")
@click.argument("prompt_id", metavar="ID")
@config_option
@json_option
@handle_errors
def versions_cmd(prompt_id: str, config: Path | None, as_json: bool) -> None:
    """Every version of a prompt: on disk and recorded in the store, with its labels and when
    it was first used."""
    settings, registry = _load(config)

    async def main(store: Store) -> list[PromptVersion]:
        if "m012_prompts" in await pending(store):
            return await registry.versions(prompt_id)
        return await registry.versions(prompt_id, store)

    found = run(with_store(settings, main))
    pinned = {label for v in found for label in v.labels}
    dangling = {
        label: version
        for label, version in registry.labels.get(prompt_id, {}).items()
        if label not in pinned
    }
    if as_json:
        data = [
            {
                "version": v.version,
                "hash": v.full_hash,
                "labels": list(v.labels),
                "on_disk": v.on_disk,
                "first_used_at": v.first_used_at,
                "file": v.file,
            }
            for v in found
        ]
        print_json({"id": prompt_id, "data": data, "unresolved_labels": dangling})
        return
    rows = [
        (
            v.version,
            ", ".join(v.labels),
            "yes" if v.on_disk else "",
            when(v.first_used_at) or "never",
            v.file,
        )
        for v in found
    ]
    print_table(
        f"Versions of {prompt_id}", ("version", "labels", "on disk", "first used", "file"), rows
    )
    for label, version in sorted(dangling.items()):
        err_console.print(
            f"[yellow]warning[/]: label {escape(label)!r} pins {version}, which is neither on "
            "disk nor recorded in the store",
            highlight=False,
            soft_wrap=True,
        )


@prompts.command("show")
@click.argument("ref", metavar="REF")
@config_option
@json_option
@handle_errors
def show_cmd(ref: str, config: Path | None, as_json: bool) -> None:
    """A prompt's file (front matter and body). REF: ID, ID@LABEL or ID@VERSION."""
    settings, registry = _load(config)
    (prompt,) = _resolve(settings, registry, ref)
    if as_json:
        print_json({**_info(registry, prompt), "source": prompt.source, "body": prompt.body})
        return
    labels = ", ".join(registry.labels_of(prompt.id, prompt.full_hash))
    where = " (recorded in the store)" if prompt.origin == "store" else ""
    err_console.print(
        f"# {prompt.ref}  {escape(prompt.file)}{where}"
        + (f"  labels: {escape(labels)}" if labels else ""),
        highlight=False,
        soft_wrap=True,
    )
    click.echo(prompt.source, nl=not prompt.source.endswith("\n"))


def _inputs(prompt: Prompt, pairs: tuple[str, ...], text: str | None, file: Path | None) -> Any:
    if text is not None and file is not None:
        raise PromptInputError("give --inputs or --inputs-file, not both", param="inputs")
    values: Any = {}
    if file is not None:
        where = str(file)
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PromptInputError(f"cannot read {where}: {exc}", param="inputs") from None
    else:
        where = "--inputs"
    if text is not None:
        try:
            values = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise PromptInputError(f"{where} is not valid JSON: {exc}", param="inputs") from None
        if not isinstance(values, dict):
            raise PromptInputError(f"{where} must hold a JSON object", param="inputs")
    return {**values, **inputs_from_pairs(prompt.inputs, pairs)}


@prompts.command("render")
@click.argument("ref", metavar="REF")
@click.option("--input", "pairs", multiple=True, metavar="KEY=VALUE", help="One input (repeat).")
@click.option("--inputs", "inputs_json", metavar="JSON", help="The inputs as a JSON object.")
@click.option(
    "--inputs-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="A file holding the inputs as a JSON object.",
)
@config_option
@json_option
@handle_errors
def render_cmd(
    ref: str,
    pairs: tuple[str, ...],
    inputs_json: str | None,
    inputs_file: Path | None,
    config: Path | None,
    as_json: bool,
) -> None:
    """Render a prompt with inputs: the text on stdout, its model parameters on stderr.

    --input values are text for string inputs and JSON otherwise (count=3, on=true);
    --input is applied over --inputs or --inputs-file."""
    settings, registry = _load(config)
    (prompt,) = _resolve(settings, registry, ref)
    text = prompt.render(_inputs(prompt, pairs, inputs_json, inputs_file))
    if as_json:
        print_json(
            {"prompt": prompt.ref, "file": prompt.file, "model": prompt.params(), "text": text}
        )
        return
    click.echo(text)
    params = "  ".join(f"{k}={v}" for k, v in prompt.params().items())
    err_console.print(
        f"# {prompt.ref}  {escape(params or '(no model parameters)')}",
        highlight=False,
        soft_wrap=True,
    )


_STYLES = (("+++", "bold"), ("---", "bold"), ("@@", "cyan"), ("+", "green"), ("-", "red"))


@prompts.command("diff")
@click.argument("ref_a", metavar="REF_A")
@click.argument("ref_b", metavar="REF_B")
@config_option
@handle_errors
def diff_cmd(ref_a: str, ref_b: str, config: Path | None) -> None:
    """A unified diff of two versions of prompts (coloured on a terminal).

    Example: elevenfactor prompts diff support@production support"""
    settings, registry = _load(config)
    a, b = _resolve(settings, registry, ref_a, ref_b)
    lines = prompt_diff(a, b)
    if not lines:
        err_console.print(f"{a.ref} and {b.ref} are the same", highlight=False, soft_wrap=True)
        return
    for line in lines:
        if console.is_terminal:
            style = next((s for prefix, s in _STYLES if line.startswith(prefix)), "")
            console.print(Text(line, style=style), highlight=False, soft_wrap=True)
        else:
            click.echo(line)
