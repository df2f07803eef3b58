"""The DBOS peer, installed on first use into its own venv (bench/.peers-venv-journal)."""

from __future__ import annotations

from pathlib import Path

from bench.peers import PeerUnavailable, ensure_peer_venv

__all__ = ["DBOS_SPEC", "PEERS_VENV", "PeerUnavailable", "ensure_dbos"]

PEERS_VENV = Path(__file__).resolve().parent.parent / ".peers-venv-journal"
# Pinned: the figures compare against this release. psycopg is DBOS's PostgreSQL driver.
DBOS_SPEC = ("dbos==3.4.0", "psycopg[binary]")


def ensure_dbos(venv: Path = PEERS_VENV) -> tuple[Path, str]:
    """The venv's python and DBOS's version; creates the venv and installs DBOS if needed."""
    return venv / "bin" / "python", ensure_peer_venv(venv, DBOS_SPEC, "dbos")
