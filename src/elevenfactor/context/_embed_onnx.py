"""The BERT encoder on onnxruntime: the graph of ``_embed_onnx_graph``, built from the weights at
first use, optionally quantized to int8, and cached on disk.

The model file is cached under ``$XDG_CACHE_HOME/elevenfactor/embeddings`` (else
``~/.cache/elevenfactor/embeddings``), named by a hash of what it is made from: the weights and
config, the graph's version, the precision and the onnx and onnxruntime versions; a new version of
any of them makes a new file. A sidecar ``.sha256`` holds the file's own hash: a file that does
not match it (cut short, changed) is rebuilt. Where the folder cannot be written the model is
built in memory each time (a few seconds).

The session runs one thread (``intra_op_num_threads=1``): ``LocalEmbedder`` runs one pass per core
from its own threads (onnxruntime releases the GIL), which needs no synchronisation between the
cores and is the faster way on a busy machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.metadata
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from elevenfactor.context._embed_bert import load_bert
from elevenfactor.context._embed_onnx_graph import GRAPH_VERSION, build_graph
from elevenfactor.errors import ConfigError

if TYPE_CHECKING:
    from onnx import ModelProto

__all__ = [
    "OnnxBert",
    "Precision",
    "default_cache_dir",
    "load_onnx",
    "onnx_encoder",
    "onnxruntime_available",
    "prepare_cxx_runtime",
]

Precision = Literal["fp32", "int8"]
F32 = npt.NDArray[np.float32]

_log = logging.getLogger(__name__)
_DISABLED_FUSIONS = ["SkipLayerNormFusion"]
"""onnxruntime would fuse each ``Add, Add, LayerNormalization`` into a ``SkipLayerNormalization``,
which its CPU kernel runs about four times slower (onnxruntime 1.32)."""
_QUANTIZED_OPS = ["MatMul", "Attention"]
"""int8: the dense products (the feed-forward and output projections, and the query, key and
value projection inside ``Attention``); the embedding table stays float32 (no speed to gain)."""


_STATIC_CXX = "usearch.compiled"
"""An extension module that carries its own libstdc++ (linked in statically, its locale guards
exported): loaded before the system's libstdc++ has set up its locales, it leaves them broken,
and importing onnxruntime (1.23 and later) then kills the process (SIGSEGV)."""
_SETS_UP_CXX = ("tokenizers.tokenizers", "onnx.onnx_cpp2py_export")
"""Extension modules whose loading sets up the system libstdc++'s locales (found by trial)."""
_cxx_prepared = False


def prepare_cxx_runtime() -> None:
    """Set up the system libstdc++'s locales, once: call it before importing usearch, so that
    onnxruntime can be imported after it (see ``_STATIC_CXX``). Does nothing elsewhere than
    Linux, nor once usearch is loaded (too late)."""
    global _cxx_prepared
    if _cxx_prepared or _STATIC_CXX in sys.modules or sys.platform != "linux":
        return
    try:
        classic = ctypes.CDLL("libstdc++.so.6")._ZNSt6locale7classicEv  # std::locale::classic()
    except (OSError, AttributeError):
        return
    classic.restype = ctypes.c_void_p
    classic()
    _cxx_prepared = True


def _cxx_clash() -> bool:
    """Whether importing onnxruntime now would crash: usearch's module loaded before anything
    set up the system libstdc++ (``sys.modules`` keeps the order modules were loaded in)."""
    if _cxx_prepared or _STATIC_CXX not in sys.modules or "onnxruntime" in sys.modules:
        return False
    for name in sys.modules:
        if name == _STATIC_CXX:
            return True
        if name in _SETS_UP_CXX:
            return False
    return True


def onnxruntime_available() -> bool:
    """Whether onnxruntime can be imported (it is, then, with telemetry off)."""
    try:
        _ort()
    except ImportError:
        return False
    return True


def _ort() -> Any:
    """onnxruntime, imported on first use with its telemetry off; ``ImportError`` where that
    would crash the process (see ``_STATIC_CXX``)."""
    if _cxx_clash():
        raise ImportError(
            "onnxruntime cannot be loaded in this process: usearch was loaded first (its own"
            " copy of libstdc++ would crash onnxruntime); call"
            " elevenfactor.context._embed_onnx.prepare_cxx_runtime() before importing usearch"
        )
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime  # type: ignore[import-untyped]

    onnxruntime.disable_telemetry_events()
    return onnxruntime


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/elevenfactor/embeddings``, else ``~/.cache/elevenfactor/embeddings``."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(base) if base else Path.home() / ".cache"
    return root / "elevenfactor" / "embeddings"


@dataclass(frozen=True)
class OnnxBert:
    """An onnxruntime session of the encoder: the same ``encode`` as ``_embed_bert.Bert``."""

    session: Any
    precision: Precision
    source: str
    """Where the model came from: ``cache`` (read), ``built`` (and cached) or ``memory``."""
    path: Path | None
    max_positions: int = 512

    def encode(
        self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.bool_], *, spread: bool = True
    ) -> F32:
        """Unit-length mean-pooled states, ``(batch, hidden)``, of ``ids`` ``(batch, length)``
        padded on the right; ``mask`` is true for real tokens. ``spread`` is ignored (a pass
        runs on its caller's thread)."""
        if ids.shape[1] > self.max_positions:
            raise ValueError(f"sequences of {ids.shape[1]} tokens exceed {self.max_positions}")
        feed = {"input_ids": ids.astype(np.int32), "attention_mask": mask.astype(np.int32)}
        out: F32 = self.session.run(None, feed)[0]
        return out


