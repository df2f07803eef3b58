"""``agents``: the agents' circuit breakers — which are paused and why, and resetting them."""

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
from elevenfactor.governance._agent_breaker import AgentBreakerState, agent_breakers, reset_agent

__all__ = ["agents"]


def _rate(count: int, rate: float, limit: float | None) -> str:
    shown = f"{rate:.0%} ({count})"
    return f"{shown} / {limit:.0%}" if limit is not None else shown


@click.group()
def agents() -> None:
    """The agents' circuit breakers: an agent whose runs fail or are blocked too often (its
    policy's `breakers.agent`) is paused until an admin resets it."""


@agents.command("status")
@as_option
@config_option
@json_option
@handle_errors
def agents_status(as_user: str, config: Path | None, as_json: bool) -> None:
    """The breakers of --as's organisation: state, why and when it tripped, and the runs in
    the window now (error and block rates against their limits)."""
    found: list[AgentBreakerState] = run_as(config, as_user, agent_breakers)
    if as_json:
        print_json([b.to_dict() for b in found])
        return
    print_table(
        "agent breakers",
        ["agent", "state", "reason", "tripped at", "runs", "error rate", "block rate", "window"],
        [
            (
                b.agent,
                b.state,
                b.reason or (f"reset by {b.reset_by}: {b.reset_reason}" if b.reset_by else ""),
                when(b.tripped_at) if b.paused else "",
                f"{b.runs} (min {b.min_runs})",
                _rate(b.errors, b.error_rate, b.max_error_rate),
                _rate(b.blocks, b.block_rate, b.max_block_rate),
                f"{b.window_seconds:g}s",
            )
            for b in found
        ],
    )


@agents.command("reset")
@click.argument("name")
@click.option("--reason", required=True, help="Why (recorded in the ledger).")
@as_option
@config_option
@json_option
@handle_errors
def agents_reset(name: str, reason: str, as_user: str, config: Path | None, as_json: bool) -> None:
    """Reset the paused breaker of agent NAME (admins): it accepts runs again, and only runs
    that end from now on count."""
    state = run_as(config, as_user, lambda s, p: reset_agent(s, p, name, reason))
    if as_json:
        print_json(state.to_dict())
        return
    click.echo(f"agent {state.agent}: {state.state} (reset by {state.reset_by})")
