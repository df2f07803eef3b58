"""A Python function's signature as a tool: JSON schema in, validated keyword arguments out.

The schema comes from the type hints and the docstring through a pydantic model built for the
signature (``extra="forbid"``: an argument the function does not take is an error the model
sees, not something silently dropped). A parameter annotated ``ToolContext`` is not part of the
schema; the caller's context is passed to it.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from elevenfactor.tools._base import ToolContext, ToolResult
from elevenfactor.tools._docstrings import parse_docstring

__all__ = ["Signature", "format_validation_error"]

_NO_OUTPUT_SCHEMA = (str, type(None), ToolResult, Any, inspect.Signature.empty)


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    field: str
    kind: inspect._ParameterKind


class Signature:
    """The argument model of one function, its JSON schema, and how to call it."""

    def __init__(self, func: Callable[..., Any], *, name: str) -> None:
        self.name = name
        sig = inspect.signature(func)
        hints = typing.get_type_hints(func, include_extras=True)
        description, arg_docs = parse_docstring(func)
        self.description = description
        self.context_param: str | None = None
        self._params: list[_Param] = []
        fields: dict[str, Any] = {}
        for index, (pname, param) in enumerate(sig.parameters.items()):
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(
                    f"tool {name!r}: *args and **kwargs cannot be described to a model; "
                    "declare each argument"
                )
            annotation = hints.get(pname, Any)
            if annotation is ToolContext:
                self.context_param = pname
                continue
            field_name = pname if _safe_field(pname) else f"arg_{index}"
            default = ... if param.default is param.empty else param.default
            info = Field(
                default,
                description=arg_docs.get(pname),
                alias=pname if field_name != pname else None,
            )
            fields[field_name] = (annotation, info)
            self._params.append(_Param(pname, field_name, param.kind))
        self.model: type[BaseModel] = create_model(
            f"{name}_arguments",
            __config__=ConfigDict(extra="forbid", populate_by_name=False),
            **fields,
        )
        self.parameters = _clean(self.model.model_json_schema(by_alias=True))
        self.output_schema = _output_schema(hints.get("return", inspect.Signature.empty))

    def bind(self, args: dict[str, Any], ctx: ToolContext) -> tuple[list[Any], dict[str, Any]]:
        """Validate ``args``; positional and keyword arguments for the call.

        Raises ``pydantic.ValidationError`` when the arguments do not fit."""
        validated = self.model.model_validate(args)
        positional: list[Any] = []
        keywords: dict[str, Any] = {}
        for param in self._params:
            value = getattr(validated, param.field)
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                positional.append(value)
            else:
                keywords[param.name] = value
        if self.context_param is not None:
            keywords[self.context_param] = ctx
        return positional, keywords


def _safe_field(name: str) -> bool:
    return not name.startswith("_") and not hasattr(BaseModel, name)


def _clean(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop pydantic's generated ``title`` annotations: they cost tokens and say nothing."""

    def walk(node: Any, *, names: bool = False) -> Any:
        if isinstance(node, dict):
            if names:  # the keys are property or definition names, not keywords
                return {k: walk(v) for k, v in node.items()}
            return {
                k: walk(v, names=k in ("properties", "$defs", "definitions"))
                for k, v in node.items()
                if not (k == "title" and isinstance(v, str))
            }
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    cleaned: dict[str, Any] = walk(schema)
    cleaned.setdefault("properties", {})
    return cleaned


def _output_schema(annotation: Any) -> dict[str, Any] | None:
    if any(annotation is t for t in _NO_OUTPUT_SCHEMA):
        return None
    try:
        return _clean(TypeAdapter(annotation).json_schema())
    except Exception:  # an unusual return type: no schema, the tool still works
        return None


def format_validation_error(tool: str, exc: ValidationError) -> str:
    """A message a model can act on: each bad argument, what was wrong, what was given."""
    lines = [f"Invalid arguments for tool {tool!r}:"]
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in err["loc"]) or "(arguments)"
        if err["type"] == "missing":
            lines.append(f"- {loc}: missing required argument")
        elif err["type"] == "extra_forbidden":
            lines.append(f"- {loc}: unexpected argument (this tool does not take it)")
        else:
            given = repr(err.get("input"))
            if len(given) > 80:
                given = given[:77] + "..."
            lines.append(f"- {loc}: {err['msg']} (got {given})")
    lines.append("Call the tool again with corrected arguments.")
    return "\n".join(lines)
