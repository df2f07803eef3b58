"""``elevenfactor eval run`` end to end in this process (click's runner, the real store on
SQLite and PostgreSQL, the deterministic ``test`` provider that answers ``echo: <question>``):
results stored and listed, a promptfoo file through the runner, baseline compare, a budget
that stops the eval, child runs of an agent scored as offline feedback, the HTML report, and
who may read a result."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from elevenfactor.cli import main
from elevenfactor.errors import RequestError
from elevenfactor.evals._store import get_result, list_results
from elevenfactor.governance import create_user, local_admin, set_budget
from elevenfactor.store import Store, migrate, open_store
from tests.support.principals import member

DATA = Path(__file__).parent.parent / "data" / "evals"
PROJECT = """providers: {t: {type: test}}
models:
  echo:
    provider: t
    model: echo-1
    params: {max_tokens: 20}
    price: {input_per_mtok: 1000, output_per_mtok: 1000}
routes:
  default: {chain: [echo]}
  chat: {chain: [echo]}
"""
SUITE = """target: {route: chat}
cases:
  - id: hello
    input: hello there
    expect: [{type: contains, value: hello}]
  - id: script
    input: "<script>alert('x')</script> refund"
    expect: [{type: contains, value: refund}]
  - id: never
    input: something else
    tags: [hard]
    expect: [{type: contains, value: banana}]
