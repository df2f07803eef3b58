"""The local prompt-injection classifier (factor 10): hashed n-grams and logistic regression,
scored with numpy only.

Features, from ``fold(text)`` encoded as UTF-8 and padded with a space on both sides:

* character 3-, 4- and 5-grams of bytes, hashed with a polynomial rolling hash (vectorised over
  every position at once) and a murmur3 finaliser into ``BUCKETS`` buckets;
* word unigrams and bigrams (a word is a run of ASCII letters and digits or non-ASCII bytes),
  hashed the same way.

Each group is scaled by one over the square root of its n-gram count, so a score is
``bias + Σw[char] / √n_char + Σw[word] / √n_word`` and ``P = sigmoid(score)``. The weights
are trained by ``scripts/train_injection.py`` on ``tests/data/guard/injection`` and ship as
``data/injection_model.npz`` (float16 weights, the feature configuration and the corpus hash),
loaded once on first use.

Long texts are scored in windows of ``WINDOW`` bytes every ``STRIDE`` bytes as well as whole,
and the maximum is taken, so one injected sentence in a long document is not diluted. Window
sums come from cumulative sums of the per-position weights: the cost is linear in the length.
"""

from __future__ import annotations

import functools
import io
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from elevenfactor.errors import ConfigError
from elevenfactor.governance._guard_normalize import fold

__all__ = [
    "BUCKETS",
    "MAX_BYTES",
    "STRIDE",
    "WINDOW",
    "model_info",
    "reset_model_cache",
    "save_model",
    "score",
    "sparse_features",
]

BUCKETS = 1 << 17
WINDOW = 512
"""Bytes of folded text per window; texts up to ``2 * WINDOW`` are scored whole only."""
STRIDE = 256
MAX_BYTES = 1 << 20
"""Folded bytes scored; the rules still read all of a longer text."""
_CONFIG = {"version": 1, "buckets": BUCKETS, "char": [3, 4, 5], "word": [1, 2]}

U32 = npt.NDArray[np.uint32]
Ints = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
_MASK = np.uint32(BUCKETS - 1)
_P = 0x01000193  # odd, so it has an inverse modulo 2**32
_Q = pow(_P, -1, 1 << 32)
_SEEDS = {name: np.uint32(seed) for name, seed in
          (("c3", 0x9E3779B1), ("c4", 0x85EBCA77), ("c5", 0xC2B2AE3D), ("w1", 0x27D4EB2F),
           ("w2", 0x165667B1))}  # fmt: skip
_IS_WORD = np.array(
    [(chr(b).isascii() and chr(b).isalnum()) or b >= 0x80 for b in range(256)], dtype=bool
)


def _mix(h: U32, seed: np.uint32) -> U32:
    """murmur3's 32-bit finaliser of ``h ^ seed``, masked to a bucket."""
    h = h ^ seed
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h & _MASK


@functools.lru_cache(maxsize=4)
def _powers(base: int, length: int) -> U32:
    """``base ** k mod 2**32`` for ``k < length`` (lengths rounded up to a power of two)."""
    out = np.full(length, base, dtype=np.uint32)
    out[0] = 1
    return np.cumprod(out, dtype=np.uint32)


class _Grams:
    """Bucket indices of every n-gram of one text, with positions for window sums."""

    __slots__ = ("chars", "length", "word_ends", "word_starts", "words")

    def __init__(self, text: str) -> None:
        data = (" " + fold(text) + " ").encode("utf-8", "surrogatepass")[:MAX_BYTES]
        self.length = len(data)
        b = np.frombuffer(data, dtype=np.uint8).astype(np.uint32)
        p = np.uint32(_P)
        chars: list[U32] = []
        h = b[:-1] * p + b[1:] if len(b) >= 2 else b[:0]
        for n in (3, 4, 5):
            h = h[:-1] * p + b[n - 1 :] if len(h) > 1 else h[:0]
            chars.append(_mix(h, _SEEDS[f"c{n}"]))
        self.chars = chars
        is_word = _IS_WORD[b.astype(np.uint8)]
        edge = np.zeros(1, dtype=bool)
        starts = np.flatnonzero(is_word & ~np.concatenate((edge, is_word[:-1])))
        ends = np.flatnonzero(is_word & ~np.concatenate((is_word[1:], edge))) + 1
        size = 1 << max(10, (len(b) - 1).bit_length())
        cum = np.concatenate(
            (np.zeros(1, np.uint32), np.cumsum(b * _powers(_Q, size)[: len(b)], dtype=np.uint32))
        )
        raw = (cum[ends] - cum[starts]) * _powers(_P, size)[ends - 1]
        bigram = raw[:-1] * np.uint32(0x2545F491) + raw[1:]
        self.words = [_mix(raw, _SEEDS["w1"]), _mix(bigram, _SEEDS["w2"])]
        self.word_starts = starts
        self.word_ends = ends


def _bounds(length: int) -> tuple[list[int], list[int]]:
    """Window starts and ends over ``length`` padded bytes: the whole text first, then, past
    ``2 * WINDOW`` bytes, every ``STRIDE`` bytes and one window flush with the end."""
    starts, ends = [0], [length]
    if length > 2 * WINDOW:
        starts.extend([*range(0, length - WINDOW, STRIDE), length - WINDOW])
        ends.extend(s + WINDOW for s in starts[1:])
    return starts, ends


