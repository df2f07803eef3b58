"""Reading YAML documents kept as code (guard policies, eval suites) with errors that point
at the file, the line and the dotted key: compose the document once, keep its nodes, map a
key path back to a line. PyYAML alone would drop positions and keep the last of two equal keys
silently; here a duplicate key is an error."""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from elevenfactor.errors import ConfigError

__all__ = [
    "KeyPath",
    "child",
    "compose",
    "dotted",
    "item",
    "line_of",
    "locate",
    "located_error",
]

KeyPath = tuple[str | int, ...]
"""A path into a document: mapping keys and sequence indexes."""

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


def located_error(
    file: str,
    line: int | None,
    message: str,
    *,
    key: str | None = None,
    expected: str | None = None,
    hint: str | None = None,
) -> ConfigError:
    """A ``ConfigError`` whose source is ``file:line`` and whose details hold the file, the
    line and the key (for ``--json`` output and the API)."""
    source = f"{file}:{line}" if line is not None else file
    exc = ConfigError(message, source=source, key=key, expected=expected, hint=hint)
    exc.details = {"file": file, "line": line, "key": key}
    return exc


def compose(text: str, file: str, *, what: str = "a document") -> tuple[Node | None, Any]:
    """The node tree and the parsed value of ``text`` (the YAML of ``file``): invalid YAML, a
    character YAML does not allow, a duplicate key or nesting too deep is a located
    ``ConfigError``; ``what`` names the document in that last message."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        at = text.count("\n", 0, exc.position) + 1
        what = f"character {exc.character:#x} is not allowed in YAML"
        raise located_error(file, at, f"not valid YAML at line {at}: {what}") from None
    try:
        node = loader.get_single_node()
        if node is not None:
            _no_duplicates(node, file)
        return node, (loader.construct_document(node) if node is not None else None)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line = int(mark.line) + 1 if mark is not None else None
        where = f" at line {line}, column {int(mark.column) + 1}" if mark is not None else ""
        raise located_error(
            file, line, f"not valid YAML{where}: {problem}", expected="YAML"
        ) from None
    except RecursionError:
        raise located_error(
            file, None, "the YAML is nested too deeply", expected=f"{what} (a few levels deep)"
        ) from None
    finally:
        loader.dispose()


def line_of(node: Node | None) -> int:
    """The 1-based line of ``node`` (1 when there is none)."""
    return int(node.start_mark.line) + 1 if node is not None else 1


def _no_duplicates(
    node: Node, file: str, path: KeyPath = (), seen_nodes: set[int] | None = None
) -> None:
    """A key twice in one mapping is an error (PyYAML would keep the last silently). A node
    reached again through an alias is not walked twice (an alias may refer to itself)."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode):
                key = key_node.value
                if key in seen:
                    raise located_error(
                        file, line_of(key_node), "duplicate key", key=dotted((*path, key))
                    )
                seen.add(key)
                _no_duplicates(value_node, file, (*path, key), seen_nodes)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            _no_duplicates(item, file, (*path, i), seen_nodes)


def child(node: Node, key: str | int) -> tuple[Node, Node] | None:
    """The (key, value) nodes of ``key`` in a mapping node, or item ``key`` of a sequence."""
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.value == str(key):
                return k, v
    elif isinstance(node, SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
        item: Node = node.value[key]
        return item, item
    return None


def locate(node: Node, path: KeyPath, *, at_key: bool = False) -> int:
    """The line of the deepest node along ``path`` (of the key itself when ``at_key``)."""
    for i, key in enumerate(path):
        found = child(node, key)
        if found is None:
            break
        node = found[0] if at_key and i == len(path) - 1 else found[1]
    return line_of(node)


def dotted(path: KeyPath) -> str:
    """``path`` as people write it: ``stages.input[1].threshold``, quoted keys where needed."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY.match(part):
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def item(data: Any, part: str | int) -> Any:
    """``data[part]`` of a parsed document, or None when there is no such item."""
    if isinstance(data, list):
        return data[part] if isinstance(part, int) and 0 <= part < len(data) else None
    if isinstance(data, dict):
        return data.get(part)
    return None
