"""``elevenfactor prompts``: list, versions, show, render and diff on a temporary project, with
versions recorded in a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from elevenfactor.cli import main
from elevenfactor.context._prompt_store import record_version
from elevenfactor.context._prompts import Prompt, load_prompts
from elevenfactor.store import migrate, open_store

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent.parent / "data" / "prompts"


class Project:
    def __init__(self, root: Path, runner: CliRunner) -> None:
        self.root = root
        self.runner = runner

    def cli(self, *args: str) -> Result:
        return self.runner.invoke(main, ["prompts", *args, "--config", str(self.config)])

    @property
    def config(self) -> Path:
        return self.root / "elevenfactor.yaml"

    def prompt(self, prompt_id: str) -> Prompt:
        return load_prompts(self.root / "prompts", root=self.root).get(prompt_id)


@pytest.fixture
def project(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A project with two prompts; version 1 of `support` was used (recorded in the store) and
    is pinned as `production`; the file on disk has moved on to version 2."""
    (tmp_path / "prompts").mkdir()
    for name in ("support.md", "triage.md"):
        shutil.copy(DATA / name, tmp_path / "prompts" / name)
    proj = Project(tmp_path, CliRunner())
    v1 = proj.prompt("support")

    async def setup() -> None:
        store = await open_store(store_url)
        try:
            await migrate(store)
            await record_version(store, v1)
        finally:
            await store.close()

    asyncio.run(setup())
    support = tmp_path / "prompts" / "support.md"
    support.write_text(v1.source.replace("with billing.", "with billing and refunds."))
    proj.config.write_text(
        f"prompts:\n  dir: prompts\n  labels:\n    support: {{production: {v1.version}}}\n"
    )
    monkeypatch.setenv("DATABASE_URL", store_url)
    monkeypatch.chdir(tmp_path)
    return proj


def _v1(project: Project) -> str:
    text = project.config.read_text()
    return text.split("production: ")[1].split("}")[0]


def test_list(project: Project) -> None:
    v2 = project.prompt("support")
    out = project.cli("list")
    assert out.exit_code == 0, out.output
    lines = [line.split("\t") for line in out.stdout.splitlines()]
    assert lines[0] == ["id", "version", "labels", "description", "file"]
    assert lines[1] == [
        "support",
        v2.version,
        "",  # `production` pins version 1, not the file on disk
        "Billing support agent instructions",
        "prompts/support.md",
    ]
    assert lines[2][0] == "triage" and lines[2][4] == "prompts/triage.md"
    data = json.loads(project.cli("list", "--json").stdout)
    assert [p["id"] for p in data["data"]] == ["support", "triage"]
    assert data["data"][0]["model"] == {"route": "default", "temperature": 0.2, "max_tokens": 300}
    assert data["data"][0]["hash"] == v2.full_hash and data["errors"] == []


def test_list_reports_invalid_files_after_the_valid_ones(project: Project) -> None:
    (project.root / "prompts" / "broken.md").write_text("ok\n{{ whoever }}\n")
    out = project.cli("list")
    assert out.exit_code == 2
    assert [line.split("\t")[0] for line in out.stdout.splitlines()] == ["id", "support", "triage"]
    assert "error[prompt_invalid]: prompts/broken.md:2: the body uses 'whoever'" in out.stderr
    data = json.loads(project.cli("list", "--json").stdout)
    assert data["errors"][0]["details"] == {"file": "prompts/broken.md", "line": 2}


