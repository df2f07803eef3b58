"""``python -m bench.context tokens|assembly``: the token estimate's error on real text, and the
latency of context assembly for a 200-turn session beside a bare floor.

Results print as tables and are written to ``bench/results/context-<what>-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"


def _meta() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    return {
        "commit": commit,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _write(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"context-{name}-{stamp}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def tokens(args: argparse.Namespace, console: Console) -> None:
    from bench.context.tokens import measure

    result = measure(refit=args.fit)
    w = result["weights"]
    if args.fit:
        console.print("fitted weights (paste into CALIBRATED in context/_tokens.py):")
        console.print(f"  per_feature={tuple(w['per_feature'])}")
        console.print(f"  safety={w['safety']}, safety_non_ascii={w['safety_non_ascii']}")
    table = Table(
        title="token estimate vs real tokenizers (held-out samples; error = (est - real) / real)"
    )
    for col in (
        "kind",
        "tokenizer",
        "n",
        "chars/tok",
        "mean |err|",
        "p95 |err|",
        "p95 under",
        "max under",
        "undercounted",
        "central mean |err|",
        "bytes/4 mean |err|",
        "bytes/4 p95 under",
    ):
        table.add_column(col, justify="left" if col in ("kind", "tokenizer") else "right")
    for row in result["rows"]:
        if row["split"] != "held_out":
            continue
        e, c, b = row["estimate"], row["central"], row["bytes/4"]
        table.add_row(
            row["kind"],
            row["tokenizer"],
            str(e["n"]),
            f"{row['chars_per_token']:.2f}",
            _pct(e["mean_abs"]),
            _pct(e["p95_abs"]),
            _pct(e["p95_under"]),
            _pct(e["max_under"]),
            _pct(e["share_under"]),
            _pct(c["mean_abs"]),
            _pct(b["mean_abs"]),
            _pct(b["p95_under"]),
        )
    console.print(table)
    corpus = ", ".join(
        f"{k}: {v['samples']} samples / {v['chars']} chars / {v['files']} files"
        for k, v in result["corpus"].items()
    )
    console.print(f"corpus: {corpus}")
    path = _write("tokens", {"meta": _meta(), **result})
    console.print(f"wrote {path.relative_to(REPO)}")


def assembly(args: argparse.Namespace, console: Console) -> None:
    from bench.context.assembly import run
    from elevenfactor.models.providers.local import default_model_path

    path = default_model_path()
    gguf = str(path) if path is not None and path.is_file() else None
    rows = run(args.iterations, gguf_path=gguf)
    table = Table(title=f"context assembly, {rows[0]['messages_in_session']} messages, warm cache")
    for col in (
        "counter",
        "scenario",
        "window",
        "floor p50 ms",
        "floor p99 ms",
        "assemble p50 ms",
        "assemble p99 ms",
        "full gc passes",
        "frozen: floor p50 / p99",
        "frozen: assemble p50 / p99",
        "cold ms",
        "tokens",
        "history in / out",
    ):
        table.add_column(col, justify="left" if col in ("counter", "scenario") else "right")
    for r in rows:
        table.add_row(
            r["counter"].split(".gguf")[0],
            r["scenario"],
            str(r["window"]),
            f"{r['floor_ms']['p50']:.3f}",
            f"{r['floor_ms']['p99']:.3f}",
            f"{r['assemble_ms']['p50']:.3f}",
            f"{r['assemble_ms']['p99']:.3f}",
            str(r["gc_full_passes"]),
            f"{r['gc_frozen']['floor_ms']['p50']:.3f} / {r['gc_frozen']['floor_ms']['p99']:.3f}",
            f"{r['gc_frozen']['assemble_ms']['p50']:.3f} / "
            f"{r['gc_frozen']['assemble_ms']['p99']:.3f}",
            f"{r['cold_ms']:.1f}",
            str(r["total_tokens"]),
            f"{r['history_in']} / {r['history_left_out']}",
        )
    console.print(table)
    out = _write("assembly", {"meta": _meta(), "iterations": args.iterations, "rows": rows})
    console.print(f"wrote {out.relative_to(REPO)}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.context", description=__doc__)
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("tokens", help="the estimate's error against real tokenizers")
    t.add_argument("--fit", action="store_true", help="refit the weights and print them")
    a = sub.add_parser("assembly", help="assembly latency for a 200-turn session")
    a.add_argument("--iterations", type=int, default=300, help="timed assemblies per scenario")
    args = ap.parse_args(argv)
    console = Console(width=200)
    {"tokens": tokens, "assembly": assembly}[args.what](args, console)


if __name__ == "__main__":
    main()
