"""The local embedder on onnxruntime: the same vectors as the numpy encoder (float32), its own
identity in int8, the cached model file (reused, rebuilt when damaged, skipped when the folder
cannot be written), and the fallback to numpy when onnxruntime is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from elevenfactor.config import parse_project
from elevenfactor.context import _embed_local
from elevenfactor.context._embed_local import LocalEmbedder
from elevenfactor.context._embed_registry import open_embedders
from elevenfactor.errors import ConfigError

REFERENCE = Path(__file__).parents[1] / "data" / "minilm_reference.json"
DOCS = Path(__file__).parents[1] / "data" / "retrieval" / "docs"

VARIED = [
    "",
    " ",
    "?!",
    "a",
    "Hello world",
    "Café, naïve résumé — «quotes» and ‘single’ ones…",  # noqa: RUF001
    "日本語のテキストと中文文本，还有한국어 문장。",  # noqa: RUF001
    "مرحبا بالعالم، هذه جملة عربية",
    "Emoji 🚀🔥👍🏽 and math ∑∫√∞ ≤ ≥",
    "x" * 5000,  # one word over 100 characters: a single [UNK]
    "supercalifragilistic expialidocious " * 40,  # many word pieces: cut at 256 tokens
    "durable agents keep a journal of every step " * 60,  # 480 tokens: cut at 256
    "word " * 254,  # 254 + 2 special tokens: exactly the limit
    "word " * 255,  # one over: cut
    "def f(x):\n    return x ** 2  # a comment\n\n\tindented\r\nlines",
    "The gateway retries the call. " * 12,
]


def _cosines(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return (a.astype(np.float64) * b.astype(np.float64)).sum(axis=1)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def numpy_embedder() -> LocalEmbedder:
    return LocalEmbedder(runtime="numpy")


@pytest.fixture(scope="module")
def onnx_embedder(cache_dir: Path) -> LocalEmbedder:
    return LocalEmbedder(runtime="onnx", cache_dir=cache_dir)


@pytest.fixture(scope="module")
def int8_embedder(cache_dir: Path) -> LocalEmbedder:
    return LocalEmbedder(quantize="int8", cache_dir=cache_dir)


def _fresh(**settings: Any) -> LocalEmbedder:
    """An embedder that loads its model anew (not from the process's shared copy)."""
    embedder = LocalEmbedder(**settings)
    with _embed_local._CACHE_LOCK:
        for key in [k for k in _embed_local._CACHE if k[3] == settings.get("cache_dir")]:
            del _embed_local._CACHE[key]
    return embedder


def _model_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.onnx"))


def test_onnx_matches_numpy_on_varied_texts(
    numpy_embedder: LocalEmbedder, onnx_embedder: LocalEmbedder
) -> None:
    expected = numpy_embedder.embed_sync(VARIED)
    got = onnx_embedder.embed_sync(VARIED)
    assert onnx_embedder.runtime == "onnx" and numpy_embedder.runtime == "numpy"
    assert got.shape == (len(VARIED), 384) and got.dtype == np.float32
    cosines = _cosines(got, expected)
    worst = int(np.argmin(cosines))
    assert cosines.min() >= 0.9999, (VARIED[worst][:40], float(cosines.min()))
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert onnx_embedder.name == numpy_embedder.name == "local/all-MiniLM-L6-v2"


def test_onnx_matches_sentence_transformers(onnx_embedder: LocalEmbedder) -> None:
    items = json.loads(REFERENCE.read_text("utf-8"))["items"]
    got = onnx_embedder.embed_sync([item["text"] for item in items])
    expected = np.array([item["vector"] for item in items])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert _cosines(got, expected).min() >= 0.9999


def test_truncation_is_the_same_on_both_runtimes(
    numpy_embedder: LocalEmbedder, onnx_embedder: LocalEmbedder
) -> None:
    long_texts = [t for t in VARIED if len(t) > 1000 and " " in t] + ["word " * 255]
    assert onnx_embedder.count_tokens(long_texts) == [256] * len(long_texts)
    # Text past the 256th token changes nothing: the cut is the same.
    more = [t + " and then a tail that is cut off" for t in long_texts]
    assert np.allclose(onnx_embedder.embed_sync(more), onnx_embedder.embed_sync(long_texts))
    cosines = _cosines(onnx_embedder.embed_sync(more), numpy_embedder.embed_sync(more))
    assert cosines.min() >= 0.9999


def test_a_text_embeds_the_same_alone_and_in_any_batch(onnx_embedder: LocalEmbedder) -> None:
    alone = np.concatenate([onnx_embedder.embed_sync([t]) for t in VARIED])
    together = onnx_embedder.embed_sync(VARIED)
    shuffled_order = np.random.default_rng(3).permutation(len(VARIED))
    shuffled = onnx_embedder.embed_sync([VARIED[i] for i in shuffled_order])
    assert np.allclose(together, alone, atol=1e-5)
    assert np.allclose(shuffled, together[shuffled_order], atol=1e-5)


async def test_concurrent_calls_get_their_own_vectors(onnx_embedder: LocalEmbedder) -> None:
    import asyncio

    texts = [
        f"sentence {i} about {'cats' if i % 2 else 'databases'}" * (1 + i % 5) for i in range(40)
    ]
    one_by_one = np.concatenate([onnx_embedder.embed_sync([t]) for t in texts])
    together = await asyncio.gather(*(onnx_embedder.embed([t]) for t in texts))
    assert np.allclose(np.concatenate(together), one_by_one, atol=1e-5)


def test_int8_is_close_but_has_its_own_identity(
    onnx_embedder: LocalEmbedder, int8_embedder: LocalEmbedder
) -> None:
    texts = [p.read_text("utf-8")[:1500] for p in sorted(DOCS.glob("*.md"))] + VARIED[4:]
    cosines = _cosines(int8_embedder.embed_sync(texts), onnx_embedder.embed_sync(texts))
    assert cosines.mean() >= 0.99 and cosines.min() >= 0.95, (cosines.mean(), cosines.min())
    assert int8_embedder.name == "local/all-MiniLM-L6-v2@int8" != onnx_embedder.name
    alone = np.concatenate([int8_embedder.embed_sync([t]) for t in VARIED])
    assert np.allclose(int8_embedder.embed_sync(VARIED), alone, atol=1e-5)


def test_the_model_file_is_cached_and_reused(tmp_path: Path) -> None:
    first = _fresh(runtime="onnx", cache_dir=tmp_path)
    vectors = first.embed_sync(["a cached model"])
    (path,) = _model_files(tmp_path)
    assert first._model().bert.source == "built"  # type: ignore[attr-defined]
    stamp = path.stat().st_mtime_ns
    second = _fresh(runtime="onnx", cache_dir=tmp_path)
    assert np.allclose(second.embed_sync(["a cached model"]), vectors, atol=1e-6)
    assert second._model().bert.source == "cache"  # type: ignore[attr-defined]
    assert _model_files(tmp_path) == [path] and path.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped"])
def test_a_damaged_cache_file_is_rebuilt(tmp_path: Path, damage: str) -> None:
    expected = _fresh(runtime="onnx", cache_dir=tmp_path).embed_sync(["rebuilt"])
    (path,) = _model_files(tmp_path)
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a model at all")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # one bit of one weight: still a well-formed file
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(flipped))
    again = _fresh(runtime="onnx", cache_dir=tmp_path)
    assert np.allclose(again.embed_sync(["rebuilt"]), expected, atol=1e-6)
    assert again._model().bert.source == "built"  # type: ignore[attr-defined]
    assert path.read_bytes() == data  # repaired


