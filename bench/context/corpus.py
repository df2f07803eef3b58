"""The calibration corpus (``bench/context/corpus``, sources in its ``SOURCES.md``) cut into
samples of the sizes messages and tool results have: a few hundred to a few thousand
characters."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CORPUS", "KINDS", "Sample", "samples"]

CORPUS = Path(__file__).resolve().parent / "corpus"
KINDS = ("prose", "code", "json", "yaml", "nonenglish")
_TARGETS = (300, 900, 2400)  # sample sizes in characters, cycled
_PER_FILE = 40


@dataclass(frozen=True, slots=True)
class Sample:
    """A piece of one corpus file."""

    kind: str
    source: str
    index: int
    text: str


def _pieces(text: str) -> list[str]:
    """``text`` cut at line ends into pieces of about the cycled target sizes."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for line in _lines(text):
        current.append(line)
        size += len(line)
        if size >= _TARGETS[len(out) % len(_TARGETS)]:
            out.append("".join(current))
            current, size = [], 0
    if current and size >= 40:
        out.append("".join(current))
    return [p for p in out if p.strip()]


_ENDS = (". ", "? ", "! ", "\u3002", "\uff1f", "\uff01", "\u061f ", "\n")


def _lines(text: str) -> list[str]:
    """Lines, with a line longer than the smallest target cut after sentence ends."""
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        while len(line) > 2 * _TARGETS[0]:
            cuts = [line.find(e, _TARGETS[0] // 2) for e in _ENDS]
            cut = min((c for c in cuts if c > 0), default=-1)
            if cut < 0 or cut >= len(line) - 2:
                break
            cut += 2 if line[cut] in ".?!\u061f" else 1
            out.append(line[:cut])
            line = line[cut:]
        out.append(line)
    return out


def _compact(text: str) -> str | None:
    try:
        return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        return None


def _chars(text: str) -> list[str]:
    """Minified JSON has no line ends: cut it after commas near the target sizes."""
    out: list[str] = []
    start = 0
    while start < len(text):
        end = start + _TARGETS[len(out) % len(_TARGETS)]
        comma = text.find(",", end)
        end = len(text) if comma < 0 else comma + 1
        out.append(text[start:end])
        start = end
    return out


def samples() -> list[Sample]:
    """Every sample, in a stable order (at most 40 per file, spread over the file)."""
    found: list[Sample] = []
    for kind in KINDS:
        for path in sorted((CORPUS / kind).glob("*.txt")):
            text = path.read_text(encoding="utf-8")
            variants = [(path.name, _pieces(text))]
            if kind == "json" and (compact := _compact(text)) is not None:
                variants.append((f"minified:{path.name}", _chars(compact)))
            for source, pieces in variants:
                step = max(1, len(pieces) // _PER_FILE)
                for i, piece in enumerate(pieces[::step][:_PER_FILE]):
                    found.append(Sample(kind, source, i, piece))
    return found
