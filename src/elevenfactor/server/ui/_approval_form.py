"""The approval page's arguments form: a tool's JSON schema as form fields, and back.

``layout(schema, proposed)`` turns the schema of a tool's arguments into fields: strings, numbers,
integers, booleans and enums (also ``nullable`` ones: ``anyOf`` with ``null``, ``type: [x,
"null"]``) get an input each, named by the argument (nested objects through dotted names, local
``$ref``s followed); arrays (and, inside objects, anything else) a JSON field of their own; what
remains at the top level — arguments the schema does not describe, or describes in ways no field
can hold — is edited as JSON in the textarea ``Arguments (JSON)``. A value the proposal gives
that its field could not hold exactly (a string with control characters, a float for an integer)
goes to the JSON textarea too, so every proposal comes back unchanged when nothing is edited.

``_approval_args.parse`` reads the submitted fields back into arguments and checks them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jsonschema
from jsonschema.exceptions import SchemaError

__all__ = [
    "JSON_FIELD",
    "MISSING",
    "FormLayout",
    "Group",
    "Input",
    "initial_values",
    "layout",
    "load_json",
]

JSON_FIELD = "arguments_json"
"""The form name of the ``Arguments (JSON)`` textarea."""

Kind = Literal["string", "text", "number", "integer", "enum", "json"]

MISSING: Any = object()
"""An argument the proposal (or the edited form) does not give."""
_MISSING = MISSING
_MAX_DEPTH = 6
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SCALAR = (str, int, float, bool, type(None))


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace(".", "~1")


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e400: Python reads it as inf, the decision would say null
        raise ValueError(f"{text[:40]} is too large a number")
    return number


def load_json(text: str) -> Any:
    """Strict JSON: no ``NaN`` or ``Infinity`` (nor numbers beyond a float's range), no nesting
    deeper than the parser's stack; ``ValueError`` otherwise."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested too deeply") from None


@dataclass(frozen=True, slots=True)
class Input:
    """One form field for one argument (at ``path``)."""

    path: tuple[str, ...]
    kind: Kind
    required: bool
    nullable: bool
    description: str
    id: str
    options: tuple[tuple[str, str], ...] = ()
    """``(value, label)`` of an enum's (or a boolean's) choices."""
    values: tuple[Any, ...] = ()
    """The JSON values behind ``options``, in the same order."""

    @property
    def name(self) -> str:
        """The field's form name: ``arg.`` and the path (dots in names escaped)."""
        return "arg." + ".".join(_escape(p) for p in self.path)

    @property
    def label(self) -> str:
        """The argument's name (dotted inside objects)."""
        return ".".join(self.path)

    def text(self, value: Any) -> str:
        """``value`` as this field shows it."""
        if value is _MISSING or (value is None and self.kind not in ("enum", "json")):
            return ""
        if self.kind in ("string", "text"):
            return str(value)
        if self.kind == "enum":
            pairs = zip(self.options, self.values, strict=True)
            return next((option for (option, _), v in pairs if _same(v, value)), "")
        if self.kind == "json":
            return _dump(value)
        return repr(value) if isinstance(value, float) else str(value)


@dataclass(frozen=True, slots=True)
class Group:
    """A nested object: a fieldset of its properties' fields."""

    path: tuple[str, ...]
    required: bool
    description: str
    children: tuple[Input | Group, ...]

    @property
    def label(self) -> str:
        """The object argument's (dotted) name."""
        return ".".join(self.path)


@dataclass(frozen=True, slots=True)
class FormLayout:
    """The fields of one proposal's arguments, and the schema they are checked against."""

    nodes: tuple[Input | Group, ...]
    json_keys: tuple[str, ...]
    """Top-level arguments edited in the ``Arguments (JSON)`` textarea."""
    json_open: bool
    """The textarea is offered (something may be edited only there)."""
    schema: dict[str, Any] | None
    """The schema the arguments are validated against (None: no usable schema)."""
    problem: str | None = None
    """Why the schema could not be used, if it could not."""

    def inputs(self) -> list[Input]:
        """Every field, depth first."""
        out: list[Input] = []

        def walk(nodes: tuple[Input | Group, ...]) -> None:
            for node in nodes:
                if isinstance(node, Group):
                    walk(node.children)
                else:
                    out.append(node)

        walk(self.nodes)
        return out


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON (``1``, ``1.0`` and ``true`` differ)."""
    return type(a) is type(b) and _dump(a) == _dump(b)


def _deref(node: Any, root: Mapping[str, Any]) -> Any:
    """``node`` with local ``$ref``s followed (siblings of ``$ref`` kept), or None if a
    reference cannot be followed."""
    for _ in range(20):
        if not isinstance(node, dict) or "$ref" not in node:
            return node
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return None
        target: Any = root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                return None
            target = target[part]
        node = (
            {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            if isinstance(target, dict)
            else None
        )
    return None


def _nullable(node: dict[str, Any], root: Mapping[str, Any]) -> tuple[Any, bool]:
    """``(the non-null schema, nullable)`` for ``anyOf``/``oneOf`` with ``null`` and
    ``type: [x, "null"]``; ``(node, False)`` otherwise."""
    for key in ("anyOf", "oneOf"):
        branches = node.get(key)
        if isinstance(branches, list) and len(branches) == 2:
            kinds = [_deref(b, root) for b in branches]
            nulls = [b for b in kinds if isinstance(b, dict) and b.get("type") == "null"]
            others = [b for b in kinds if b not in nulls]
            if len(nulls) == 1 and len(others) == 1 and isinstance(others[0], dict):
                rest = {k: v for k, v in node.items() if k != key}
                return {**others[0], **rest}, True
    kind = node.get("type")
    if isinstance(kind, list) and len(kind) == 2 and "null" in kind:
        other = next(k for k in kind if k != "null") if kind.count("null") == 1 else None
        if isinstance(other, str):
            return {**node, "type": other}, True
    return node, False


def _enum(node: dict[str, Any], nullable: bool) -> tuple[tuple[Any, ...], bool] | None:
    """The choices of an enum, const or boolean schema, or None."""
    if isinstance(node.get("enum"), list) and node["enum"]:
        values = list(node["enum"])
    elif "const" in node:
        values = [node["const"]]
    elif node.get("type") == "boolean":
        values = [True, False]
    else:
        return None
    if not all(isinstance(v, _SCALAR) for v in values):
        return None
    if nullable and not any(v is None for v in values):
        values.append(None)
    return tuple(values), all(isinstance(v, str) and v for v in values)


def _fits(kind: Kind, value: Any, nullable: bool, values: tuple[Any, ...]) -> bool:
    """Whether the field can show ``value`` and give it back unchanged."""
    if value is _MISSING or kind == "json":
        return True
    if value is None and kind != "enum":
        return nullable
    if kind in ("string", "text"):
        return isinstance(value, str) and not _CONTROL.search(value)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "enum":
        return any(_same(v, value) for v in values)
    return False


class _Builder:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.count = 0

    def _id(self) -> str:
        self.count += 1
        return f"arg-{self.count}"

    def node(
        self, path: tuple[str, ...], raw: Any, required: bool, value: Any, top: bool
    ) -> Input | Group | None:
        """The field for one property, or None when only the JSON textarea can hold it."""
        schema = _deref(raw, self.root)
        if not isinstance(schema, dict):
            return None if top else self._json(path, required, {}, False)
        schema, nullable = _nullable(schema, self.root)
        desc = str(schema.get("description") or "")
        choices = _enum(schema, nullable)
        kind: Kind | None = None
        values: tuple[Any, ...] = ()
        if choices is not None:
            kind, values = "enum", choices[0]
            plain = choices[1]
        else:
            plain = False
            t = schema.get("type")
            if t == "string":
                lines = isinstance(value, str) and ("\n" in value or "\r" in value)
                kind = "text" if lines else "string"
            elif t in ("number", "integer"):
                kind = t
            elif t == "array":
                kind = "json"
            elif t == "object" or (t is None and isinstance(schema.get("properties"), dict)):
                group = self.group(path, schema, required, value, nullable)
                if group is not None:
                    return group
                kind = "json"
        if kind is None or not _fits(kind, value, nullable, values):
            return None if top else self._json(path, required, schema, nullable)
        options = tuple(
            ((v if plain else _dump(v)), ("(null)" if v is None else str(v) if plain else _dump(v)))
            for v in values
        )
        return Input(path, kind, required, nullable, desc, self._id(), options, values)

    def _json(
        self, path: tuple[str, ...], required: bool, schema: dict[str, Any], nullable: bool
    ) -> Input:
        desc = str(schema.get("description") or "")
        return Input(path, "json", required, nullable, desc, self._id())

    def group(
        self,
        path: tuple[str, ...],
        schema: dict[str, Any],
        required: bool,
        value: Any,
        nullable: bool,
    ) -> Group | None:
        props = schema.get("properties")
        if nullable or len(path) >= _MAX_DEPTH or not isinstance(props, dict):
            return None
        if value is not _MISSING and not (isinstance(value, dict) and set(value) <= set(props)):
            return None
        given = value if isinstance(value, dict) else {}
        needed = set(schema.get("required") or ())
        children: list[Input | Group] = []
        for key, sub in _required_first(props, needed):
            child = self.node((*path, key), sub, key in needed, given.get(key, _MISSING), False)
            assert child is not None  # nested: a JSON field at worst
            children.append(child)
        return Group(path, required, str(schema.get("description") or ""), tuple(children))


def _required_first(props: dict[str, Any], needed: set[str]) -> list[tuple[str, Any]]:
    """Properties in schema order, the required ones first (a journaled schema has its keys
    sorted, so its order says little)."""
    return sorted(props.items(), key=lambda kv: kv[0] not in needed)


def _usable(schema: Any) -> tuple[dict[str, Any] | None, str | None]:
    if schema is None:
        return None, None
    if not isinstance(schema, dict):
        return None, "the tool's schema is not a JSON object"
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        return None, f"the tool's schema is not valid JSON Schema ({exc.message})"
    return schema, None


def layout(schema: Any, proposed: Mapping[str, Any]) -> FormLayout:
    """The fields for editing ``proposed`` (the arguments a tool call was proposed with)
    under ``schema`` (the JSON schema of the tool's arguments, or None if unknown)."""
    usable, problem = _usable(schema)
    props = usable.get("properties") if usable is not None else None
    if usable is None or not isinstance(props, dict) or usable.get("type", "object") != "object":
        return FormLayout((), tuple(proposed), True, usable, problem)
    builder = _Builder(usable)
    needed = set(usable.get("required") or ())
    nodes: list[Input | Group] = []
    json_keys: list[str] = []
    unformable = False
    for key, sub in _required_first(props, needed):
        node = builder.node((key,), sub, key in needed, proposed.get(key, _MISSING), True)
        if node is None:
            unformable = True
            if key in proposed:
                json_keys.append(key)
        else:
            nodes.append(node)
    json_keys += [k for k in proposed if k not in props]
    return FormLayout(tuple(nodes), tuple(json_keys), bool(json_keys) or unformable, usable)


def _at(value: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def initial_values(form: FormLayout, proposed: Mapping[str, Any]) -> dict[str, str]:
    """The form's fields filled with ``proposed``: form name -> text."""
    out = {i.name: i.text(_at(proposed, i.path)) for i in form.inputs()}
    if form.json_open:
        out[JSON_FIELD] = _dump({k: proposed[k] for k in form.json_keys})
    return out
