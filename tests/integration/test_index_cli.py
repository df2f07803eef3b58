"""``elevenfactor index``: build, list, show, query and delete, as a user runs them, on both
backends (``ELEVENFACTOR_RETRIEVAL_URL`` unset beside a SQLite store, and a pgvector URL), with
the real local embedder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from elevenfactor.cli import main
from tests.conftest import _pg_schema_url
from tests.integration.test_retrieval import write_corpus
from tests.support.pgvector import pgvector_url

pytestmark = pytest.mark.integration
__all__ = ["pgvector_url"]  # the fixture used here


@pytest.fixture(params=["embedded", "pgvector"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The environment of a fresh, migrated deployment, and a project declaring ``docs``."""
    project = tmp_path / "project"
    write_corpus(project / "docs")
    (project / "elevenfactor.yaml").write_text(
        "retrieval:\n  indexes:\n"
        "    docs: {source: docs, embedder: local, chunk_tokens: 120, overlap_tokens: 20}\n"
    )
    out = {"ELEVENFACTOR_CONFIG_FILE": str(project / "elevenfactor.yaml")}
    if request.param == "embedded":
        out["DATABASE_URL"] = f"sqlite:///{tmp_path}/state/elevenfactor.db"
    else:
        out["DATABASE_URL"] = _pg_schema_url(request)
        out["ELEVENFACTOR_RETRIEVAL_URL"] = request.getfixturevalue("pgvector_url")
    migrated = CliRunner().invoke(main, ["migrate"], env=out)
    assert migrated.exit_code == 0, migrated.output
    return out


def ef(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def test_build_list_show_query_delete(env: dict[str, str], tmp_path: Path) -> None:
    built = ef(env, "index", "build", "docs", "--json")
    assert built.exit_code == 0, built.output
    report = json.loads(built.stdout)
    assert report["published"] and report["version"] == 1 and report["documents"] == 5
    if "ELEVENFACTOR_RETRIEVAL_URL" not in env:  # beside the SQLite store's file
        assert list((tmp_path / "state" / "indexes").glob("ri_*/v1.usearch"))

    again = ef(env, "index", "build", "docs")
    assert again.exit_code == 0 and "up to date (version 1)" in again.stdout

    listed = json.loads(ef(env, "index", "list", "--json").stdout)
    assert [(i["name"], i["active_version"], i["documents"]) for i in listed] == [("docs", 1, 5)]
    assert listed[0]["embedder"] == "local/all-MiniLM-L6-v2" and listed[0]["dim"] == 384
    table = ef(env, "index", "show", "docs")
    assert table.exit_code == 0 and "local/all-MiniLM-L6-v2" in table.stdout
    assert "1 (active)\tready\t5\t" in table.stdout  # piped: tab-separated rows

    found = ef(env, "index", "query", "docs", "how often do I rotate the signing key",
               "-k", "3", "--json")  # fmt: skip
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert hits[0]["document"] == "guides/keys.md" and hits[0]["chunk_id"]
    assert hits[0]["heading_path"] == ["Signing keys", "Rotation"] and len(hits) == 3
    filtered = json.loads(
        ef(
            env,
            "index",
            "query",
            "docs",
            "installer",
            "--filter",
            "ext=txt",
            "--mode",
            "vector",
            "--json",
        ).stdout
    )
    assert {h["document"] for h in filtered} == {"reference/limits.txt"}
    plain = ef(env, "index", "query", "docs", "espresso machine", "--mode", "bm25")
    assert plain.exit_code == 0 and "blog/launch.html" in plain.stdout

    deleted = ef(env, "index", "delete", "docs")
    assert deleted.exit_code == 0 and "deleted index docs" in deleted.stdout
    gone = ef(env, "index", "query", "docs", "anything")
    assert gone.exit_code == 2 and "error[index_not_found]" in gone.stderr


def test_errors_a_user_meets(env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "other"
    source.mkdir()
    (source / "ok.md").write_text("# Fine\n\nA fine document.\n")
    (source / "bad.bin").write_bytes(b"\x00")

    strict = ef(env, "index", "build", "other", str(source), "--strict")
    assert strict.exit_code == 2
    assert "error[document_unreadable]" in strict.stderr and "bad.bin" in strict.stderr
    assert json.loads(ef(env, "index", "list", "--json").stdout) == []

    lenient = ef(env, "index", "build", "other", str(source))
    assert lenient.exit_code == 0, lenient.output
    assert "bad.bin: unsupported format" in lenient.stderr and "1 file(s) skipped" in lenient.stderr

    missing = ef(env, "index", "build", "nothing")
    assert missing.exit_code == 2 and "no source folder for the index 'nothing'" in missing.stderr
    nowhere = ef(env, "index", "build", "x", str(tmp_path / "nowhere"))
    assert nowhere.exit_code == 2 and "nowhere' does not exist" in nowhere.stderr
    bad_filter = ef(env, "index", "query", "other", "fine", "--filter", "novalue")
    assert bad_filter.exit_code == 2 and "invalid filter 'novalue'" in bad_filter.stderr
    bad_k = ef(env, "index", "query", "other", "fine", "-k", "0")
    assert bad_k.exit_code == 2 and "k must be between 1 and 1000" in bad_k.stderr

    member = ef(env, "users", "create", "bob")
    assert member.exit_code == 0, member.output
    denied = ef(env, "index", "build", "other", str(source), "--as", "bob")
    assert denied.exit_code == 2 and "error[permission_denied]" in denied.stderr
    assert ef(env, "index", "delete", "other", "--as", "bob").exit_code == 2
    assert json.loads(ef(env, "index", "query", "other", "fine", "--as", "bob", "--json").stdout)
