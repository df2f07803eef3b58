"""Encoding step results for the journal: JSON bytes, pydantic models rehydrated by type."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter

__all__ = ["decode", "encode"]

T = TypeVar("T")


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(
        f"a step result must be JSON-serialisable or a pydantic model, not {type(obj).__name__}"
    )


def encode(value: Any) -> bytes:
    """Canonical JSON bytes (sorted keys) for ``value``."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_SORT_KEYS)


@lru_cache(maxsize=256)
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def decode(data: bytes, result_type: type[T] | None = None) -> Any:
    """The value encoded in ``data``; validated into ``result_type`` when given."""
    value = orjson.loads(data)
    if result_type is None:
        return value
    return _adapter(result_type).validate_python(value)  # type: ignore[arg-type]