def test_an_unwritable_cache_folder_builds_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    embedder = _fresh(runtime="onnx", cache_dir=blocker / "cache")
    embedder.embed_sync(["still works"])
    assert embedder._model().bert.source == "memory"  # type: ignore[attr-defined]
    assert embedder.runtime == "onnx"


def test_without_onnxruntime_auto_falls_back_to_numpy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, numpy_embedder: LocalEmbedder
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime: ImportError
    auto = _fresh(runtime="auto", cache_dir=tmp_path)
    got = auto.embed_sync(VARIED[:6])
    assert auto.runtime == "numpy" and auto.name == "local/all-MiniLM-L6-v2"
    assert np.allclose(got, numpy_embedder.embed_sync(VARIED[:6]), atol=1e-6)
    assert not _model_files(tmp_path)
    for settings in ({"runtime": "onnx"}, {"quantize": "int8"}):
        with pytest.raises(ConfigError, match="pip install onnxruntime"):
            _fresh(**settings, cache_dir=tmp_path).embed_sync(["x"])


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="runtime"):
        LocalEmbedder(runtime="torch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quantize"):
        LocalEmbedder(quantize="int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="onnxruntime"):
        LocalEmbedder(runtime="numpy", quantize="int8")


def test_the_project_file_chooses_the_runtime_and_precision() -> None:
    project = parse_project(
        {
            "embeddings": {
                "models": {
                    "local": {},
                    "minilm": {"provider": "local", "runtime": "auto"},
                    "plain": {"runtime": "numpy"},
                    "fast": {"quantize": "int8"},
                }
            }
        }
    )
    registry = open_embedders(project)
    assert registry.get("local") is registry.get("minilm")  # same settings: one embedder
    assert registry.get("plain") is not registry.get("local")
    assert registry.get("fast").name == "local/all-MiniLM-L6-v2@int8"
    assert registry.get("plain").name == registry.get("local").name


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ({"runtime": "numpy", "quantize": "int8"}, "onnxruntime"),
        ({"runtime": "gpu"}, "runtime"),
        ({"quantize": "int4"}, "quantize"),
        ({"provider": "openai", "model": "m", "dimensions": 8, "runtime": "onnx"}, "local"),
        ({"provider": "openai", "model": "m", "dimensions": 8, "quantize": "int8"}, "local"),
    ],
)
def test_runtime_mistakes_name_the_key(model: dict[str, Any], says: str) -> None:
    providers = {"openai": {"type": "openai", "api_key": "k", "base_url": "http://127.0.0.1:9"}}
    with pytest.raises(ConfigError) as caught:
        parse_project({"providers": providers, "embeddings": {"models": {"local": model}}})
    assert "embeddings.models.local" in str(caught.value) and says in str(caught.value)