"""


def _sync(coro: Any) -> Any:
    return asyncio.run(coro)


class Project:
    def __init__(self, root: Path, db_url: str) -> None:
        self.root, self.db_url = root, db_url
        (root / "evals").mkdir()
        (root / "agents").mkdir()
        (root / "elevenfactor.yaml").write_text(PROJECT)
        (root / "evals" / "basic.yaml").write_text(SUITE)

        async def prepare() -> None:
            db = await open_store(db_url)
            await migrate(db)
            await db.close()

        _sync(prepare())

    def cli(self, *args: str) -> Result:
        runner = CliRunner()
        return runner.invoke(
            main,
            [*args, "--config", str(self.root / "elevenfactor.yaml")],
            env={"DATABASE_URL": self.db_url},
            catch_exceptions=False,
        )

    def eval(self, *args: str) -> tuple[int, dict[str, Any]]:
        res = self.cli("eval", "run", *args, "--json")
        return res.exit_code, json.loads(res.stdout) if res.stdout.strip() else {}

    def store(self, fn: Any) -> Any:
        async def go() -> Any:
            db = await open_store(self.db_url)
            try:
                return await fn(db)
            finally:
                await db.close()

        return _sync(go())


@pytest.fixture
def project(tmp_path: Path, store_url: str) -> Project:
    return Project(tmp_path, store_url)


def test_a_suite_runs_is_stored_and_listed(project: Project) -> None:
    # --release names a real release (id, prefix or name): the result records its id
    made = json.loads(project.cli("release", "create", "--name", "r-1", "--json").stdout)
    code, report = project.eval("basic", "--repeats", "2", "--release", "r-1")
    assert code == 1  # `never` fails its threshold
    assert report["status"] == "failed" and report["gate"] == "failed"
    by_case = {c["case_id"]: c for c in report["cases"]}
    assert by_case["hello"]["passes"] == 2 and by_case["never"]["passes"] == 0
    assert by_case["never"]["failures"] == ["contains: missing 'banana'"]
    record = report["record"]
    assert record["release"] == made["id"] and record["cases"] == 3 and record["cases_passed"] == 2
    assert record["cost_usd"] > 0 and record["tokens"] > 0  # priced, metered model calls
    listed = json.loads(project.cli("eval", "list", "--json").stdout)
    assert [r["id"] for r in listed] == [report["run_id"]]
    shown = project.cli("eval", "show", report["run_id"])
    assert shown.exit_code == 0 and "never" in shown.stdout
    history = project.cli("eval", "history", "basic")
    assert history.exit_code == 0 and "67%" in history.stdout

    async def tagged(db: Store) -> list[Any]:
        return await db.fetchall(
            "SELECT tags, agent FROM model_calls WHERE run_id = ?", (report["run_id"],)
        )

    calls = project.store(tagged)
    assert len(calls) == 6  # 3 cases x 2 repeats, each a recorded model call of the eval run
    assert all('"eval:basic"' in tags and agent == "eval.basic" for tags, agent in calls)


def test_selected_tags_and_the_gate_passing(project: Project) -> None:
    code, report = project.eval("basic", "--tag", "hard")
    assert code == 1 and [c["case_id"] for c in report["cases"]] == ["never"]
    (project.root / "evals" / "basic.yaml").write_text(SUITE.replace("banana", "else"))
    code, report = project.eval("basic")
    assert code == 0 and report["gate"] == "passed"


def test_a_promptfoo_file_runs_through_the_runner(project: Project) -> None:
    shutil.copy(DATA / "promptfoo_echo.yaml", project.root / "evals" / "pf.yaml")
    code, report = project.eval("pf")
    assert code == 0, report
    assert {c["case_id"] for c in report["cases"]} == {"case-1", "case-2"}


def test_baseline_compare_names_regressions(project: Project, tmp_path: Path) -> None:
    good = SUITE.replace("banana", "else")
    (project.root / "evals" / "basic.yaml").write_text(good)
    base = tmp_path / "base.json"
    code, _ = project.eval("basic", "--save-baseline", str(base))
    assert code == 0
    (project.root / "evals" / "basic.yaml").write_text(good.replace("value: hello", "value: bye"))
    code, report = project.eval("basic", "--baseline", str(base))
    assert code == 1
    assert report["comparison"]["regressions"] == [
        {"case_id": "hello", "kind": "now_failing", "before": 1.0, "after": 0.0}
    ]
    res = project.cli("eval", "run", "basic", "--baseline", str(tmp_path / "missing.json"))
    assert res.exit_code == 2 and "not a saved eval result" in res.output


def test_the_html_report_is_self_contained_and_escaped(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    _, report = project.eval("basic", "--html", str(out))
    page = out.read_text()
    assert "<script" not in page and "&lt;script&gt;" in page  # the model's output, escaped
    assert "http" not in page and "src=" not in page and "<link" not in page
    assert "<svg" in page and "<style>" in page
    again = tmp_path / "again.html"
    assert project.cli("eval", "show", report["run_id"], "--html", str(again)).exit_code == 0
    assert "<script" not in again.read_text()


def test_a_budget_stops_the_eval_naming_the_budget(project: Project) -> None:
    admin = local_admin("cli")
    project.store(lambda db: set_budget(db, admin, "agent:eval.basic", 0.000001, window="total"))
    code, _ = project.eval("basic")
    assert code == 1
    res = project.cli("eval", "run", "basic")
    assert res.exit_code == 1
    assert "budget_exceeded" in res.output and "agent:eval.basic" in res.output
    stored = project.store(lambda db: list_results(db, admin))
    assert stored[0].status == "error" and "agent:eval.basic" in (stored[0].error or "")
    assert stored[0].result is None or stored[0].cases == 3


def test_agent_cases_run_as_child_runs_with_offline_feedback(project: Project) -> None:
    (project.root / "agents" / "helper.yaml").write_text(
        "name: helper\ninstructions: Help.\nmodel: default\n"
    )
    (project.root / "evals" / "agent.yaml").write_text(
        "target: {agent: helper}\ncases:\n  - id: hi\n    input: hi there\n"
        "    expect: [{type: contains, value: hi}, {type: max_tokens, value: 1000}]\n"
    )
    code, report = project.eval("agent", "--model", "chat")
    assert code == 0, report
    assert report["record"]["model"] == "chat" and report["record"]["tokens"] > 0

    async def rows(db: Store) -> tuple[list[Any], list[Any]]:
        runs = await db.fetchall(
            "SELECT id, program FROM runs WHERE parent_id = ?", (report["run_id"],)
        )
        feedback = await db.fetchall(
            "SELECT run_id, label, score, source FROM run_feedback ORDER BY label"
        )
        return runs, feedback

    children, feedback = project.store(rows)
    assert [p for _, p in children] == ["elevenfactor.eval.agent"]
    child = children[0][0]
    assert [tuple(f) for f in feedback] == [
        (child, "contains", 1.0, "offline"),
        (child, "max_tokens", 1.0, "offline"),
    ]
    res = project.cli("eval", "run", "agent", "--model", "nope")
    assert res.exit_code == 2 and "model_not_found" in res.output


def test_results_are_read_under_the_rules_of_runs(project: Project) -> None:
    _, report = project.eval("basic")
    rid = report["run_id"]
    admin = local_admin("cli")
    project.store(lambda db: create_user(db, admin, "bob"))
    res = project.cli("eval", "show", rid, "--as", "bob")
    assert res.exit_code == 2 and "eval_not_found" in res.output
    assert json.loads(project.cli("eval", "list", "--json", "--as", "bob").stdout) == []

    async def outsider(db: Store) -> None:
        with pytest.raises(RequestError) as err:
            await get_result(db, member("eve", org="org_other"), rid)
        assert err.value.code == "eval_not_found"
        assert await list_results(db, member("eve", org="org_other")) == []
        assert (await get_result(db, admin, rid)).suite == "basic"

    project.store(outsider)