_BUILD_LOCK = threading.Lock()


def onnx_encoder(
    folder: Path, runtime: str, quantize: str | None, cache_dir: Path | None
) -> OnnxBert | None:
    """The encoder on onnxruntime for ``LocalEmbedder``'s settings, or None (run numpy instead)
    where ``runtime`` is ``auto`` and onnxruntime is missing or fails. With ``runtime="onnx"``
    or int8 (which numpy cannot make), a ``ConfigError`` instead."""
    needed = runtime == "onnx" or quantize is not None
    if not needed and _cxx_clash():
        _log.warning("the local embedder runs on numpy: usearch was loaded before onnxruntime")
        return None
    if not needed and not onnxruntime_available():
        return None
    try:
        return load_onnx(folder, "int8" if quantize else "fp32", cache_dir)
    except Exception as exc:  # onnx missing, or a graph this onnxruntime refuses
        if needed:
            what = "int8 quantization" if quantize else "runtime 'onnx'"
            hint = f"{what} needs onnxruntime and onnx: pip install onnxruntime onnx"
            if _cxx_clash():
                hint = "load the embedder before usearch, or call prepare_cxx_runtime() first"
            raise ConfigError(
                f"the local embedder cannot run on onnxruntime: {exc}", key="embeddings", hint=hint
            ) from exc
        _log.warning("the local embedder runs on numpy: onnxruntime failed: %s", exc)
        return None


def load_onnx(folder: Path, precision: Precision, cache_dir: Path | None) -> OnnxBert:
    """The encoder of ``folder`` on onnxruntime, from the cache if it holds a sound copy, else
    built (and cached when ``cache_dir`` can be written). ``ImportError`` without onnxruntime
    or onnx (the latter needed only to build)."""
    ort = _ort()
    cache = cache_dir or default_cache_dir()
    path = cache / f"all-MiniLM-L6-v2-{precision}-{_key(folder, precision, ort.__version__)}.onnx"
    with _BUILD_LOCK:  # one build at a time in a process
        data = _read_cached(path)
        if data is not None:
            try:
                return OnnxBert(_session(ort, data), precision, "cache", path)
            except Exception as exc:  # a file from a broken writer: rebuild it
                _log.warning("rebuilding the cached embedding model %s: %s", path, exc)
        data = _build(folder, precision)
        written = _write_cached(path, data)
        session = _session(ort, data)
    return OnnxBert(session, precision, "built" if written else "memory", path if written else None)


def _key(folder: Path, precision: Precision, ort_version: str) -> str:
    """A hash of what the model file is made from (read without importing onnx, which only a
    build needs)."""
    try:
        onnx_version = importlib.metadata.version("onnx")
    except importlib.metadata.PackageNotFoundError:
        onnx_version = "none"
    digest = hashlib.sha256()
    for name in ("model.safetensors", "config.json"):
        with (folder / name).open("rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    parts = f"graph={GRAPH_VERSION};precision={precision};onnx={onnx_version};ort={ort_version}"
    digest.update(parts.encode())
    return digest.hexdigest()[:20]


def _read_cached(path: Path) -> bytes | None:
    """The cached file if its sidecar hash matches, else None."""
    try:
        data = path.read_bytes()
        expected = path.with_suffix(".sha256").read_text("ascii").strip()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != expected:
        _log.warning("the cached embedding model %s is damaged: rebuilding it", path)
        return None
    return data


def _write_cached(path: Path, data: bytes) -> bool:
    """Write ``data`` and its sidecar hash atomically; False where the folder is unwritable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for target, content in (
            (path, data),
            (path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest().encode() + b"\n"),
        ):
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=target.name, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(content)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except OSError as exc:
        _log.info("cannot cache the embedding model in %s (%s): built in memory", path, exc)
        return False
    return True


def _build(folder: Path, precision: Precision) -> bytes:
    """The serialised model: the graph of the weights in ``folder``, quantized for int8."""
    model = build_graph(load_bert(folder))
    if precision == "int8":
        model = _quantize(model)
    data: bytes = model.SerializeToString()
    return data


def _quantize(model: ModelProto) -> ModelProto:
    """Dynamic int8 quantization of the dense products: int8 weights per output channel, uint8
    activations quantized per tensor at run time (VNNI's u8 x s8 products)."""
    import onnx
    from onnxruntime.quantization import (  # type: ignore[import-untyped]
        QuantType,
        quantize_dynamic,
    )

    # Our graph is already in the fused form onnxruntime's pre-processing would produce: say so
    # (else quantize_dynamic advises pre-processing, a warning).
    onnx.helper.set_model_props(model, {"onnx.quant.pre_process": "onnxruntime.quant"})
    with _root_logger_kept(), tempfile.TemporaryDirectory(prefix="elevenfactor-quant-") as tmp:
        out = Path(tmp) / "int8.onnx"
        quantize_dynamic(
            model,
            out,
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=_QUANTIZED_OPS,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        return onnx.load(out)


@contextlib.contextmanager
def _root_logger_kept() -> Iterator[None]:
    """The quantizer logs through ``logging.info`` and the like, which give an unconfigured root
    logger a stderr handler (``basicConfig``): a handler of ours stops that meanwhile."""
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    guard = logging.NullHandler()
    root.addHandler(guard)
    try:
        yield
    finally:
        root.removeHandler(guard)


def _session(ort: Any, data: bytes) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(
        data,
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=_DISABLED_FUSIONS,
    )
