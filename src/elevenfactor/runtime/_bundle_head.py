"""The signed ledger head of a run bundle, checked: it must name the bundle's newest block, and
its signature must hold — against a trusted public key when one is given (the key written in
the bundle proves nothing by itself: whoever rewrote history could sign with a key of their
own, so without a trusted key the check says so)."""

from __future__ import annotations

from typing import Any

import orjson

from elevenfactor.errors import ConfigError, RequestError
from elevenfactor.governance._signing import verify_head

__all__ = ["check_head"]


def check_head(doc: dict[str, Any], report: Any, public_key: str | None) -> None:
    """Add the ``signed head`` check of ``doc`` to ``report`` (a ``BundleReport``)."""
    head = doc.get("signed_head")
    if head is None:
        report.add("signed head", [], "none (the deployment does not sign heads)")
        return
    if not isinstance(head, dict):
        report.add("signed head", ["the signed head is malformed"], "")
        return
    blocks = doc.get("blocks") or []
    last = blocks[-1] if blocks and isinstance(blocks[-1], list) else None
    problems: list[str] = []
    if last is None or head.get("n") != last[0] or head.get("hash") != last[5]:
        problems.append("the signed head does not name the bundle's newest block")
    trusted = public_key is not None
    key = public_key if public_key is not None else str(head.get("public_key", ""))
    try:
        verify_head(orjson.dumps(head), key)
    except (RequestError, ConfigError) as exc:
        problems.append(f"the head's signature does not verify: {exc.message}")
    detail = (
        f"block {head.get('n')} signed; verified with the trusted public key"
        if trusted
        else f"block {head.get('n')} signed; the signature holds for the key in the bundle,"
        " which is not trusted by itself (pass --public-key)"
    )
    report.add("signed head", problems, detail)
