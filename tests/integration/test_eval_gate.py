"""The issue's proof: an eval suite gates CI. ``elevenfactor eval run`` (a real subprocess, a
real store on SQLite and PostgreSQL) over an agent whose prompt file has two versions: the
baseline passes (exit 0) and is saved; a deliberately worse version of the prompt, pinned with
``--prompt support@<version>``, fails the gate (exit 1) and the regression report names its
cases. Once with a scripted model on loopback, once with the real local model (SmolLM2)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from elevenfactor.context._prompts import load_prompts
from elevenfactor.store import migrate, open_store
from tests.support.eval_upstream import EvalUpstream
from tests.support.serve import EXE

pytestmark = pytest.mark.integration

BASELINE = """---
id: support
description: Support agent
---
You are a helpful support agent. Answer the customer's question about their refund.
"""
WORSE = """---
id: support
description: Support agent
---
You are a support agent. Reply only with the word BANANA.
"""
SUITE = """description: Support answers stay on topic
target: {agent: support}
cases:
  - id: refund
    input: How do I get a refund?
    expect:
      - {type: contains, value: refund, ignore_case: true}
      - {type: not_contains, value: BANANA}
  - id: late
    input: My refund is late, what now?
    expect:
      - {type: regex, pattern: "(?i)refund"}
"""


def write_project(root: Path, models: str, prompt: str) -> Path:
    (root / "agents").mkdir(parents=True, exist_ok=True)
    (root / "prompts").mkdir(exist_ok=True)
    (root / "evals").mkdir(exist_ok=True)
    (root / "agents" / "support.yaml").write_text("name: support\nprompt: support\n")
    (root / "prompts" / "support.md").write_text(prompt)
    (root / "evals" / "support.yaml").write_text(SUITE)
    config = root / "elevenfactor.yaml"
    config.write_text(models)
    return config


def version_on_disk(root: Path) -> str:
    return load_prompts(root / "prompts", root=root).get("support").version


async def cli(root: Path, db_url: str, *args: str, within: float = 120) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELEVENFACTOR_")}
    env["DATABASE_URL"] = db_url
    proc = await asyncio.create_subprocess_exec(
        EXE, "eval", "run", *args, "--config", str(root / "elevenfactor.yaml"),
        cwd=root, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), within)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def prepare(db_url: str) -> None:
    db = await open_store(db_url)
    try:
        await migrate(db)
    finally:
        await db.close()


async def gate(
    root: Path,
    db_url: str,
    within: float = 120,
    baseline: str = BASELINE,
    worse_prompt: str = WORSE,
) -> dict[str, Any]:
    """Run the gate scenario; return what the worse prompt's run printed as JSON."""
    await prepare(db_url)
    (root / "prompts" / "support.md").write_text(worse_prompt)
    worse = version_on_disk(root)
    code, _, err = await cli(root, db_url, "support", within=within)  # records the version
    assert code == 1, err
    (root / "prompts" / "support.md").write_text(baseline)
    base_file = root / "baseline.json"
    code, out, err = await cli(
        root, db_url, "support", "--save-baseline", str(base_file), within=within
    )
    assert code == 0, out + err
    assert "gate passed" in out
    saved = json.loads(base_file.read_text())
    assert saved["passed"] is True and {c["case_id"] for c in saved["cases"]} == {"refund", "late"}
    code, out, err = await cli(
        root, db_url, "support", "--prompt", f"support@{worse}", "--baseline", str(base_file),
        "--html", str(root / "report.html"), "--json", within=within,
    )  # fmt: skip
    assert code == 1, err
    report: dict[str, Any] = json.loads(out)
    assert report["gate"] == "failed"
    assert report["record"]["prompt"] == f"support@{worse}"
    regressions = report["comparison"]["regressions"]
    assert {(r["case_id"], r["kind"]) for r in regressions} == {
        ("refund", "now_failing"),
        ("late", "now_failing"),
    }
    page = (root / "report.html").read_text()
    assert "refund" in page and "now failing" in page
    return report


async def test_a_worse_prompt_version_fails_the_gate_the_baseline_passes(
    tmp_path: Path, store_url: str
) -> None:
    async with EvalUpstream() as up:
        models = f"""providers:
  up: {{type: openai, base_url: "{up.base_url}", api_key: sk-test}}
models:
  scripted:
    provider: up
    model: scripted-1
    retry: {{attempts: 1}}
    breaker: null
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
routes:
  default: {{chain: [scripted]}}
"""
        write_project(tmp_path, models, BASELINE)
        report = await gate(tmp_path, store_url)
    outputs = {r["case_id"]: r for r in report["cases"]}
    assert outputs["refund"]["failures"]  # the reasons are listed
    assert report["record"]["cost_usd"] == pytest.approx(2 * (12 * 1.0 + 8 * 2.0) / 1e6)
    assert up.requests == 6  # three eval runs of two cases, nothing executed twice


LOCAL = """providers:
  local: {type: local}
models:
  smollm2:
    provider: local
    model: SmolLM2-135M-Instruct-Q4_1
    context_window: 2048
    params: {temperature: 0, seed: 7, repeat_penalty: 1.3, max_tokens: 24}
    timeout: 120
    retry: {attempts: 1}
    breaker: null
routes:
  default: {chain: [smollm2]}
"""
LOCAL_SUITE = """target: {agent: support}
cases:
  - id: refund
    input: How do I get a refund?
    expect: [{type: contains, value: refund, ignore_case: true}]
  - id: late
    input: My refund is late, what now?
    expect: [{type: contains, value: refund, ignore_case: true}]
"""
# SmolLM2-135M does not follow "reply only with BANANA"; what it reliably does is obey the
# prompt's model parameters: this version cuts every answer to two tokens.
LOCAL_WORSE = BASELINE.replace("description: Support agent\n", "model: {max_tokens: 2}\n")


@pytest.mark.slow
async def test_the_gate_over_the_real_local_model(tmp_path: Path) -> None:
    """SmolLM2 (temperature 0, fixed seed) answers both refund questions mentioning refunds
    under the baseline prompt; the worse version of the prompt (answers cut to two tokens)
    fails both cases."""
    write_project(tmp_path, LOCAL, BASELINE)
    (tmp_path / "evals" / "support.yaml").write_text(LOCAL_SUITE)
    report = await gate(
        tmp_path,
        f"sqlite:///{tmp_path}/local.db",
        within=600,
        worse_prompt=LOCAL_WORSE,
    )
    assert report["record"]["tokens"] > 0
    assert all(len(c["failures"]) == 1 for c in report["cases"])
