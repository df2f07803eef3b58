"""The project file's ``prompts:``: Prompts as files: where they live and the labels that pin a
version.
"""

from __future__ import annotations

from elevenfactor.config._models import _Strict

__all__ = ["PromptsConfig"]


class PromptsConfig(_Strict):
    """Prompts as files: where they live and the labels that pin a version."""
