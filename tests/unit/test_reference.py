"""The configuration reference (issue 7) cannot drift from the models, and CLI tables piped to
another program keep every value whole."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from elevenfactor.cli import main
from elevenfactor.config import (
    BreakerConfig,
    DeploymentConfig,
    FailoverConfig,
    McpServerSettings,
    PriceConfig,
    ProjectConfig,
    ProviderConfig,
    QueueConfig,
    RetryConfig,
    RouteConfig,
    RouteRule,
    RouteTarget,
    Settings,
)
from elevenfactor.config._reference import reference_markdown
from elevenfactor.runtime import AgentSpec
from elevenfactor.runtime._agent_spec import AgentLimits, ApprovalRule, ArgPredicate, ToolRef
from elevenfactor.store import migrate, open_store

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "reference" / "project.md"

MODELS: list[type[BaseModel]] = [
    ProjectConfig,
    ProviderConfig,
    DeploymentConfig,
    PriceConfig,
    RetryConfig,
    BreakerConfig,
    RouteConfig,
    RouteTarget,
    RouteRule,
    FailoverConfig,
    QueueConfig,
    McpServerSettings,
    AgentSpec,
    ToolRef,
    AgentLimits,
    ApprovalRule,
    ArgPredicate,
]


def test_committed_reference_is_what_the_models_generate() -> None:
    generated = reference_markdown(AgentSpec)
    assert COMMITTED.read_text(encoding="utf-8") == generated, (
        "docs/reference/project.md is stale: run "
        "`elevenfactor config reference --out docs/reference/project.md`"
    )


def _section(doc: str, model: type[BaseModel]) -> str:
    sections = re.split(r"\n##+ ", doc)
    found = [s for s in sections if s.split("\n", 1)[0].endswith(f": {model.__name__}")]
    assert len(found) == 1, f"no single section for {model.__name__}"
    return found[0]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_has_a_row_with_type_and_default(model: type[BaseModel]) -> None:
    section = _section(reference_markdown(AgentSpec), model)
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    keys = [row.split("`")[1].rsplit(".", 1)[-1] for row in rows]
    assert keys == list(model.model_fields)
    for row in rows:
        cells = row.strip("|").split(" | ")
        assert len(cells) >= 4 and cells[1].strip() and cells[2].strip(), row


def test_examples_and_settings_are_in_the_reference() -> None:
    doc = reference_markdown(AgentSpec)
    assert "allow_destructive: [billing.purge_cache]" in doc  # McpServerSettings' example
    assert "instructions_file: prompts/support.md" in doc  # the agent YAML example
    assert "chain: [smollm2]" in doc  # the built-in default project, to copy
    assert "| `DATABASE_URL`, `ELEVENFACTOR_DATABASE_URL` |" in doc
    for name, field in Settings.model_fields.items():
        if field.validation_alias is None:
            assert f"| `ELEVENFACTOR_{name.upper()}` |" in doc


def test_cli_prints_and_writes_the_reference(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(main, ["config", "reference"])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout == reference_markdown(AgentSpec)
    out = tmp_path / "ref" / "project.md"
    written = runner.invoke(main, ["config", "reference", "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert out.read_text(encoding="utf-8") == printed.stdout


async def _migrated(url: str) -> None:
    db = await open_store(url)
    try:
        await migrate(db)
    finally:
        await db.close()


def test_tables_piped_keep_full_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    asyncio.run(_migrated(url))
    (tmp_path / "elevenfactor.yaml").write_text(
        "providers: {t: {type: test}}\nmodels: {echo: {provider: t, model: e}}\n"
        "routes: {default: {chain: [echo]}}\nprograms: ['tests.support.programs:programs']\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    runner = CliRunner()
    env = {"DATABASE_URL": url, "ELEVENFACTOR_CONFIG_FILE": str(tmp_path / "elevenfactor.yaml")}
    queue = "a-queue-name-long-enough-to-be-cut-in-an-eighty-column-table"
    queued = runner.invoke(
        main,
        ["run", "greet", "--input", '{"name": "ada"}', "--queue", queue, "--json"],
        env=env,
    )
    assert queued.exit_code == 0, queued.output
    rid = json.loads(queued.stdout)["id"]
    assert len(rid) == 32

    listed = runner.invoke(main, ["runs", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    header, *rows = listed.stdout.splitlines()
    assert header.split("\t") == [
        "id",
        "program",
        "status",
        "queue",
        "attempt",
        "created",
        "updated",
    ]
    assert len(rows) == 1
    cells = rows[0].split("\t")
    assert cells[:5] == [rid, "greet", "queued", queue, "0"]
    assert "…" not in listed.stdout
