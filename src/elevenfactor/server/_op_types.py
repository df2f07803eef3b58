"""The declarative description of one API operation (``_openapi`` builds the document from a
list of them; an API module may declare its own, next to its routes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

__all__ = ["HeaderParam", "Operation", "PathParam"]


@dataclass(frozen=True, slots=True)
class PathParam:
    """A parameter in the path, with the pattern its endpoint checks."""

    name: str
    description: str
    pattern: str | None = None


@dataclass(frozen=True, slots=True)
class HeaderParam:
    """A request header an endpoint reads."""

    name: str
    description: str
    schema: tuple[tuple[str, Any], ...] = (("type", "string"),)


@dataclass(frozen=True, slots=True)
class Operation:
    """One method on one path."""

    path: str
    method: str
    summary: str
    tag: str
    response: type[BaseModel] | None
    description: str = ""
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    params: tuple[PathParam, ...] = ()
    headers: tuple[HeaderParam, ...] = ()
    status: int = 200
    media_type: str = "application/json"
    secured: bool = True
