"""Arguments of the cost report as people type them: times (``7d``, ISO, epoch seconds) and
filters (``model=gpt-4o``, ``user:ann``), shared by the CLI and ``GET /v1/cost``."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Sequence

from elevenfactor.errors import RequestError
from elevenfactor.governance._cost import DIMENSIONS

__all__ = ["parse_filters", "parse_when"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_LATEST = 253402300799.0  # 9999-12-31T23:59:59Z


def parse_when(text: str, param: str, now: float | None = None) -> float:
    """Epoch seconds from ``7d`` / ``12h`` / ``30m`` / ``2w`` (that long before ``now``), an
    ISO date or date-time (UTC unless it names a zone), or epoch seconds; a ``RequestError``
    naming ``param`` otherwise."""
    text = text.strip()
    now = time.time() if now is None else now
    match = _DURATION.match(text)
    try:
        if match:
            when = now - float(match.group(1)) * _UNIT[match.group(2)]
        else:
            when = float(text) if re.fullmatch(r"\d+(\.\d+)?", text) else _iso(text)
    except ValueError:
        raise RequestError(
            f"{param!r} must be a duration such as 7d, 12h or 30m, an ISO date or date-time,"
            f" or epoch seconds; got {text!r:.60}",
            param=param,
        ) from None
    if not 0.0 <= when <= _LATEST:
        raise RequestError(
            f"{param!r} must fall between 1970 and 9999; got {text!r:.60}", param=param
        )
    return when


def _iso(text: str) -> float:
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def parse_filters(items: Sequence[str], param: str = "where") -> dict[str, str]:
    """``dimension=value`` or ``dimension:value`` items as a mapping; a ``RequestError``
    naming ``param`` for a malformed item, an unknown dimension or a dimension given twice."""
    out: dict[str, str] = {}
    for item in items:
        match = re.match(r"^([a-z]+)[=:](.+)$", item.strip(), re.DOTALL)
        if match is None:
            raise RequestError(
                f"{param!r} items are DIMENSION=VALUE (or DIMENSION:VALUE); got {item!r:.60}",
                param=param,
            )
        dim, value = match.group(1), match.group(2)
        if dim not in DIMENSIONS:
            raise RequestError(
                f"unknown dimension {dim!r} in {param!r}; use one of: {', '.join(DIMENSIONS)}",
                param=param,
            )
        if dim in out:
            raise RequestError(f"dimension {dim!r} is given twice in {param!r}", param=param)
        if len(value) > 200 or re.search(r"[\x00-\x1f]", value):
            raise RequestError(
                f"{param!r}: a value is at most 200 characters without control characters",
                param=param,
            )
        out[dim] = value
    return out
