"""``GET /docs``: the OpenAPI document rendered server-side as one self-contained HTML page (no
scripts, no external assets: it works offline and under a strict content security policy)."""

from __future__ import annotations

import functools
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from elevenfactor.server._openapi import document

__all__ = ["docs_page", "render_docs"]

_CSS = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{border-bottom:1px solid #ccc;margin-top:2.5rem}
section{margin:1.5rem 0;padding:.5rem 1rem;border-left:4px solid #ccd}
.m{font:bold 13px monospace;padding:2px 6px;border-radius:3px;background:#def;
text-transform:uppercase}
code,.p{font-family:monospace}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top;font-size:14px}
.open{color:#070}.key{color:#a50}
"""
_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}


def _resolve(schema: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        found: dict[str, Any] = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
        return found
    return schema


def _type(schema: dict[str, Any]) -> str:
    """A short, readable type: ``string``, ``integer (1-1000)``, ``"a" | "b"``, ``Name``."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[1]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(_type(a) for a in schema[key])
    if "const" in schema:
        return repr(schema["const"]).replace("'", '"')
    if "enum" in schema:
        return " | ".join(repr(v).replace("'", '"') for v in schema["enum"])
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    bounds = [
        f"{label} {schema[k]}"
        for k, label in (
            ("minimum", "≥"),
            ("exclusiveMinimum", ">"),
            ("maximum", "≤"),
            ("exclusiveMaximum", "<"),
            ("maxLength", "length ≤"),
            ("pattern", "matching"),
        )
        if k in schema
    ]
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def _rows(rows: list[tuple[str, str, bool, str]], head: str) -> str:
    if not rows:
        return ""
    cells = "".join(
        f"<tr><td class=p>{escape(n)}</td><td><code>{escape(t)}</code></td>"
        f"<td>{'yes' if req else ''}</td><td>{escape(d)}</td></tr>"
        for n, t, req, d in rows
    )
    return (
        f"<h4>{head}</h4><table><tr><th>name</th><th>type</th><th>required</th>"
        f"<th>description</th></tr>{cells}</table>"
    )


def _fields(schema: dict[str, Any]) -> list[tuple[str, str, bool, str]]:
    required = set(schema.get("required", ()))
    return [
        (name, _type(prop), name in required, str(prop.get("description", "")))
        for name, prop in schema.get("properties", {}).items()
    ]


def _operation(path: str, method: str, op: dict[str, Any], doc: dict[str, Any]) -> str:
    auth = (
        "<span class=key>API key</span>" if op.get("security") else "<span class=open>open</span>"
    )
    parts = [
        f'<section id="{escape(op["operationId"])}"><h3><span class=m>{escape(method)}</span> '
        f"<code>{escape(path)}</code> — {escape(op['summary'])}</h3><p>{auth}. "
        f"{escape(op.get('description', ''))}</p>"
    ]
    params = [
        (
            p["name"],
            _type(p["schema"]),
            bool(p.get("required")),
            f"in {p['in']}. {p.get('description', '')}".strip(),
        )
        for p in op.get("parameters", [])
    ]
    parts.append(_rows(params, "Parameters"))
    body = op.get("requestBody", {}).get("content", {}).get("application/json")
    if body:
        schema = _resolve(body["schema"], doc)
        parts.append(_rows(_fields(schema), "Body fields (JSON)"))
    answers = "".join(
        f"<li><code>{escape(code)}</code> {escape(r['description'])}"
        f" <code>{escape(', '.join(r.get('content', {})))}</code></li>"
        for code, r in op["responses"].items()
    )
    parts.append(f"<h4>Responses</h4><ul>{answers}</ul></section>")
    return "".join(parts)


def render_docs(doc: dict[str, Any]) -> str:
    """The HTML reference page for an OpenAPI document."""
    info = doc["info"]
    ops = [(path, m, op) for path, item in doc["paths"].items() for m, op in item.items()]
    index = "".join(
        f'<li><a href="#{escape(op["operationId"])}"><span class=p>{escape(m.upper())}'
        f" {escape(path)}</span></a> — {escape(op['summary'])}</li>"
        for path, m, op in ops
    )
    used = {ref.rsplit("/", 1)[1] for _, _, op in ops for ref in _refs(op.get("requestBody", {}))}
    defs = "".join(
        f'<section id="schema-{escape(name)}"><h3><code>{escape(name)}</code></h3>'
        f"<p>{escape(str(schema.get('description', '')))}</p>"
        f"{_rows(_fields(schema), 'Fields')}</section>"
        for name, schema in doc["components"]["schemas"].items()
        if name not in used and schema.get("properties") and name.startswith("Chat")
    )
    body = "".join(_operation(path, m, op, doc) for path, m, op in ops)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(info['title'])} API reference</title><style>{_CSS}</style></head><body>"
        f"<h1>{escape(info['title'])} {escape(info['version'])} — API reference</h1>"
        f"<p>{escape(info.get('description', ''))}</p>"
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p>'
        f"<h2>Operations</h2><ul>{index}</ul>{body}"
        f"<h2>Chat message types</h2>{defs}</body></html>"
    )


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


@functools.cache
def _page() -> str:
    return render_docs(document())


async def docs_page(request: Request) -> Response:
    """``GET /docs``: open, like ``/openapi.json``."""
    return HTMLResponse(_page(), headers=_HEADERS)
