"""Open-source detectors on the same inputs: Yelp's ``detect-secrets`` (secrets) and
``scrubadub`` (PII), both offline, in this venv; beside our ``find_secrets`` / ``find_pii``.

Time: one call on each 2 KB input. detect-secrets runs twice: as it scans a file (its
default plugins and filters over the lines, the path ``scan_file`` takes once a file is read;
the "file" name is ``message.txt``) and through ``scan_line``, its ad-hoc string API, which
searches eagerly (every word is a candidate) and so flags almost anything. scrubadub: the
default ``Scrubber().iter_filth``. Detection on
``tests/data/guard/pii_secrets.jsonl``: a row expecting a secret kind is a positive for the
secret detectors, one expecting a PII kind for the PII detectors; the rows expecting nothing
(hard negatives: dates, versions, hashes, placeholders) are the negatives of both; a detector
"fires" on a row when it reports anything. Kind names differ between tools, so only "found
something" is compared.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench.guards.inputs import PII_SECRETS, inputs, read_jsonl
from bench.stats import summarize
from elevenfactor.governance._guard_pii import PII_KINDS, find_pii
from elevenfactor.governance._guard_secrets import SECRET_KINDS, find_secrets

__all__ = ["INSTALL", "UNUSABLE", "compare"]

INSTALL = ["detect-secrets>=1.5", "scrubadub>=2.0"]
"""What ``pip install`` needs for the peers (the ``bench`` extra)."""
UNUSABLE = {
    "presidio-analyzer": "needs a spaCy model (en_core_web_lg) downloaded at first use",
    "scrubadub-spacy / scrubadub-stanford": "need NER models downloaded at first use",
}
"""Well-known peers that cannot run here, and why."""

Detector = Callable[[str], list[Any]]


@contextlib.contextmanager
def _detectors() -> Iterator[dict[str, tuple[str, str, Detector | None, str]]]:
    """name -> (family, version, detect function or None, why not)."""
    found: dict[str, tuple[str, str, Detector | None, str]] = {
        "elevenfactor secrets": ("secrets", "", find_secrets, ""),
        "elevenfactor pii": ("pii", "", find_pii, ""),
    }
    with contextlib.ExitStack() as stack:
        try:
            from detect_secrets.core import scan
            from detect_secrets.settings import default_settings, get_filters, get_settings

            stack.enter_context(default_settings())
            # as scan_line does: the "file" is a string, not a file on disk
            get_settings().disable_filters("detect_secrets.filters.common.is_invalid_file")
            get_filters.cache_clear()

            def file_scan(text: str) -> list[Any]:
                lines = list(enumerate(text.splitlines(), 1))
                return list(scan._process_line_based_plugins(lines, filename="message.txt"))

            def adhoc(text: str) -> list[Any]:
                return [s for line in text.splitlines() for s in scan.scan_line(line)]

            version = importlib.metadata.version("detect-secrets")
            found["detect-secrets"] = ("secrets", version, file_scan, "")
            found["detect-secrets scan_line"] = ("secrets", version, adhoc, "")
        except ImportError as exc:
            found["detect-secrets"] = ("secrets", "", None, f"not installed ({exc})")
        try:
            import scrubadub  # type: ignore[import-untyped]  # no stubs, no py.typed

            scrubber = scrubadub.Scrubber()

            def scrub(text: str) -> list[Any]:
                return list(scrubber.iter_filth(text))

            version = importlib.metadata.version("scrubadub")
            found["scrubadub"] = ("pii", version, scrub, "")
        except ImportError as exc:
            found["scrubadub"] = ("pii", "", None, f"not installed ({exc})")
        yield found


def _time(fn: Detector, text: str, n: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn(text)
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn(text)
        out.append((time.perf_counter_ns() - t0) / 1000)
    return summarize(out)


def _detection(fn: Detector, family: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = set(SECRET_KINDS if family == "secrets" else PII_KINDS)
    c = {"tp": 0, "fn": 0, "fp": 0, "tn": 0}
    for row in rows:
        expected = kinds.intersection(row["expect"])
        if row["expect"] and not expected:
            continue  # the other family's row
        fired = bool(fn(row["text"]))
        c[("tp" if fired else "fn") if expected else ("fp" if fired else "tn")] += 1
    pos, neg, hits = c["tp"] + c["fn"], c["fp"] + c["tn"], c["tp"] + c["fp"]
    return {
        **c,
        "detection_rate": c["tp"] / pos if pos else None,
        "false_positive_rate": c["fp"] / neg if neg else None,
        "precision": c["tp"] / hits if hits else None,
    }


def compare(n: int, warmup: int, advance: Callable[[], None]) -> dict[str, Any]:
    """Every detector: its version (or why it is unavailable), time per 2 KB input, and
    detection on the PII / secrets corpus."""
    rows = read_jsonl(PII_SECRETS)
    out: dict[str, Any] = {"unusable": UNUSABLE, "install": INSTALL, "detectors": {}}
    with _detectors() as found:
        for name, (family, version, fn, why) in found.items():
            entry: dict[str, Any] = {"family": family, "version": version}
            if fn is None:
                out["detectors"][name] = {**entry, "unavailable": why}
                continue
            entry["us"] = {k: _time(fn, text, n, warmup) for k, text in inputs().items()}
            entry["detection"] = _detection(fn, family, rows)
            out["detectors"][name] = entry
            advance()
    return out
