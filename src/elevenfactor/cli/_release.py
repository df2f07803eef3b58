"""``elevenfactor release``: create immutable releases, list, show and diff them, switch an
environment's active release and roll it back (thin over ``elevenfactor.runtime._release``).

Every command acts as ``--as`` (default ``local``) and needs the admin role; create, activate
and rollback are ledger entries. ``--env`` defaults to ``ELEVENFACTOR_ENVIRONMENT``
(``default``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from elevenfactor.cli._admin import as_option
from elevenfactor.cli._common import (
    config_option,
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
from elevenfactor.config import Settings
from elevenfactor.governance import Principal, principal_for_user
from elevenfactor.runtime._release import (
    Release,
    activate,
    active_release,
    create_release,
    diff,
    get_release,
    history,
    list_releases,
    rollback,
)
from elevenfactor.runtime._release_manifest import build_manifest
from elevenfactor.runtime._release_view import keep_versions
from elevenfactor.store import Store, require_migrated

__all__ = ["release"]

T = TypeVar("T")

env_option = click.option(
    "--env",
    "env",
    default=None,
    metavar="ENV",
    help="The environment (default: $ELEVENFACTOR_ENVIRONMENT, else `default`).",
)


def _admin(
    config: Path | None, as_user: str, fn: Callable[[Settings, Store, Principal], Awaitable[T]]
) -> T:
    settings = settings_from(config)

    async def main(store: Store) -> T:
        await require_migrated(store)
        principal = await principal_for_user(store, as_user)
        principal.require_admin("managing releases")
        return await fn(settings, store, principal)

    return run(with_store(settings, main))


@click.group("release")
def release() -> None:
    """Immutable releases: code version, project config (no secrets), prompt, policy, price
    and index versions, agent specs — created, diffed, activated and rolled back per
    environment."""


@release.command("create")
@click.option("--name", default=None, help="A unique name for the release (e.g. v42).")
@as_option
@config_option
@json_option
@handle_errors
def create_cmd(name: str | None, as_user: str, config: Path | None, as_json: bool) -> None:
    """Freeze the files on disk and the project config as a release (the same files again are
    the same release)."""

    async def fn(settings: Settings, store: Store, p: Principal) -> tuple[Release, bool]:
        project = project_from(settings)
        manifest = await build_manifest(settings, project, store=store)
        made = await create_release(store, p, manifest, name=name)
        await keep_versions(store, settings, project)  # the texts, for replays and diffs
        return made

    made, created = _admin(config, as_user, fn)
    if as_json:
        print_json({**made.to_dict(manifest=False), "created": created})
        return
    state = "created" if created else "unchanged: these files are"
    click.echo(f"{state} release {made.label}")
    click.echo(f"id: {made.id}")


@release.command("list")
@click.option("--limit", type=int, default=50, show_default=True)
@as_option
@config_option
@json_option
@handle_errors
def list_cmd(limit: int, as_user: str, config: Path | None, as_json: bool) -> None:
    """List releases, newest first, with the environments where each is active."""
    found = _admin(config, as_user, lambda s, store, p: list_releases(store, limit=limit))
    if as_json:
        print_json([r.to_dict(manifest=False) for r in found])
        return
    print_table(
        "releases",
        ["id", "name", "created", "by", "active in"],
        [
            (r.short, r.name, when(r.created_at), r.created_by, ", ".join(r.environments))
            for r in found
        ],
    )


def _versions(section: Any) -> list[tuple[str, str]]:
    if not isinstance(section, dict):
        return []
    out = []
    for key, value in sorted(section.items()):
        version = value.get("version") if isinstance(value, dict) else value
        out.append((key, str(version)[:12] if version else ""))
    return out


@release.command("show")
@click.argument("ref")
@as_option
@config_option
@json_option
@handle_errors
def show_cmd(ref: str, as_user: str, config: Path | None, as_json: bool) -> None:
    """Show the release REF (id, id prefix or name): its manifest."""
    found = _admin(config, as_user, lambda s, store, p: get_release(store, ref))
    if as_json:
        print_json(found.to_dict())
        return
    manifest = found.manifest or {}
    code = manifest.get("code") or {}
    click.echo(f"release {found.label}")
    click.echo(f"id: {found.id}")
    click.echo(f"created: {when(found.created_at)} by {found.created_by}")
    click.echo(f"active in: {', '.join(found.environments) or '(none)'}")
    click.echo(f"elevenfactor {code.get('elevenfactor')} (source {str(code.get('source'))[:12]})")
    click.echo(f"price table: {str(manifest.get('price_table'))[:12]}")
    rows = [("prompt", k, v) for k, v in _versions(manifest.get("prompts"))]
    rows += [("policy", k, v) for k, v in _versions(manifest.get("policies"))]
    rows += [("price", k, v) for k, v in _versions(manifest.get("prices"))]
    rows += [("agent", k, "") for k in sorted(manifest.get("agents") or {})]
    rows += [
        ("module", k, str(v)[:12]) for k, v in sorted((code.get("project_modules") or {}).items())
    ]
    print_table("contents", ["kind", "name", "version"], rows)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."


@release.command("diff")
@click.argument("a")
@click.argument("b")
@as_option
@config_option
@json_option
@handle_errors
def diff_cmd(a: str, b: str, as_user: str, config: Path | None, as_json: bool) -> None:
    """What changed from release A to release B: each path with its old and new value."""
    left, right, changes = _admin(config, as_user, lambda s, store, p: diff(store, a, b))
    if as_json:
        print_json({"from": left.id, "to": right.id, "changes": [c.to_dict() for c in changes]})
        return
    if not changes:
        click.echo(f"releases {left.label} and {right.label} are the same")
        return
    print_table(
        f"{left.label} -> {right.label}",
        ["path", "change", "old -> new"],
        [(c.dotted, c.kind, f"{_short(c.old)} -> {_short(c.new)}") for c in changes],
    )


def _env(settings: Settings, env: str | None) -> str:
    return env if env is not None else settings.environment


@release.command("activate")
@click.argument("ref")
@env_option
@as_option
@config_option
@json_option
@handle_errors
def activate_cmd(
    ref: str, env: str | None, as_user: str, config: Path | None, as_json: bool
) -> None:
    """Make release REF the active one of the environment (processes pick it up when they
    start); `release rollback` undoes it."""
    switch = _admin(config, as_user, lambda s, store, p: activate(store, p, _env(s, env), ref))
    if as_json:
        print_json(switch.to_dict())
        return
    was = f" (was {switch.previous_id[:12]})" if switch.previous_id else ""
    click.echo(f"release {switch.release_id[:12]} is active in {switch.environment}{was}")


@release.command("rollback")
@env_option
@as_option
@config_option
@json_option
@handle_errors
def rollback_cmd(env: str | None, as_user: str, config: Path | None, as_json: bool) -> None:
    """Make the release active before the newest activation of the environment active again."""
    switch = _admin(config, as_user, lambda s, store, p: rollback(store, p, _env(s, env)))
    if as_json:
        print_json(switch.to_dict())
        return
    was = f" (was {switch.previous_id[:12]})" if switch.previous_id else ""
    click.echo(
        f"rolled back: release {switch.release_id[:12]} is active in {switch.environment}{was}"
    )


@release.command("current")
@env_option
@click.option("--limit", type=int, default=10, show_default=True, help="Switches to show.")
@as_option
@config_option
@json_option
@handle_errors
def current_cmd(
    env: str | None, limit: int, as_user: str, config: Path | None, as_json: bool
) -> None:
    """Show the environment's active release and its latest switches."""

    async def fn(settings: Settings, store: Store, p: Principal) -> tuple[str, Any, Any]:
        name = _env(settings, env)
        return name, await active_release(store, name), await history(store, name, limit=limit)

    name, active, switches = _admin(config, as_user, fn)
    if as_json:
        print_json(
            {
                "environment": name,
                "release": active.to_dict(manifest=False) if active is not None else None,
                "history": [s.to_dict() for s in switches],
            }
        )
        return
    if active is None:
        click.echo(f"no release is active in {name}")
        return
    click.echo(f"{name}: release {active.label}")
    print_table(
        f"switches of {name}",
        ["at", "action", "release", "previous", "by"],
        [
            (when(s.switched_at), s.action, s.release_id[:12], (s.previous_id or "")[:12],
             s.switched_by)
            for s in switches
        ],
    )  # fmt: skip
