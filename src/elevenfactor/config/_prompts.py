"""The project file's ``prompts:``: where prompt files live and the labels that pin a version."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from elevenfactor.config._models import _Strict

__all__ = ["PROMPT_NAME", "PROMPT_VERSION", "PromptsConfig"]

PROMPT_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$"
"""A prompt id or a label: letters, digits, ``_``, ``.`` and ``-`` (not first), at most 100."""
PROMPT_VERSION = r"^[0-9a-f]{8,64}$"
"""A version a label pins: the first 8 to 64 lowercase hex digits of the prompt's SHA-256."""

_Name = Annotated[str, StringConstraints(pattern=PROMPT_NAME)]
_Version = Annotated[str, StringConstraints(pattern=PROMPT_VERSION)]


class PromptsConfig(_Strict):
    """Prompts as files: ``<dir>/*.md``, each YAML front matter and a Jinja2 body. A prompt's
    version is the SHA-256 of its file (line endings normalised), shown as 12 hex digits. A
    label pins a version: moving it is a change of this file, reviewed and rolled back with
    the code. Refer to a prompt as ``support`` (the file on disk now), ``support@production``
    (a label) or ``support@3f2a9c1e0b7d`` (a version, or a prefix of at least 8 digits).

    ```yaml
    prompts:
      dir: prompts
      labels:
        support: {production: 3f2a9c1e0b7d, staging: 9b1c44d2e0aa}
    ```
    """

    dir: str = Field(
        default="prompts", description="Where the prompt files live, relative to the project."
    )
    labels: dict[_Name, dict[_Name, _Version]] = Field(
        default_factory=dict,
        description="Per prompt id, label name to the version it pins (8 to 64 lowercase hex "
        "digits of the version; `elevenfactor prompts list` shows them).",
    )
