"""Release manifests without a store: secrets scrubbed, ids that follow the content, diffs in
words, and call-record hashes that cover ``release_id`` only when it is set."""

from __future__ import annotations

from pathlib import Path

from elevenfactor.config import Settings, parse_project
from elevenfactor.observe._calls import RECORD_COLUMNS, record_hash
from elevenfactor.runtime._release_diff import describe, diff_manifests
from elevenfactor.runtime._release_manifest import (
    SECRET,
    build_manifest,
    canonical_manifest,
    files_hash,
    manifest_id,
    scrub,
)


def test_scrub_removes_credentials_but_keeps_parameters() -> None:
    config = {
        "providers": {
            "p": {
                "api_key": "sk-abc",
                "base_url": "https://user:s3cr3t@api.example/v1",
                "headers": {"X-Team": "blue", "Authorization": "Bearer x"},
                "options": {"db_password": "pw", "dsn": "host=x password=y"},
            }
        },
        "models": {"m": {"params": {"max_tokens": 12, "temperature": 0.3}}},
        "mcp_servers": {
            "s": {"args": ["--url", "postgresql://app:topsecret@db/app"], "env": {"A": "b"}}
        },
        "note": "token sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH end",
        "first_token_timeout": 3.0,
        "api_key_unset": None,
    }
    out = scrub(config)
    p = out["providers"]["p"]
    assert p["api_key"] == SECRET and p["base_url"] == f"https://user:{SECRET}@api.example/v1"
    assert p["headers"] == {"X-Team": SECRET, "Authorization": SECRET}
    assert p["options"] == {"db_password": SECRET, "dsn": SECRET}
    assert out["models"] == config["models"] and out["first_token_timeout"] == 3.0
    assert out["mcp_servers"]["s"]["args"][1] == f"postgresql://app:{SECRET}@db/app"
    assert out["mcp_servers"]["s"]["env"] == {"A": SECRET}
    assert "sk-proj" not in out["note"] and out["note"].startswith("token ")
    assert out["api_key_unset"] is None
    text = canonical_manifest(out).decode()
    for secret in ("sk-abc", "s3cr3t", "topsecret", "Bearer x"):
        assert secret not in text


async def test_the_id_follows_the_files(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    prompt = tmp_path / "prompts" / "hi.md"
    prompt.write_text("---\nid: hi\n---\nHello.\n")
    project = parse_project(
        {
            "providers": {"t": {"type": "test", "api_key": "sk-zzz"}},
            "models": {"e": {"provider": "t", "model": "x"}},
        },
        env={},
    )
    settings = Settings(config_file=None)
    first = await build_manifest(settings, project, tmp_path)
    assert manifest_id(first) == manifest_id(await build_manifest(settings, project, tmp_path))
    assert files_hash(first) == files_hash({**first, "retrieval": {"docs": {"org": 3}}})
    assert "sk-zzz" not in canonical_manifest(first).decode()
    prompt.write_text("---\nid: hi\n---\nHello there.\n")
    second = await build_manifest(settings, project, tmp_path)
    assert manifest_id(second) != manifest_id(first)
    changes = diff_manifests(first, second)
    assert [c.dotted for c in changes] == ["prompts.hi.version"]
    assert describe(changes) == "prompt 'hi'"


def test_describe_names_each_thing_once() -> None:
    a = {
        "config": {"models": {"m": {"params": {"temperature": 0.2}}}},
        "agents": {"bot": {"spec": {"model": "m", "settings": {}}}},
        "policies": {"strict": {"version": "aa"}},
        "prices": {"m": {"version": "1"}},
        "price_table": "x",
        "code": {"source": "s1", "project_modules": {}},
    }
    b = {
        "config": {"models": {"m": {"params": {"temperature": 0.9}}}},
        "agents": {"bot": {"spec": {"model": "n", "settings": {"x": 1}}}},
        "policies": {"strict": {"version": "bb"}, "new": {"version": "cc"}},
        "prices": {"m": {"version": "2"}},
        "price_table": "y",
        "code": {"source": "s2", "project_modules": {"tools": "h"}},
    }
    changes = diff_manifests(a, b)
    kinds = {c.dotted: c.kind for c in changes}
    assert kinds["policies.new.version"] == "added" and kinds["agents.bot.spec.model"] == "changed"
    words = describe(changes)
    assert words.count("agent 'bot'") == 1
    assert "config key models.m.params.temperature (0.2 -> 0.9)" in words
    assert "guard policy 'new'" in words and "price of 'm'" in words
    assert "price_table" not in words and "project module 'tools'" in words
    assert "elevenfactor code" in words
    assert describe(changes, limit=2).endswith("more")


def test_a_call_record_hash_covers_the_release_only_when_set() -> None:
    row = (*(f"v{i}" for i in range(len(RECORD_COLUMNS) - 1)), None)
    assert record_hash(row) == record_hash(row[:-1])  # as before the column existed
    released = (*row[:-1], "rel-1")
    assert record_hash(released) not in (record_hash(row), record_hash((*row[:-1], "rel-2")))
    # a record with a release but no guard record hashes the guard's NULL
    no_guard = (*row[:-2], None, "rel-1")
    assert record_hash(no_guard) != record_hash((*row[:-2], None, None))
