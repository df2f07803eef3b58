"""Signed ledger heads: the defence against someone who rewrites history and recomputes every
hash.

A head names the newest sealed block (its number and hash). Signed with an Ed25519 key that lives
outside the database (``ELEVENFACTOR_LEDGER_SIGNING_KEY``) and kept elsewhere, it lets anyone
holding the public key prove later that blocks ``0..n`` are unchanged: the block chain links
each block to the one before, so block ``n``'s hash still being the signed one means nothing
before it was rewritten.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from elevenfactor.errors import ConfigError, RequestError
from elevenfactor.governance._ledger import Block, canonical

__all__ = ["SignedHead", "generate_keypair", "public_key_of", "sign_head", "verify_head"]


@dataclass(frozen=True, slots=True)
class SignedHead:
    """A ledger head and its signature."""

    n: int
    hash: str
    entries: int
    signed_at: float
    public_key: str
    signature: str

    def message(self) -> bytes:
        """The bytes the signature covers."""
        return canonical(
            {"n": self.n, "hash": self.hash, "entries": self.entries, "signed_at": self.signed_at}
        ).encode()

    def to_dict(self) -> dict[str, Any]:
        """As written to a head file."""
        return {
            "format": "elevenfactor.ledger-head/1",
            "n": self.n,
            "hash": self.hash,
            "entries": self.entries,
            "signed_at": self.signed_at,
            "public_key": self.public_key,
            "signature": self.signature,
        }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: str, what: str, size: int) -> bytes:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        raise ConfigError(
            f"{what} must be base64 of {size} bytes",
            key=what,
            hint="make a pair with `elevenfactor audit keygen`",
        )
    return raw


def generate_keypair() -> tuple[str, str]:
    """A new Ed25519 pair as ``(private, public)``, base64 (private: the 32-byte seed)."""
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes_raw()
    return _b64(seed), public_key_of(_b64(seed))


def _private(value: str) -> Ed25519PrivateKey:
    seed = _unb64(value, "ELEVENFACTOR_LEDGER_SIGNING_KEY", 32)
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_of(private_b64: str) -> str:
    """The public key (base64) of a private key (base64 seed)."""
    pub = _private(private_b64).public_key()
    return _b64(pub.public_bytes(Encoding.Raw, PublicFormat.Raw))


def sign_head(block: Block, private_b64: str, entries: int) -> SignedHead:
    """Sign ``block`` as the ledger's head."""
    key = _private(private_b64)
    unsigned = SignedHead(block.n, block.hash, entries, time.time(), public_key_of(private_b64), "")
    signature = key.sign(unsigned.message())
    return SignedHead(
        unsigned.n,
        unsigned.hash,
        unsigned.entries,
        unsigned.signed_at,
        unsigned.public_key,
        _b64(signature),
    )


def verify_head(data: bytes, public_b64: str) -> SignedHead:
    """Parse a head file and check its signature against the trusted ``public_b64`` (never the
    key written in the file: an attacker who rewrote history could sign with a key of their own).
    Raises ``RequestError`` when the file is malformed or the signature does not hold."""
    try:
        doc = orjson.loads(data)
        head = SignedHead(
            int(doc["n"]),
            str(doc["hash"]),
            int(doc["entries"]),
            float(doc["signed_at"]),
            str(doc["public_key"]),
            str(doc["signature"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise RequestError(
            "the head file is not a signed ledger head", code="invalid_head", param="against"
        ) from None
    pub = Ed25519PublicKey.from_public_bytes(
        _unb64(public_b64, "ELEVENFACTOR_LEDGER_VERIFY_KEY", 32)
    )
    try:
        pub.verify(_unb64(head.signature, "signature", 64), head.message())
    except (InvalidSignature, ConfigError):
        raise RequestError(
            "the head file's signature does not verify with the trusted public key",
            code="head_signature_invalid",
            param="against",
            hint="check ELEVENFACTOR_LEDGER_VERIFY_KEY; a forged or edited head fails here",
        ) from None
    return head
