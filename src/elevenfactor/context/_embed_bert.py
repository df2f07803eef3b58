"""A BERT encoder in numpy float32, for sentence embeddings (mean pooling, unit vectors).

The forward pass of Hugging Face's ``BertModel`` for single sequences (token type 0), in
inference mode: embeddings and LayerNorm, then per layer self-attention with the padding mask,
a residual LayerNorm, the GELU feed-forward and another residual LayerNorm; then the mean of the
real tokens' states, L2-normalised.

Laid out for speed with plain numpy. Weights are transposed once into contiguous ``(in, out)``
matrices; the query, key and value projections are one product (the ``1/sqrt(head_dim)`` scale
folded into the query weights). The four dense products of a layer go to numpy's BLAS, which
(by default) spreads each over every core. Everything else is split by rows over a small pool
of threads (numpy releases the GIL): attention, whose products are small — computed for at most
32 query rows at a time, below the size at which OpenBLAS would split one product across
threads (a split that costs more than it saves on products this small, and stalls when another
process holds a core), with the scores kept in cache and written straight into the layout the
output projection reads — and the element-wise GELU and LayerNorm, done in place.

With ``spread=False`` a pass runs on its caller's thread alone: ``LocalEmbedder`` runs one such
pass per core when OpenBLAS is single-threaded (``OPENBLAS_NUM_THREADS=1``), which needs no
synchronisation between the cores at all and is the faster way on a busy machine.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["Bert", "load_bert", "split_work", "workers"]

F32 = npt.NDArray[np.float32]

_ATTENTION_BYTES = 1 << 20
"""Attention scores computed at once per thread (1 MiB: they stay in the core's cache)."""
_QUERY_ROWS = 32
"""Query rows per attention product: ``32 x 256 x 32`` multiply-adds stay under OpenBLAS's
threshold for threading one product (``65536 * 4``), so each runs on its caller's thread."""
_GELU_ELEMENTS = 1 << 15
"""Elements of the feed-forward activations per GELU block (its temporaries stay in cache)."""
_MASKED = np.float32(-1e30)

# erfc(z) ~ t * poly(t) * exp(-z^2), t = 1 / (1 + p z), z >= 0: Abramowitz & Stegun 7.1.26
# (absolute error below 1.5e-7, under float32's resolution of the result). Halved, as GELU
# uses erfc / 2, and p scaled by 1/sqrt(2), as GELU takes erfc(|x| / sqrt(2)).
_P = np.float32(0.3275911 / math.sqrt(2.0))
_C1, _C2, _C3, _C4, _C5 = (
    np.float32(c / 2) for c in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
)


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_w: F32
    qkv_b: F32
    out_w: F32
    out_b: F32
    ln1_g: F32
    ln1_b: F32
    ff1_w: F32
    ff1_b: F32
    ff2_w: F32
    ff2_b: F32
    ln2_g: F32
    ln2_b: F32


@dataclass(frozen=True, slots=True)
class Bert:
    """The weights of a BERT encoder and its forward pass."""

    hidden: int
    heads: int
    eps: float
    word: F32
    pos_type: F32
    ln_g: F32
    ln_b: F32
    layers: tuple[_Layer, ...]

    @property
    def max_positions(self) -> int:
        """The longest sequence the position embeddings cover."""
        return int(self.pos_type.shape[0])

    def encode(
        self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.bool_], *, spread: bool = True
    ) -> F32:
        """Unit-length mean-pooled states, ``(batch, hidden)``, of ``ids`` ``(batch, length)``;
        ``mask`` is true for real tokens (every row has at least one). ``spread``: share the
        non-BLAS work with the pool (false when the caller already runs a pass per core)."""
        batch, length = ids.shape
        if length > self.max_positions:
            raise ValueError(f"sequences of {length} tokens exceed {self.max_positions}")
        x = self.word.take(ids.reshape(-1), axis=0)
        x.reshape(batch, length, self.hidden)[...] += self.pos_type[:length]
        shares = workers() if spread else 1
        _rows(shares, _layer_norm, x, self.ln_g, self.ln_b, self.eps)
        bias = np.where(mask, np.float32(0), _MASKED).astype(np.float32)
        for layer in self.layers:
            x = self._layer(x, layer, batch, length, bias, shares)
        weights = mask.astype(np.float32)
        pooled: F32 = np.matmul(weights[:, None, :], x.reshape(batch, length, self.hidden))[:, 0]
        pooled /= np.maximum(weights.sum(axis=1, keepdims=True), np.float32(1e-9))
        norms = np.sqrt(np.einsum("ij,ij->i", pooled, pooled))[:, None]
        pooled /= np.maximum(norms, np.float32(1e-12))
        return pooled

    def _layer(self, x: F32, w: _Layer, batch: int, length: int, bias: F32, shares: int) -> F32:
        qkv: F32 = np.matmul(x, w.qkv_w)
        qkv += w.qkv_b
        attended: F32 = np.matmul(self._attention(qkv, batch, length, bias, shares), w.out_w)
        attended += w.out_b
        attended += x
        _rows(shares, _layer_norm, attended, w.ln1_g, w.ln1_b, self.eps)
        inner: F32 = np.matmul(attended, w.ff1_w)
        _rows(shares, _bias_gelu, inner, w.ff1_b)
        out: F32 = np.matmul(inner, w.ff2_w)
        out += w.ff2_b
        out += attended
        _rows(shares, _layer_norm, out, w.ln2_g, w.ln2_b, self.eps)
        return out

    def _attention(self, qkv: F32, batch: int, length: int, bias: F32, shares: int) -> F32:
        heads, size = self.heads, self.hidden // self.heads
        split = qkv.reshape(batch, length, 3, heads, size)
        q = split[:, :, 0].transpose(0, 2, 1, 3)  # (batch, heads, length, size)
        k = split[:, :, 1].transpose(0, 2, 3, 1)  # (batch, heads, size, length)
        v = split[:, :, 2].transpose(0, 2, 1, 3)
        context = np.empty((batch, length, heads, size), np.float32)
        rows = min(length, _QUERY_ROWS)
        step = max(1, _ATTENTION_BYTES // (heads * rows * length * 4))

        def attend(first: int, last: int) -> None:
            for start in range(first, last, step):
                end = min(last, start + step)
                keys, values = k[start:end], v[start:end]
                masked = bias[start:end, None, None, :]
                for row in range(0, length, rows):
                    scores = np.matmul(q[start:end, :, row : row + rows], keys)
                    scores += masked
                    scores -= scores.max(axis=-1, keepdims=True)
                    np.exp(scores, out=scores)
                    scores *= np.reciprocal(scores.sum(axis=-1, keepdims=True))
                    # Into the (batch, length, hidden) layout the output projection reads.
                    out = context[start:end, row : row + rows].transpose(0, 2, 1, 3)
                    np.matmul(scores, values, out=out)

        split_work(attend, batch, shares)
        return context.reshape(batch * length, self.hidden)


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def workers() -> int:
    """The cores this process may run on (at most 8): the threads a forward pass uses."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, min(8, len(os.sched_getaffinity(0))))
    return max(1, min(8, os.cpu_count() or 1))


def split_work(work: Callable[[int, int], None], n: int, shares: int) -> None:
    """``work(first, last)`` over ``range(n)`` cut into ``shares`` shares: the first on the
    calling thread, the others on a pool (one thread per core but one, made on first use)."""
    global _POOL
    shares = min(shares, n)
    if shares <= 1:
        work(0, n)
        return
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max(1, workers() - 1), thread_name_prefix="embed")
        pool = _POOL
    bounds = [n * i // shares for i in range(shares + 1)]
    others = [pool.submit(work, bounds[i], bounds[i + 1]) for i in range(1, shares)]
    try:
        work(bounds[0], bounds[1])
    finally:
        for future in others:
            future.result()


def _rows(shares: int, step: Callable[..., None], x: F32, *args: object) -> None:
    """An in-place row-wise ``step(x[rows], *args)`` spread over ``shares`` threads."""
    if shares <= 1 or x.shape[0] < 64:
        step(x, *args)
        return
    split_work(lambda first, last: step(x[first:last], *args), x.shape[0], shares)


def _layer_norm(x: F32, gain: F32, shift: F32, eps: float) -> None:
    """LayerNorm over the last axis of the 2-D ``x``, in place."""
    x -= x.mean(axis=1, keepdims=True)
    variance = np.einsum("ij,ij->i", x, x)
    variance /= np.float32(x.shape[1])
    variance += np.float32(eps)
    x *= (1 / np.sqrt(variance))[:, None]
    x *= gain
    x += shift


def _bias_gelu(x: F32, bias: F32) -> None:
    """``gelu(x + bias)``, in place."""
    x += bias
    _gelu(x)


def _gelu(x: F32) -> None:
    """GELU with the exact (erf) form, in place, block by block so temporaries stay in cache.

    ``gelu(x) = x * Phi(x) = max(x, 0) - |x| * erfc(|x| / sqrt 2) / 2``."""
    if not x.flags.c_contiguous:
        raise ValueError("gelu works in place on a contiguous array")
    flat = x.reshape(-1)
    size = min(_GELU_ELEMENTS, flat.size)
    a, t, poly = (np.empty(size, np.float32) for _ in range(3))
    for start in range(0, flat.size, size):
        block = flat[start : start + size]
        n = block.size
        ab, tb, pb = a[:n], t[:n], poly[:n]
        np.abs(block, out=ab)
        np.multiply(ab, _P, out=tb)
        tb += 1
        np.reciprocal(tb, out=tb)
        np.multiply(tb, _C5, out=pb)
        for c in (_C4, _C3, _C2, _C1):
            pb += c
            pb *= tb
        np.square(ab, out=tb)  # t is done with: reuse it for exp(-x^2 / 2)
        tb *= np.float32(-0.5)
        np.exp(tb, out=tb)
        pb *= tb
        pb *= ab
        np.maximum(block, 0, out=block)
        block -= pb


def load_bert(folder: Path) -> Bert:
    """The encoder in ``folder`` (``config.json`` and ``model.safetensors``)."""
    from safetensors.numpy import load_file

    config = json.loads((folder / "config.json").read_text("utf-8"))
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"unsupported activation {config['hidden_act']!r} (gelu expected)")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only absolute position embeddings are supported")
    raw = load_file(str(folder / "model.safetensors"))
    tensors = {k.removeprefix("bert."): v for k, v in raw.items()}
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    scale = np.float32(1 / math.sqrt(hidden // heads))

    def f32(key: str) -> F32:
        return np.ascontiguousarray(tensors[key], dtype=np.float32)

    def weight(key: str) -> F32:  # torch's (out, in) -> contiguous (in, out)
        return np.ascontiguousarray(f32(key + ".weight").T)

    layers = []
    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        att = p + "attention."
        layers.append(
            _Layer(
                qkv_w=np.ascontiguousarray(
                    np.concatenate(
                        [
                            weight(att + "self.query") * scale,
                            weight(att + "self.key"),
                            weight(att + "self.value"),
                        ],
                        axis=1,
                    )
                ),
                qkv_b=np.concatenate(
                    [
                        f32(att + "self.query.bias") * scale,
                        f32(att + "self.key.bias"),
                        f32(att + "self.value.bias"),
                    ]
                ),
                out_w=weight(att + "output.dense"),
                out_b=f32(att + "output.dense.bias"),
                ln1_g=f32(att + "output.LayerNorm.weight"),
                ln1_b=f32(att + "output.LayerNorm.bias"),
                ff1_w=weight(p + "intermediate.dense"),
                ff1_b=f32(p + "intermediate.dense.bias"),
                ff2_w=weight(p + "output.dense"),
                ff2_b=f32(p + "output.dense.bias"),
                ln2_g=f32(p + "output.LayerNorm.weight"),
                ln2_b=f32(p + "output.LayerNorm.bias"),
            )
        )
    return Bert(
        hidden=hidden,
        heads=heads,
        eps=float(config.get("layer_norm_eps", 1e-12)),
        word=f32("embeddings.word_embeddings.weight"),
        pos_type=f32("embeddings.position_embeddings.weight")
        + f32("embeddings.token_type_embeddings.weight")[0],
        ln_g=f32("embeddings.LayerNorm.weight"),
        ln_b=f32("embeddings.LayerNorm.bias"),
        layers=tuple(layers),
    )