def test_versions_shows_the_stored_and_the_disk_version_with_labels(project: Project) -> None:
    v1, v2 = _v1(project), project.prompt("support").version
    out = project.cli("versions", "support")
    assert out.exit_code == 0, out.output
    rows = [line.split("\t") for line in out.stdout.splitlines()[1:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [(v1, "production", ""), (v2, "", "yes")]
    assert rows[0][3].startswith("20") and rows[1][3] == "never"
    data = json.loads(project.cli("versions", "support", "--json").stdout)
    assert [(d["version"], d["on_disk"]) for d in data["data"]] == [(v1, False), (v2, True)]
    assert data["unresolved_labels"] == {}
    missing = project.cli("versions", "billing")
    assert missing.exit_code == 2
    assert "error[prompt_not_found]: unknown prompt 'billing'" in missing.stderr


def test_show_a_version_from_disk_and_one_from_the_store(project: Project) -> None:
    out = project.cli("show", "support")
    assert out.exit_code == 0, out.output
    assert out.stdout == (project.root / "prompts" / "support.md").read_text()
    old = project.cli("show", "support@production")
    assert old.exit_code == 0, old.output
    assert old.stdout == (DATA / "support.md").read_text()
    assert "(recorded in the store)" in old.stderr and "labels: production" in old.stderr
    data = json.loads(project.cli("show", f"support@{_v1(project)}", "--json").stdout)
    assert data["origin"] == "store" and data["labels"] == ["production"]
    assert data["body"].startswith("You help {{ customer }}")


def test_render(project: Project, tmp_path: Path) -> None:
    out = project.cli("render", "support", "--input", "customer=Ann", "--input", "tier=pro")
    assert out.exit_code == 0, out.output
    assert out.stdout == "You help Ann, a pro customer, with billing and refunds.\n"
    assert "route=default  max_tokens=300  temperature=0.2" in out.stderr
    old = project.cli("render", "support@production", "--inputs", '{"customer": "Bo"}', "--json")
    assert old.exit_code == 0, old.output
    doc = json.loads(old.stdout)
    assert doc["text"] == "You help Bo, with billing."
    assert doc["prompt"] == f"support@{_v1(project)}"
    assert doc["model"] == {"route": "default", "temperature": 0.2, "max_tokens": 300}
    inputs = tmp_path / "inputs.json"
    inputs.write_text('{"tickets": ["outage", "refund"], "limit": 5}')
    triage = project.cli("render", "triage", "--inputs-file", str(inputs), "--input", "limit=1")
    assert triage.exit_code == 0, triage.output
    assert triage.stdout.startswith("Sort these tickets, most urgent first, and keep the top 1:")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["render", "support"], "error[prompt_input_invalid]: prompt support@"),
        (["render", "support", "--input", "tier=gold", "--input", "customer=A"], "'gold' is not"),
        (["render", "support", "--inputs", "{nope"], "--inputs is not valid JSON"),
        (["render", "support", "--inputs", "[1]"], "--inputs must hold a JSON object"),
        (["render", "support", "--input", "customer"], "must be given as key=value"),
        (["render", "billing"], "error[prompt_not_found]: unknown prompt 'billing'"),
        (["show", "support@canary"], "prompt 'support' has no label 'canary'"),
        (["show", "support@0000000000"], "neither the file on disk nor recorded in the store"),
        (["show", "a@b@c"], "is not a prompt reference"),
        (["diff", "support", "support@canary"], "has no label 'canary'"),
    ],
)
def test_bad_references_and_inputs_fail_clearly(
    project: Project, args: list[str], says: str
) -> None:
    out = project.cli(*args)
    assert out.exit_code == 2, out.output
    assert says in out.stderr
    assert "Traceback" not in out.output


def test_diff_between_the_label_and_the_file(project: Project) -> None:
    v1, v2 = _v1(project), project.prompt("support").version
    out = project.cli("diff", "support@production", "support")
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[:2] == [
        f"--- support@{v1} (prompts/support.md)",
        f"+++ support@{v2} (prompts/support.md)",
    ]
    assert "-" + (DATA / "support.md").read_text().splitlines()[-1] in lines
    assert any(line.startswith("+") and "billing and refunds" in line for line in lines)
    same = project.cli("diff", "support", f"support@{v2}")
    assert same.exit_code == 0 and same.stdout == "" and "are the same" in same.stderr


def test_a_store_without_the_prompts_migration_still_serves_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "prompts").mkdir()
    shutil.copy(DATA / "plain.md", tmp_path / "prompts" / "plain.md")
    (tmp_path / "elevenfactor.yaml").write_text("prompts: {dir: prompts}\n")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/fresh.db")
    monkeypatch.chdir(tmp_path)
    proj = Project(tmp_path, CliRunner())
    out = proj.cli("versions", "plain")
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines()[1].split("\t")[2:4] == ["yes", "never"]
    missing = proj.cli("show", "plain@0123abcd")
    assert missing.exit_code == 2 and "is not the file on disk" in missing.stderr
