"""Server-sent event parsing of upstream streams, however the bytes are split."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from elevenfactor.models.providers._http import sse_data


class _Reads:
    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    async def iter_any(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part


@pytest.mark.parametrize(
    ("parts", "events"),
    [
        ([b"data: a\n\ndata: b\n\n"], [b"a", b"b"]),
        ([b"da", b"ta: a\n", b"\ndata:b\n\n"], [b"a", b"b"]),
        ([b"data: a\r\n\r\nda", b"ta: b\r", b"\n\r\n"], [b"a", b"b"]),
        ([b": keep-alive\n\nevent: e\ndata: x\ndata: y\n\n"], [b"x\ny"]),
        ([b"data: [DONE]"], [b"[DONE]"]),
        ([b"\n\n\n"], []),
    ],
)
async def test_sse_events(parts: list[bytes], events: list[bytes]) -> None:
    got = [e async for e in sse_data(_Reads(parts))]  # type: ignore[arg-type]
    assert got == events
