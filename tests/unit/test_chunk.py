"""Ingestion and chunking: formats parsed into sections, chunks sized and overlapping as asked,
heading paths and stable ids, and every unusable file a ``DocumentError`` naming it."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from elevenfactor.context._chunk import chunk_document, estimate_tokens, token_counter
from elevenfactor.context._ingest import Document, load_document, scan
from elevenfactor.context._retr_formats import parse_html, parse_markdown, parse_text
from elevenfactor.errors import DocumentError

LIMIT = 1_000_000


def doc(tmp_path: Path, name: str, text: str) -> Document:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return load_document(tmp_path, path, max_bytes=LIMIT)


def test_markdown_sections_follow_the_headings() -> None:
    parsed = parse_markdown(
        b"---\ntitle: Guide\ntags: [a, b]\ndraft: true\nnested: {x: 1}\n---\n"
        b"Intro before any heading.\n\n# Top\n\nFirst para\nstill first.\n\n"
        b"## Sub\n\nUnder sub.\n\n```python\n# not a heading\n\nx = 1\n```\n\n"
        b"### Deeper\n\nDeep text.\n\n## Sibling\n\nSibling text.\n\nSetext title\n===\n\nLast.\n"
    )
    assert parsed.title == "Guide"
    assert parsed.metadata["tags"] == ["a", "b"]
    assert [(s.heading_path, s.blocks) for s in parsed.sections] == [
        ((), ("Intro before any heading.",)),
        (("Top",), ("First para\nstill first.",)),
        (("Top", "Sub"), ("Under sub.", "```python\n# not a heading\n\nx = 1\n```")),
        (("Top", "Sub", "Deeper"), ("Deep text.",)),
        (("Top", "Sibling"), ("Sibling text.",)),
        (("Setext title",), ("Last.",)),
    ]


def test_html_and_text_are_parsed_into_sections() -> None:
    html = parse_html(
        b"<html><head><title> The  Title </title><script>evil()</script></head><body>"
        b"<h1>Main</h1><p>One &amp; two.</p><ul><li>item a</li><li>item b</li></ul>"
        b"<h3>Skip level</h3><div>Inside <b>bold</b> div</div><pre>  keep\n  spacing</pre>"
        b"<style>.x{}</style></body></html>"
    )
    assert html.title == "The Title"
    assert [(s.heading_path, s.blocks) for s in html.sections] == [
        (("Main",), ("One & two.", "item a", "item b")),
        (("Main", "Skip level"), ("Inside bold div", "  keep\n  spacing")),
    ]
    text = parse_text(b"\xef\xbb\xbfFirst block\nline two\n\n\n  \nSecond block\r\n")
    assert [s.blocks for s in text.sections] == [("First block\nline two", "Second block")]


def test_documents_carry_metadata_and_a_content_hash(tmp_path: Path) -> None:
    a = doc(tmp_path, "guides/a.md", "---\ntags: [x]\nn: 3\n---\n# A\n\ntext\n")
    assert a.path == "guides/a.md" and a.title == "A"
    assert a.metadata == {"path": "guides/a.md", "ext": "md", "title": "A", "tags": ["x"], "n": "3"}
    same = doc(tmp_path, "guides/a.md", "---\ntags: [x]\nn: 3\n---\n# A\n\ntext\n")
    changed = doc(tmp_path, "guides/a.md", "---\ntags: [x]\nn: 3\n---\n# A\n\ntext!\n")
    assert a.content_hash == same.content_hash != changed.content_hash


def test_chunks_stay_within_the_target_and_overlap(tmp_path: Path) -> None:
    sentences = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(120))
    paragraphs = "\n\n".join(f"Paragraph {i} is short." for i in range(30))
    d = doc(tmp_path, "long.md", f"# Long\n\n## Part\n\n{sentences}\n\n## Many\n\n{paragraphs}\n")
    chunks = chunk_document(d, chunk_tokens=60, overlap_tokens=12)
    assert len(chunks) > 8
    for c in chunks:
        assert estimate_tokens(c.embed_text) <= 60 + 4, c.embed_text
        assert c.heading_path in {("Long", "Part"), ("Long", "Many")}
        assert c.document == "long.md"
    assert [c.position for c in chunks] == list(range(len(chunks)))
    part = [c for c in chunks if c.heading_path == ("Long", "Part")]
    for before, after in itertools.pairwise(part):
        tail = before.text.split()[-3:]
        assert after.text.split()[:12] != before.text.split()[:12]
        assert " ".join(tail) in after.text  # the next chunk repeats the end of the one before
    # Every sentence of the section is in some chunk.
    joined = " ".join(c.text for c in part)
    for i in range(120):
        assert f"Sentence number {i} talks" in joined
    # Short paragraphs are packed together, not one chunk each.
    many = [c for c in chunks if c.heading_path == ("Long", "Many")]
    assert len(many) < 10 and "\n\n" in many[0].text


def test_chunk_ids_are_stable_and_change_with_the_text(tmp_path: Path) -> None:
    text = "# T\n\n" + "\n\n".join(f"Block {i} with some words in it." for i in range(40))
    first = chunk_document(doc(tmp_path, "a.md", text), chunk_tokens=40, overlap_tokens=5)
    again = chunk_document(doc(tmp_path, "a.md", text), chunk_tokens=40, overlap_tokens=5)
    assert [c.id for c in first] == [c.id for c in again]
    assert len({c.id for c in first}) == len(first) and all(c.key > 0 for c in first)
    moved = chunk_document(doc(tmp_path, "b.md", text), chunk_tokens=40, overlap_tokens=5)
    assert not {c.id for c in moved} & {c.id for c in first}
    edited = chunk_document(
        doc(tmp_path, "a.md", text.replace("Block 39", "Block thirty-nine")),
        chunk_tokens=40,
        overlap_tokens=5,
    )
    # Chunks are packed from the start: only the last one changes.
    assert [c.id for c in edited][: len(first) - 1] == [c.id for c in first][:-1]
    assert edited[-1].id != first[-1].id


def test_an_unbroken_wall_of_text_and_code_are_split(tmp_path: Path) -> None:
    wall = " ".join(f"word{i}" for i in range(500))
    code = "```\n" + "\n".join(f"line_{i} = {i}" for i in range(100)) + "\n```"
    chunks = chunk_document(
        doc(tmp_path, "w.md", f"{wall}\n\n{code}\n"), chunk_tokens=50, overlap_tokens=0
    )
    assert all(c.tokens <= 50 for c in chunks)
    assert " ".join(c.text for c in chunks).count("word499") == 1
    assert any(c.text.startswith("line_") for c in chunks)


def test_the_embedders_tokenizer_is_used_when_it_has_one() -> None:
    class Counter:
        def count_tokens(self, texts: list[str]) -> list[int]:
            return [len(t.split()) + 2 for t in texts]  # two special tokens, like BERT

    count = token_counter(Counter())
    assert count("three little words") == 3 and count("") == 0
    assert token_counter(object()) is estimate_tokens
    assert estimate_tokens("The installer needs Python 3.11, or newer!") == 12


def test_the_estimate_is_calibrated_on_the_local_models_tokenizer() -> None:
    from tokenizers import Tokenizer

    from elevenfactor.context._embed_local import minilm_dir

    tokenizer = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    data = Path(__file__).resolve().parents[1] / "data" / "retrieval" / "docs"
    blocks = [b for f in sorted(data.glob("*.md")) for b in f.read_text().split("\n\n")]
    real = sum(len(tokenizer.encode(b, add_special_tokens=False).ids) for b in blocks)
    assert 0.95 < sum(estimate_tokens(b) for b in blocks) / real < 1.05


def test_bad_chunk_settings_are_refused(tmp_path: Path) -> None:
    d = doc(tmp_path, "a.md", "text")
    with pytest.raises(ValueError, match="overlap"):
        chunk_document(d, chunk_tokens=100, overlap_tokens=50)
    with pytest.raises(ValueError, match="at least 16"):
        chunk_document(d, chunk_tokens=8, overlap_tokens=0)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.docx", b"PK", "a.docx: unsupported format '.docx'"),
        ("Makefile", b"all:", "Makefile: unsupported format '(no extension)'"),
        ("b.txt", b"bin\x00ary", "b.txt: it holds NUL bytes"),
        ("c.md", b"caf\xe9", "c.md: it is not UTF-8 text (byte 3 is invalid)"),
        ("d.md", b"---\n- a list\n---\ntext", "d.md: its front matter must be a mapping"),
        ("e.md", b"---\na: [\n---\ntext", "e.md: its front matter is not valid YAML"),
        ("f.pdf", b"%PDF-1.4 garbage", "f.pdf: it is not a readable PDF"),
        ("g.html", b"x" * 101, "g.html: 101 bytes, over the limit of 100"),
    ],
)
def test_unusable_files_are_document_errors_naming_them(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DocumentError) as err:
        load_document(tmp_path, tmp_path / name, max_bytes=100)
    assert err.value.message.startswith(message)
    assert err.value.code == "document_unreadable" and err.value.hint


def test_scan_collects_documents_and_problems(tmp_path: Path) -> None:
    (tmp_path / "docs" / ".git").mkdir(parents=True)
    (tmp_path / "docs" / ".git" / "config.md").write_text("hidden")
    (tmp_path / "docs" / "drafts").mkdir()
    (tmp_path / "docs" / "drafts" / "wip.md").write_text("excluded")
    (tmp_path / "docs" / "b.md").write_text("# B")
    (tmp_path / "docs" / "a.txt").write_text("A")
    (tmp_path / "docs" / "img.png").write_bytes(b"\x89PNG")
    found = scan(tmp_path / "docs", max_bytes=LIMIT, exclude=["drafts/*"])
    assert [d.path for d in found.documents] == ["a.txt", "b.md"]
    assert [p.message.split(":")[0] for p in found.problems] == ["img.png"]
    with pytest.raises(DocumentError, match="does not exist"):
        scan(tmp_path / "missing", max_bytes=LIMIT)
    with pytest.raises(DocumentError, match="is not a folder"):
        scan(tmp_path / "docs" / "b.md", max_bytes=LIMIT)
