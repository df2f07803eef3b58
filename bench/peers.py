"""Peers (LiteLLM, DBOS) are installed on first use into venvs of their own, never into ours."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["PeerUnavailable", "ensure_peer_venv"]


class PeerUnavailable(RuntimeError):
    """The peer could not be installed or started; the message says why."""


def _version(venv: Path, dist: str) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def _last_lines(text: str, n: int = 6) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("WARNING: Loc")]
    return "\n".join(lines[-n:])


def ensure_peer_venv(
    venv: Path, specs: Sequence[str], dist: str, *, needs: Path | None = None
) -> str:
    """Create ``venv`` and ``pip install specs`` unless ``dist`` (and the file ``needs``) are
    already there; return ``dist``'s installed version."""
    version = _version(venv, dist)
    if version is not None and (needs is None or needs.exists()):
        return version
    if not (venv / "bin" / "python").exists():
        made = subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, check=False
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
            *specs,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    version = _version(venv, dist)
    if pip.returncode != 0 or version is None or (needs is not None and not needs.exists()):
        raise PeerUnavailable(
            f"pip install {' '.join(specs)} failed (exit {pip.returncode}): "
            f"{_last_lines(pip.stderr or pip.stdout)}"
        )
    return version
