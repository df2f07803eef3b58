"""``users``, ``teams`` and ``keys``: identity and access, as thin wrappers over governance.

Every command acts as a user of the default organisation (``--as USER``, default ``local``, the
built-in administrator); the library checks that user's role and records each change in the
ledger under its name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from elevenfactor.cli._common import (
    config_option,
    handle_errors,
    json_option,
    print_json,
    print_table,
    run,
    settings_from,
    when,
    with_store,
)
from elevenfactor.governance import (
    ROLES,
    ApiKey,
    Principal,
    Team,
    User,
    create_key,
    create_team,
    create_user,
    disable_user,
    get_key,
    get_user,
    list_keys,
    list_teams,
    list_users,
    principal_for_user,
    rename_key,
    revoke_key,
    update_user,
)
from elevenfactor.store import Store, require_migrated

__all__ = ["as_option", "keys", "run_as", "teams", "users"]

T = TypeVar("T")

as_option = click.option(
    "--as",
    "as_user",
    default="local",
    show_default=True,
    metavar="USER",
    help="Act as this user of the default organisation (its roles are checked).",
)
role_option = click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(ROLES),
    help="A role (repeatable).",
)
group_option = click.option(
    "--group", "groups", multiple=True, metavar="GROUP", help="A reviewer group (repeatable)."
)


def run_as(config: Path | None, as_user: str, fn: Callable[[Store, Principal], Awaitable[T]]) -> T:
    """Open the store, resolve ``as_user`` to its principal, and run ``fn`` with both."""

    async def main(store: Store) -> T:
        await require_migrated(store)
        return await fn(store, await principal_for_user(store, as_user))

    return run(with_store(settings_from(config), main))


def _show_users(found: list[User], as_json: bool, title: str = "users") -> None:
    if as_json:
        print_json([u.to_dict() for u in found])
        return
    print_table(
        title,
        ["name", "kind", "team", "roles", "groups", "status", "created", "id"],
        [
            (
                u.name,
                u.kind,
                u.team,
                ", ".join(u.roles),
                ", ".join(u.groups),
                "active" if u.disabled_at is None else f"disabled {when(u.disabled_at)}",
                when(u.created_at),
                u.id,
            )
            for u in found
        ],
    )


def _show_user(user: User, as_json: bool) -> None:
    if as_json:
        print_json(user.to_dict())
        return
    _show_users([user], False, title=f"user {user.name}")


def _show_keys(found: list[ApiKey], as_json: bool, title: str = "API keys") -> None:
    if as_json:
        print_json([k.to_dict() for k in found])
        return
    print_table(
        title,
        ["prefix", "name", "user", "created", "status", "id"],
        [
            (
                k.prefix,
                k.name,
                k.user,
                when(k.created_at),
                "active" if k.active else f"revoked {when(k.revoked_at)}",
                k.id,
            )
            for k in found
        ],
    )


def _show_teams(found: list[Team], as_json: bool) -> None:
    if as_json:
        print_json([t.to_dict() for t in found])
        return
    print_table(
        "teams",
        ["name", "shares", "created", "id"],
        [(t.name, "yes" if t.shares else "no", when(t.created_at), t.id) for t in found],
    )


# -- users ----------------------------------------------------------------------------------


@click.group()
def users() -> None:
    """Manage users and service accounts: teams, roles and reviewer groups (admins only)."""


@users.command("create")
@click.argument("name")
@click.option("--team", default=None, help="The user's team.")
@role_option
@group_option
@click.option("--service", is_flag=True, help="A service account rather than a person.")
@as_option
@config_option
@json_option
@handle_errors
def users_create(
    name: str,
    team: str | None,
    roles: tuple[str, ...],
    groups: tuple[str, ...],
    service: bool,
    as_user: str,
    config: Path | None,
    as_json: bool,
) -> None:
    """Create user NAME (a member unless --role says otherwise)."""
    user = run_as(
        config,
        as_user,
        lambda s, p: create_user(
            s,
            p,
            name,
            team=team,
            roles=roles or ("member",),
            groups=groups,
            kind="service" if service else "user",
        ),
    )
    _show_user(user, as_json)


@users.command("list")
@as_option
@config_option
@json_option
@handle_errors
def users_list(as_user: str, config: Path | None, as_json: bool) -> None:
    """List the organisation's users and service accounts."""
    _show_users(run_as(config, as_user, list_users), as_json)


async def _get_user(store: Store, actor: Principal, name: str) -> User:
    actor.require_admin("reading a user")
    return await get_user(store, actor, name)


@users.command("show")
@click.argument("name")
@as_option
@config_option
@json_option
@handle_errors
def users_show(name: str, as_user: str, config: Path | None, as_json: bool) -> None:
    """Show user NAME."""
    _show_user(run_as(config, as_user, lambda s, p: _get_user(s, p, name)), as_json)


