"""Reading one prompt file: YAML front matter (id, description, model parameters, inputs) and a
Jinja2 body, every error naming the file and the line.

```
---
id: support
description: Billing support agent instructions
model: {route: default, temperature: 0.2, max_tokens: 300}
inputs:
  type: object
  properties: {customer: {type: string}, tier: {type: string, enum: [free, pro]}}
  required: [customer]
---
You help {{ customer }}{% if tier == "pro" %}, a pro customer{% endif %}, with billing.
```

The front matter is optional (a file without it has no inputs); ``id`` defaults to the file
name without ``.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from elevenfactor.config._prompts import PROMPT_NAME
from elevenfactor.context._prompt_model import Prompt
from elevenfactor.context._prompt_template import compile_body, located_error
from elevenfactor.models import ModelSettings
from elevenfactor.store._versions import content_hash

__all__ = ["MODEL_KEYS", "content_hash", "parse_prompt"]

_NAME = re.compile(PROMPT_NAME)
_TOP = ("id", "description", "model", "inputs")
_NOT_FROM_FILE = {"tools", "tags", "user", "cache", "prompt_version"}
MODEL_KEYS = ("route", *(k for k in ModelSettings.model_fields if k not in _NOT_FROM_FILE))
"""The keys of a prompt's ``model:``: the route and the ``ModelSettings`` a prompt may set."""


@dataclass
class _Front:
    id: str | None = None
    id_line: int = 1
    description: str = ""
    route: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


def parse_prompt(
    data: bytes,
    *,
    path: Path,
    file: str | None = None,
    origin: Literal["file", "store"] = "file",
) -> Prompt:
    """Parse a prompt file's bytes into a compiled ``Prompt``. ``file`` is the path shown in
    errors and recorded (default: ``path``). Raises ``PromptError`` naming the file and line."""
    file = file or str(path)
    full_hash, normalised = content_hash(data)
    try:
        source = normalised.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = normalised.count(b"\n", 0, exc.start) + 1
        raise located_error(file, line, "the file is not valid UTF-8") from None
    front_text, body, first_line = _split(source.removeprefix("\ufeff"), file)
    front = _front_matter(front_text, file) if front_text is not None else _Front()
    prompt_id = front.id if front.id is not None else path.name.removesuffix(".md")
    if not _NAME.match(prompt_id):
        raise located_error(
            file,
            front.id_line,
            f"{prompt_id!r} is not a valid prompt id",
            hint="letters, digits, '_', '.' and '-' (not first); set `id:` in the front matter",
        )
    declared = set(front.inputs.get("properties") or {})
    template = compile_body(body, file=file, first_line=first_line, declared=declared)
    ref = f"{prompt_id}@{full_hash[:12]}"
    return Prompt(
        id=prompt_id,
        full_hash=full_hash,
        path=path,
        file=file,
        description=front.description,
        route=front.route,
        settings=ModelSettings.model_validate({**front.settings, "prompt_version": ref}),
        inputs=front.inputs,
        source=source,
        body=body,
        origin=origin,
        template=template,
        validator=Draft202012Validator(
            front.inputs, format_checker=Draft202012Validator.FORMAT_CHECKER
        ),
    )


def _split(text: str, file: str) -> tuple[str | None, str, int]:
    """(front matter, body, file line of the body's first line)."""
    lines = text.split("\n")
    if lines[0].rstrip() != "---":
        return None, text, 1
    for i in range(1, len(lines)):
        if lines[i].rstrip() == "---":
            return "\n".join(lines[1:i]), "\n".join(lines[i + 1 :]), i + 2
    raise located_error(
        file,
        1,
        "the front matter opened by '---' on line 1 is never closed",
        hint="end it with a line holding only '---', then the body",
    )


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 2  # the front matter starts on line 2