def test_no_import_time_side_effects_and_telemetry_off(tmp_path: Path) -> None:
    """Importing the package loads no onnxruntime and sets nothing; the first use turns
    onnxruntime's telemetry off and leaves the root logger as it found it (quantizing logs)."""
    script = (
        "import logging, os, sys\n"
        "import elevenfactor, elevenfactor.context\n"
        "assert 'onnxruntime' not in sys.modules and 'onnx' not in sys.modules\n"
        "assert 'ORT_DISABLE_TELEMETRY' not in os.environ\n"
        "from elevenfactor.context import LocalEmbedder\n"
        "e = LocalEmbedder(quantize='int8', cache_dir=__import__('pathlib').Path(sys.argv[1]))\n"
        "e.embed_sync(['hello'])\n"
        "assert os.environ['ORT_DISABLE_TELEMETRY'] == '1'\n"
        "assert logging.getLogger().handlers == [], logging.getLogger().handlers\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    assert "pre-processing" not in done.stderr


@pytest.mark.parametrize("prepared", [False, True])
def test_usearch_loaded_first_does_not_crash_the_process(tmp_path: Path, prepared: bool) -> None:
    """usearch's wheel carries its own libstdc++: loaded before the system's is set up, it makes
    importing onnxruntime kill the process. Prepared (as the embedded backend does before
    importing it), onnxruntime loads; unprepared, ``auto`` runs on numpy instead of crashing."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from elevenfactor.context._embed_onnx import prepare_cxx_runtime\n"
        f"if {prepared}:\n"
        "    prepare_cxx_runtime()\n"
        "import usearch.index\n"
        "from elevenfactor.context import LocalEmbedder\n"
        "e = LocalEmbedder(cache_dir=Path(sys.argv[1]))\n"
        "e.embed_sync(['hello'])\n"
        "print(e.runtime)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ("onnx" if prepared else "numpy")
    if not prepared:
        assert "usearch was loaded before onnxruntime" in done.stderr
