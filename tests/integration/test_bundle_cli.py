"""``elevenfactor runs export`` and ``audit verify --bundle`` as processes: a bundle exported
from SQLite or PostgreSQL verifies in a process with an empty environment and an empty working
folder (no database, no config); an edited bundle fails naming the check; a malformed one is a
clear error, never a traceback. ``retention show|apply`` against the same store."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from elevenfactor.store import open_store
from tests.unit.test_retention import MARK, populate


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "elevenfactor", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _populate(url: str) -> dict[str, str]:
    from elevenfactor.store import migrate

    db = await open_store(url)
    try:
        await migrate(db)
        return await populate(db)
    finally:
        await db.close()


def test_export_then_verify_with_no_database(store_url: str, tmp_path: Path) -> None:
    ids = asyncio.run(_populate(store_url))
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "DATABASE_URL": store_url}
    out = work / "pay.bundle.json"
    done = _cli("runs", "export", ids["pay"], "--out", str(out), env=env, cwd=work)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    copy = empty / "b.json"
    copy.write_bytes(out.read_bytes())
    bare = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}  # points nowhere
    ok = _cli("audit", "verify", "--bundle", str(copy), env=bare, cwd=empty)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "chain" in ok.stdout and "FAILED" not in ok.stdout
    assert _cli("audit", "verify", "--bundle", str(copy), env={}, cwd=empty).returncode == 0

    data = bytearray(copy.read_bytes())
    at = data.index(b'"created_at":') + len(b'"created_at":')
    data[at] = ord("1") if data[at] != ord("1") else ord("2")
    copy.write_bytes(bytes(data))
    bad = _cli("audit", "verify", "--bundle", str(copy), "--json", env={}, cwd=empty)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert '"ok": false' in bad.stdout and "Traceback" not in bad.stderr

    for content in (b"", b"{not json", b"PK\x03\x04"):
        copy.write_bytes(content)
        broken = _cli("audit", "verify", "--bundle", str(copy), env={}, cwd=empty)
        assert broken.returncode == 2 and "error[bundle_invalid]" in broken.stderr, broken.stderr
        assert "Traceback" not in broken.stderr

    other = _cli("runs", "export", ids["pay"], "--as", "nobody", env=env, cwd=work)
    assert other.returncode == 2 and "Traceback" not in other.stderr


def test_retention_show_and_apply(store_url: str, tmp_path: Path) -> None:
    asyncio.run(_populate(store_url))
    written = time.time()
    while time.time() < written + 1.1:  # the content must be older than the 1s period
        time.sleep(0.05)
    project = tmp_path / "elevenfactor.yaml"
    project.write_text("retention:\n  default: {runs: 1s, approvals: 1s, calls: 1s}\n")
    env = {**os.environ, "DATABASE_URL": store_url, "ELEVENFACTOR_CONFIG_FILE": str(project)}
    shown = _cli("retention", "show", env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "default" in shown.stdout and "1s" in shown.stdout
    dry = _cli("retention", "apply", "--dry-run", "--json", env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert '"dry_run": true' in dry.stdout and '"ledger_entries": []' in dry.stdout
    done = _cli("retention", "apply", "--json", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"call_requests": 1' in done.stdout
    verified = _cli("audit", "verify", env=env, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    async def scan() -> list[str]:
        from tests.unit.test_retention import scan_for

        db = await open_store(store_url)
        try:
            return await scan_for(db, MARK)
        finally:
            await db.close()

    assert asyncio.run(scan()) == []
    bad = _cli("retention", "apply", "--before", "someday", env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "before" in bad.stderr and "Traceback" not in bad.stderr
