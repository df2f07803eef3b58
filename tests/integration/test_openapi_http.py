"""``/openapi.json``, ``/docs`` and ``GET /v1/models/{id}`` over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openapi_spec_validator import validate

from elevenfactor.config import Settings, parse_project
from elevenfactor.governance import create_key, local_admin
from elevenfactor.store import migrate, open_store
from tests.support.server import running_gateway

PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {"echo": {"provider": "t", "model": "echo-1"}, "team/echo": {"provider": "t",
                   "model": "echo-2"}},
        "routes": {"default": {"chain": ["echo"]}},
    }
)  # fmt: skip


async def _migrated_with_key(url: str) -> str:
    db = await open_store(url)
    try:
        await migrate(db)
        _, secret = await create_key(db, local_admin("cli"), "tests")
    finally:
        await db.close()
    return secret


@pytest.fixture
async def dev_gateway(store_url: str, tmp_path: Path) -> Iterator[str]:
    await _migrated_with_key(store_url)
    settings = Settings(database_url=store_url, data_dir=tmp_path, dev=True)
    with running_gateway(settings, PROJECT) as (base, _):
        yield base


async def test_openapi_json_is_served_and_valid(dev_gateway: str) -> None:
    async with httpx.AsyncClient(base_url=dev_gateway) as http:
        resp = await http.get("/openapi.json")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    doc = resp.json()
    validate(doc)
    assert "/v1/models/{model_id}" in doc["paths"]
    assert doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]


async def test_docs_page_is_self_contained_html(dev_gateway: str) -> None:
    async with httpx.AsyncClient(base_url=dev_gateway) as http:
        resp = await http.get("/docs")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in resp.headers["content-security-policy"]
    page = resp.text
    assert "<script" not in page and "https://" not in page
    assert "<code>/v1/runs/{run_id}</code>" in page
    assert "<td class=p>messages</td>" in page
    assert '<a href="/openapi.json">' in page


async def test_retrieve_model_with_the_openai_client(dev_gateway: str) -> None:
    client = openai.AsyncOpenAI(base_url=dev_gateway + "/v1", api_key="dev", max_retries=0)
    try:
        model = await client.models.retrieve("default")
        assert (model.id, model.object, model.owned_by) == ("default", "model", "elevenfactor")
        assert (await client.models.retrieve("echo")).id == "echo"
        assert (await client.models.retrieve("team/echo")).id == "team/echo"
        with pytest.raises(openai.NotFoundError) as caught:
            await client.models.retrieve("nope")
        assert caught.value.code == "model_not_found"
    finally:
        await client.close()


async def test_docs_are_open_but_models_need_a_key(store_url: str, tmp_path: Path) -> None:
    secret = await _migrated_with_key(store_url)
    settings = Settings(database_url=store_url, data_dir=tmp_path)
    with running_gateway(settings, PROJECT) as (base, _):
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/openapi.json")).status_code == 200
            assert (await http.get("/docs")).status_code == 200
            refused = await http.get("/v1/models/default")
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "invalid_api_key"
        client = openai.AsyncOpenAI(base_url=base + "/v1", api_key=secret, max_retries=0)
        try:
            assert (await client.models.retrieve("default")).id == "default"
        finally:
            await client.close()