@users.command("update")
@click.argument("name")
@click.option("--team", default=None, help="Move the user to this team.")
@click.option("--no-team", is_flag=True, help="Take the user out of its team.")
@role_option
@group_option
@click.option("--no-groups", is_flag=True, help="Remove the user from every reviewer group.")
@click.option("--enable/--disable", "enabled", default=None, help="Let the user in, or not.")
@as_option
@config_option
@json_option
@handle_errors
def users_update(
    name: str,
    team: str | None,
    no_team: bool,
    roles: tuple[str, ...],
    groups: tuple[str, ...],
    no_groups: bool,
    enabled: bool | None,
    as_user: str,
    config: Path | None,
    as_json: bool,
) -> None:
    """Change user NAME: --role and --group replace the current roles and groups."""
    if team is not None and no_team:
        raise click.UsageError("give --team or --no-team, not both")
    if groups and no_groups:
        raise click.UsageError("give --group or --no-groups, not both")
    user = run_as(
        config,
        as_user,
        lambda s, p: update_user(
            s,
            p,
            name,
            team=team,
            clear_team=no_team,
            roles=roles or None,
            groups=() if no_groups else (groups or None),
            enabled=enabled,
        ),
    )
    _show_user(user, as_json)


@users.command("revoke")
@click.argument("name")
@as_option
@config_option
@handle_errors
def users_revoke(name: str, as_user: str, config: Path | None) -> None:
    """Disable user NAME: its keys stop working (within seconds on running servers)."""
    user = run_as(config, as_user, lambda s, p: disable_user(s, p, name))
    click.echo(f"disabled {user.name} ({user.id})")


# -- teams ----------------------------------------------------------------------------------


@click.group()
def teams() -> None:
    """Manage teams (admins only)."""


@teams.command("create")
@click.argument("name")
@click.option("--shares", is_flag=True, help="Members see each other's runs.")
@as_option
@config_option
@json_option
@handle_errors
def teams_create(name: str, shares: bool, as_user: str, config: Path | None, as_json: bool) -> None:
    """Create team NAME."""
    team = run_as(config, as_user, lambda s, p: create_team(s, p, name, shares=shares))
    if as_json:
        print_json(team.to_dict())
        return
    click.echo(f"created team {team.name} ({team.id})" + (", shared" if team.shares else ""))


@teams.command("list")
@as_option
@config_option
@json_option
@handle_errors
def teams_list(as_user: str, config: Path | None, as_json: bool) -> None:
    """List the organisation's teams."""
    _show_teams(run_as(config, as_user, list_teams), as_json)


# -- keys -----------------------------------------------------------------------------------


@click.group()
def keys() -> None:
    """Create, list, rename and revoke API keys (stored hashed; admins only)."""


@keys.command("create")
@click.argument("name")
@click.option(
    "--user",
    default=None,
    help="The key's user (default: a service account called NAME, created if needed).",
)
@as_option
@config_option
@json_option
@handle_errors
def keys_create(
    name: str, user: str | None, as_user: str, config: Path | None, as_json: bool
) -> None:
    """Create a key called NAME and print its secret once."""
    key, secret = run_as(config, as_user, lambda s, p: create_key(s, p, name, user=user))
    if as_json:
        out: dict[str, Any] = {
            "id": key.id,
            "name": key.name,
            "prefix": key.prefix,
            "user": key.user,
            "key": secret,
        }
        print_json(out)
        return
    click.echo(secret)
    click.echo(
        f"created key {key.prefix} ({key.name}) for {key.user}; store it now,"
        " it is not shown again",
        err=True,
    )


@keys.command("list")
@as_option
@config_option
@json_option
@handle_errors
def keys_list(as_user: str, config: Path | None, as_json: bool) -> None:
    """List the organisation's keys, newest first (never their secrets)."""
    _show_keys(run_as(config, as_user, list_keys), as_json)


@keys.command("show")
@click.argument("key_id")
@as_option
@config_option
@json_option
@handle_errors
def keys_show(key_id: str, as_user: str, config: Path | None, as_json: bool) -> None:
    """Show the key with id or prefix KEY_ID."""
    key = run_as(config, as_user, lambda s, p: get_key(s, p, key_id))
    if as_json:
        print_json(key.to_dict())
        return
    _show_keys([key], False, title=f"API key {key.prefix}")


@keys.command("update")
@click.argument("key_id")
@click.option("--name", "new_name", required=True, help="The key's new name.")
@as_option
@config_option
@handle_errors
def keys_update(key_id: str, new_name: str, as_user: str, config: Path | None) -> None:
    """Rename the key with id or prefix KEY_ID."""
    key = run_as(config, as_user, lambda s, p: rename_key(s, p, key_id, new_name))
    click.echo(f"renamed {key.prefix} to {key.name}")


@keys.command("revoke")
@click.argument("key_id")
@as_option
@config_option
@handle_errors
def keys_revoke(key_id: str, as_user: str, config: Path | None) -> None:
    """Revoke the key with id or prefix KEY_ID."""
    key = run_as(config, as_user, lambda s, p: revoke_key(s, p, key_id))
    click.echo(f"revoked {key.prefix} ({key.name})")
