"""The project file's ``memory:``: Sessions and long-term memory."""

from __future__ import annotations

from elevenfactor.config._models import _Strict

__all__ = ["MemoryConfig"]


class MemoryConfig(_Strict):
    """Sessions and long-term memory."""
