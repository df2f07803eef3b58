"""Turning a pydantic ``ValidationError`` on a suite file (or one JSONL case) into a
``ConfigError`` naming the file, the line and the dotted key, with a suggestion for an
unknown key or scorer type. Generic over the model, unlike the policy loader's version."""

from __future__ import annotations

import difflib
import types
from collections.abc import Callable
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from elevenfactor.config._yaml_doc import dotted, item, located_error
from elevenfactor.errors import ConfigError

__all__ = ["explain", "scorer_types"]

_KeyPath = tuple[str | int, ...]
_TAG_FIELDS = ("type", "role")


def scorer_types() -> list[str]:
    """Every scorer ``type:`` a suite may use."""
    from elevenfactor.evals._suite import ScorerSpec

    union = get_args(ScorerSpec)[0]
    return [str(m.model_fields["type"].default) for m in get_args(union)]


def _type_matches(label: str, data: Any) -> bool:
    if label == "str" or label.startswith("constrained-str"):
        return isinstance(data, str)
    if label.startswith("list["):
        return isinstance(data, list)
    if label.startswith("dict["):
        return isinstance(data, dict)
    return True


def _real_path(loc: tuple[int | str, ...], data: Any) -> tuple[_KeyPath, bool]:
    """``loc`` as a path into the document (union member labels and tags dropped), and
    whether the error is consistent with the document (not about another union member)."""
    path: list[str | int] = []
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        is_tag = isinstance(data, dict) and any(data.get(t) == part for t in _TAG_FIELDS)
        step_list = isinstance(part, int) and isinstance(data, list)
        step_dict = isinstance(part, str) and isinstance(data, dict) and (part in data or last)
        if step_list or (step_dict and (part in data or not is_tag)):
            data = item(data, part)
            path.append(part)
        elif is_tag:
            continue  # a discriminated union's tag
        elif isinstance(part, str) and not _type_matches(part, data):
            return tuple(path), False
    return tuple(path), True


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _member(tp: Any, part: str | int) -> tuple[Any, bool]:
    """The union member of ``tp`` that ``part`` selects, and whether ``part`` was consumed."""
    members = [a for a in get_args(tp) if a is not type(None)]
    if len(members) == 1:
        return members[0], False
    for m in members:
        m = _unwrap(m)
        if isinstance(m, type) and issubclass(m, BaseModel):
            for tag in _TAG_FIELDS:
                field = m.model_fields.get(tag)
                if field is not None and field.default == part:
                    return m, True
        origin = get_origin(m) or m
        if isinstance(part, str) and part.startswith(getattr(origin, "__name__", "?")):
            return m, True
    return None, True


def _fields_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed in the mapping pydantic's ``loc`` points into."""
    tp: Any = root
    parts = list(loc)
    while parts:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        part = parts[0]
        if origin is Union or origin is types.UnionType:
            tp, consumed = _member(tp, part)
            if tp is None:
                return []
            if consumed:
                parts.pop(0)
            continue
        parts.pop(0)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = tp.model_fields
            tp = next((f.annotation for n, f in fields.items() if part in (n, f.alias)), None)
        elif origin is list and isinstance(part, int):
            tp = get_args(tp)[0]
        elif origin is dict:
            tp = get_args(tp)[1]
        else:
            return []
    tp = _unwrap(tp)
    if get_origin(tp) in (Union, types.UnionType):
        tp, _ = _member(tp, "")
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return []
    return [f.alias or n for n, f in tp.model_fields.items()]


def _pick(exc: ValidationError, data: Any) -> tuple[ErrorDetails, _KeyPath]:
    errors = exc.errors(include_url=False)
    # an unknown key first: it is usually the misspelling of a missing one
    errors.sort(key=lambda e: e["type"] != "extra_forbidden")
    for err in errors:
        path, consistent = _real_path(tuple(err["loc"]), data)
        if consistent:
            return err, path
    return errors[0], _real_path(tuple(errors[0]["loc"]), data)[0]


def explain(
    exc: ValidationError,
    data: Any,
    root: type[BaseModel],
    file: str,
    locate: Callable[[_KeyPath, bool], int | None],
    prefix: _KeyPath = (),
) -> ConfigError:
    """The ``ConfigError`` for ``exc`` (raised validating ``data`` as ``root``): ``locate``
    gives the line of a path (of the key itself when asked); ``prefix`` is prepended to the
    dotted key."""
    err, path = _pick(exc, data)
    kind, msg = err["type"], str(err["msg"]).removeprefix("Value error, ")
    at_key = False
    expected: str | None = None
    hint: str | None = None
    if kind == "extra_forbidden":
        at_key = True
        allowed = _fields_at(root, tuple(err["loc"])[:-1])
        msg = "unknown key"
        expected = "one of: " + ", ".join(allowed) if allowed else None
        close = difflib.get_close_matches(str(path[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else None
    elif kind in {"union_tag_invalid", "union_tag_not_found"}:
        kinds = scorer_types()
        tag = err.get("ctx", {}).get("discriminator", "'type'").strip("'")
        path = (*path, tag)
        if tag != "type":
            msg = f"a bad `{tag}`: {msg}"
        elif kind == "union_tag_invalid":
            given = err["input"].get("type") if isinstance(err["input"], dict) else None
            msg = f"unknown scorer type {given!r}"
            expected = "one of: " + ", ".join(kinds)
            close = difflib.get_close_matches(str(given), kinds, n=1)
            hint = f"did you mean {close[0]!r}?" if close else None
        else:
            msg = "a scorer needs `type:`"
            expected = "one of: " + ", ".join(kinds)
    elif kind == "missing":
        msg = "missing required key"
    elif "input" in err and not isinstance(err["input"], dict | list):
        msg = f"{msg} (got {err['input']!r})"
    count = exc.error_count()
    if count > 1:
        more = f"{count - 1} more problem{'s' if count > 2 else ''}"
        hint = f"{hint} ({more})" if hint else more
    line = locate(path, at_key)
    return located_error(
        file, line, msg, key=dotted((*prefix, *path)), expected=expected, hint=hint
    )
