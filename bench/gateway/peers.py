"""The LiteLLM proxy peer, installed on first use into its own venv (bench/.peers-venv)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.peers import PeerUnavailable, ensure_peer_venv

__all__ = ["PEERS_VENV", "LiteLLMInstall", "PeerUnavailable", "ensure_litellm"]

PEERS_VENV = Path(__file__).resolve().parent.parent / ".peers-venv"
_SPEC = "litellm[proxy]"


@dataclass(frozen=True, slots=True)
class LiteLLMInstall:
    """Where the installed proxy lives."""

    venv: Path
    executable: Path
    version: str


def ensure_litellm(venv: Path = PEERS_VENV) -> LiteLLMInstall:
    """Create the venv and ``pip install 'litellm[proxy]'`` unless already there."""
    exe = venv / "bin" / "litellm"
    version = ensure_peer_venv(venv, [_SPEC], "litellm", needs=exe)
    return LiteLLMInstall(venv=venv, executable=exe, version=version)
