"""The input of an eval run: self-contained, so a resumed eval runs the very suite it started
with even if the file changed since — the parsed suite (its cases and scorers as data), its
version, the overrides (model, prompt, release: the id of the release evaluated, which the
eval run and its case runs record), the selected case tags, a repeats override and the
concurrency.

``eval_input`` builds it (and checks the options); ``EvalInput.parse`` reads it back in the
program. The same arguments give the same input, byte for byte: ``resume`` finds an
unfinished eval run by its input hash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from elevenfactor.errors import RequestError
from elevenfactor.evals._suite import Case, Defaults, Suite, Target
from elevenfactor.governance import check_id

__all__ = ["EVAL_AGENT_PROGRAM", "EVAL_PROGRAM", "EvalInput", "eval_input", "eval_tags"]

EVAL_PROGRAM = "elevenfactor.eval"
"""The built-in program that runs an eval suite."""
EVAL_AGENT_PROGRAM = "elevenfactor.eval.agent"
"""The built-in program that runs one case against an agent, with the eval's overrides."""

MAX_CONCURRENCY = 64


def suite_to_dict(suite: Suite) -> dict[str, Any]:
    """The suite as JSON-ready data (``suite_from_dict`` reads it back)."""
    return {
        "id": suite.id,
        "version": suite.version,
        "full_hash": suite.full_hash,
        "file": suite.file,
        "description": suite.description,
        "target": suite.target.model_dump(mode="json", exclude_none=True),
        "defaults": suite.defaults.model_dump(mode="json"),
        "cases": [c.model_dump(mode="json", by_alias=True) for c in suite.cases],
    }


def suite_from_dict(data: Mapping[str, Any]) -> Suite:
    """The inverse of ``suite_to_dict``."""
    return Suite(
        id=str(data["id"]),
        version=str(data["version"]),
        full_hash=str(data["full_hash"]),
        file=str(data["file"]),
        description=str(data.get("description", "")),
        target=Target.model_validate(data["target"]),
        defaults=Defaults.model_validate(data["defaults"]),
        cases=tuple(Case.model_validate(c) for c in data["cases"]),
    )


@dataclass(frozen=True, slots=True)
class EvalInput:
    """An eval run's input, parsed."""

    suite: Suite
    model: str | None
    prompt: str | None
    release: str | None
    tags: tuple[str, ...]
    repeats: int | None
    concurrency: int

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> EvalInput:
        """Read the input ``eval_input`` built."""
        over = payload.get("overrides") or {}
        return cls(
            suite=suite_from_dict(payload["suite"]),
            model=over.get("model"),
            prompt=over.get("prompt"),
            release=over.get("release"),
            tags=tuple(payload.get("tags") or ()),
            repeats=payload.get("repeats"),
            concurrency=int(payload.get("concurrency") or 4),
        )

    def cases(self) -> tuple[Case, ...]:
        """The selected cases."""
        return self.suite.with_tags(self.tags)

    def repeats_for(self, case: Case) -> int:
        """How often ``case`` runs in this eval (the override, else the suite's)."""
        return self.repeats if self.repeats is not None else self.suite.repeats_for(case)

    def items(self) -> list[tuple[str, int]]:
        """``(case id, repeat)`` for every run of every selected case, in suite order."""
        return [(c.key, r) for c in self.cases() for r in range(self.repeats_for(c))]


def eval_tags(suite_id: str) -> list[str]:
    """The tags of an eval run (and of every model call it makes): ``eval`` and
    ``eval:SUITE``, so budgets and cost reports can select evals."""
    return ["eval", f"eval:{suite_id}"]


def eval_input(
    suite: Suite,
    *,
    model: str | None = None,
    prompt: str | None = None,
    release: str | None = None,
    tags: Sequence[str] = (),
    repeats: int | None = None,
    concurrency: int = 4,
) -> dict[str, Any]:
    """The input of an eval run of ``suite`` (see the module docstring); a ``RequestError``
    names a bad option."""
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise RequestError(
            f"concurrency must be 1-{MAX_CONCURRENCY}", code="invalid_value", param="concurrency"
        )
    if repeats is not None and not 1 <= repeats <= 100:
        raise RequestError("repeats must be 1-100", code="invalid_value", param="repeats")
    if release is not None:
        check_id(release, "release")
    picked = [check_id(t, "tag") for t in tags]
    if not suite.with_tags(picked):
        known = sorted({t for c in suite.cases for t in c.tags})
        raise RequestError(
            f"no case of suite {suite.id!r} carries the tags " + ", ".join(picked),
            code="invalid_value",
            param="tag",
            hint="its case tags: " + (", ".join(known) or "(none)"),
        )
    if suite.target.kind == "workflow" and (model or prompt):
        raise RequestError(
            "--model and --prompt apply to route and agent targets; a workflow picks its own",
            code="invalid_value",
            param="model" if model else "prompt",
        )
    return {
        "suite": suite_to_dict(suite),
        "overrides": {"model": model, "prompt": prompt, "release": release},
        "tags": picked,
        "repeats": repeats,
        "concurrency": concurrency,
    }
