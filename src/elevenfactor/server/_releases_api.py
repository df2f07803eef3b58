"""``/v1/releases``: read the deployment's releases (admins only).

Releases are deployment-wide; changing them (create, activate, roll back) is an operator's act
on the command line (``elevenfactor release``), so the API only reads. A member gets 403
``permission_denied``. A manifest's ``retrieval`` section lists index versions per organisation:
over HTTP an admin sees its own organisation's only.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, Field
from starlette.responses import Response

from elevenfactor.errors import RequestError
from elevenfactor.runtime._release import NAME, Release, get_release, list_releases
from elevenfactor.server._op_types import Operation, PathParam
from elevenfactor.server._runs_api import _Call, endpoint
from elevenfactor.server._schemas import _Schema

__all__ = ["OPERATIONS", "ROUTES", "ReleaseList", "ReleaseObject", "ReleaseQuery"]

_REF = re.compile(NAME)


class ReleaseQuery(_Schema):
    """``GET /v1/releases`` query string."""

    limit: Annotated[int, Field(ge=1, le=500)] = 50


class ReleaseObject(BaseModel):
    """An immutable release: its manifest (code version, project config without secrets,
    prompt, policy, price and index versions, agent specs) and where it is active."""

    id: str = Field(description="SHA-256 of the canonical manifest.")
    object: Literal["release"]
    name: str | None
    files_hash: str = Field(description="SHA-256 of the manifest without `retrieval`.")
    created_at: float
    created_by: str
    environments: list[str] = Field(description="Environments where it is active now.")
    manifest: dict[str, Any] | None = Field(
        default=None, description="The manifest (`GET /v1/releases/{id}` only)."
    )


class ReleaseList(BaseModel):
    """Newest first, without manifests."""

    object: Literal["list"]
    data: list[ReleaseObject]
    serving: str | None = Field(description="The release this server process runs, or null.")


def _json(obj: object) -> Response:
    return Response(orjson.dumps(obj), media_type="application/json")


def _visible(release: Release, org_id: str) -> dict[str, Any]:
    """The release with only the caller organisation's retrieval index versions."""
    out = release.to_dict()
    manifest = out.get("manifest")
    if isinstance(manifest, dict) and isinstance(manifest.get("retrieval"), dict):
        manifest = dict(manifest)
        manifest["retrieval"] = {
            name: {org: v for org, v in per_org.items() if org == org_id}
            for name, per_org in manifest["retrieval"].items()
        }
        out["manifest"] = manifest
    return out


@endpoint
async def index_releases(call: _Call) -> Response:
    """``GET /v1/releases``: the releases, newest first."""
    call.principal.require_admin("reading releases")
    q = call.query(ReleaseQuery)
    found = await list_releases(call.store, limit=q.limit)
    serving = call.gw.release.release_id if call.gw.release is not None else None
    return _json(
        {"object": "list", "data": [r.to_dict(manifest=False) for r in found], "serving": serving}
    )


@endpoint
async def show_release(call: _Call) -> Response:
    """``GET /v1/releases/{release}``: one release with its manifest."""
    call.principal.require_admin("reading releases")
    ref = call.request.path_params["release"]
    if not _REF.match(ref):
        raise RequestError(
            f"{ref[:80]!r} is not a release id or name",
            code="invalid_value",
            param="release",
            hint="a release id (64 hex digits), a prefix of at least 8, or its name",
        )
    return _json(_visible(await get_release(call.store, ref), call.principal.org_id))


ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/v1/releases", index_releases, ["GET"]),
    ("/v1/releases/{release}", show_release, ["GET"]),
]

_RELEASE = PathParam("release", "The release's id, an id prefix (8+ hex digits) or its name.", NAME)
_ADMIN = " Admins only (others get 403 `permission_denied`)."

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "/v1/releases", "get", "List releases", "releases", ReleaseList,
        "The deployment's releases, newest first, with the environments where each is active"
        " and the release this server runs (`serving`). Created, activated and rolled back"
        " with `elevenfactor release`." + _ADMIN,
        query=ReleaseQuery,
    ),
    Operation(
        "/v1/releases/{release}", "get", "Show a release", "releases", ReleaseObject,
        "A release with its manifest; `retrieval` lists the caller organisation's index"
        " versions only. Unknown: 404 `release_not_found`; malformed: 400." + _ADMIN,
        params=(_RELEASE,),
    ),
)  # fmt: skip
