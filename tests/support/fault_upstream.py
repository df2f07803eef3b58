"""A fault-injecting OpenAI-compatible upstream for tests.

It speaks ``POST /v1/chat/completions`` (plain and SSE streaming, the way OpenAI does: a
role-only first chunk, content chunks, a finish chunk, a usage chunk when
``stream_options.include_usage`` is set, then ``data: [DONE]``), and answers each request with
the next scripted :class:`Fault`, or with the default one when the script is empty.

Faults (``kind``; the string shorthand ``"kind:arg"`` sets the argument in brackets):

- ``ok``: a normal answer.
- ``429`` [retry_after]: rate limited, with ``Retry-After`` (and ``retry-after-ms`` if asked).
- ``500``, ``503`` [retry_after]: server errors in OpenAI's error body.
- ``400``: a plain bad request (``invalid_request_error``, not a context-window one).
- ``context_window``: 400 with OpenAI's ``context_length_exceeded`` body.
- ``content_filter``: 200 whose ``finish_reason`` is ``content_filter``.
- ``malformed`` (``malformed="not_json"`` or ``"wrong_shape"``): 200 with a broken body; a
  stream gets a broken first data line.
- ``hang`` [delay]: answer nothing for ``delay`` seconds (default: until the server stops),
  then answer normally.
- ``slow_first_token`` [delay]: send headers and the role chunk at once, the first content
  after ``delay`` seconds (a plain request just answers after ``delay``).
- ``reset`` [after_chunks]: abort the TCP connection with an RST; before the response headers
  when ``after_chunks`` is None, else after the role chunk and that many content chunks (half
  the body for a plain request).

Any fault may carry ``headers``: extra response headers sent with its answer, e.g. OpenAI's
``x-ratelimit-remaining-requests`` / ``x-ratelimit-reset-requests``.

In process::

    async with FaultUpstream(name="a") as up:
        up.script("429:1", "ok")           # or Fault("reset", after_chunks=2), or dicts
        up.default = Fault("500")
        ... base_url=up.base_url ...
        assert up.requests == 2

As a subprocess (for server tests): ``python -m tests.support.fault_upstream --port N`` and
script it over HTTP: ``POST /_control/script`` with ``{"faults": [...], "model": null,
"default": "ok", "clear": false}``; ``GET /_control/stats``; ``POST /_control/reset``.
:class:`FaultUpstreamProcess` wraps this.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

__all__ = [
    "KINDS",
    "Fault",
    "FaultUpstream",
    "FaultUpstreamProcess",
    "RecordedRequest",
    "main",
]

KINDS = frozenset(
    {
        "ok",
        "429",
        "500",
        "503",
        "400",
        "hang",
        "reset",
        "malformed",
        "context_window",
        "content_filter",
        "slow_first_token",
    }
)
_ALIASES = {"rate_limit": "429", "server_error": "500", "unavailable": "503", "bad_request": "400"}
_ARG = {
    "429": "retry_after",
    "503": "retry_after",
    "500": "retry_after",
    "hang": "delay",
    "slow_first_token": "delay",
    "reset": "after_chunks",
    "malformed": "malformed",
    "ok": "text",
}


@dataclass(frozen=True)
class Fault:
    """How to answer one request."""

    kind: str = "ok"
    retry_after: float | None = None
    retry_after_ms: int | None = None
    after_chunks: int | None = None
    delay: float | None = None
    malformed: str = "not_json"
    text: str | None = None
    headers: dict[str, str] | None = None

    def __post_init__(self) -> None:
        kind = _ALIASES.get(self.kind, self.kind)
        if kind not in KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; expected one of {sorted(KINDS)}")
        object.__setattr__(self, "kind", kind)
        if self.malformed not in ("not_json", "wrong_shape"):
            raise ValueError("malformed must be 'not_json' or 'wrong_shape'")

    @classmethod
    def parse(cls, spec: Fault | str | Mapping[str, Any]) -> Fault:
        """A Fault from itself, ``"kind"``/``"kind:arg"``, or a mapping of its fields."""
        if isinstance(spec, Fault):
            return spec
        if isinstance(spec, str):
            kind, _, arg = spec.partition(":")
            kind = _ALIASES.get(kind, kind)
            if not arg:
                return cls(kind)
            name = _ARG.get(kind)
            if name is None:
                raise ValueError(f"fault {kind!r} takes no argument")
            value: Any = arg
            if name in ("retry_after", "delay"):
                value = float(arg)
            elif name == "after_chunks":
                value = int(arg)
            return cls(kind, **{name: value})
        known = {f.name for f in fields(cls)}
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"unknown fault fields {sorted(unknown)}")
        return cls(**dict(spec))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form the control endpoint accepts."""
        return {
            k: v
            for k, v in asdict(self).items()
            if v is not None and not (k == "malformed" and v == "not_json")
        }


