"""Scorer specs of online evaluation rules (``evals.online[].expect`` in the project file):
the same ``ScorerSpec`` an eval suite's ``expect:`` holds, validated with errors that name the
item and the key (``expect[1]: unknown scorer type 'fuzzy' ...``)."""

from __future__ import annotations

from typing import Any, get_args

from pydantic import TypeAdapter, ValidationError

from elevenfactor.evals._observed import Scorer
from elevenfactor.evals._suite import ScorerSpec

__all__ = ["SCORER_TYPES", "check_scorer_specs", "parse_scorer_specs"]

_ADAPTER: TypeAdapter[Any] = TypeAdapter(ScorerSpec)


def _types() -> tuple[str, ...]:
    union = get_args(ScorerSpec)[0]
    out: list[str] = []
    for model in get_args(union):
        field = model.model_fields.get("type")
        if field is not None and isinstance(field.default, str):
            out.append(field.default)
    return tuple(out)


SCORER_TYPES = _types()
"""The ``type:`` of every scorer spec."""


def _explain(index: int, spec: Any, exc: ValidationError) -> str:
    where = f"expect[{index}]"
    if not isinstance(spec, dict):
        return f"{where}: a scorer is a mapping with `type:`"
    kind = spec.get("type")
    if kind is None:
        return f"{where}: a scorer needs `type:` (one of: {', '.join(SCORER_TYPES)})"
    if kind not in SCORER_TYPES:
        return f"{where}: unknown scorer type {kind!r} (expected one of: {', '.join(SCORER_TYPES)})"
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    if loc and loc[0] == kind:  # the discriminated union names the member first
        loc = loc[1:]
    key = ".".join(loc)
    what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
    return f"{where}{'.' + key if key else ''} ({kind}): {what}"


def parse_scorer_specs(specs: list[dict[str, Any]]) -> list[Scorer]:
    """The scorers ``specs`` describe; ``ValueError`` naming the first invalid one."""
    out: list[Scorer] = []
    for i, spec in enumerate(specs):
        try:
            out.append(_ADAPTER.validate_python(spec))
        except ValidationError as exc:
            raise ValueError(_explain(i, spec, exc)) from None
    return out


def check_scorer_specs(specs: list[dict[str, Any]]) -> None:
    """Raise ``ValueError`` naming the first spec of ``specs`` that is not a valid scorer."""
    parse_scorer_specs(specs)
