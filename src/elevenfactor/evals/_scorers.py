"""Scorers on the text of an output (factor 11): ``exact``, ``contains``, ``not_contains``,
``regex`` and ``json_schema``. Each scorer spec in a suite file is a pydantic model that is
itself the scorer (``await spec.score(observed, case, ctx)``), tagged by ``type:``.

``json_schema`` parses the answer as JSON (one surrounding code fence, e.g. ```json, is
stripped; with ``find: true`` the first JSON object or array inside prose is used) and, when a
``schema`` is given, validates it with ``jsonschema`` (the schema is checked when the suite
loads).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator

from elevenfactor.evals._observed import Observed, ScoreContext
from elevenfactor.evals._results import Score

if TYPE_CHECKING:
    from elevenfactor.evals._suite import Case

__all__ = [
    "ContainsScorer",
    "ExactScorer",
    "JsonSchemaScorer",
    "NotContainsScorer",
    "RegexScorer",
    "ScorerBase",
    "parse_json_answer",
]

_FENCE = re.compile(r"\A\s*```[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?```\s*\Z", re.DOTALL)
_WS = re.compile(r"\s+")


class ScorerBase(BaseModel):
    """What every scorer spec has: an optional ``name`` (default: its type) shown in
    results."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = Field(default=None, min_length=1, max_length=100)

    @property
    def label(self) -> str:
        """The name its ``Score`` carries."""
        kind = getattr(self, "type", type(self).__name__)
        return self.name or str(kind)

    def result(self, passed: bool, reason: str, value: float | None = None) -> Score:
        """A score named after this scorer (value 1 or 0 unless given)."""
        v = (1.0 if passed else 0.0) if value is None else min(1.0, max(0.0, value))
        return Score(self.label, passed, v, reason)

    def failure(self, error: str) -> Score:
        """A score for an output this scorer could not judge."""
        return Score(self.label, False, 0.0, error, error=error)


def _fold(text: str, *, ignore_case: bool, normalize: bool) -> str:
    if normalize:
        text = _WS.sub(" ", text).strip()
    return text.casefold() if ignore_case else text


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


class ExactScorer(ScorerBase):
    """The answer equals ``value`` (``normalize``: whitespace runs collapsed and the ends
    trimmed; ``ignore_case``: compared case-folded)."""

    type: Literal["exact"] = "exact"
    value: str
    normalize: bool = False
    ignore_case: bool = False

    async def score(self, observed: Observed, case: Case, ctx: ScoreContext) -> Score:
        """Pass when the answer equals the expected text."""
        opts = {"ignore_case": self.ignore_case, "normalize": self.normalize}
        ok = _fold(observed.text, **opts) == _fold(self.value, **opts)
        return self.result(ok, "equal" if ok else f"expected {_short(self.value)}")


class ContainsScorer(ScorerBase):
    """The answer contains ``value`` (a text or a list: ``mode`` ``all`` (default) or
    ``any`` of them). The value is the share found."""

    type: Literal["contains"] = "contains"
    value: str | list[str] = Field(min_length=1)
    mode: Literal["all", "any"] = "all"
    ignore_case: bool = False
    normalize: bool = False

    def _found(self, text: str) -> tuple[list[str], list[str]]:
        wanted = [self.value] if isinstance(self.value, str) else self.value
        opts = {"ignore_case": self.ignore_case, "normalize": self.normalize}
        hay = _fold(text, **opts)
        found = [w for w in wanted if _fold(w, **opts) in hay]
        return found, [w for w in wanted if w not in found]

    async def score(self, observed: Observed, case: Case, ctx: ScoreContext) -> Score:
        """Pass when all (or any) of the texts are in the answer."""
        found, missing = self._found(observed.text)
        total = len(found) + len(missing)
        ok = not missing if self.mode == "all" else bool(found)
        reason = "found" if ok else "missing " + ", ".join(_short(m) for m in missing)
        return self.result(ok, reason, len(found) / total)


class NotContainsScorer(ContainsScorer):
    """The answer contains none of ``value`` (a text or a list)."""

    type: Literal["not_contains"] = "not_contains"  # type: ignore[assignment]

    async def score(self, observed: Observed, case: Case, ctx: ScoreContext) -> Score:
        """Pass when none of the texts is in the answer."""
        found, missing = self._found(observed.text)
        ok = not found
        reason = "none found" if ok else "found " + ", ".join(_short(f) for f in found)
        return self.result(ok, reason, len(missing) / (len(found) + len(missing)))


class RegexScorer(ScorerBase):
    """The answer matches ``pattern`` somewhere (``full``: the whole answer; ``negate``:
    must not match)."""

    type: Literal["regex"] = "regex"
    pattern: str
    ignore_case: bool = False
    multiline: bool = False
    full: bool = False
    negate: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    async def score(self, observed: Observed, case: Case, ctx: ScoreContext) -> Score:
        """Pass when the pattern matches (or, with ``negate``, does not)."""
        flags = (re.IGNORECASE if self.ignore_case else 0) | (re.MULTILINE if self.multiline else 0)
        rx = re.compile(self.pattern, flags)
        matched = (rx.fullmatch if self.full else rx.search)(observed.text) is not None
        ok = matched != self.negate
        what = "matches" if matched else "does not match"
        return self.result(ok, f"{what} {_short(self.pattern)}")


def parse_json_answer(text: str, *, find: bool = False) -> Any:
    """The JSON in an answer: the whole answer, or the body of one code fence around it;
    with ``find``, else the first JSON object or array inside it. Raises ``ValueError``."""
    fenced = _FENCE.match(text)
    body = (fenced.group(1) if fenced else text).strip()
    try:
        return json.loads(body)
    except ValueError:
        if not find:
            raise
    decoder = json.JSONDecoder()
    for i, ch in enumerate(body):
        if ch in "{[":
            try:
                return decoder.raw_decode(body, i)[0]
            except ValueError:
                continue
    raise ValueError("no JSON object or array in the answer")


class JsonSchemaScorer(ScorerBase):
    """The answer is JSON (see the module docstring) valid against ``schema`` (any JSON
    without one)."""

    type: Literal["json_schema"] = "json_schema"
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    find: bool = False

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                jsonschema.validators.validator_for(value).check_schema(value)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"not a valid JSON schema: {exc.message}") from None
        return value

    async def score(self, observed: Observed, case: Case, ctx: ScoreContext) -> Score:
        """Pass when the answer parses and validates."""
        try:
            data = parse_json_answer(observed.text, find=self.find)
        except ValueError:
            return self.result(False, "the answer is not JSON")
        if self.json_schema is None:
            return self.result(True, "valid JSON")
        cls = jsonschema.validators.validator_for(self.json_schema)
        error = jsonschema.exceptions.best_match(cls(self.json_schema).iter_errors(data))
        if error is None:
            return self.result(True, "valid against the schema")
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return self.result(False, f"at {where}: {error.message}"[:300])
