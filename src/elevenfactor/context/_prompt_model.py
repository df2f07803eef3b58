"""``Prompt``: one version of a prompt file, parsed and compiled, ready to render."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jsonschema import Draft202012Validator

from elevenfactor.context._prompt_inputs import check_inputs
from elevenfactor.context._prompt_template import BodyTemplate
from elevenfactor.models import ModelSettings

__all__ = ["SHORT", "Prompt"]

SHORT = 12
"""Hex digits of the content hash shown as a prompt's version."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """One version of a prompt: a file's front matter and its compiled Jinja2 body.

    ``version`` is the first 12 hex digits of ``full_hash``, the SHA-256 of the file with its
    line endings normalised. ``settings`` are the front matter's model parameters as
    ``ModelSettings`` (with ``prompt_version`` set to ``ref``, so the response cache keys on
    it); ``route`` the model route it names (None: the caller's default). ``inputs`` is the
    JSON Schema of what ``render`` takes. ``file`` is the path as recorded (relative to the
    project); ``origin`` says whether this version was read from the file on disk or from the
    store's record of a version used before.
    """

    id: str
    full_hash: str
    path: Path
    file: str
    description: str
    route: str | None
    settings: ModelSettings
    inputs: dict[str, Any]
    source: str
    body: str
    origin: Literal["file", "store"] = "file"
    template: BodyTemplate = field(repr=False, compare=False, kw_only=True)
    validator: Draft202012Validator = field(repr=False, compare=False, kw_only=True)

    @property
    def version(self) -> str:
        """The short version: the first 12 hex digits of the content hash."""
        return self.full_hash[:SHORT]

    @property
    def ref(self) -> str:
        """``id@version``: what a model call records as the prompt it used."""
        return f"{self.id}@{self.version}"

    def render(self, inputs: Any = None) -> str:
        """The body rendered with ``inputs`` (a mapping), after checking them against the
        ``inputs`` schema. Declared inputs that are not given are ``None`` (or their schema
        ``default``); ``None`` renders as nothing.

        Raises ``PromptInputError`` (missing or invalid inputs, naming the input) or
        ``PromptError`` (the body failed or broke the sandbox, naming the file and line).
        """
        values = check_inputs(
            self.ref, self.inputs, self.validator, {} if inputs is None else inputs
        )
        return self.template.render(values)

    def params(self) -> dict[str, Any]:
        """The model parameters the front matter sets: ``route`` (if any) and each setting
        given, for display and JSON."""
        out: dict[str, Any] = {"route": self.route} if self.route is not None else {}
        settings = self.settings.model_dump(mode="json", exclude_defaults=True)
        settings.pop("prompt_version", None)
        return out | settings
