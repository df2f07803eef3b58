"""What changed between two release manifests: added, removed and changed paths with their old
and new values, and the same in words (``prompt 'support'``, ``config key models.fast``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Change", "describe", "diff_manifests"]

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Change:
    """One leaf of the manifest that differs. ``path`` is the keys from the top (a list is one
    leaf, compared whole)."""

    path: tuple[str, ...]
    kind: Literal["added", "removed", "changed"]
    old: Any = None
    new: Any = None

    @property
    def dotted(self) -> str:
        """The path as ``a.b.c``."""
        return ".".join(self.path)

    def to_dict(self) -> dict[str, Any]:
        """The change for machines."""
        return {"path": self.dotted, "kind": self.kind, "old": self.old, "new": self.new}


def _flatten(value: Any, path: tuple[str, ...], out: dict[tuple[str, ...], Any]) -> None:
    if isinstance(value, dict) and value:
        for key in sorted(value):
            _flatten(value[key], (*path, str(key)), out)
    else:
        out[path] = value


def diff_manifests(a: dict[str, Any], b: dict[str, Any]) -> list[Change]:
    """The leaves that differ from manifest ``a`` to manifest ``b``, by path."""
    left: dict[tuple[str, ...], Any] = {}
    right: dict[tuple[str, ...], Any] = {}
    _flatten(a, (), left)
    _flatten(b, (), right)
    changes: list[Change] = []
    for path in sorted(set(left) | set(right)):
        old, new = left.get(path, _MISSING), right.get(path, _MISSING)
        if old is _MISSING:
            changes.append(Change(path, "added", None, new))
        elif new is _MISSING:
            changes.append(Change(path, "removed", old, None))
        elif old != new:
            changes.append(Change(path, "changed", old, new))
    return changes


def _what(path: tuple[str, ...]) -> str:
    head, rest = path[0], path[1:]
    named = {
        "prompts": "prompt",
        "policies": "guard policy",
        "agents": "agent",
        "prices": "price of",
        "retrieval": "retrieval index",
    }
    if head in named and rest:
        return f"{named[head]} {rest[0]!r}"
    if head == "config" and rest:
        return "config key " + ".".join(rest)
    if head == "code" and rest:
        if rest[0] == "project_modules" and len(rest) > 1:
            return f"project module {rest[1]!r}"
        return {"elevenfactor": "elevenfactor version", "source": "elevenfactor code"}.get(
            rest[0], "code"
        )
    return head


def describe(changes: list[Change], limit: int = 8) -> str:
    """The changes in words, each thing once (``prompt 'support', agent 'helper', config key
    models.fast.settings.temperature``), at most ``limit`` then ``and N more``."""
    things: list[str] = []
    for change in changes:
        if change.path == ("price_table",) and any(c.path[0] == "prices" for c in changes):
            continue
        what = _what(change.path)
        if change.path[0] == "config" and change.kind == "changed" and _short(change):
            what += f" ({_value(change.old)} -> {_value(change.new)})"
        if what not in things:
            things.append(what)
    shown = ", ".join(things[:limit])
    if len(things) > limit:
        shown += f" and {len(things) - limit} more"
    return shown


def _short(change: Change) -> bool:
    return all(
        isinstance(v, int | float | bool) or v is None or (isinstance(v, str) and len(v) <= 40)
        for v in (change.old, change.new)
    )


def _value(value: Any) -> str:
    return "null" if value is None else str(value)
