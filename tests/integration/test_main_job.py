"""The README's first command, end to end: the embedded default serves the bundled local model.

No project file, no API key, no network: ``elevenfactor serve --dev --migrate`` on SQLite, asked
through the official ``openai`` client.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow

EXE = str(Path(sys.executable).parent / "elevenfactor")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("embedded")
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ELEVENFACTOR_") and k not in ("DATABASE_URL", "PORT")
    }
    proc = subprocess.Popen(
        [EXE, "serve", "--dev", "--migrate", "--port", str(port)],
        cwd=home,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None, "serve exited early"
        assert time.monotonic() < deadline, "serve did not become ready"
        time.sleep(0.1)
    try:
        assert (home / ".elevenfactor" / "elevenfactor.db").exists()
        yield base
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_default_route_answers_with_the_local_model(embedded: str) -> None:
    client = openai.OpenAI(base_url=embedded + "/v1", api_key="dev", max_retries=0)
    assert [m.id for m in client.models.list()] == ["default", "smollm2"]
    completion = client.chat.completions.create(
        model="default",
        max_tokens=24,
        messages=[{"role": "user", "content": "Say hello in French."}],
    )
    assert completion.model == "SmolLM2-135M-Instruct-Q4_1"
    assert (completion.choices[0].message.content or "").strip()
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_default_route_streams(embedded: str) -> None:
    client = openai.OpenAI(base_url=embedded + "/v1", api_key="dev", max_retries=0)
    stream = client.chat.completions.create(
        model="default",
        max_tokens=96,
        stream=True,
        messages=[{"role": "user", "content": "Write a short paragraph about the sea."}],
    )
    # The shipped default policy guards the answer: text flows once ~68 characters are in.
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    text = "".join(pieces)
    assert text.strip()
    assert len(pieces) > 2, pieces
