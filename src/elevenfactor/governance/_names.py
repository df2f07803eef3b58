"""Identifier rules, shared by the API schemas, the CLI and the library.

- **ids** (runs, sessions, approvals): 1 to 200 characters from ``A-Z a-z 0-9 . _ : -``,
  starting with a letter or digit. A child run's id is its parent's id plus ``.<step>``.
- **tags** (on runs, for cost reports): ids, at most ``MAX_TAGS`` of them.
- **names** (users, teams, reviewer groups, keys, queues, programs): 1 to 64 characters from
  ``A-Z a-z 0-9 . _ -``, starting with a letter or digit.

Neither may hold ``/`` (it would make a URL path ambiguous), whitespace or control characters
(NUL cannot be stored by PostgreSQL).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from elevenfactor.errors import RequestError

__all__ = [
    "ID_PATTERN",
    "MAX_TAGS",
    "NAME_PATTERN",
    "check_id",
    "check_name",
    "check_tags",
    "check_text",
]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_ID = re.compile(ID_PATTERN)
_NAME = re.compile(NAME_PATTERN)
MAX_TAGS = 32
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _check(pattern: re.Pattern[str], rule: str, code: str, value: str, param: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise RequestError(
            f"{param!r} must be {rule} (starting with a letter or digit); got {value!r:.60}",
            code=code,
            param=param,
        )
    return value


def check_id(value: str, param: str) -> str:
    """``value`` if it is a valid id, else a ``RequestError`` naming ``param``."""
    return _check(_ID, "1-200 characters of A-Z a-z 0-9 . _ : -", "invalid_id", value, param)


def check_name(value: str, param: str) -> str:
    """``value`` if it is a valid name, else a ``RequestError`` naming ``param``."""
    return _check(_NAME, "1-64 characters of A-Z a-z 0-9 . _ -", "invalid_name", value, param)


def check_text(value: str, param: str, max_length: int = 4000) -> str:
    """Free text (a reason): no NUL or other control characters except tab and newlines."""
    if len(value) > max_length or _CONTROL.search(value):
        raise RequestError(
            f"{param!r} must be at most {max_length} characters without control characters",
            code="invalid_text",
            param=param,
        )
    return value


def check_tags(tags: Sequence[str], param: str = "tags") -> tuple[str, ...]:
    """``tags`` without duplicates (first occurrence kept) if each is a valid id and there are
    at most ``MAX_TAGS``, else a ``RequestError`` naming ``param``."""
    if isinstance(tags, str) or not isinstance(tags, Sequence):
        raise RequestError(f"{param!r} must be a list of tags", code="invalid_tags", param=param)
    out = tuple(dict.fromkeys(check_id(t, param) for t in tags))
    if len(out) > MAX_TAGS:
        raise RequestError(
            f"{param!r} holds {len(out)} tags; at most {MAX_TAGS}", code="invalid_tags", param=param
        )
    return out
