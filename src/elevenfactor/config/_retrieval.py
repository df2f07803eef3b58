"""The project file's ``retrieval:``: Retrieval indexes: where they live and how they are built and
searched.
"""

from __future__ import annotations

from elevenfactor.config._models import _Strict

__all__ = ["RetrievalConfig"]


class RetrievalConfig(_Strict):
    """Retrieval indexes: where they live and how they are built and searched."""
