"""Driving ``wrk`` with a POST script; results come back as JSON from the script's ``done``."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["ensure_wrk", "run_wrk"]

_SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"bytes":%d,"errors_connect":%d,'
    .. '"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d,'
    .. '"mean_us":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
"""


def ensure_wrk() -> str:
    """The path to ``wrk``, installing the Debian package if it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True, check=False)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is not installed and `apt-get install -y wrk` did not install it")
    return found


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_wrk(
    url: str,
    body: str,
    headers: dict[str, str],
    *,
    connections: int,
    seconds: float,
    script_dir: Path,
    threads: int = 1,
) -> dict[str, Any]:
    """``wrk`` for ``seconds``; requests, req/s, errors and latency percentiles in µs."""
    lines = [
        f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}"
        for k, v in {"Content-Type": "application/json", **headers}.items()
    ]
    script = script_dir / "post.lua"
    script.write_text(_SCRIPT.format(body=body, headers="\n".join(lines)))
    cmd = [
        ensure_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("WRKJSON "):
            out: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
            secs = out["duration_us"] / 1e6
            out["rps"] = out["requests"] / secs if secs else 0.0
            out["errors"] = sum(v for k, v in out.items() if k.startswith("errors_"))
            return out
    raise RuntimeError(
        f"wrk gave no result (exit {done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
    )
