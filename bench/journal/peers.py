"""The DBOS peer, installed on first use into its own venv (bench/.peers-venv-journal)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["DBOS_SPEC", "PEERS_VENV", "PeerUnavailable", "ensure_dbos"]

PEERS_VENV = Path(__file__).resolve().parent.parent / ".peers-venv-journal"
# Pinned: the figures compare against this release. psycopg is DBOS's PostgreSQL driver.
DBOS_SPEC = ("dbos==3.4.0", "psycopg[binary]")


class PeerUnavailable(RuntimeError):
    """The peer could not be installed; the message says why."""


def _version(venv: Path) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('dbos'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def _last_lines(text: str, n: int = 6) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("WARNING: Loc")]
    return "\n".join(lines[-n:])


def ensure_dbos(venv: Path = PEERS_VENV) -> tuple[Path, str]:
    """The venv's python and DBOS's version; creates the venv and installs DBOS if needed."""
    version = _version(venv)
    if version is None:
        if not (venv / "bin" / "python").exists():
            made = subprocess.run(
                [sys.executable, "-m", "venv", str(venv)],
                capture_output=True,
                text=True,
                check=False,
            )
            if made.returncode != 0:
                raise PeerUnavailable(f"creating {venv} failed: {_last_lines(made.stderr)}")
        pip = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                *DBOS_SPEC,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        version = _version(venv)
        if pip.returncode != 0 or version is None:
            raise PeerUnavailable(
                f"pip install {' '.join(DBOS_SPEC)} failed (exit {pip.returncode}): "
                f"{_last_lines(pip.stderr or pip.stdout)}"
            )
    return venv / "bin" / "python", version
