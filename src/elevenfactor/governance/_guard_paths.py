"""Path arguments that leave a sandbox root (factor 10, tool-call stage).

``find_path_escapes(value, root)`` answers "could this argument name a file outside
``root``?", failing closed wherever tools, shells and operating systems disagree:

- **Relative paths** are taken from ``root``; **absolute paths** are allowed only when they
  are inside it (``/srv/sandbox/a.txt`` under ``/srv/sandbox``).
- ``..`` is judged twice: lexically (``os.path.normpath``, what many tools do) and by
  ``os.path.realpath`` (what the kernel does: symlinks that exist are followed, a missing
  tail is pure string logic). Escaping in either reading is a finding. The root is resolved
  too, so a root reached through a symlink (``/tmp`` on macOS) works.
- ``~`` and ``~user`` (shells expand them), ``scheme://`` URLs, Windows drive paths (``C:\\``,
  ``C:foo``) and UNC or device paths (``\\\\server\\share``, ``//server``, ``\\\\?\\C:``) are
  outside; a backslash counts as a separator (``..\\..\\x``).
- The value is also checked after stripping surrounding whitespace, after NFKC normalisation
  (fullwidth dots and solidus, U+FF0E and U+FF0F) and after up to three rounds of
  URL-decoding (``%2e%2e%2f``, double-encoded ``%252e``); overlong UTF-8 forms of ``.``,
  ``/`` and ``\\`` (``%c0%ae``) are findings as such. A real file literally named ``%2e%2e``
  is therefore refused too.
- A NUL byte (raw or ``%00``) is always a finding: C APIs truncate at it.
- A value longer than ``MAX_PATH_LENGTH`` is refused without being resolved.

Rules (kind = rule with ``_``): ``path.outside_root``, ``path.encoded_traversal``,
``path.nul_byte``. Findings are about the whole value (``start``/``end`` -1); ``detail`` says
why, never the path. The checks assume a POSIX host (the runtime's).

This is a check before a tool runs, not a sandbox: a symlink created between the check and
the use (TOCTOU) is not seen. Tools that touch files should also open them with
``O_NOFOLLOW``/``openat2(RESOLVE_BENEATH)`` or inside a container.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

from elevenfactor.governance._guard_types import Finding

__all__ = ["MAX_PATH_LENGTH", "find_path_escapes"]

_DRIVE = re.compile(r"^[A-Za-z]:")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_OVERLONG = re.compile(r"%(?:c0%ae|c0%af|c1%9c|c0%2f|c0%5c|e0%80%ae|e0%80%af)", re.IGNORECASE)
_DECODE_ROUNDS = 3
MAX_PATH_LENGTH = 4096
"""Longer values are refused without resolving them (Linux's ``PATH_MAX``)."""


def find_path_escapes(value: str, root: Path) -> list[Finding]:
    """Findings when ``value``, a path argument, could name something outside ``root``
    (see the module docstring for every form that counts). Never raises for any string."""
    if "\x00" in value:
        return [_finding("nul_byte", "contains a NUL byte")]
    if len(value) > MAX_PATH_LENGTH:
        return [_finding("outside_root", f"is longer than {MAX_PATH_LENGTH} characters")]
    if _OVERLONG.search(value):
        return [_finding("encoded_traversal", "contains an overlong UTF-8 encoded separator")]
    real_root = os.path.realpath(root)
    for candidate, decoded in _variants(value):
        if decoded and "\x00" in candidate:
            return [_finding("nul_byte", "contains a URL-encoded NUL byte")]
        reason = _escape_reason(candidate, real_root)
        if reason is not None and decoded:
            return [_finding("encoded_traversal", f"after URL-decoding {reason}")]
        if reason is not None:
            return [_finding("outside_root", reason)]
    return []


def _variants(value: str) -> list[tuple[str, bool]]:
    """``(form, came from URL-decoding)``: the raw value, then the forms a tool might see
    after normalising it."""
    forms = [(value, False), (value.strip(), False), (unicodedata.normalize("NFKC", value), False)]
    decoded = value
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(decoded, errors="replace")
        forms += [(decoded, True), (unicodedata.normalize("NFKC", decoded), True)]
    seen: set[str] = set()
    unique: list[tuple[str, bool]] = []
    for form, was_decoded in forms:
        if form not in seen:
            seen.add(form)
            unique.append((form, was_decoded))
    return unique


def _escape_reason(path: str, real_root: str) -> str | None:
    if "\x00" in path:
        return "contains a NUL byte"
    if path.startswith("~"):
        return "starts with ~ (a home directory)"
    if _URL.match(path):
        return "is a URL, not a path"
    if len(path) > 1 and path[0] in "/\\" and path[1] in "/\\":
        return "is a UNC or device path"
    if _DRIVE.match(path):
        return "is a Windows drive path"
    posix = path.replace("\\", "/")
    joined = os.path.join(real_root, posix)
    lexical = os.path.normpath(joined)
    if not _inside(lexical, real_root):
        return "is absolute and outside the root" if posix.startswith("/") else "climbs out with .."
    try:
        resolved = os.path.realpath(joined)
    except (OSError, ValueError):  # e.g. a symlink loop on some platforms
        return "cannot be resolved"
    if not _inside(resolved, real_root):
        return "resolves through a symlink to outside the root"
    return None


def _inside(path: str, root: str) -> bool:
    if root == os.sep:
        return True
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _finding(kind: str, reason: str) -> Finding:
    return Finding(rule=f"path.{kind}", kind=f"path_{kind}", detail=f"path {reason}")