def _front_matter(text: str, file: str) -> _Front:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _no_duplicates(node, file)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line = int(mark.line) + 2 if mark is not None else 1
        raise located_error(file, line, f"the front matter is not valid YAML: {problem}") from None
    finally:
        loader.dispose()
    front = _Front()
    if data is None:
        return front
    if not isinstance(data, dict) or not isinstance(node, MappingNode):
        raise located_error(file, 2, "the front matter must be a mapping (key: value lines)")
    for key_node, value_node in node.value:
        key = key_node.value
        if key not in _TOP:
            raise located_error(
                file,
                _line(key_node),
                f"unknown key {key!r} in the front matter",
                hint="allowed: " + ", ".join(_TOP),
            )
        value = data[key]
        if key == "id":
            if not isinstance(value, str):
                raise located_error(file, _line(value_node), "id must be a plain name")
            front.id, front.id_line = value, _line(value_node)
        elif key == "description":
            if not isinstance(value, str):
                raise located_error(file, _line(value_node), "description must be text")
            front.description = value
        elif key == "model":
            front.route, front.settings = _model(value, value_node, file)
        elif value is not None:
            front.inputs = _inputs(value, value_node, file)
    return front


def _no_duplicates(node: Node, file: str, seen_nodes: set[int] | None = None) -> None:
    visited = set() if seen_nodes is None else seen_nodes
    if id(node) in visited:  # an alias met again (possibly of itself): checked already
        return
    visited.add(id(node))
    if isinstance(node, MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode):
                if key_node.value in seen:
                    raise located_error(file, _line(key_node), f"duplicate key {key_node.value!r}")
                seen.add(key_node.value)
            _no_duplicates(value_node, file, visited)
    elif isinstance(node, SequenceNode):
        for item in node.value:
            _no_duplicates(item, file, visited)


def _child(node: Node, key: Any) -> tuple[Node, Node] | None:
    """The (key, value) nodes of ``key`` in a mapping node, or item ``key`` of a sequence."""
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if k.value == str(key):
                return k, v
    elif isinstance(node, SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
        return node.value[key], node.value[key]
    return None


def _locate(node: Node, path: tuple[Any, ...]) -> int:
    """The line of the deepest node along ``path``."""
    for key in path:
        found = _child(node, key)
        if found is None:
            break
        node = found[1]
    return _line(node)


def _model(value: Any, node: Node, file: str) -> tuple[str | None, dict[str, Any]]:
    if value is None:
        return None, {}
    if isinstance(value, str):
        value = {"route": value}
    if not isinstance(value, dict):
        raise located_error(
            file,
            _line(node),
            "model must be a route name or a mapping",
            hint="e.g. model: {route: default, temperature: 0.2, max_tokens: 300}",
        )
    for key in value:
        if key not in MODEL_KEYS:
            found = _child(node, key)
            raise located_error(
                file,
                _line(found[0]) if found else _line(node),
                f"unknown key model.{key}",
                hint="allowed: " + ", ".join(MODEL_KEYS),
            )
    route = value.get("route")
    if route is not None and (not isinstance(route, str) or not _NAME.match(route)):
        raise located_error(
            file, _locate(node, ("route",)), f"model.route must be a route name, got {route!r}"
        )
    settings = {k: v for k, v in value.items() if k != "route"}
    try:
        ModelSettings.model_validate(settings)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        raise located_error(
            file,
            _locate(node, loc),
            f"model.{'.'.join(str(p) for p in loc)}: {err['msg']} (got {err.get('input')!r})",
        ) from None
    return route, settings


def _inputs(value: Any, node: Node, file: str) -> dict[str, Any]:
    hint = "inputs is a JSON Schema: {type: object, properties: {...}, required: [...]}"
    if not isinstance(value, dict) or value.get("type") != "object":
        where = _locate(node, ("type",)) if isinstance(value, dict) else _line(node)
        raise located_error(
            file, where, "inputs must be a JSON Schema with type: object", hint=hint
        )
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        raise located_error(
            file,
            _locate(node, tuple(exc.path)),
            f"inputs is not a valid JSON Schema: {exc.message}",
            hint=hint,
        ) from None
    props = value.get("properties") or {}
    for i, name in enumerate(value.get("required") or ()):
        if name not in props:
            raise located_error(
                file,
                _locate(node, ("required", i)),
                f"required input {name!r} is not declared under inputs.properties",
                hint=hint,
            )
    return value