def sparse_features(text: str, *, windows: bool = False) -> list[list[tuple[int, float]]]:
    """Feature vectors as ``(bucket, value)`` pairs (a bucket may repeat: the values add up):
    the whole text, then each window when ``windows`` is true. What training sees; ``score``
    computes the same dot products."""
    grams = _Grams(text)
    starts, ends = _bounds(grams.length)
    out = []
    for start, end in list(zip(starts, ends, strict=True))[: None if windows else 1]:
        first = int(np.searchsorted(grams.word_starts, start, side="left"))
        last = max(first, int(np.searchsorted(grams.word_ends, end, side="right")))
        uni, bi = grams.words
        char = [
            g[start : max(start, end - n + 1)] for n, g in zip((3, 4, 5), grams.chars, strict=True)
        ]
        word = [uni[first:last], bi[first : max(first, last - 1)]]
        vector: list[tuple[int, float]] = []
        for group in (char, word):
            value = 1.0 / math.sqrt(max(sum(len(g) for g in group), 1))
            vector.extend((int(i), value) for g in group for i in g)
        out.append(vector)
    return out


def _window_scores(grams: _Grams, weights: F32, bias: float, starts: Ints, ends: Ints) -> F32:
    """The logit of each window ``[start, end)`` of the padded, folded bytes: the n-grams
    wholly inside it, each group scaled by one over the square root of its count."""
    char_sum = np.zeros(len(starts), dtype=np.float64)
    char_n = np.zeros(len(starts), dtype=np.float64)
    for n, idx in zip((3, 4, 5), grams.chars, strict=True):
        cum = np.concatenate(([0.0], np.cumsum(weights[idx], dtype=np.float64)))
        lo = np.minimum(starts, len(idx))
        hi = np.clip(ends - n + 1, lo, len(idx))
        char_sum += cum[hi] - cum[lo]
        char_n += hi - lo
    uni, bi = grams.words
    first = np.searchsorted(grams.word_starts, starts, side="left")
    last = np.searchsorted(grams.word_ends, ends, side="right")
    last = np.maximum(last, first)
    cum_u = np.concatenate(([0.0], np.cumsum(weights[uni], dtype=np.float64)))
    cum_b = np.concatenate(([0.0], np.cumsum(weights[bi], dtype=np.float64)))
    last_b = np.clip(last - 1, first, len(bi))
    first_b = np.minimum(first, len(bi))
    word_sum = cum_u[last] - cum_u[first] + cum_b[last_b] - cum_b[first_b]
    word_n = (last - first) + (last_b - first_b)
    logits: F32 = (
        bias + char_sum / np.sqrt(np.maximum(char_n, 1)) + word_sum / np.sqrt(np.maximum(word_n, 1))
    ).astype(np.float32)
    return logits


def score(text: str) -> float:
    """The probability that ``text`` is a prompt injection or jailbreak: the maximum over the
    whole text and, past ``2 * WINDOW`` bytes, its windows."""
    weights, bias = _model()
    grams = _Grams(text)
    starts, ends = _bounds(grams.length)
    logits = _window_scores(
        grams, weights, bias, np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    )
    return 1.0 / (1.0 + math.exp(-float(logits.max())))


# -- the weights file ------------------------------------------------------------------------


def save_model(path: Path, weights: Any, bias: float, corpus_sha256: str) -> None:
    """Write the weights (float16), bias, feature configuration and corpus hash."""
    config = json.dumps({**_CONFIG, "corpus_sha256": corpus_sha256}, sort_keys=True)
    with path.open("wb") as fh:
        np.savez_compressed(
            fh,
            weights=np.asarray(weights, dtype=np.float16),
            bias=np.asarray([bias], dtype=np.float64),
            config=np.asarray(config),
        )


@functools.lru_cache(maxsize=1)
def _load() -> tuple[F32, float, dict[str, Any]]:
    source = "elevenfactor/governance/data/injection_model.npz"
    try:
        blob = resources.files("elevenfactor.governance").joinpath("data/injection_model.npz")
        with np.load(io.BytesIO(blob.read_bytes()), allow_pickle=False) as npz:
            weights = npz["weights"].astype(np.float32)
            bias = float(npz["bias"][0])
            config = json.loads(str(npz["config"]))
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the injection classifier: {exc}",
            source=source,
            hint="reinstall elevenfactor, or run scripts/train_injection.py in a checkout",
        ) from exc
    if {k: config.get(k) for k in _CONFIG} != _CONFIG or weights.shape != (BUCKETS,):
        raise ConfigError(
            "the injection classifier was trained with another feature configuration",
            source=source,
            expected=json.dumps(_CONFIG),
            hint="retrain it with scripts/train_injection.py",
        )
    return weights, bias, config


def _model() -> tuple[F32, float]:
    weights, bias, _ = _load()
    return weights, bias


def model_info() -> dict[str, Any]:
    """The shipped model's feature configuration and the SHA-256 of its training corpus."""
    return dict(_load()[2])


def reset_model_cache() -> None:
    """Forget the loaded weights (after retraining in the same process)."""
    _load.cache_clear()
