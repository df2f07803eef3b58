"""The LiteLLM proxy peer, installed on first use into its own venv (bench/.peers-venv)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PEERS_VENV", "LiteLLMInstall", "PeerUnavailable", "ensure_litellm"]

PEERS_VENV = Path(__file__).resolve().parent.parent / ".peers-venv"
_SPEC = "litellm[proxy]"


class PeerUnavailable(RuntimeError):
    """The peer could not be installed or started; the message says why."""


@dataclass(frozen=True, slots=True)
class LiteLLMInstall:
    """Where the installed proxy lives."""

    venv: Path
    executable: Path
    version: str


def _version(venv: Path) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def _last_lines(text: str, n: int = 6) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("WARNING: Loc")]
    return "\n".join(lines[-n:])


def ensure_litellm(venv: Path = PEERS_VENV) -> LiteLLMInstall:
    """Create the venv and ``pip install 'litellm[proxy]'`` unless already there."""
    exe = venv / "bin" / "litellm"
    version = _version(venv)
    if version is None or not exe.exists():
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
                _SPEC,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        version = _version(venv)
        if pip.returncode != 0 or version is None or not exe.exists():
            raise PeerUnavailable(
                f"pip install {_SPEC!r} failed (exit {pip.returncode}): "
                f"{_last_lines(pip.stderr or pip.stdout)}"
            )
    return LiteLLMInstall(venv=venv, executable=exe, version=version)
