"""``runs export``: a run as one self-contained, portable bundle that ``audit verify --bundle``
checks on another machine with no database (``runtime._bundle_verify``).

A bundle is **one canonical JSON document** (sorted keys, no spaces; ``format``
``elevenfactor.run-bundle/1``) holding:

- ``run``: the run's row (identity, input/result hashes, error, owner, tags, genesis and head);
- ``events``: every journal event with its hash fields, as stored;
- ``payloads``: by hash, each payload the run references (input, step outputs, result, approval
  requests): ``present`` (its bytes, ``utf-8`` text or ``base64``; re-hashed at verification),
  ``redacted`` (the text with personal data and secrets masked, ``[REDACTED:<kind>]``: the
  original hash stays in the events and the chain, the text is not re-hashed), or ``erased``
  (by retention or a forget: no content; the ledger entry that erased it and the Merkle proof
  that its body lists this payload);
- ``approvals``: the run's approvals, their decisions (present, redacted or erased);
- ``ledger``: the ledger entries of the run, of its approvals and of the erasures of its
  payloads, each with its Merkle inclusion proof to its block's root;
- ``blocks``: the block headers from the first of those blocks up to the newest, so the links
  show the run's entries are part of the ledger as it stands;
- ``signed_head``: the newest block signed, when the deployment signs heads
  (``ELEVENFACTOR_LEDGER_SIGNING_KEY``), else null;
- ``release``: the release the run was submitted under — its id, name and manifest — or null
  (``runtime._bundle_release``; verification re-hashes the manifest);
- ``manifest``: the SHA-256 of the canonical document without it.

Payloads are **redacted** when a guard policy applied to the run (its journal has guard steps)
— ``redact="auto"``, the default — or always (``"always"``), or never (``"never"``): the built-in
PII and secret finders mask what they find; a payload with nothing to mask stays ``present``.
Ownership: the same rule as ``runs show`` (``get_run`` with the principal).
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any, Literal

from elevenfactor.governance import LedgerEntry, Principal, seal
from elevenfactor.governance._guard_pii import find_pii
from elevenfactor.governance._guard_redact import redact as mask_findings
from elevenfactor.governance._guard_secrets import find_secrets
from elevenfactor.governance._ledger import Block, canonical, ledger_head
from elevenfactor.governance._retention_erase import erasure_leaf
from elevenfactor.governance._signing import sign_head
from elevenfactor.runtime._bundle_release import bundle_release
from elevenfactor.runtime._bundle_verify import BUNDLE_FORMAT, manifest_of, merkle_proof
from elevenfactor.runtime._journal import load_events, load_payloads
from elevenfactor.runtime._retention_audit import load_erased
from elevenfactor.runtime._runs import get_run
from elevenfactor.store import Store

__all__ = ["Redact", "export_bundle"]

Redact = Literal["auto", "always", "never"]
_ENTRY = "seq, kind, subject, actor, body, created_at, hash, block"
_RUN = (
    "id, program, status, input_hash, result_hash, error, parent_id, created_at, genesis_hash,"
    " head_hash, org_id, team_id, user_id, key_id, tags, release_id"
)
_APPROVAL = (
    "id, run_id, step_id, name, status, request_hash, reviewer_group, decision, decision_hash,"
    " decided_by, decided_by_id, decided_at"
)


def _masked(text: str) -> str | None:
    findings = [*find_pii(text), *find_secrets(text)]
    if not findings:
        return None
    return mask_findings(text, findings, mode="mask").text


def _payload(content: bytes, redacting: bool) -> dict[str, Any]:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return {
            "state": "present",
            "encoding": "base64",
            "data": base64.b64encode(content).decode(),
        }
    masked = _masked(text) if redacting else None
    if masked is not None:
        return {"state": "redacted", "encoding": "utf-8", "data": masked}
    return {"state": "present", "encoding": "utf-8", "data": text}


async def _seal_all(store: Store, seqs: list[int]) -> None:
    """Seal until the entries ``seqs`` all have a block (another process may be sealing)."""
    for _ in range(100):
        while await seal(store) is not None:
            pass
        if not seqs:
            return
        marks = ", ".join("?" for _ in seqs)
        row = await store.fetchone(
            f"SELECT COUNT(*) FROM ledger WHERE seq IN ({marks}) AND block IS NULL", seqs
        )
        if row is None or int(row[0]) == 0:
            return
        await asyncio.sleep(0.05)


async def _entries(store: Store, subjects: list[str], seqs: set[int]) -> list[LedgerEntry]:
    marks = ", ".join("?" for _ in subjects)
    rows = await store.fetchall(f"SELECT {_ENTRY} FROM ledger WHERE subject IN ({marks})", subjects)
    if seqs:
        extra = sorted(seqs)
        marks2 = ", ".join("?" for _ in extra)
        rows += await store.fetchall(f"SELECT {_ENTRY} FROM ledger WHERE seq IN ({marks2})", extra)
    unique = {int(r[0]): LedgerEntry(*r) for r in rows}
    return [unique[k] for k in sorted(unique)]


async def _proofs(store: Store, entries: list[LedgerEntry]) -> list[dict[str, Any]]:
    leaves: dict[int, list[tuple[int, str]]] = {}
    out = []
    for e in entries:
        if e.block is None:
            out.append({"entry": list(_entry_tuple(e)), "proof": []})
            continue
        if e.block not in leaves:
            rows = await store.fetchall(
                "SELECT seq, hash FROM ledger WHERE block = ? ORDER BY seq", (e.block,)
            )
            leaves[e.block] = [(int(s), str(h)) for s, h in rows]
        block = leaves[e.block]
        index = next(i for i, (s, _) in enumerate(block) if s == e.seq)
        out.append(
            {"entry": list(_entry_tuple(e)), "proof": merkle_proof([h for _, h in block], index)}
        )
    return out


def _entry_tuple(e: LedgerEntry) -> tuple[Any, ...]:
    return (e.seq, e.kind, e.subject, e.actor, e.body, e.created_at, e.hash, e.block)


async def _erasure_proof(
    store: Store, subject: str, location: str, digest: str, seq: int
) -> list[list[str]]:
    rows = await store.fetchall(
        "SELECT subject, location, hash FROM erasures WHERE ledger_seq = ?", (seq,)
    )
    ordered = sorted((str(s), str(loc), str(h)) for s, loc, h in rows)
    index = ordered.index((subject, location, digest))
    return merkle_proof([erasure_leaf(*t) for t in ordered], index)


async def export_bundle(
    store: Store,
    run_id: str,
    principal: Principal,
    *,
    redact: Redact = "auto",
    signing_key: str | None = None,
) -> bytes:
    """The bundle of ``run_id`` (see the module docstring) as bytes; ``RunNotFound`` unless
    ``principal`` may read the run. ``signing_key`` (base64 Ed25519 seed) signs the newest
    block into ``signed_head``."""
    info = await get_run(store, run_id, principal)
    row = await store.fetchone(f"SELECT {_RUN} FROM runs WHERE id = ?", (info.id,))
    assert row is not None  # get_run found it
    names = [c.strip() for c in _RUN.split(",")]
    run = dict(zip(names, row, strict=True))
    events = await load_events(store, info.id)
    approvals = [
        dict(zip([c.strip() for c in _APPROVAL.split(",")], r, strict=True))
        for r in await store.fetchall(
            f"SELECT {_APPROVAL} FROM approvals WHERE run_id = ? ORDER BY id", (info.id,)
        )
    ]
    erased = await load_erased(store, [info.id, *(a["id"] for a in approvals)])
    redacting = redact == "always" or (redact == "auto" and any(e.kind == "guard" for e in events))
    contents = await load_payloads(store, [info.id])
    refs = [(info.id, "input", run["input_hash"])]
    refs += [(info.id, f"event:{e.n}", e.output_hash) for e in events if e.output_hash]
    if run["result_hash"]:
        refs.append((info.id, "result", run["result_hash"]))
    refs += [(a["id"], "request", a["request_hash"]) for a in approvals]
    wanted = sorted({h for _, _, h in refs} - set(contents))
    for i in range(0, len(wanted), 400):
        chunk = wanted[i : i + 400]
        marks = ", ".join("?" for _ in chunk)
        for h, c in await store.fetchall(
            f"SELECT hash, content FROM blobs WHERE hash IN ({marks})", chunk
        ):
            if c is not None:
                contents[str(h)] = bytes(c)
    payloads: dict[str, Any] = {}
    for subject, location, digest in refs:
        if digest in payloads and payloads[digest]["state"] != "missing":
            continue
        if digest in contents:
            payloads[digest] = _payload(contents[digest], redacting)
        elif (marker := erased.get((subject, location))) is not None and marker[0] == digest:
            proof = await _erasure_proof(store, subject, location, digest, marker[1])
            payloads[digest] = {
                "state": "erased",
                "ledger_seq": marker[1],
                "subject": subject,
                "location": location,
                "proof": proof,
            }
        else:
            payloads[digest] = {"state": "missing"}
    for a in approvals:
        if a["decision"] is not None:
            masked = _masked(a["decision"]) if redacting else None
            a["decision_state"] = "present" if masked is None else "redacted"
            a["decision"] = a["decision"] if masked is None else masked
        else:
            a["decision_state"] = "erased" if (a["id"], "decision") in erased else None
    seqs = {seq for _, seq in erased.values()}
    subjects = [info.id, *(a["id"] for a in approvals)]
    entries = await _entries(store, subjects, seqs)
    await _seal_all(store, [e.seq for e in entries if e.block is None])
    entries = await _entries(store, subjects, seqs)
    ledger = await _proofs(store, entries)
    blocks = await _blocks(store, entries)
    doc: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "exported_at": time.time(),
        "redaction": "pii+secrets masked" if redacting else "none",
        "run": run,
        "events": [list(e) for e in events],
        "payloads": payloads,
        "approvals": approvals,
        "ledger": ledger,
        "blocks": blocks,
        "signed_head": await _head(store, signing_key, blocks),
        "release": await bundle_release(store, run["release_id"]),
    }
    doc["manifest"] = manifest_of(doc)
    return canonical(doc).encode()


async def _blocks(store: Store, entries: list[LedgerEntry]) -> list[list[Any]]:
    sealed = [e.block for e in entries if e.block is not None]
    head = await ledger_head(store)
    if head is None:
        return []
    first = min(sealed) if sealed else head.n
    rows = await store.fetchall(
        "SELECT n, prev_hash, root, entries, sealed_at, hash FROM ledger_blocks WHERE n >= ?"
        " ORDER BY n",
        (first,),
    )
    return [[int(n), p, r, int(k), float(s), h] for n, p, r, k, s, h in rows]


async def _head(
    store: Store, signing_key: str | None, blocks: list[list[Any]]
) -> dict[str, Any] | None:
    """The newest block of the bundle, signed (None without a key or a block)."""
    if not signing_key or not blocks:
        return None
    head = Block(*blocks[-1])
    row = await store.fetchone(
        "SELECT COALESCE(SUM(entries), 0) FROM ledger_blocks WHERE n <= ?", (head.n,)
    )
    return sign_head(head, signing_key, int(row[0]) if row else 0).to_dict()
