"""Read a function's description and per-argument descriptions from its docstring.

Google (``Args:``), Sphinx (``:param x:``) and NumPy (``Parameters`` + dashes) styles are
understood; anything else becomes the description as a whole.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

__all__ = ["parse_docstring"]

_GOOGLE_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Returns|Return|Yields"
    r"|Raises|Examples?|Notes?|Warnings?|See Also|References|Attributes)\s*:\s*$"
)
_GOOGLE_ARG_SECTIONS = {
    "Args",
    "Arguments",
    "Parameters",
    "Params",
    "Keyword Args",
    "Keyword Arguments",
}
_GOOGLE_ARG = re.compile(r"^(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_FIELD = re.compile(r"^:(\w+)((?:\s+[^:\s]+)*):\s*(.*)$")
_NUMPY_UNDERLINE = re.compile(r"^-{3,}\s*$")
_NUMPY_ARG = re.compile(r"^(\w+)\s*(?::.*)?$")


def parse_docstring(func: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """``(description, {argument: description})`` from ``func``'s docstring."""
    doc = inspect.getdoc(func)
    if not doc:
        return "", {}
    lines = doc.splitlines()
    if any(_NUMPY_UNDERLINE.match(line.strip()) for line in lines):
        return _numpy(lines)
    if any(line.lstrip().startswith(":param") for line in lines):
        return _sphinx(lines)
    return _google(lines)


def _join(parts: list[str]) -> str:
    return " ".join(p.strip() for p in parts if p.strip())


def _description(lines: list[str]) -> str:
    return "\n".join(lines).strip()


def _google(lines: list[str]) -> tuple[str, dict[str, str]]:
    head: list[str] = []
    params: dict[str, list[str]] = {}
    section: str | None = None
    current: str | None = None
    arg_indent: int | None = None
    for line in lines:
        header = _GOOGLE_SECTION.match(line.strip()) if not line.startswith(" ") else None
        if header:
            section, current, arg_indent = header.group(1), None, None
            continue
        if section is None:
            head.append(line)
            continue
        if section not in _GOOGLE_ARG_SECTIONS or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        match = _GOOGLE_ARG.match(line.strip())
        if match and (arg_indent is None or indent <= arg_indent):
            arg_indent = indent
            current = match.group(1).lstrip("*")
            params[current] = [match.group(3)]
        elif current is not None:
            params[current].append(line)
    return _description(head), {k: _join(v) for k, v in params.items()}


def _sphinx(lines: list[str]) -> tuple[str, dict[str, str]]:
    head: list[str] = []
    params: dict[str, list[str]] = {}
    current: str | None = None
    in_fields = False
    for line in lines:
        stripped = line.strip()
        match = _SPHINX_FIELD.match(stripped)
        if match:
            in_fields = True
            kind, words, text = match.group(1), match.group(2).split(), match.group(3)
            name = words[-1] if words else None
            if kind in ("param", "parameter", "arg", "argument", "key", "keyword") and name:
                current = name
                params[current] = [text]
            else:
                current = None
        elif in_fields:
            if current is not None and stripped:
                params[current].append(stripped)
        else:
            head.append(line)
    return _description(head), {k: _join(v) for k, v in params.items()}


def _numpy(lines: list[str]) -> tuple[str, dict[str, str]]:
    head: list[str] = []
    params: dict[str, list[str]] = {}
    section: str | None = None
    current: str | None = None
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if _NUMPY_UNDERLINE.match(nxt.strip()) and line.strip():
            section, current = line.strip(), None
            continue
        if _NUMPY_UNDERLINE.match(line.strip()):
            continue
        if section is None:
            head.append(line)
        elif section in ("Parameters", "Other Parameters") and line.strip():
            match = _NUMPY_ARG.match(line)
            if match and not line.startswith(" "):
                current = match.group(1)
                params[current] = []
            elif current is not None:
                params[current].append(line)
    return _description(head), {k: _join(v) for k, v in params.items()}
