"""Retrieval indexes on both backends (embedded files; pgvector in pgserver): building from a
folder of Markdown, text, HTML and PDF, versions and incremental rebuilds, resuming an
interrupted build, hybrid search with citations, filters, tenancy, and the errors a user meets.

The embedder is a deterministic test double (``WordHashEmbedderDouble``): what is tested here is
the index, not the model (``test_retrieval_quality`` uses the real one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from elevenfactor.config._retrieval import IndexConfig
from elevenfactor.context._index import get_index, list_indexes
from elevenfactor.context._index_build import BuildReport, build_index
from elevenfactor.context._index_ops import delete_index
from elevenfactor.context._retrieve import Retrieval, search
from elevenfactor.errors import ContextError, DocumentError, EmbedderMismatch, IndexNotFound
from tests.integration.test_retrieval_doubles import WordHashEmbedderDouble, make_pdf
from tests.support.pgvector import RetrievalEnv, pgvector_url, retrieval_env

pytestmark = pytest.mark.integration
__all__ = ["pgvector_url", "retrieval_env"]  # fixtures used here

ORG = "org_default"
OTHER_ORG = "org_other"


class Embedders:
    """Embedders by name, for ``Retrieval`` (a test double of the project's registry)."""

    def __init__(self, **named: WordHashEmbedderDouble) -> None:
        self.named = named

    def get(self, name: str) -> WordHashEmbedderDouble:
        return self.named[name]


def write_corpus(root: Path) -> Path:
    (root / "guides").mkdir(parents=True)
    (root / "reference").mkdir()
    (root / "blog").mkdir()
    (root / "guides" / "install.md").write_text(
        "---\ntitle: Installing\ntags: [setup, linux]\n---\n"
        "# Install\n\nThe installer needs Python 3.11 or newer.\n\n"
        "## Linux\n\nOn Debian, install the packages with apt before running the installer.\n\n"
        "## macOS\n\nOn a Mac, Homebrew provides every dependency of the installer.\n"
    )
    (root / "guides" / "keys.md").write_text(
        "---\ntags: [security]\n---\n# Signing keys\n\n## Rotation\n\n"
        "Rotate the ed25519 signing key every ninety days; the old key verifies old heads.\n"
    )
    (root / "reference" / "limits.txt").write_text(
        "Rate limits are counted per minute for each API key.\n\n"
        "A request over the limit gets status 429 and a Retry-After header.\n"
    )
    (root / "blog" / "launch.html").write_text(
        "<html><head><title>Launch day</title><style>p {color: red}</style></head><body>"
        "<h1>Launch</h1><p>We shipped the first release on a rainy Tuesday.</p>"
        "<h2>Coffee</h2><p>The espresso machine in the office ran all night.</p>"
        "<script>var tracking = 1;</script></body></html>"
    )
    (root / "manual.pdf").write_bytes(
        make_pdf(["Backups are taken nightly at two in the morning", "and kept for a month"])
    )
    return root


def retrieval(env: RetrievalEnv, embedder: WordHashEmbedderDouble, keep: int = 2) -> Retrieval:
    return Retrieval(env.store, env.backend, Embedders(test=embedder), keep_versions=keep)


async def build(
    env: RetrievalEnv,
    source: Path,
    embedder: WordHashEmbedderDouble,
    *,
    name: str = "docs",
    org: str = ORG,
    strict: bool = False,
    **settings: int,
) -> BuildReport:
    config = IndexConfig.model_validate({"source": str(source), "embedder": "test", **settings})
    return await build_index(
        retrieval(env, embedder), name, config, source=source, org_id=org, embedder=embedder,
        strict=strict,
    )  # fmt: skip


async def test_a_folder_becomes_a_searchable_index_with_citations(
    retrieval_env: RetrievalEnv, tmp_path: Path
) -> None:
    source = write_corpus(tmp_path / "docs")
    double = WordHashEmbedderDouble()
    report = await build(retrieval_env, source, double)
    assert report.published and report.version == 1 and report.documents == 5
    assert report.embedded == report.chunks > 5 and report.reused == 0 and not report.skipped

    info = await get_index(retrieval_env.store, ORG, "docs")
    assert info.active_version == 1 and info.backend == retrieval_env.backend.kind
    assert (info.embedder, info.dim) == ("test/word-hash", 128)
    active = info.version(1)
    assert active is not None and active.status == "ready" and active.chunks == report.chunks

    ref = retrieval(retrieval_env, double).index("docs")
    for mode in ("hybrid", "vector", "bm25"):
        hits = await search(ref, "rotate the signing key", org_id=ORG, k=3, mode=mode)
        assert hits[0].document == "guides/keys.md", mode
        assert hits[0].heading_path == ("Signing keys", "Rotation")
        assert "ninety days" in hits[0].text and len(hits[0].chunk_id) == 24
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    hybrid = await search(ref, "rotate the signing key", org_id=ORG, k=3)
    assert hybrid[0].vector_rank == 1 and hybrid[0].bm25_rank == 1
    assert hybrid[0].score == pytest.approx(2 / 61)
    assert hybrid[0].metadata["tags"] == ["security"]

    # Each format was parsed: HTML without its script, PDF text, plain text.
    espresso = await search(ref, "espresso machine", org_id=ORG, k=1, mode="bm25")
    assert espresso[0].document == "blog/launch.html"
    assert espresso[0].heading_path == ("Launch", "Coffee")
    assert "tracking" not in espresso[0].text
    assert espresso[0].metadata["title"] == "Launch day"
    backups = await search(ref, "nightly backups", org_id=ORG, k=1)
    assert backups[0].document == "manual.pdf" and backups[0].heading_path == ("page 1",)
    limits = await search(ref, "status 429", org_id=ORG, k=1, mode="bm25")
    assert limits[0].document == "reference/limits.txt"
    assert await search(ref, "zeppelin", org_id=ORG, mode="bm25") == []


async def test_a_rebuild_embeds_only_what_changed_and_drops_what_was_removed(
    retrieval_env: RetrievalEnv, tmp_path: Path
) -> None:
    source = write_corpus(tmp_path / "docs")
    first = WordHashEmbedderDouble()
    v1 = await build(retrieval_env, source, first)

    again = WordHashEmbedderDouble()
    same = await build(retrieval_env, source, again)
    assert not same.published and same.version == 1 and again.calls == 0

    (source / "reference" / "limits.txt").unlink()
    keys = source / "guides" / "keys.md"
    keys.write_text(keys.read_text() + "\n## Storage\n\nKeep the private key in a vault.\n")
    (source / "guides" / "faq.md").write_text("# FAQ\n\nThe dashboard listens on port 8000.\n")
    second = WordHashEmbedderDouble()
    v2 = await build(retrieval_env, source, second)
    assert v2.published and v2.version == 2 and v2.documents == 5
    # Only the new FAQ and the new section of keys.md were embedded; the rest was reused.
    assert sorted(second.embedded) == sorted(
        ["FAQ\n\nThe dashboard listens on port 8000.",
         "Signing keys > Storage\n\nKeep the private key in a vault."]
    )  # fmt: skip
    assert v2.embedded == 2 and v2.reused == v2.chunks - 2
    ref = retrieval(retrieval_env, second).index("docs")
    assert await search(ref, "status 429 Retry-After", org_id=ORG, mode="bm25") == []
    vault = await search(ref, "private key vault", org_id=ORG, k=1)
    assert vault[0].document == "guides/keys.md"
    assert v1.chunks - 1 + 2 == v2.chunks  # limits.txt had one chunk

    # The oldest of three versions is retired (keep_versions=2): its data is gone.
    (source / "guides" / "faq.md").write_text("# FAQ\n\nThe dashboard listens on port 9000.\n")
    v3 = await build(retrieval_env, source, WordHashEmbedderDouble())
    info = await get_index(retrieval_env.store, ORG, "docs")
    assert [(v.version, v.status) for v in info.versions] == [
        (1, "retired"), (2, "ready"), (3, "ready")
    ]  # fmt: skip
    assert info.active_version == v3.version == 3
    with pytest.raises(ContextError):
        await retrieval_env.backend.documents(info.id, 1)


async def test_an_interrupted_build_resumes_and_queries_see_the_last_complete_version(
    retrieval_env: RetrievalEnv, tmp_path: Path
) -> None:
    source = write_corpus(tmp_path / "docs")
    await build(retrieval_env, source, WordHashEmbedderDouble())
    filler = "ice flows slowly downhill under its own weight " * 6
    for i in range(12):  # enough new chunks for several written groups
        body = "\n\n".join(f"Paragraph {j} about glaciers number {i}: {filler}" for j in range(60))
        (source / f"new{i:02}.md").write_text(f"# Glaciers {i}\n\n{body}\n")
    # Chunks are written a group (>= 256 chunks) at a time, after the group's embedding calls
    # (200 texts each): the first group is written, the second fails.
    failing = WordHashEmbedderDouble(fail_after=2)
    with pytest.raises(RuntimeError, match="went away"):
        await build(
            retrieval_env, source, failing, chunk_tokens=64, overlap_tokens=8, batch_size=200
        )

    info = await get_index(retrieval_env.store, ORG, "docs")
    assert info.active_version == 1
    assert [(v.version, v.status) for v in info.versions] == [(1, "ready"), (2, "building")]
    written = await retrieval_env.backend.documents(info.id, 2)
    assert 0 < len(written) < 17
    # Queries still see version 1: none of the new documents.
    ref = retrieval(retrieval_env, failing).index("docs")
    assert await search(ref, "glaciers", org_id=ORG, mode="bm25") == []

    resumed_with = WordHashEmbedderDouble()
    report = await build(
        retrieval_env, source, resumed_with, chunk_tokens=64, overlap_tokens=8, batch_size=200
    )
    assert report.resumed and report.published and report.version == 2
    assert report.documents == 17
    # The documents written before the interruption were not embedded again.
    assert failing.embedded and not set(resumed_with.embedded) & set(failing.embedded)
    hits = await search(ref, "glaciers number 7", org_id=ORG, k=3, mode="bm25")
    assert hits and all(h.document.startswith("new") for h in hits)


async def test_a_build_with_other_chunk_settings_supersedes_an_unfinished_one(
    retrieval_env: RetrievalEnv, tmp_path: Path
) -> None:
    source = write_corpus(tmp_path / "docs")
    with pytest.raises(RuntimeError):
        await build(retrieval_env, source, WordHashEmbedderDouble(fail_after=0))
    report = await build(retrieval_env, source, WordHashEmbedderDouble(), chunk_tokens=100)
    assert report.published and report.version == 2 and not report.resumed
    info = await get_index(retrieval_env.store, ORG, "docs")
    assert [(v.version, v.status) for v in info.versions] == [(1, "failed"), (2, "ready")]


async def test_querying_with_another_embedder_is_refused(
    retrieval_env: RetrievalEnv, tmp_path: Path
) -> None:
    source = write_corpus(tmp_path / "docs")
    double = WordHashEmbedderDouble()
    await build(retrieval_env, source, double)
    ref = retrieval(retrieval_env, double).index("docs")
    for other in (WordHashEmbedderDouble(name="test/other"), WordHashEmbedderDouble(dim=64)):
        with pytest.raises(EmbedderMismatch) as err:
            await search(ref, "signing key", org_id=ORG, embedder=other)
        assert err.value.code == "embedder_mismatch" and "test/word-hash" in err.value.message
    # BM25 alone needs no embedder.
    assert await search(ref, "signing key", org_id=ORG, mode="bm25", embedder=other)


async def test_filters_match_path_prefix_extension_and_front_matter(
    retrieval_env: RetrievalEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_corpus(tmp_path / "docs")
    double = WordHashEmbedderDouble()
    await build(retrieval_env, source, double)
    ref = retrieval(retrieval_env, double).index("docs")
    query = "the installer key limits backups launch"
    cases = {
        (("path", "guides/"),): {"guides/install.md", "guides/keys.md"},
        (("ext", "txt"),): {"reference/limits.txt"},
        (("tags", "linux"),): {"guides/install.md"},
        (("tags", "security"), ("path", "guides/")): {"guides/keys.md"},
        (("tags", "security"), ("ext", "txt")): set(),
        (("title", "Launch day"),): {"blog/launch.html"},
    }
    for exact_limit in (5000, 0):  # a scan of the matching chunks; candidates filtered
        monkeypatch.setattr("elevenfactor.context._index_sql.EXACT_LIMIT", exact_limit)
        for filters, expected in cases.items():
            for mode in ("hybrid", "vector", "bm25"):
                hits = await search(ref, query, org_id=ORG, k=20, filters=dict(filters), mode=mode)
                found = {h.document for h in hits}
                if mode == "bm25":
                    assert found <= expected, (filters, mode)
                else:
                    assert found == expected, (filters, mode, exact_limit)


async def test_an_organisation_never_sees_another_organisations_chunks(
    retrieval_env: RetrievalEnv, tmp_path: Path
) -> None:
    double = WordHashEmbedderDouble()
    await build(retrieval_env, write_corpus(tmp_path / "a"), double)
    ref = retrieval(retrieval_env, double).index("docs")
    with pytest.raises(IndexNotFound):
        await search(ref, "signing key", org_id=OTHER_ORG)
    assert await list_indexes(retrieval_env.store, OTHER_ORG) == []

    other = tmp_path / "b"
    other.mkdir()
    (other / "secret.md").write_text("# Signing keys\n\nOur key lives in the basement safe.\n")
    await build(retrieval_env, other, double, org=OTHER_ORG)
    mine = await search(ref, "signing key", org_id=ORG, k=20)
    theirs = await search(ref, "signing key", org_id=OTHER_ORG, k=20)
    assert "secret.md" not in {h.document for h in mine}
    assert {h.document for h in theirs} == {"secret.md"}

    # The backend's own queries take the organisation: another one's keys give nothing.
    info = await get_index(retrieval_env.store, ORG, "docs")
    backend = retrieval_env.backend
    vector = double.vector("signing key")
    total = info.version(1).chunks  # type: ignore[union-attr]
    keys = [k for k, _ in await backend.vector_search(info.id, 1, ORG, vector, 5, {}, total=total)]
    assert len(await backend.fetch_chunks(info.id, 1, ORG, keys)) == len(keys) == 5
    assert await backend.fetch_chunks(info.id, 1, OTHER_ORG, keys) == {}
    assert await backend.bm25_search(
        info.id, 1, OTHER_ORG, "signing key", 5, {}, total=total, total_terms=100
    ) == []  # fmt: skip
    filtered = await backend.vector_search(
        info.id, 1, OTHER_ORG, vector, 5, {"path": "guides/"}, total=total
    )
    assert filtered == []


async def test_bad_files_are_skipped_with_a_warning_or_fail_a_strict_build(
    retrieval_env: RetrievalEnv, tmp_path: Path
) -> None:
    source = write_corpus(tmp_path / "docs")
    (source / "notes.docx").write_bytes(b"PK\x03\x04 not supported")
    (source / "binary.txt").write_bytes(b"\x00\x01\x02")
    (source / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a pdf body")
    (source / "bad-front.md").write_text("---\ntags: [unclosed\n---\n# Title\n\ntext\n")
    (source / "huge.md").write_text("# Big\n\n" + "word " * 3000)
    (source / ".hidden.md").write_text("# Hidden\n")
    (source / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))

    with pytest.raises(DocumentError) as err:
        await build(retrieval_env, source, WordHashEmbedderDouble(), strict=True,
                    max_document_bytes=10_000)  # fmt: skip
    for name in ("notes.docx", "binary.txt", "broken.pdf", "bad-front.md", "huge.md"):
        assert name in err.value.message
    assert "latin1.txt" in err.value.message and ".hidden.md" not in err.value.message
    assert err.value.code == "document_unreadable"
    assert await list_indexes(retrieval_env.store, ORG) == []  # nothing written

    report = await build(retrieval_env, source, WordHashEmbedderDouble(),
                         max_document_bytes=10_000)  # fmt: skip
    assert report.published and report.documents == 5
    skipped = " | ".join(s["error"] for s in report.skipped)
    assert len(report.skipped) == 6
    assert "notes.docx: unsupported format '.docx'" in skipped
    assert "huge.md: 15,007 bytes, over the limit of 10,000" in skipped
    assert "binary.txt: it holds NUL bytes" in skipped
    assert "bad-front.md: its front matter is not valid YAML" in skipped
    assert "broken.pdf: it is not a readable PDF" in skipped
    info = await get_index(retrieval_env.store, ORG, "docs")
    assert len(info.version(1).skipped) == 6  # type: ignore[union-attr]


async def test_a_missing_source_folder_names_it(
    retrieval_env: RetrievalEnv, tmp_path: Path
) -> None:
    with pytest.raises(DocumentError) as err:
        await build(retrieval_env, tmp_path / "nowhere", WordHashEmbedderDouble())
    assert "nowhere" in err.value.message and "does not exist" in err.value.message
    assert await list_indexes(retrieval_env.store, ORG) == []


async def test_bad_queries_get_clear_errors(retrieval_env: RetrievalEnv, tmp_path: Path) -> None:
    double = WordHashEmbedderDouble()
    ref = retrieval(retrieval_env, double).index("docs")
    with pytest.raises(IndexNotFound) as missing:
        await search(ref, "anything", org_id=ORG)
    assert missing.value.code == "index_not_found"
    await build(retrieval_env, write_corpus(tmp_path / "docs"), double)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"query": "   "}, "empty"),
        ({"k": 0}, "k must be"),
        ({"mode": "fuzzy"}, "unknown search mode"),
        ({"filters": {"bad key!": "x"}}, "invalid filter key"),
        ({"query": "x" * 10_001}, "over the limit of 10,000"),
    ]
    for kwargs, message in bad:
        args = {"query": "keys", **kwargs}
        with pytest.raises(ContextError, match=message):
            await search(ref, args.pop("query"), org_id=ORG, **args)
    # A long query of many distinct words is scored on its first terms, without error.
    many = " ".join(f"w{i}" for i in range(1200)) + " signing key"
    assert await search(ref, many, org_id=ORG, mode="bm25") == []
    assert await search(ref, "signing key ✓ \x00 ' OR 1=1 --", org_id=ORG, mode="bm25")
    with pytest.raises(ContextError, match="invalid index name"):
        await build(retrieval_env, tmp_path / "docs", double, name="../escape")


async def test_delete_removes_the_index_and_its_data(
    retrieval_env: RetrievalEnv, tmp_path: Path
) -> None:
    double = WordHashEmbedderDouble()
    await build(retrieval_env, write_corpus(tmp_path / "docs"), double)
    info = await get_index(retrieval_env.store, ORG, "docs")
    r = retrieval(retrieval_env, double)
    with pytest.raises(IndexNotFound):
        await delete_index(r, OTHER_ORG, "docs")
    await delete_index(r, ORG, "docs")
    with pytest.raises(IndexNotFound):
        await search(r.index("docs"), "keys", org_id=ORG)
    with pytest.raises(ContextError):
        await retrieval_env.backend.documents(info.id, 1)
    if retrieval_env.kind == "embedded":
        assert not (tmp_path / "indexes" / info.id).exists()
