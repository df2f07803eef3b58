"""The bundled local model under load, through the gateway: admission, deadlines, cancellation.

Real SmolLM2-135M instances behind a real gateway on loopback, driven by the official ``openai``
client (and raw ``httpx`` where a client must vanish mid-request). Limits are tiny so the tests
stay fast: ``solo`` is one instance with a one-place queue; ``smol`` adds an express instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from elevenfactor.config import Settings, parse_project
from elevenfactor.governance import create_key, local_admin
from elevenfactor.models.providers._local_pool import Pool
from elevenfactor.server import Gateway
from elevenfactor.store import migrate, open_store
from tests.support.server import running_gateway

pytestmark = pytest.mark.slow

ADMISSION = 1.0  # seconds a request may wait for an instance in these tests
MODEL = "SmolLM2-135M-Instruct-Q4_1"
LONG_PROMPT = "Summarise the following text. " + "The quick brown fox jumps over the dog. " * 300
_OPTIONS = {"admission_timeout": ADMISSION, "generation_timeout": 30, "seed": 7}
_DEPLOYMENT = {
    "model": MODEL,
    "params": {"temperature": 0.7, "repeat_penalty": 1.3},
    "timeout": 120,
    "retry": {"attempts": 1},
    "breaker": None,
}
KEY = [""]  # an API key, created with the module's gateway
PROJECT = parse_project(
    {
        "providers": {
            "one": {
                "type": "local",
                "options": {**_OPTIONS, "express_instances": 0, "max_queue": 1},
            },
            "two": {
                "type": "local",
                "options": {**_OPTIONS, "express_instances": 1, "short_request_tokens": 256},
            },
        },
        "models": {
            "solo": {**_DEPLOYMENT, "provider": "one", "context_window": 4096},
            "smol": {**_DEPLOYMENT, "provider": "two", "context_window": 4096},
        },
        "routes": {"default": {"chain": ["smol"]}},
    }
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Gateway]]:
    home = tmp_path_factory.mktemp("fairness")
    url = f"sqlite:///{home}/test.db"

    async def migrated() -> None:
        db = await open_store(url)
        await migrate(db)
        _, KEY[0] = await create_key(db, local_admin("cli"), "tests")
        await db.close()

    asyncio.run(migrated())
    settings = Settings(database_url=url, data_dir=home, dev=True, max_body_bytes=8_000_000)
    with running_gateway(settings, PROJECT) as (base, gw):
        for model in ("solo", "smol"):  # load vocabularies and instances before timing anything
            httpx.post(
                f"{base}/v1/chat/completions", json=_short(model), headers=_auth(), timeout=60
            )
        yield base, gw


def _pool(gw: Gateway, provider: str) -> Pool:
    assert gw.registry is not None
    return next(iter(gw.registry.providers[provider]._pools.values()))  # type: ignore[attr-defined]


def _auth() -> dict[str, str]:
    return {"authorization": f"Bearer {KEY[0]}"}


def _short(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 8}


def _long(model: str, stream: bool = False) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": LONG_PROMPT}],
        "max_tokens": 1000,
        "stream": stream,
    }


def _client(base: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base + "/v1", api_key=KEY[0], max_retries=0)


def _wait(cond: Any, what: str, timeout: float = 30) -> float:
    """Seconds until ``cond()`` holds (polled every 10 ms); fails after ``timeout``."""
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < timeout, f"timed out waiting for {what}"
        time.sleep(0.01)
    return time.monotonic() - start


class _Background:
    """A raw HTTP/1.1 request on its own socket, read in a thread; ``drop`` hangs up at once."""

    def __init__(self, base: str, body: dict[str, Any]) -> None:
        host, port = base.removeprefix("http://").split(":")
        payload = json.dumps(body).encode()
        self.sock = socket.create_connection((host, int(port)))
        self.sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: " + host.encode() + b"\r\n"
            b"authorization: Bearer " + KEY[0].encode() + b"\r\n"
            b"content-type: application/json\r\ncontent-length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
            + payload
        )
        self.received = b""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            while chunk := self.sock.recv(65536):
                self.received += chunk

    def drop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)


async def test_a_short_request_passes_a_long_one(gateway: tuple[str, Gateway]) -> None:
    base, gw = gateway
    pool = _pool(gw, "two")
    long = _Background(base, _long("smol"))
    try:
        _wait(lambda: pool.admission.busy == 1, "the long request to start")
        client = _client(base)
        started = time.monotonic()
        answer = await client.chat.completions.create(
            model="smol", messages=[{"role": "user", "content": "Hi!"}], max_tokens=8
        )
        took = time.monotonic() - started
        await client.close()
        assert answer.choices[0].message.content is not None
        assert took < ADMISSION + 5  # it started at once, on the express instance
        assert pool.admission.busy >= 1, "the long request should still be running"
    finally:
        long.drop()
    _wait(lambda: pool.admission.busy == 0, "the long request to stop", 5)


async def test_full_queue_429_then_admission_deadline_503(gateway: tuple[str, Gateway]) -> None:
    base, gw = gateway
    pool = _pool(gw, "one")
    long = _Background(base, _long("solo"))
    try:
        _wait(lambda: pool.admission.busy == 1, "the long request to start")
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=_auth()) as http:
            started = time.monotonic()
            waiting = asyncio.create_task(http.post("/v1/chat/completions", json=_short("solo")))
            await asyncio.to_thread(_wait, lambda: pool.admission.waiting == 1, "a waiter")
            client = _client(base)
            with pytest.raises(openai.RateLimitError) as full:
                await client.chat.completions.create(
                    model="solo", messages=[{"role": "user", "content": "Hi!"}], max_tokens=8
                )
            await client.close()
            refused = await waiting
            took = time.monotonic() - started
    finally:
        long.drop()
    assert full.value.status_code == 429
    assert full.value.code == "model_queue_full"
    assert int(full.value.response.headers["retry-after"]) >= 1
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "model_overloaded"
    assert "admission deadline" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert ADMISSION - 0.05 <= took < ADMISSION + 1.5


async def test_a_client_timeout_header_shortens_the_wait(gateway: tuple[str, Gateway]) -> None:
    base, gw = gateway
    pool = _pool(gw, "one")
    long = _Background(base, _long("solo"))
    try:
        _wait(lambda: pool.admission.busy == 1, "the long request to start")
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=_auth()) as http:
            started = time.monotonic()
            resp = await http.post(
                "/v1/chat/completions",
                json=_short("solo"),
                headers={"x-elevenfactor-timeout": "0.2"},
            )
            took = time.monotonic() - started
            bad = await http.post(
                "/v1/chat/completions",
                json=_short("solo"),
                headers={"x-elevenfactor-timeout": "soon"},
            )
    finally:
        long.drop()
    assert resp.status_code == 503 and "retry-after" in resp.headers
    assert took < 0.2 + 0.8
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-elevenfactor-timeout"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_disconnected_client_frees_the_model(
    gateway: tuple[str, Gateway], stream: bool
) -> None:
    base, gw = gateway
    pool = _pool(gw, "one")
    instance = pool.instances[0]
    long = _Background(base, _long("solo", stream=stream))
    _wait(lambda: pool.admission.busy == 1, "the long request to start")
    await asyncio.sleep(0.3)  # evaluating the long prompt (or already generating)
    assert instance.busy_until_stopped.locked()
    dropped = time.monotonic()
    long.drop()
    stopped = _wait(lambda: not instance.busy_until_stopped.locked(), "the model thread to stop")
    assert stopped < 1.0, f"the model thread ran {stopped:.2f} s after the client left"
    assert pool.admission.busy == 0
    client = _client(base)
    answer = await client.chat.completions.create(
        model="solo", messages=[{"role": "user", "content": "Hi!"}], max_tokens=4
    )
    await client.close()
    assert answer.choices[0].message.content is not None
    assert time.monotonic() - dropped < 1.0 + 5


async def test_a_huge_message_is_refused_at_once(gateway: tuple[str, Gateway]) -> None:
    base, _ = gateway
    client = _client(base)
    huge = "lorem ipsum dolor sit amet " * 120_000  # 3.2 MB
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model="smol", messages=[{"role": "user", "content": huge}], max_tokens=8
        )
    took = time.monotonic() - started
    await client.close()
    assert took < 1.0
    assert info.value.code == "context_length_exceeded"
    message = info.value.message
    assert "4096" in message and "at least" in message and "bytes" in message


def _tokenizer_count(text: str) -> int:
    """The prompt tokens of one user message, counted here with llama.cpp's own pieces."""
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from elevenfactor.models.providers.local import default_model_path

    llama = llama_cpp.Llama(model_path=str(default_model_path()), vocab_only=True, verbose=False)
    try:
        eos, bos = (
            llama.detokenize([t], special=True).decode()
            for t in (llama.token_eos(), llama.token_bos())
        )
        fmt = Jinja2ChatFormatter(
            template=llama.metadata["tokenizer.chat_template"], eos_token=eos, bos_token=bos
        )
        res = fmt(messages=[{"role": "user", "content": text}])
        return len(llama.tokenize(res.prompt.encode(), add_bos=not res.added_special, special=True))
    finally:
        llama.close()


async def test_usage_is_counted_by_the_model_tokenizer(gateway: tuple[str, Gateway]) -> None:
    base, _ = gateway
    text = "Write a long story about a dragon who guards a library."
    expected = _tokenizer_count(text)
    client = _client(base)
    answer = await client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": text}], max_tokens=12
    )
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == expected
    if answer.choices[0].finish_reason == "length":
        assert answer.usage.completion_tokens == 12
    else:
        assert 0 < answer.usage.completion_tokens <= 12
    stream = await client.chat.completions.create(
        model="smol",
        messages=[{"role": "user", "content": text}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage, finish = None, None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
        usage = chunk.usage or usage
    await client.close()
    assert usage is not None and usage.prompt_tokens == expected
    assert usage.completion_tokens == 12 if finish == "length" else usage.completion_tokens <= 12
