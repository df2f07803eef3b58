"""The project file's ``guards:``: where guard policy files live, which policy applies to
which API key, team, route and to calls with none, and the labels that pin a policy version."""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated

from pydantic import Field, StringConstraints

from elevenfactor.config._models import _Strict
from elevenfactor.config._prompts import PROMPT_NAME, PROMPT_VERSION

__all__ = ["POLICY_NAME", "POLICY_REF", "GuardsConfig"]

POLICY_NAME = PROMPT_NAME
"""A policy id or a label: letters, digits, ``_``, ``.`` and ``-`` (not first), at most 100."""
POLICY_REF = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}(?:@[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99})?$"
"""A policy reference: ``ID`` (the file on disk), ``ID@LABEL`` or ``ID@VERSION`` (8 to 64
lowercase hex digits of the policy's SHA-256)."""

_Name = Annotated[str, StringConstraints(pattern=POLICY_NAME)]
_Version = Annotated[str, StringConstraints(pattern=PROMPT_VERSION)]
_Ref = Annotated[str, StringConstraints(pattern=POLICY_REF)]


class GuardsConfig(_Strict):
    """Guard policies as files: ``<dir>/*.yaml``, one policy each, its id the file name. A
    policy's version is the SHA-256 of its file (line endings normalised), shown as 12 hex
    digits; every version a call or run used is kept in the store. Refer to a policy as
    ``strict`` (the file on disk now), ``strict@production`` (a label) or
    ``strict@3f2a9c1e0b7d`` (a version, or a prefix of at least 8 digits).

    Every policy attached to a gateway call applies: its API key's, its team's and its route's
    (the most severe verdict wins). A call with none attached gets ``default``; an agent run
    gets its agent's ``policy:``, else ``default``. A policy named ``default`` ships with
    elevenfactor (secrets redacted in input and output, injection monitored, destructive SQL
    escalated); ``policies/default.yaml`` in the project replaces it.

    ```yaml
    guards:
      dir: policies
      default: default
      keys: {support-bot: support@production}
      teams: {research: relaxed}
      routes: {gpt-4o: strict}
      labels:
        support: {production: 3f2a9c1e0b7d, staging: 9b1c44d2e0aa}
    ```
    """

    dir: str = Field(
        default="policies", description="Where the policy files live, relative to the project."
    )
    default: _Ref | None = Field(
        default="default",
        description="The policy applied to gateway calls and agent runs that have none attached"
        " (`default` is shipped unless `policies/default.yaml` replaces it); null: none.",
    )
    keys: dict[str, _Ref] = Field(
        default_factory=dict,
        description="Per API key name: the policy its gateway calls are checked with.",
    )
    teams: dict[str, _Ref] = Field(
        default_factory=dict,
        description="Per team name: the policy the gateway calls of its members' keys are "
        "checked with.",
    )
    routes: dict[str, _Ref] = Field(
        default_factory=dict,
        description="Per route or model name (as clients ask for it): the policy every call to "
        "it is checked with, whoever makes it.",
    )
    labels: dict[_Name, dict[_Name, _Version]] = Field(
        default_factory=dict,
        description="Per policy id, label name to the version it pins (8 to 64 lowercase hex "
        "digits of the version).",
    )

    def unknown_reference(
        self, models: Collection[str], routes: Collection[str]
    ) -> tuple[str, str, list[str]] | None:
        """The first ``guards.routes`` entry that names neither a model nor a route, as
        (key, name, known names), or None."""
        targets = set(models) | set(routes)
        for name in self.routes:
            if name not in targets:
                return f"guards.routes.{name}", name, sorted(targets)
        return None
