"""Document formats for retrieval: Markdown, plain text, HTML (the stdlib parser) and PDF
(``pypdf``), each parsed into the same structure: sections, each with its heading path and its
blocks (paragraphs, lists, code, table cells).

A parser gets the file's bytes and raises ``ValueError`` with a reason a person can act on;
the ingestion layer turns that into a ``DocumentError`` naming the file.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import yaml

__all__ = ["FORMATS", "Parsed", "Section", "decode_text", "parse_html", "parse_markdown"]


@dataclass(frozen=True, slots=True)
class Section:
    """A run of blocks under one heading path (``()`` before the first heading)."""

    heading_path: tuple[str, ...]
    blocks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parsed document: its sections, title and metadata (Markdown front matter, PDF info)."""

    sections: tuple[Section, ...]
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class _Sections:
    """Collects blocks under the current heading path."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.stack: list[tuple[int, str]] = []
        self.blocks: list[str] = []
        self.title: str | None = None

    def heading(self, level: int, text: str) -> None:
        self.flush()
        text = " ".join(text.split())
        if not text:
            return
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, text))
        if self.title is None and level == 1:
            self.title = text

    def block(self, text: str) -> None:
        text = text.strip("\n")
        if text.strip():
            self.blocks.append(text)

    def flush(self) -> None:
        if self.blocks:
            path = tuple(t for _, t in self.stack)
            self.sections.append(Section(path, tuple(self.blocks)))
            self.blocks = []


def decode_text(data: bytes) -> str:
    """UTF-8 text (a BOM dropped; CRLF and CR to LF); ``ValueError`` for binary or other
    encodings."""
    if b"\x00" in data:
        raise ValueError("it holds NUL bytes: a binary file, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"it is not UTF-8 text (byte {exc.start} is invalid)") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*#*[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")


def _front_matter(text: str) -> tuple[dict[str, Any], str]:
    if not text.startswith("---\n"):
        return {}, text
    end = text.find("\n---", 3)
    if end < 0 or text[end + 4 : end + 5] not in ("", "\n"):
        return {}, text
    try:
        data = yaml.safe_load(text[4:end])
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark else ""
        raise ValueError(f"its front matter is not valid YAML{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError("its front matter must be a mapping (key: value)")
    return {str(k): v for k, v in data.items()}, text[end + 4 :].lstrip("\n")


def parse_markdown(data: bytes) -> Parsed:
    """Markdown: YAML front matter, ATX (``#``) and setext headings; blank lines separate
    blocks; fenced code stays one block whatever it holds."""
    meta, text = _front_matter(decode_text(data))
    out = _Sections()
    para: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        if fence is not None:
            para.append(line)
            if line.strip().startswith(fence):
                fence = None
                out.block("\n".join(para))
                para = []
            continue
        if m := _FENCE.match(line):
            out.block("\n".join(para))
            para = [line]
            fence = m.group(1)
            continue
        if m := _ATX.match(line):
            out.block("\n".join(para))
            para = []
            out.heading(len(m.group(1)), m.group(2) or "")
            continue
        if (m := _SETEXT.match(line)) and len(para) == 1 and para[0].strip():
            out.heading(1 if m.group(1)[0] == "=" else 2, para[0])
            para = []
            continue
        if not line.strip():
            out.block("\n".join(para))
            para = []
            continue
        para.append(line)
    out.block("\n".join(para))
    out.flush()
    title = meta.get("title")
    return Parsed(
        tuple(out.sections), str(title) if title is not None else out.title, metadata=meta
    )


def parse_text(data: bytes) -> Parsed:
    """Plain text: blocks separated by blank lines, no headings."""
    text = decode_text(data)
    blocks = tuple(b.strip("\n") for b in re.split(r"\n[ \t]*\n", text) if b.strip())
    return Parsed((Section((), blocks),) if blocks else ())


_BLOCK_TAGS = frozenset(
    [
        "p",
        "div",
        "section",
        "article",
        "main",
        "aside",
        "header",
        "footer",
        "nav",
        "li",
        "ul",
        "ol",
        "dl",
        "dt",
        "dd",
        "pre",
        "blockquote",
        "table",
        "tr",
        "td",
        "th",
        "thead",
        "tbody",
        "figure",
        "figcaption",
        "br",
        "hr",
        "form",
        "fieldset",
        "address",
        "details",
        "summary",
    ]
)
_SKIP_TAGS = frozenset(["script", "style", "noscript", "template", "svg", "head"])
_HEADINGS = {f"h{i}": i for i in range(1, 7)}


class _HTML(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out = _Sections()
        self.text: list[str] = []
        self.heading: list[str] | None = None
        self.level = 0
        self.skip = 0
        self.pre = 0
        self.in_title = False
        self.title: list[str] = []

    def _flush_text(self) -> None:
        raw = "".join(self.text)
        self.text = []
        self.out.block(raw if self.pre else " ".join(raw.split()))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag in _HEADINGS:
            self._flush_text()
            self.heading, self.level = [], _HEADINGS[tag]
        elif tag in _BLOCK_TAGS:
            self._flush_text()
            self.pre += tag == "pre"

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in _HEADINGS and self.heading is not None:
            self.out.heading(self.level, "".join(self.heading))
            self.heading = None
        elif tag in _BLOCK_TAGS:
            self._flush_text()
            if tag == "pre":
                self.pre = max(0, self.pre - 1)

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        if self.skip:
            return
        if self.heading is not None:
            self.heading.append(data)
        else:
            self.text.append(data)


def parse_html(data: bytes) -> Parsed:
    """HTML: ``h1``-``h6`` open sections; block elements separate blocks; scripts, styles and
    the head are dropped; the ``title`` element is the title."""
    parser = _HTML()
    parser.feed(decode_text(data))
    parser.close()
    parser._flush_text()
    parser.out.flush()
    title = " ".join("".join(parser.title).split()) or parser.out.title
    return Parsed(tuple(parser.out.sections), title)


def parse_pdf(data: bytes) -> Parsed:
    """PDF: the text of each page (``pypdf``) under a heading ``page N``; blank lines (or, when
    a page has none, its lines) separate blocks. A PDF with no text at all is refused."""
    import pypdf

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ValueError("it is encrypted")
        pages = [page.extract_text() or "" for page in reader.pages]
        info = reader.metadata
        title = str(info.title) if info is not None and info.title else None
    except ValueError:
        raise
    except Exception as exc:  # pypdf raises many kinds on malformed files
        raise ValueError(f"it is not a readable PDF ({type(exc).__name__}: {exc})") from None
    sections = []
    for n, page in enumerate(pages, start=1):
        text = page.replace("\r\n", "\n").replace("\r", "\n")
        parts = re.split(r"\n[ \t]*\n", text)
        if len(parts) == 1:
            parts = text.split("\n")
        blocks = tuple(" ".join(p.split()) for p in parts if p.strip())
        if blocks:
            sections.append(Section((f"page {n}",), blocks))
    if not sections:
        raise ValueError("it has no extractable text (a scanned PDF needs OCR first)")
    return Parsed(tuple(sections), title)


FORMATS: dict[str, Callable[[bytes], Parsed]] = {
    ".md": parse_markdown,
    ".markdown": parse_markdown,
    ".txt": parse_text,
    ".text": parse_text,
    ".html": parse_html,
    ".htm": parse_html,
    ".pdf": parse_pdf,
}
"""Parsers by (lower-case) file extension."""
