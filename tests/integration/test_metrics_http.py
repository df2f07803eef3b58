"""``/metrics`` of one server process (an in-process gateway on loopback): open in dev mode like
the other endpoints, 404 when metrics are off, HTTP requests labelled by route template (never
the raw path), time to first token of streams, and guard verdicts of gateway calls."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from elevenfactor.config import Settings, parse_project
from elevenfactor.observe import _metrics as metrics
from elevenfactor.store import migrate, open_store
from tests.support.server import running_gateway

pytestmark = pytest.mark.integration

PROJECT = parse_project(
    {
        "providers": {"t": {"type": "test"}},
        "models": {"echo": {"provider": "t", "model": "echo-1"}},
        "routes": {"default": {"chain": ["echo"]}},
    }
)


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def verdicts(stage: str) -> float:
    """Guard verdicts counted at ``stage``, over every action and policy."""
    return sum(
        s.value
        for f in REGISTRY.collect()
        if f.name == "elevenfactor_guard_verdicts"
        for s in f.samples
        if s.name.endswith("_total") and s.labels["stage"] == stage
    )


@pytest.fixture
async def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/gw.db"
    db = await open_store(url)
    await migrate(db)
    await db.close()
    return url


@pytest.fixture
def base(db_url: str, tmp_path: Path) -> Iterator[str]:
    settings = Settings(database_url=db_url, data_dir=tmp_path, dev=True, in_process_worker=False)
    with running_gateway(settings, PROJECT) as (url, _):
        yield url


def test_dev_mode_is_open_from_loopback(base: str) -> None:
    resp = httpx.get(base + "/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    names = {f.name for f in text_string_to_metric_families(resp.text)}
    assert {"elevenfactor_http_requests", "elevenfactor_runs", "process_cpu_seconds"} <= names


def test_requests_are_labelled_by_route_template(base: str) -> None:
    run = dict(route="/v1/runs/{run_id}", method="GET", status="404")
    other = dict(route="other", method="GET", status="404")
    before = (
        value("elevenfactor_http_requests_total", **run),
        value("elevenfactor_http_requests_total", **other),
    )
    with httpx.Client(base_url=base) as http:
        assert http.get("/v1/runs/no-such-run-1").status_code == 404
        assert http.get("/v1/runs/no-such-run-2").status_code == 404
        assert http.get("/no/such/path").status_code == 404
    assert value("elevenfactor_http_requests_total", **run) - before[0] == 2
    assert value("elevenfactor_http_requests_total", **other) - before[1] == 1
    text = httpx.get(base + "/metrics").text
    assert "no-such-run" not in text and "/no/such/path" not in text


def test_time_to_first_token_of_streams(base: str) -> None:
    before = value("elevenfactor_model_time_to_first_token_seconds_count", route="default")
    plain = value("elevenfactor_model_calls_total", route="default", provider="t",
                  deployment="echo", kind="chat", origin="gateway", status="ok")  # fmt: skip
    checked = verdicts("input")
    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=base) as http:
        resp = http.post("/v1/chat/completions", json={**body, "stream": True})
        assert resp.status_code == 200 and "[DONE]" in resp.text
        assert http.post("/v1/chat/completions", json=body).status_code == 200
    # one stream observed; the plain call is not a stream and has no first token
    assert value("elevenfactor_model_time_to_first_token_seconds_count", route="default") == (
        before + 1
    )
    calls = value("elevenfactor_model_calls_total", route="default", provider="t",
                  deployment="echo", kind="chat", origin="gateway", status="ok")  # fmt: skip
    assert calls - plain == 2
    # the project's default guard policy checked both requests (gateway verdicts are counted)
    assert verdicts("input") - checked == 2


def test_metrics_off_is_404(db_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=db_url, data_dir=tmp_path, dev=True, metrics=False)
    try:
        with running_gateway(settings, PROJECT) as (url, _):
            before = value("elevenfactor_http_requests_total", route="/healthz", method="GET",
                           status="200")  # fmt: skip
            resp = httpx.get(url + "/metrics")
            assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
            assert httpx.get(url + "/healthz").status_code == 200
            after = value("elevenfactor_http_requests_total", route="/healthz", method="GET",
                          status="200")  # fmt: skip
            assert after == before  # nothing counted
    finally:
        metrics.configure(enabled=True)
