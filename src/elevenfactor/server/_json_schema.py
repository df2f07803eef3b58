"""JSON Schemas a client sends (``response_format``, tool parameters), checked before any model
runs: valid draft 2020-12, and every ``$ref`` local and resolvable."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from jsonschema import Draft202012Validator, SchemaError

from elevenfactor.errors import RequestError

__all__ = ["check_schema"]


def _invalid(message: str, param: str, code: str) -> RequestError:
    return RequestError(message, code=code, param=param)


def _pointer(root: Any, fragment: str) -> bool:
    """Whether the JSON pointer ``fragment`` (``/a/b``) or plain-name anchor resolves in root."""
    if fragment and not fragment.startswith("/"):
        return _has_anchor(root, fragment)
    node = root
    for token in fragment.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return False
    return True


def _has_anchor(node: Any, name: str) -> bool:
    if isinstance(node, dict):
        if node.get("$anchor") == name or node.get("$dynamicAnchor") == name:
            return True
        return any(_has_anchor(v, name) for v in node.values())
    return isinstance(node, list) and any(_has_anchor(v, name) for v in node)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    return [r for v in node for r in _refs(v)] if isinstance(node, list) else []


def check_schema(schema: Any, param: str) -> dict[str, Any]:
    """A valid JSON Schema (draft 2020-12) whose ``$ref``s all resolve within it, or a 400."""
    if not isinstance(schema, dict):
        raise _invalid("expected a JSON Schema object", param, "invalid_type")
    try:
        Draft202012Validator.check_schema(schema)
        refs = _refs(schema)
        for ref in refs:
            if not ref.startswith("#"):
                raise _invalid(
                    f"$ref {ref!r} points outside the schema; only local '#...' refs are served",
                    param,
                    "invalid_schema",
                )
            if not _pointer(schema, unquote(ref[1:])):
                raise _invalid(f"$ref {ref!r} does not resolve", param, "invalid_schema")
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        at = f" at '{where}'" if where else ""
        raise _invalid(
            f"not a valid JSON Schema{at}: {exc.message}", param, "invalid_schema"
        ) from None
    except RecursionError:
        raise _invalid("the JSON Schema is nested too deeply", param, "invalid_schema") from None
    return schema
