"""The approval page's edited arguments: the submitted form fields read back into arguments
(the inverse of ``_approval_form``) and checked against the tool's schema.

An empty field means what the proposal meant: absent if the proposal lacked the argument, else
its empty value (``""`` for a string, ``null`` for a nullable field); a required argument left
out is an error. Errors are keyed by the form name of the field they belong to (``""``: the
arguments as a whole), so the page can show each next to its field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jsonschema

from elevenfactor.errors import RequestError
from elevenfactor.runtime._approvals import check_storable
from elevenfactor.server.ui._approval_form import (
    JSON_FIELD,
    MISSING,
    FormLayout,
    Group,
    Input,
    load_json,
)

__all__ = ["check", "parse"]

_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?([0-9]+|[0-9]*\.[0-9]+)([eE][-+]?[0-9]+)?")


def _empty(field: Input, before: Any) -> Any:
    """What an empty field means, given the proposal's value ``before``."""
    if before is MISSING or before == "" or before is None:
        return before
    if field.nullable:
        return None
    return "" if field.kind in ("string", "text") else MISSING


def _value(field: Input, text: str, before: Any) -> Any:
    """The field's value (``MISSING``: leave the argument out); ValueError if unreadable."""
    if field.kind == "text":
        same = isinstance(before, str) and _lf(before) == _lf(text)
        text = before if same else _lf(text)
    if text == "" or (field.kind not in ("string", "text") and not text.strip()):
        return _empty(field, before)
    if field.kind in ("string", "text"):
        return text
    if field.kind == "enum":
        for (option, _), value in zip(field.options, field.values, strict=True):
            if option == text:
                return value
        raise ValueError("choose one of the listed values")
    if field.kind == "json":
        try:
            return load_json(text)
        except ValueError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
    text = text.strip()
    if _INT.fullmatch(text):
        return int(text)
    if field.kind == "integer":
        raise ValueError("enter a whole number")
    if _FLOAT.fullmatch(text):
        number = float(text)
        if number not in (float("inf"), float("-inf")):
            return number
    raise ValueError("enter a number")


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def _read(
    nodes: tuple[Input | Group, ...],
    fields: Mapping[str, str],
    proposed: Any,
    errors: dict[str, str],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for node in nodes:
        key = node.path[-1]
        before = proposed.get(key, MISSING) if isinstance(proposed, dict) else MISSING
        if isinstance(node, Group):
            inner = _read(node.children, fields, before, errors)
            if inner or before is not MISSING:  # a required one left out: check says so
                out[key] = inner
            continue
        try:
            value = _value(node, fields.get(node.name, ""), before)
        except ValueError as exc:
            errors[node.name] = str(exc)
            continue
        if value is not MISSING:
            out[key] = value
    return out


def parse(
    form: FormLayout, proposed: Mapping[str, Any], fields: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The arguments the submitted ``fields`` give, and the errors of fields that could not be
    read, by form name. Arguments with errors are not to be used; ``check`` validates the
    others against the schema."""
    errors: dict[str, str] = {}
    args = _read(form.nodes, fields, proposed, errors)
    if form.json_open:
        text = fields.get(JSON_FIELD, "").strip() or "{}"
        try:
            extra = load_json(text)
        except ValueError as exc:
            errors[JSON_FIELD] = f"not valid JSON: {exc}"
            extra = {}
        if not isinstance(extra, dict):
            errors[JSON_FIELD] = "must be a JSON object of arguments"
            extra = {}
        clash = sorted(set(extra) & (set(args) | _top(form)))
        if clash:
            errors[JSON_FIELD] = f"{', '.join(clash)} has a field of its own above; edit it there"
        args.update(extra)
    return args, errors


def check(form: FormLayout, args: Mapping[str, Any]) -> dict[str, str]:
    """``args`` against the form's schema: error messages by form name; first, whether they can
    be stored at all (``runtime._approvals.check_storable``, which deciding checks again)."""
    try:
        check_storable(dict(args), "arguments")
    except RequestError as exc:  # an integer beyond 64 bits, a lone surrogate ("\ud800")
        return {"": exc.message}
    if form.schema is None:
        return {}
    by_path = {i.path: i.name for i in form.inputs()}
    cls = jsonschema.validators.validator_for(form.schema)
    errors: dict[str, str] = {}
    try:
        found = list(cls(form.schema).iter_errors(dict(args)))
    except Exception as exc:  # an unresolvable $ref and the like: say so, decide nothing
        return {"": f"the tool's schema could not be applied: {exc}"}
    for err in found:
        path = tuple(str(p) for p in err.absolute_path)
        if err.validator == "required" and isinstance(err.instance, dict):
            wanted = err.validator_value if isinstance(err.validator_value, list) else []
            missing = [p for p in wanted if p not in err.instance]
            for prop in missing:
                target = _target(by_path, (*path, str(prop)), form)
                errors.setdefault(target, "required")
            continue
        errors.setdefault(_target(by_path, path, form), err.message)
    return errors


def _target(by_path: Mapping[tuple[str, ...], str], path: tuple[str, ...], form: FormLayout) -> str:
    """The form name of the field ``path`` is in (its deepest enclosing field)."""
    for n in range(len(path), 0, -1):
        if path[:n] in by_path:
            return by_path[path[:n]]
    if form.json_open and (not path or path[0] in form.json_keys or path[0] not in _top(form)):
        return JSON_FIELD
    return ""


def _top(form: FormLayout) -> set[str]:
    return {n.path[0] for n in form.nodes}