@dataclass(frozen=True)
class RecordedRequest:
    """One chat-completion request the upstream received, and the fault it answered with."""

    index: int
    model: str
    stream: bool
    fault: Fault
    payload: dict[str, Any]
    at: float


@dataclass
class _State:
    default: Fault = field(default_factory=Fault)
    queue: deque[Fault] = field(default_factory=deque)
    by_model: dict[str, deque[Fault]] = field(default_factory=dict)
    log: list[RecordedRequest] = field(default_factory=list)


def _error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    ).encode()


def _retry_after_value(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _rst(request: web.BaseRequest) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0), not a polite FIN."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


_FAULT_HEADERS = web.RequestKey("fault_headers", dict)


async def _add_fault_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Send the answering fault's extra ``headers`` with whatever response it gets."""
    for name, value in request.get(_FAULT_HEADERS, {}).items():
        response.headers[name] = value


def _words(payload: Mapping[str, Any]) -> int:
    total = 0
    for message in payload.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content.split())
    return max(total, 1)


class FaultUpstream:
    """An in-process OpenAI-compatible upstream on a free loopback port, scripted per request.

    ``chunks`` is how many content chunks a streamed answer has; ``chunk_delay`` the pause
    between them.
    """

    def __init__(
        self,
        *,
        name: str = "upstream",
        host: str = "127.0.0.1",
        port: int | None = None,
        default: Fault | str | Mapping[str, Any] = "ok",
        chunks: int = 4,
        chunk_delay: float = 0.0,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.chunks = chunks
        self.chunk_delay = chunk_delay
        self._state = _State(default=Fault.parse(default))
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._arrived: asyncio.Condition | None = None
        self.app = self._make_app()

    # -- scripting (Python API) ---------------------------------------------------------------

    @property
    def default(self) -> Fault:
        """What a request gets when its script is empty."""
        return self._state.default

    @default.setter
    def default(self, spec: Fault | str | Mapping[str, Any]) -> None:
        self._state.default = Fault.parse(spec)

    def script(self, *faults: Fault | str | Mapping[str, Any], model: str | None = None) -> None:
        """Queue faults for the next requests (for requests naming ``model``, if given)."""
        parsed = [Fault.parse(f) for f in faults]
        if model is None:
            self._state.queue.extend(parsed)
        else:
            self._state.by_model.setdefault(model, deque()).extend(parsed)

    def reset(self) -> None:
        """Forget the script, the log and the counters; the default goes back to ``ok``."""
        self._state = _State()

    @property
    def pending(self) -> int:
        """Scripted faults not used yet."""
        return len(self._state.queue) + sum(len(q) for q in self._state.by_model.values())

    @property
    def log(self) -> list[RecordedRequest]:
        """Every chat-completion request received, in order."""
        return list(self._state.log)

    @property
    def requests(self) -> int:
        """How many chat-completion requests arrived (whatever they were answered with)."""
        return len(self._state.log)

    def count(self, kind: str | None = None, *, model: str | None = None) -> int:
        """Requests answered with fault ``kind`` and/or naming ``model``."""
        return sum(
            1
            for r in self._state.log
            if (kind is None or r.fault.kind == _ALIASES.get(kind, kind))
            and (model is None or r.model == model)
        )

    def stats(self) -> dict[str, Any]:
        """Counters, as ``GET /_control/stats`` returns them."""
        log = self._state.log
        return {
            "name": self.name,
            "requests": len(log),
            "by_model": dict(Counter(r.model for r in log)),
            "by_fault": dict(Counter(r.fault.kind for r in log)),
            "streams": sum(1 for r in log if r.stream),
            "pending": self.pending,
            "default": self._state.default.to_dict(),
        }

    async def wait_for_requests(self, n: int, within: float = 5.0) -> None:
        """Wait until at least ``n`` requests arrived, or fail after ``within`` seconds."""
        assert self._arrived is not None, "the upstream is not running"
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: self.requests >= n)

    def _next(self, model: str) -> Fault:
        queue = self._state.by_model.get(model)
        if queue:
            return queue.popleft()
        if self._state.queue:
            return self._state.queue.popleft()
        return self._state.default

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://host:port``."""
        assert self.port is not None, "the upstream is not started"
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``.../v1``)."""
        return self.url + "/v1"

    async def start(self) -> FaultUpstream:
        """Listen on ``port`` (a free one if None)."""
        if self.port is None:
            from tests.conftest import free_port

            self.port = free_port()
        self._stopping = asyncio.Event()
        self._arrived = asyncio.Condition()
        self._runner = web.AppRunner(
            self.app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, shutdown_timeout=0.5)
        await site.start()
        return self

    async def stop(self) -> None:
        """Wake hanging handlers and shut down."""
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FaultUpstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- HTTP ---------------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/models", self._models)
        app.router.add_post("/_control/script", self._control_script)
        app.router.add_get("/_control/stats", self._control_stats)
        app.router.add_post("/_control/reset", self._control_reset)
        app.router.add_get("/_control/health", self._control_health)
        app.on_response_prepare.append(_add_fault_headers)
        return app

    async def _control_script(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if body.get("clear"):
                self._state.queue.clear()
                self._state.by_model.clear()
            if "default" in body:
                self.default = body["default"]
            self.script(*body.get("faults", []), model=body.get("model"))
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.stats())

    async def _control_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _control_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response(self.stats())

    async def _control_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "name": self.name})

    async def _models(self, request: web.Request) -> web.Response:
        models = sorted({r.model for r in self._state.log} | {"fault-model"})
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": self.name}
                    for m in models
                ],
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            payload = json.loads(raw)
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except ValueError:
            return web.Response(
                status=400,
                content_type="application/json",
                body=_error_body(
                    "We could not parse the JSON body of your request.",
                    "invalid_request_error",
                    None,
                ),
            )
        model = str(payload.get("model") or "")
        stream = bool(payload.get("stream"))
        fault = self._next(model)
        self._state.log.append(
            RecordedRequest(len(self._state.log), model, stream, fault, payload, time.monotonic())
        )
        if self._arrived is not None:
            async with self._arrived:
                self._arrived.notify_all()
        if fault.headers:
            request[_FAULT_HEADERS] = fault.headers
        return await self._answer(request, fault, payload, model, stream)

    async def _wait(self, seconds: float | None) -> bool:
        """Sleep ``seconds`` (None: forever); False if the server is stopping."""
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        return not self._stopping.is_set()

    async def _answer(
        self, request: web.Request, fault: Fault, payload: dict[str, Any], model: str, stream: bool
    ) -> web.StreamResponse:
        kind = fault.kind
        if kind in ("429", "500", "503"):
            return self._error_response(fault)
        if kind == "400":
            return web.Response(
                status=400,
                content_type="application/json",
                body=_error_body(
                    "Invalid value for 'temperature': expected a number between 0 and 2.",
                    "invalid_request_error",
                    "invalid_value",
                    "temperature",
                ),
            )
        if kind == "context_window":
            return web.Response(
                status=400,
                content_type="application/json",
                body=_error_body(
                    "This model's maximum context length is 4096 tokens. However, your messages "
                    "resulted in 5123 tokens. Please reduce the length of the messages.",
                    "invalid_request_error",
                    "context_length_exceeded",
                    "messages",
                ),
            )
        if kind == "hang" and not await self._wait(fault.delay):
            _rst(request)
            return web.Response()
        if kind == "reset" and fault.after_chunks is None:
            _rst(request)
            return web.Response()
        if kind == "malformed":
            return self._malformed(fault, stream, model)
        if stream:
            return await self._stream(request, fault, payload, model)
        if kind == "slow_first_token" and not await self._wait(fault.delay or 0.0):
            _rst(request)
            return web.Response()
        body = json.dumps(self._completion(fault, payload, model)).encode()
        if kind == "reset":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.content_length = len(body)
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            await self._settle()
            _rst(request)
            return resp
        return web.Response(body=body, content_type="application/json")

    def _error_response(self, fault: Fault) -> web.Response:
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = _retry_after_value(fault.retry_after)
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = str(fault.retry_after_ms)
        if fault.kind == "429":
            body = _error_body(
                "Rate limit reached for requests per min (RPM). Please try again later.",
                "requests",
                "rate_limit_exceeded",
            )
        elif fault.kind == "503":
            body = _error_body(
                "The engine is currently overloaded, please try again later.", "server_error", None
            )
        else:
            body = _error_body(
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
            )
        return web.Response(
            status=int(fault.kind), headers=headers, body=body, content_type="application/json"
        )

    def _malformed(self, fault: Fault, stream: bool, model: str) -> web.Response:
        if fault.malformed == "wrong_shape":
            data = json.dumps(
                {
                    "id": "chatcmpl-fault",
                    "object": "chat.completion",
                    "model": model,
                    "result": "no choices here",
                }
            )
        else:
            data = "<html><body>502 Bad Gateway (not JSON)</body></html>"
        if stream:
            return web.Response(
                body=f"data: {data}\n\ndata: [DONE]\n\n".encode(), content_type="text/event-stream"
            )
        return web.Response(body=data.encode(), content_type="application/json")

    def _text(self, fault: Fault) -> str:
        return fault.text if fault.text is not None else f"Hello from {self.name}."

    def _pieces(self, text: str) -> list[str]:
        n = max(1, self.chunks)
        size = max(1, math.ceil(len(text) / n))
        return [text[i : i + size] for i in range(0, len(text), size)] or [""]

    def _completion(self, fault: Fault, payload: dict[str, Any], model: str) -> dict[str, Any]:
        text = self._text(fault)
        filtered = fault.kind == "content_filter"
        prompt, completion = _words(payload), 0 if filtered else len(self._pieces(text))
        return {
            "id": f"chatcmpl-{self.name}-{self.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None if filtered else text,
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "content_filter" if filtered else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    async def _settle(self) -> None:
        """Let the peer read what was sent before an RST can make its kernel drop it."""
        await asyncio.sleep(0.05)

    async def _stream(
        self, request: web.Request, fault: Fault, payload: dict[str, Any], model: str
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        cid, created = f"chatcmpl-{self.name}-{self.requests}", int(time.time())
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                out["usage"] = None
            return out

        async def send(obj: Mapping[str, Any] | str) -> None:
            data = obj if isinstance(obj, str) else json.dumps(obj)
            await resp.write(f"data: {data}\n\n".encode())

        await send(chunk({"role": "assistant", "content": "", "refusal": None}, None))
        if fault.kind == "content_filter":
            await send(chunk({}, "content_filter"))
            await send("[DONE]")
            await resp.write_eof()
            return resp
        if fault.kind == "slow_first_token" and not await self._wait(fault.delay or 0.0):
            _rst(request)
            return resp
        pieces = self._pieces(self._text(fault))
        for i, piece in enumerate(pieces):
            if fault.kind == "reset" and fault.after_chunks is not None and i >= fault.after_chunks:
                break
            if i and self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            await send(chunk({"content": piece}, None))
        if fault.kind == "reset":
            await resp.drain()
            await self._settle()
            _rst(request)
            return resp
        await send(chunk({}, "stop"))
        if include_usage:
            prompt = _words(payload)
            await send(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": len(pieces),
                        "total_tokens": prompt + len(pieces),
                    },
                }
            )
        await send("[DONE]")
        await resp.write_eof()
        return resp


# -- subprocess mode --------------------------------------------------------------------------


class FaultUpstreamProcess:
    """``python -m tests.support.fault_upstream`` in a child process, scripted over HTTP."""

    def __init__(
        self,
        *,
        port: int | None = None,
        name: str = "upstream",
        default: str = "ok",
        host: str = "127.0.0.1",
    ) -> None:
        if port is None:
            from tests.conftest import free_port

            port = free_port()
        self.host, self.port, self.name, self.default = host, port, name, default
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``.../v1``)."""
        return self.url + "/v1"

    def start(self, timeout: float = 15.0) -> FaultUpstreamProcess:
        """Spawn the child and wait until it accepts connections."""
        root = Path(__file__).resolve().parents[2]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.fault_upstream",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--name",
                self.name,
                "--default",
                self.default,
            ],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"fault upstream exited with {self.proc.returncode}: {err}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"fault upstream not listening on {self.url}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Terminate the child (SIGTERM, then SIGKILL)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> FaultUpstreamProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _control(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path, json=body) as resp,
        ):
            data: dict[str, Any] = await resp.json()
            if resp.status != 200:
                raise ValueError(data.get("error"))
            return data

    async def script(
        self,
        *faults: Fault | str | Mapping[str, Any],
        model: str | None = None,
        default: Fault | str | Mapping[str, Any] | None = None,
        clear: bool = False,
    ) -> dict[str, Any]:
        """Queue faults (and optionally set the default) in the child."""
        body: dict[str, Any] = {
            "faults": [Fault.parse(f).to_dict() for f in faults],
            "model": model,
            "clear": clear,
        }
        if default is not None:
            body["default"] = Fault.parse(default).to_dict()
        return await self._control("POST", "/_control/script", body)

    async def stats(self) -> dict[str, Any]:
        """The child's counters."""
        return await self._control("GET", "/_control/stats")

    async def reset(self) -> dict[str, Any]:
        """Clear the child's script, log and counters."""
        return await self._control("POST", "/_control/reset")


async def _serve(args: argparse.Namespace) -> None:
    upstream = FaultUpstream(
        name=args.name,
        host=args.host,
        port=args.port,
        default=args.default,
        chunks=args.chunks,
        chunk_delay=args.chunk_delay,
    )
    upstream.script(*_split(args.script))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await upstream.start()
    print(f"fault upstream {args.name} listening on {upstream.url}", flush=True)
    try:
        await stop.wait()
    finally:
        await upstream.stop()


def _split(text: str | None) -> Iterable[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.support.fault_upstream --port N [--default KIND] [--script a,b]``."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.fault_upstream",
        description="A fault-injecting OpenAI-compatible upstream.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="upstream")
    parser.add_argument("--default", default="ok", help="fault for unscripted requests")
    parser.add_argument("--script", default="", help="comma-separated faults, e.g. 429:1,ok")
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
