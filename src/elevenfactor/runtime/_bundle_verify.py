"""``audit verify --bundle``: check a run bundle with no database and no configuration.

A bundle (``runtime._bundle``) is one canonical JSON document. Verification recomputes, from the
bundle alone: its form and manifest hash; the run's genesis hash and its journal chain; every
payload's hash (a payload *redacted* at export carries its original hash, which still takes
part in the chain, and is reported as redacted rather than re-hashed; an *erased* one carries
the Merkle proof that the ledger entry which erased it lists it); every ledger entry's hash and
its Merkle inclusion proof to its block's root; the block headers and their links from those
blocks to the newest; the run and its approvals against their ledger entries; and a signed head
when the bundle has one (against a trusted public key when given). Each check is reported;
any failure names what failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from elevenfactor.errors import RequestError
from elevenfactor.governance._ledger import Block, LedgerEntry, canonical
from elevenfactor.governance._retention_erase import erasure_leaf
from elevenfactor.runtime._audit_chain import check_chain
from elevenfactor.runtime._journal import Event, genesis_hash
from elevenfactor.store import blob_hash

__all__ = [
    "BUNDLE_FORMAT",
    "MAX_BUNDLE_BYTES",
    "BundleCheck",
    "BundleReport",
    "manifest_of",
    "merkle_proof",
    "proof_root",
    "verify_bundle",
    "verify_bundle_file",
]

BUNDLE_FORMAT = "elevenfactor.run-bundle/1"
MAX_BUNDLE_BYTES = 1 << 30
"""Bundles larger than this (1 GiB) are refused before they are read."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def merkle_proof(leaves: list[str], index: int) -> list[list[str]]:
    """The inclusion proof of ``leaves[index]`` in ``merkle_root(leaves)``: ``[side, hash]``
    pairs from the leaf up (``L``: the sibling is on the left); a node carried up unpaired
    has no step."""
    proof: list[list[str]] = []
    level, i = list(leaves), index
    while len(level) > 1:
        if i % 2:
            proof.append(["L", level[i - 1]])
        elif i + 1 < len(level):
            proof.append(["R", level[i + 1]])
        nxt = [_sha((level[k] + level[k + 1]).encode()) for k in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level, i = nxt, i // 2
    return proof


def proof_root(leaf: str, proof: Any) -> str | None:
    """The root ``proof`` leads ``leaf`` to, or None if the proof is malformed."""
    if not isinstance(proof, list):
        return None
    digest = leaf
    for step in proof:
        if not (
            isinstance(step, list) and len(step) == 2 and all(isinstance(s, str) for s in step)
        ):
            return None
        side, sibling = step
        if side == "L":
            digest = _sha((sibling + digest).encode())
        elif side == "R":
            digest = _sha((digest + sibling).encode())
        else:
            return None
    return digest


def manifest_of(doc: dict[str, Any]) -> str:
    """The manifest hash: SHA-256 over the canonical document without ``manifest``."""
    return _sha(canonical({k: v for k, v in doc.items() if k != "manifest"}).encode())


@dataclass(frozen=True, slots=True)
class BundleCheck:
    """One check: its name, whether it held, and what was found."""

    name: str
    ok: bool
    detail: str


@dataclass
class BundleReport:
    """Every check of a bundle."""

    run_id: str | None = None
    checks: list[BundleCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every check held."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, name: str, problems: list[str], detail: str) -> None:
        """Record check ``name``: failed with ``problems`` (the first few named), else ok."""
        if problems:
            more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
            self.checks.append(BundleCheck(name, False, "; ".join(problems[:3]) + more))
        else:
            self.checks.append(BundleCheck(name, True, detail))

    def to_dict(self) -> dict[str, Any]:
        """As JSON."""
        return {
            "ok": self.ok,
            "run_id": self.run_id,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


def _invalid(message: str) -> RequestError:
    return RequestError(
        f"not a readable run bundle: {message}",
        code="bundle_invalid",
        param="bundle",
        hint="export it again with `elevenfactor runs export RUN`",
    )


def parse_bundle(data: bytes) -> dict[str, Any]:
    """The bundle document; ``RequestError`` ``bundle_invalid`` naming what is wrong."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise _invalid(f"{len(data)} bytes is over the {MAX_BUNDLE_BYTES} byte limit")
    if not data.strip():
        raise _invalid("the file is empty")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _invalid(f"it is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise _invalid("it is not a JSON object")
    if doc.get("format") != BUNDLE_FORMAT:
        raise _invalid(f"its format is {str(doc.get('format'))[:60]!r}, not {BUNDLE_FORMAT!r}")
    return doc


def verify_bundle_file(path: Path, *, public_key: str | None = None) -> BundleReport:
    """``verify_bundle`` on a file: ``RequestError`` ``bundle_invalid`` when it cannot be read
    or is over ``MAX_BUNDLE_BYTES`` (checked before reading)."""
    try:
        size = path.stat().st_size
        if size > MAX_BUNDLE_BYTES:
            raise _invalid(f"{size} bytes is over the {MAX_BUNDLE_BYTES} byte limit")
        data = path.read_bytes()
    except OSError as exc:
        raise RequestError(
            f"cannot read the bundle {str(path)!r}: {exc.strerror or exc}",
            code="bundle_unreadable",
            param="bundle",
        ) from None
    return verify_bundle(data, public_key=public_key)


def verify_bundle(data: bytes, *, public_key: str | None = None) -> BundleReport:
    """Check a bundle (see the module docstring). Raises ``RequestError`` ``bundle_invalid``
    for a file that is not a bundle at all; every other problem is a failed check."""
    doc = parse_bundle(data)
    report = BundleReport()
    try:
        _Verifier(doc, report, public_key).check(data)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        report.checks.append(
            BundleCheck("structure", False, f"malformed bundle: {type(exc).__name__}: {exc}"[:300])
        )
    return report


class _Verifier:
    def __init__(self, doc: dict[str, Any], report: BundleReport, public_key: str | None) -> None:
        self.doc, self.report, self.public_key = doc, report, public_key
        self.run: dict[str, Any] = doc["run"]
        report.run_id = str(self.run["id"])
        self.entries = [LedgerEntry(*e["entry"]) for e in doc["ledger"]]
        self.by_kind: dict[str, list[LedgerEntry]] = {}
        for e in self.entries:
            self.by_kind.setdefault(f"{e.kind} {e.subject}", []).append(e)

    def check(self, data: bytes) -> None:
        add = self.report.add
        canonical_ok = data == canonical(self.doc).encode()
        add(
            "form",
            [] if canonical_ok else ["the file is not in canonical form (edited?)"],
            "canonical JSON",
        )
        manifest = self.doc.get("manifest")
        add(
            "manifest",
            []
            if manifest == manifest_of(self.doc)
            else ["the manifest hash does not match the content"],
            str(manifest),
        )
        self.chain()
        self.payloads()
        self.run_ledger()
        self.ledger()
        self.approvals()
        from elevenfactor.runtime._bundle_head import check_head

        check_head(self.doc, self.report, self.public_key)
        from elevenfactor.runtime._bundle_release import check_release

        created = self._last("run.created", str(self.run["id"]))
        add("release", *check_release(self.doc.get("release"), self.run, created))

    def chain(self) -> None:
        r = self.run
        problems: list[str] = []
        expected = genesis_hash(r["id"], r["program"], r["input_hash"], r["created_at"])
        if expected != r["genesis_hash"]:
            problems.append("the run's identity or input differs from its genesis hash")
        events = [Event(*e) for e in self.doc["events"]]
        if any(ev.run_id != r["id"] for ev in events):
            problems.append("an event belongs to another run")
        broken = check_chain(events, r["genesis_hash"])
        if broken is not None:
            problems.append(f"journal event {broken[0]}: {broken[1]}")
        self.events = events
        self.report.add("chain", problems, f"{len(events)} events link from the genesis hash")

    def payloads(self) -> None:
        stored: dict[str, Any] = self.doc["payloads"]
        refs = [("input", self.run["input_hash"])]
        refs += [(f"event:{ev.n}", ev.output_hash) for ev in self.events if ev.output_hash]
        if self.run.get("result_hash"):
            refs.append(("result", self.run["result_hash"]))
        refs += [(f"approval {a['id']} request", a["request_hash"]) for a in self.doc["approvals"]]
        problems: list[str] = []
        counts = {"present": 0, "redacted": 0, "erased": 0}
        for where, digest in refs:
            found = stored.get(digest)
            p: dict[str, Any] = found if isinstance(found, dict) else {}
            state = p.get("state")
            if state == "present":
                if blob_hash(_content(p)) != digest:
                    problems.append(f"{where}: payload {digest} was changed")
            elif state == "erased":
                problems += self._erased(where, digest, p)
            elif state != "redacted":
                problems.append(f"{where}: payload {digest} is missing")
                continue
            counts[str(state)] += 1
        detail = ", ".join(f"{n} {k}" for k, n in counts.items()) + " (redacted: not re-hashed)"
        self.report.add("payloads", problems, detail)

    def _erased(self, where: str, digest: str, p: dict[str, Any]) -> list[str]:
        seq, subject, location = p.get("ledger_seq"), p.get("subject"), p.get("location")
        entry = next((e for e in self.entries if e.seq == seq), None)
        if entry is None or not isinstance(subject, str) or not isinstance(location, str):
            return [
                f"{where}: payload {digest} is erased but its ledger entry is not in the bundle"
            ]
        sealed = entry.data().get("erasure") or {}
        leaf = erasure_leaf(subject, location, digest)
        if proof_root(leaf, p.get("proof")) != sealed.get("root"):
            return [f"{where}: payload {digest} is not among those ledger entry {seq} erased"]
        return []

    def _last(self, kind: str, subject: str) -> LedgerEntry | None:
        found = self.by_kind.get(f"{kind} {subject}")
        return found[-1] if found else None

    def run_ledger(self) -> None:
        r, problems = self.run, []
        created = self._last("run.created", r["id"])
        if created is None:
            problems.append("the run's creation is not in the bundle's ledger entries")
        else:
            body = created.data()
            owner = [r.get("org_id"), r.get("team_id"), r.get("user_id"), r.get("key_id")]
            for key, value in (
                ("program", r["program"]),
                ("input_hash", r["input_hash"]),
                ("genesis", r["genesis_hash"]),
                ("parent_id", r.get("parent_id")),
                ("owner", owner),
            ):
                if body.get(key) != value:
                    problems.append(f"the run's {key} differs from its ledger entry")
        anchors = [
            e
            for e in self.entries
            if e.subject == r["id"] and e.kind in ("run.checkpoint", "run.ended")
        ]
        if anchors:
            body = anchors[-1].data()
            sealed = int(body.get("events") or 0)
            if sealed != len(self.events):
                problems.append(
                    f"the ledger sealed {sealed} events, the bundle has {len(self.events)}"
                )
            elif sealed and self.events[sealed - 1].hash != body.get("head_hash"):
                problems.append("the chain's head differs from the one sealed in the ledger")
            if body.get("result_hash") != r.get("result_hash"):
                problems.append("the run's result differs from the one sealed in the ledger")
            error = r.get("error")
            if (blob_hash(error.encode()) if error is not None else None) != body.get("error_hash"):
                problems.append("the run's error differs from the one sealed in the ledger")
        elif r.get("status") in ("succeeded", "failed", "cancelled"):
            problems.append("the run ended but its end is not in the bundle's ledger entries")
        self.report.add(
            "run vs ledger",
            problems,
            f"created and {'ended' if anchors else 'not ended'} as sealed",
        )

    def ledger(self) -> None:
        blocks = [Block(*b) for b in self.doc["blocks"]]
        problems: list[str] = []
        by_n = {b.n: b for b in blocks}
        for i, b in enumerate(blocks):
            if b.expected_hash() != b.hash:
                problems.append(f"block {b.n}'s header was changed")
            if i and (b.n != blocks[i - 1].n + 1 or b.prev_hash != blocks[i - 1].hash):
                problems.append(f"block {b.n} does not link to block {blocks[i - 1].n}")
        for item, e in zip(self.doc["ledger"], self.entries, strict=True):
            if e.expected_hash() != e.hash:
                problems.append(f"ledger entry {e.seq} ({e.kind}) was changed")
            block = by_n.get(e.block) if e.block is not None else None
            if block is None:
                problems.append(f"ledger entry {e.seq}'s block {e.block} is not in the bundle")
            elif proof_root(e.hash, item["proof"]) != block.root:
                problems.append(f"ledger entry {e.seq} is not in block {e.block} (Merkle proof)")
        head = f"block {blocks[-1].n}" if blocks else "no block"
        if not blocks:
            problems.append("the bundle has no ledger blocks")
        self.report.add(
            "ledger",
            problems,
            f"{len(self.entries)} entries proven in {len(blocks)} blocks up to {head}",
        )
        self.blocks = blocks

    def approvals(self) -> None:
        problems: list[str] = []
        approvals = self.doc["approvals"]
        for a in approvals:
            created = self._last("approval.created", a["id"])
            if (
                created is None
                or created.data().get("request_hash") != a["request_hash"]
                or created.data().get("run_id") != self.run["id"]
            ):
                problems.append(f"approval {a['id']} differs from its ledger entry")
            decided = self._last("approval.decided", a["id"])
            if a.get("decision_hash") is None:
                continue
            if decided is None or decided.data().get("decision_hash") != a["decision_hash"]:
                problems.append(f"approval {a['id']}'s decision is not the one in the ledger")
            text, state = a.get("decision"), a.get("decision_state")
            if state == "present" and (
                not isinstance(text, str) or blob_hash(text.encode()) != a["decision_hash"]
            ):
                problems.append(f"approval {a['id']}'s decision was changed")
            elif state not in ("present", "redacted", "erased"):
                problems.append(f"approval {a['id']}'s decision is missing")
        self.report.add("approvals", problems, f"{len(approvals)} approvals match the ledger")


def _content(p: dict[str, Any]) -> bytes:
    data = p.get("data")
    if not isinstance(data, str):
        raise ValueError("a payload has no data")
    if p.get("encoding") == "base64":
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a payload's base64 is malformed") from None
    return data.encode()
