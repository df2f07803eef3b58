"""Guard policies built in memory for tests (no file, no loader)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from elevenfactor.governance._policy_model import Policy, PolicyFile

__all__ = ["make_policy"]


def make_policy(pid: str, spec: dict[str, Any]) -> Policy:
    """The policy ``pid`` with the rules of ``spec`` (a policy file's content, as a dict); its
    version is the hash of the spec's canonical JSON."""
    source = json.dumps(spec, sort_keys=True)
    digest = hashlib.sha256(source.encode()).hexdigest()
    return Policy(
        id=pid,
        version=digest[:12],
        full_hash=digest,
        file=f"policies/{pid}.yaml",
        source=source,
        spec=PolicyFile.model_validate(spec),
    )
