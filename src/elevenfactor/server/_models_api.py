"""``GET /v1/models/{id}``: one route or deployment, as OpenAI's ``models.retrieve`` expects."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from elevenfactor.errors import ElevenFactorError, ModelNotFound
from elevenfactor.server._auth import authenticate
from elevenfactor.server._errors import error_response
from elevenfactor.server._state import Gateway

__all__ = ["show_model"]


async def show_model(request: Request) -> Response:
    """The model object for a route or deployment name (needs a key outside dev mode, like
    ``GET /v1/models``); 404 ``model_not_found`` otherwise."""
    gw: Gateway = request.app.state.gateway
    assert gw.registry is not None
    try:
        await authenticate(request, gw)
        name = request.path_params["model_id"]
        if name not in gw.registry.names():
            raise ModelNotFound(
                f"The model {name!r} does not exist",
                param="model",
                hint="GET /v1/models lists the configured routes and models",
            )
    except ElevenFactorError as exc:
        return error_response(exc)
    body = {
        "id": name,
        "object": "model",
        "created": int(gw.started_at),
        "owned_by": "elevenfactor",
    }
    return Response(orjson.dumps(body), media_type="application/json")
