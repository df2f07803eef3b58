"""POST /v1/embeddings: OpenAI-compatible embeddings from the configured embedders.

``model`` names an embedder of ``embeddings.models`` (the bundled ``local`` all-MiniLM-L6-v2 by
default). One pydantic model validates the body and documents it; what is not served has its
own stable code: token-array inputs (``unsupported_input``), empty strings (``empty_input``),
more than 2048 inputs (``too_many_inputs``), a vector size the embedder cannot make
(``unsupported_dimensions``). The local model reads at most 256 tokens of each input (the rest is
ignored, as sentence-transformers does); ``usage`` counts the tokens it read.

Requests are metered like chat completions (``elevenfactor.server._embed_meter``): the caller's
rate limits, kill switches and budgets admit each one (refused with the same OpenAI-style 429
and 403 errors), it is charged at the model's ``price`` and recorded in ``model_calls`` with
``kind`` ``embedding``, so cost reports include embedding spend.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator
from pydantic import StringConstraints as SC
from starlette.requests import Request
from starlette.responses import Response

from elevenfactor.errors import RequestError
from elevenfactor.server._embed_meter import embed_metered
from elevenfactor.server._op_types import Operation
from elevenfactor.server._runs_api import _Call, endpoint

__all__ = [
    "MAX_INPUTS",
    "OPERATIONS",
    "ROUTES",
    "EmbeddingList",
    "EmbeddingRequest",
]

MAX_INPUTS = 2048
"""Most inputs in one request (OpenAI's limit)."""


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``: OpenAI's embeddings request. Token-array inputs are not
    served (send text); unknown parameters are refused by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Annotated[str, SC(min_length=1, max_length=200)] = Field(
        description="An embedding model: a name under `embeddings.models` of the project"
        " (`local`, the bundled all-MiniLM-L6-v2, unless configured otherwise)."
    )
    input: str | Annotated[list[str], Field(min_length=1, max_length=MAX_INPUTS)] = Field(
        description="A text, or a list of at most 2048 texts; none may be empty. Each gets one"
        " vector, in order. The local model reads the first 256 tokens of each."
    )
    encoding_format: Literal["float", "base64"] = Field(
        default="float",
        description="`float`: vectors as JSON numbers; `base64`: as base64 of little-endian"
        " float32 (what the `openai` Python client asks for).",
    )
    dimensions: Annotated[StrictInt, Field(ge=1, le=65536)] | None = Field(
        default=None,
        description="The vectors' size: the embedder's own (384 for `local`) unless it is an"
        " upstream configured with `send_dimensions`, which may shorten them.",
    )
    user: Annotated[str, SC(max_length=256)] | None = Field(
        default=None, description="Accepted for compatibility; ignored."
    )

    @field_validator("input", mode="before")
    @classmethod
    def _served_input(cls, value: Any) -> Any:
        """Each refusal with its own code and the position of the input at fault."""
        if isinstance(value, str):
            if not value:
                raise _empty("input")
            return value
        if not isinstance(value, list):
            raise RequestError(
                "'input' must be a string or a list of strings", code="invalid_type", param="input"
            )
        if not value:
            raise _empty("input")
        if len(value) > MAX_INPUTS:
            raise RequestError(
                f"'input' holds {len(value)} texts; at most {MAX_INPUTS} are accepted",
                code="too_many_inputs",
                param="input",
                hint="send the texts in several requests",
            )
        for i, item in enumerate(value):
            if type(item) is int or isinstance(item, list):
                raise RequestError(
                    "token-array inputs are not served: send the texts themselves",
                    code="unsupported_input",
                    param=f"input.{i}",
                )
            if not isinstance(item, str):
                raise RequestError(
                    f"'input.{i}' must be a string", code="invalid_type", param=f"input.{i}"
                )
            if not item:
                raise _empty(f"input.{i}")
        return value


def _empty(param: str) -> RequestError:
    return RequestError(
        f"{param!r} is empty: there is nothing to embed",
        code="empty_input",
        param=param,
    )


class EmbeddingObject(BaseModel):
    """One input's vector."""

    object: Literal["embedding"]
    index: int = Field(description="The input's position in `input`.")
    embedding: list[float] | str = Field(
        description="A unit vector: numbers, or base64 of little-endian float32."
    )


class EmbeddingUsage(BaseModel):
    """Tokens read, counted by the embedder's tokenizer (a local model), or as the upstream
    reported them."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    """The embeddings, in the order of the inputs."""

    object: Literal["list"]
    data: list[EmbeddingObject]
    model: str = Field(description="The embedding model, as named in the request.")
    usage: EmbeddingUsage


@endpoint
async def create_embeddings(call: _Call) -> Response:
    """``POST /v1/embeddings``: one unit vector per input."""
    body = await call.body(EmbeddingRequest)
    registry = call.gw.embedders
    if registry is None:
        raise RequestError("embeddings are not available yet", code="not_ready", status=503)
    embedder = registry.get(body.model)
    if body.dimensions is not None and not embedder.accepts_dimensions(body.dimensions):
        raise RequestError(
            f"{body.model!r} makes {embedder.dim}-dimensional vectors, not {body.dimensions}",
            code="unsupported_dimensions",
            param="dimensions",
            hint=f"omit 'dimensions' or ask for {embedder.dim}",
        )
    texts = [body.input] if isinstance(body.input, str) else body.input
    vectors, tokens = await embed_metered(
        call.gw, call.request.scope, call.principal, body.model, embedder, texts,
        body.dimensions, orjson.dumps(body.model_dump(exclude_none=True)),
    )  # fmt: skip
    if body.encoding_format == "base64":
        encoded: list[Any] = [
            base64.b64encode(row.astype("<f4", copy=False).tobytes()).decode("ascii")
            for row in vectors
        ]
    else:
        encoded = list(vectors)
    answer = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": vector}
            for i, vector in enumerate(encoded)
        ],
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Response(
        orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )


ROUTES: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]] = [
    ("/v1/embeddings", create_embeddings, ["POST"])
]
OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "/v1/embeddings",
        "post",
        "Create embeddings",
        "models",
        EmbeddingList,
        "OpenAI-compatible: one unit vector per input from an embedder of"
        " `embeddings.models` (an unknown one is 404 `model_not_found`, listing the names)."
        " Token-array inputs (400 `unsupported_input`), empty strings (`empty_input`), more"
        " than 2048 inputs (`too_many_inputs`) and a `dimensions` the embedder cannot make"
        " (`unsupported_dimensions`) are refused; a body over the server's limit is 413"
        " `request_too_large`. An upstream embedder's failure is its model error (429, 502,"
        " 504, ...). Metered like a chat completion: a rate limit that cannot admit the"
        " request in time (input tokens count toward `tpm`) answers 429 `rate_limit_exceeded`"
        " with `Retry-After`, a budget that cannot cover its worst case 429 `budget_exceeded`,"
        " a kill switch 403 `killed`; each request is recorded (`kind: embedding`) at the"
        " model's `price`, so `GET /v1/cost` includes it.",
        body=EmbeddingRequest,
    ),
)
