"""Text normalisation for content guards (factor 10): the forms a detector should read so that
look-alike letters, invisible characters and encodings do not hide a phrase.

* ``fold(text)`` is for matching, not for display: compatibility decomposition (NFKD, so
  fullwidth, mathematical bold/italic/script, circled and superscript letters become ASCII),
  accents and other combining marks dropped, common confusables mapped to ASCII (Cyrillic small
  o/a/e…, Greek omicron/iota/nu…, Armenian oh/seh, Latin small capitals, regional-indicator and
  negative squared letters), typographic quotes and dashes made ASCII, invisible and format
  characters removed (zero-width space/joiners, bidi controls, soft hyphen, variation selectors,
  tag characters, Hangul fillers, C0/C1 controls), then casefolded, and every run of whitespace
  collapsed to one space. Positions do not map back to the input.
* ``decoded_views(text)`` returns the text hidden in encoded segments: base64 (standard and
  URL-safe, 16+ characters, including MIME-wrapped lines), hex (16+ digits, ``\\xNN`` runs,
  ``NN NN NN`` runs whose first pair starts with a digit), percent-encoding (3+ escapes) and
  Unicode tag-character smuggling, kept only where they decode to mostly printable UTF-8 text.
  Decoded views are searched once more (base64 inside base64). Work is bounded: at most
  ``MAX_SEGMENTS`` decode attempts and ``MAX_DECODED_BYTES`` decoded bytes per call.

Both are pure functions without import-time work beyond compiling a few patterns and building
small translate tables.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from urllib.parse import unquote_to_bytes

__all__ = ["MAX_DECODED_BYTES", "MAX_SEGMENTS", "decoded_views", "fold"]

MAX_SEGMENTS = 32
"""Decode attempts per ``decoded_views`` call (nested views included)."""
MAX_DECODED_BYTES = 64 * 1024
"""Decoded bytes per ``decoded_views`` call; a longer segment is cut to what is left."""

# -- fold ------------------------------------------------------------------------------------

_FORMAT_RANGES = (  # Unicode category Cf (format characters), as of Unicode 15
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)
_INVISIBLE_RANGES = (
    (0x0000, 0x0008),  # C0 controls that are not whitespace
    (0x000E, 0x001B),
    (0x007F, 0x0084),  # DEL and C1 controls (U+0085 is a line break)
    (0x0086, 0x009F),
    (0x0300, 0x036F),  # combining diacritical marks (accents, combining grapheme joiner)
    (0x1AB0, 0x1AFF),
    (0x1DC0, 0x1DFF),
    (0x20D0, 0x20FF),
    (0xFE20, 0xFE2F),
    (0xFE00, 0xFE0F),  # variation selectors
    (0xE0100, 0xE01EF),
    (0x115F, 0x1160),  # Hangul fillers render as nothing
    (0x3164, 0x3164),
    (0xFFA0, 0xFFA0),
    (0x2800, 0x2800),  # braille blank
)

# Look-alikes that NFKD leaves alone, mapped before casefolding so that an upper-case letter
# maps to what it looks like (Greek capital eta is "H", its small letter looks like "n").
_CONFUSABLES = {
    # Cyrillic capitals, then small letters
    "\u0410": "a", "\u0412": "b", "\u0415": "e", "\u0405": "s", "\u0406": "i", "\u0408": "j",
    "\u041a": "k", "\u041c": "m", "\u041d": "h", "\u041e": "o", "\u0420": "p", "\u0421": "c",
    "\u0422": "t", "\u0423": "y", "\u0425": "x", "\u04ae": "y", "\u051a": "q", "\u051c": "w",
    "\u04c0": "l", "\u04ba": "h", "\u0500": "d", "\ua646": "i", "\u0430": "a", "\u0432": "b",
    "\u0433": "r", "\u0435": "e", "\u0455": "s", "\u0456": "i", "\u0458": "j", "\u043a": "k",
    "\u043c": "m", "\u043d": "h", "\u043e": "o", "\u043f": "n", "\u0440": "p", "\u0441": "c",
    "\u0442": "t", "\u0443": "y", "\u0445": "x", "\u04af": "y", "\u051b": "q", "\u051d": "w",
    "\u04cf": "l", "\u04bb": "h", "\u0501": "d", "\u0261": "g",
    # Greek capitals, then small letters
    "\u0391": "a", "\u0392": "b", "\u0395": "e", "\u0396": "z", "\u0397": "h", "\u0399": "i",
    "\u039a": "k", "\u039c": "m", "\u039d": "n", "\u039f": "o", "\u03a1": "p", "\u03a4": "t",
    "\u03a5": "y", "\u03a7": "x", "\u03f9": "c", "\u037f": "j", "\u03b1": "a", "\u03b2": "b",
    "\u03b3": "y", "\u03b5": "e", "\u03b7": "n", "\u03b9": "i", "\u03ba": "k", "\u03bc": "u",
    "\u03bd": "v", "\u03bf": "o", "\u03c1": "p", "\u03c3": "o", "\u03c4": "t", "\u03c5": "u",
    "\u03c7": "x", "\u03c9": "w", "\u03f2": "c", "\u03f3": "j", "\u03f5": "e",
    # Armenian
    "\u0555": "o", "\u054d": "u", "\u0585": "o", "\u057d": "u", "\u0578": "n", "\u0570": "h",
    "\u0581": "g", "\u0566": "q",
    # Latin letters that look like plain ASCII ones
    "\u0131": "i", "\u0237": "j", "\u0251": "a", "\u0269": "i", "\u0280": "r", "\u028f": "y",
    "\u00f8": "o", "\u00d8": "o", "\u0111": "d", "\u0110": "d", "\u0127": "h", "\u0142": "l",
    "\u0141": "l", "\u0185": "b", "\u0262": "g", "\u029c": "h", "\u026a": "i", "\u029f": "l",
    "\u0274": "n", "\u01eb": "q", "\ua731": "s", "\u1d00": "a", "\u1d04": "c", "\u1d05": "d",
    "\u1d07": "e", "\u1d0a": "j", "\u1d0b": "k", "\u1d0d": "m", "\u1d0f": "o", "\u1d18": "p",
    "\u1d1b": "t", "\u1d1c": "u", "\u1d20": "v", "\u1d21": "w", "\u1d22": "z", "\u0299": "b",
    "\u0493": "f",
    # punctuation that regular expressions care about
    "\u2018": "'", "\u2019": "'", "\u201b": "'", "\u2032": "'", "\u201a": "'", "\u201c": '"',
    "\u201d": '"', "\u201f": '"', "\u2033": '"', "\u201e": '"', "\u2010": "-", "\u2011": "-",
    "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-", "\u2044": "/",
    "\u2215": "/", "\u29f8": "/", "\u2039": "<", "\u203a": ">", "\u27e8": "<", "\u27e9": ">",
    "\u3008": "<", "\u3009": ">", "\u02c2": "<", "\u02c3": ">", "\u01c0": "|", "\u2223": "|",
    "\u2502": "|", "\uff5c": "|",
}  # fmt: skip


def _build_table() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for lo, hi in (*_FORMAT_RANGES, *_INVISIBLE_RANGES):
        for cp in range(lo, hi + 1):
            table[cp] = None
    for char, ascii_ in _CONFUSABLES.items():
        table[ord(char)] = ascii_
    for i in range(26):  # regional indicators and negative circled / squared capitals
        for base in (0x1F1E6, 0x1F150, 0x1F170):
            table[base + i] = chr(ord("a") + i)
    return table


_TABLE = _build_table()
_ASCII_TABLE = {cp: None for lo, hi in _INVISIBLE_RANGES[:3] for cp in range(lo, hi + 1)}
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]")
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")


def _translate_run(match: re.Match[str]) -> str:
    return match.group().translate(_TABLE)


def fold(text: str) -> str:
    """``text`` in its matching form: look-alikes mapped to ASCII, invisible characters
    removed, accents dropped, casefolded, whitespace runs collapsed to one space (see the
    module docstring). Not position-preserving."""
    if text.isascii():
        if _ASCII_CONTROL.search(text):
            text = text.translate(_ASCII_TABLE)
        return " ".join(text.lower().split())
    decomposed = unicodedata.normalize("NFKD", text)
    # translate only the non-ASCII runs: str.translate is slow per character
    decomposed = _NON_ASCII_RUN.sub(_translate_run, decomposed)
    if _ASCII_CONTROL.search(decomposed):
        decomposed = decomposed.translate(_ASCII_TABLE)
    folded = decomposed.casefold()
    if not folded.isascii():  # casefolding can make new look-alikes (U+03A3 -> U+03C3)
        folded = _NON_ASCII_RUN.sub(_translate_run, folded).lower()
    if not folded.isascii():
        folded = unicodedata.normalize("NFC", folded)
    return " ".join(folded.split())


# -- decoded_views ---------------------------------------------------------------------------

_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX_ONLY = re.compile(r"(?:0x)?[0-9A-Fa-f]+")
_HEX_ESCAPES = re.compile(r"\\x[0-9A-Fa-f]{2}(?:\\x[0-9A-Fa-f]{2}){7,}")
# separated pairs start with a digit (printable ASCII is 0x20-0x7e), which keeps the scan fast
_HEX_PAIRS = re.compile(
    r"[0-9][0-9A-Fa-f][ :](?:[0-9A-Fa-f]{2}[ :]){6,}[0-9A-Fa-f]{2}(?![0-9A-Fa-f])"
)
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_TAG_RUN = re.compile("[\U000e0020-\U000e007e]{4,}")
_HAS_DIGIT_OR_SYMBOL = re.compile(r"[0-9+/=_-]")
_HAS_UPPER = re.compile(r"[A-Z]")
_HAS_LOWER = re.compile(r"[a-z]")
_NON_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]")
_LETTER = re.compile(r"[^\W\d_]")
_RUN_BYTES = bytes(
    ord("a") if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "+/_-=") else ord(" ")
    for b in range(256)
)  # bytes.translate table: base64 characters to "a", everything else to " "
_LONG_RUN = b"a" * 16
_TAG_TO_ASCII = {0xE0000 + cp: chr(cp) for cp in range(0x20, 0x7F)}


class _Budget:
    __slots__ = ("bytes_left", "segments_left")

    def __init__(self) -> None:
        self.segments_left = MAX_SEGMENTS
        self.bytes_left = MAX_DECODED_BYTES

    def take(self) -> bool:
        """One decode attempt, if any are left."""
        if self.segments_left <= 0 or self.bytes_left <= 0:
            return False
        self.segments_left -= 1
        return True


def _as_text(data: bytes, budget: _Budget) -> str | None:
    """``data`` as text when it is mostly printable UTF-8 with some letters, else None."""
    data = data[: budget.bytes_left]
    budget.bytes_left -= len(data)
    if len(data) < 4:
        return None
    text = data.decode("utf-8", errors="replace")
    bad = len(_NON_TEXT.findall(text))
    letters = len(_LETTER.findall(text))
    if bad > 0.1 * len(text) or letters < max(3, 0.3 * len(text)):
        return None
    return text


def _b64_candidates(text: str) -> list[str]:
    """Runs that could be base64, MIME-wrapped lines joined (a full line, length % 4 == 0,
    followed by a newline and the next run)."""
    runs: list[str] = []
    if _LONG_RUN not in text.encode("utf-8", "surrogatepass").translate(_RUN_BYTES):
        return runs  # no run of 16 base64 characters: skip the (slower) regex scan
    joining = False
    last_end = -1
    for match in _B64_RUN.finditer(text):
        run = match.group()
        gap = text[last_end : match.start()] if last_end >= 0 else ""
        if joining and gap in ("\n", "\r\n"):
            runs[-1] += run
        else:
            runs.append(run)
        joining = len(run) % 4 == 0 and len(run) >= 40 and not run.endswith("=")
        last_end = match.end()
    return runs


def _decode_b64(run: str) -> bytes | None:
    body = run.rstrip("=")
    if ("+" in body or "/" in body) and ("-" in body or "_" in body):
        return None  # both alphabets: not base64
    if len(body) % 4 == 1:
        body = body[:-1]  # a stray character (the run was cut mid-quantum)
    padded = body + "=" * (-len(body) % 4)
    try:
        if "-" in body or "_" in body:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None


def _decode_hex(digits: str) -> bytes | None:
    digits = digits[2:] if digits[:2].lower() == "0x" else digits
    if len(digits) % 2:
        digits = digits[:-1]
    try:
        return bytes.fromhex(digits)
    except ValueError:
        return None


def _views_once(text: str, budget: _Budget) -> list[str]:
    found: list[str] = []

    def keep(data: bytes | None) -> None:
        if data is not None:
            decoded = _as_text(data, budget)
            if decoded is not None:
                found.append(decoded)

    for run in _b64_candidates(text):
        if len(run) >= 16 and _HEX_ONLY.fullmatch(run):
            if budget.take():
                keep(_decode_hex(run))
            continue
        if not (
            _HAS_DIGIT_OR_SYMBOL.search(run) and _HAS_UPPER.search(run) and _HAS_LOWER.search(run)
        ):
            continue  # a long word or an identifier, not base64
        if budget.take():
            keep(_decode_b64(run))
    for match in _HEX_ESCAPES.finditer(text):
        if budget.take():
            keep(_decode_hex(match.group().replace("\\x", "")))
    for match in _HEX_PAIRS.finditer(text):
        if budget.take():
            keep(_decode_hex(re.sub(r"[ :]", "", match.group())))
    if "%" in text and len(_PERCENT_ESCAPE.findall(text)) >= 3:
        for token in text.split():
            if token.count("%") >= 3 and len(_PERCENT_ESCAPE.findall(token)) >= 3 and budget.take():
                keep(unquote_to_bytes(token))
    if not text.isascii():
        for match in _TAG_RUN.finditer(text):
            if budget.take():
                found.append(match.group().translate(_TAG_TO_ASCII))
    return found


def decoded_views(text: str) -> list[str]:
    """The text of encoded segments in ``text`` (base64, hex, percent-encoding, Unicode tag
    characters) that decode to mostly printable UTF-8, then the segments encoded inside those,
    once. Empty when nothing is encoded. Bounded work: see ``MAX_SEGMENTS`` and
    ``MAX_DECODED_BYTES``."""
    budget = _Budget()
    first = _views_once(text, budget)
    views = list(first)
    for view in first:
        views.extend(_views_once(view, budget))
    seen: set[str] = set()
    unique = []
    for view in views:
        if view not in seen:
            seen.add(view)
            unique.append(view)
    return unique
