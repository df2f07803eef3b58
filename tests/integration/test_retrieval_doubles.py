"""Test doubles for the retrieval tests, and tests that they behave as the tests assume.

``WordHashEmbedderDouble`` stands in for an embedding model where the model itself is not what
is tested (ingestion, versions, tenancy, filters): it is deterministic and cheap, and it counts
its calls so a test can tell what was embedded. It is no language model: each term (as the BM25
analyser splits it) adds one to a dimension chosen by a hash, and the row is L2-normalised, so
texts sharing words are close. ``make_pdf`` writes a real one-page PDF with text (``pypdf``
cannot write text itself).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pypdf
import pytest

from elevenfactor.context._bm25 import analyse
from elevenfactor.context._embedder import Embedding

pytestmark = pytest.mark.integration


class WordHashEmbedderDouble:
    """A deterministic test double of ``Embedder`` (see the module docstring)."""

    def __init__(
        self, name: str = "test/word-hash", dim: int = 128, *, fail_after: int | None = None
    ) -> None:
        self._name = name
        self._dim = dim
        self.fail_after = fail_after
        """Raise on the call after this many successful ones (None: never)."""
        self.calls = 0
        self.embedded: list[str] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    def vector(self, text: str) -> np.ndarray:
        row = np.zeros(self._dim, dtype=np.float32)
        for term in analyse(text):
            digest = hashlib.blake2b(term.encode(), digest_size=8).digest()
            row[int.from_bytes(digest, "little") % self._dim] += 1.0
        norm = float(np.linalg.norm(row))
        if norm == 0.0:
            row[0] = 1.0
            return row
        return row / norm

    async def embed(self, texts: Sequence[str]) -> Embedding:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("the embedding model went away (test double)")
        self.calls += 1
        self.embedded.extend(texts)
        return np.stack([self.vector(t) for t in texts]).astype(np.float32)


def make_pdf(lines: Sequence[str]) -> bytes:
    """A one-page PDF showing ``lines`` in Helvetica (plain ASCII without parentheses)."""
    body = "BT /F1 12 Tf 72 720 Td " + " 0 -16 Td ".join(f"({line}) Tj" for line in lines)
    stream = (body + " ET").encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)


async def test_the_embedder_double_is_deterministic_and_normalised() -> None:
    double = WordHashEmbedderDouble()
    a = await double.embed(["rotate the signing key", "", "rotate the signing key"])
    assert a.shape == (3, 128) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0)
    assert np.array_equal(a[0], a[2])
    near = double.vector("how to rotate a signing key")
    far = double.vector("baking sourdough bread at home")
    assert float(near @ a[0]) > 0.8 > float(far @ a[0])
    assert double.calls == 1 and len(double.embedded) == 3


async def test_the_embedder_double_fails_when_told() -> None:
    double = WordHashEmbedderDouble(fail_after=1)
    await double.embed(["one"])
    with pytest.raises(RuntimeError):
        await double.embed(["two"])


def test_make_pdf_writes_a_pdf_pypdf_reads() -> None:
    import io

    reader = pypdf.PdfReader(io.BytesIO(make_pdf(["Hello retrieval", "second line"])))
    text = reader.pages[0].extract_text()
    assert "Hello retrieval" in text and "second line" in text
