"""The tables ``python -m bench.embeddings`` prints: throughput side by side, the arithmetic of
the 300 passages/s goal against this machine's per-core ceilings, and accuracy."""

from __future__ import annotations

import statistics
from typing import Any

from rich.console import Console
from rich.table import Table

GOAL_PASSAGES_PER_S = 300.0
GOAL_TOKENS = 200
# all-MiniLM-L6-v2: 6 layers, hidden 384, feed-forward 1536.
_LAYERS, _HIDDEN, _FF = 6, 384, 1536


def flops_per_token(length: float) -> float:
    """Floating-point operations per token of a ``length``-token text (a multiply-add is 2):
    the projections and feed-forward, plus attention's two ``length``-long products."""
    dense = _HIDDEN * 3 * _HIDDEN + _HIDDEN * _HIDDEN + 2 * _HIDDEN * _FF
    return 2.0 * _LAYERS * (dense + 2 * length * _HIDDEN)


def dense_flops_per_token() -> float:
    """The part of ``flops_per_token`` in the weight products (what int8 speeds up)."""
    return 2.0 * _LAYERS * (_HIDDEN * 3 * _HIDDEN + _HIDDEN * _HIDDEN + 2 * _HIDDEN * _FF)


def print_report(results: dict[str, Any], sets: dict[str, list[str]]) -> None:
    """Print every table of ``results``."""
    console = Console(width=160)
    _throughput(console, results, sets)
    _ceiling(console, results)
    _accuracy(console, results)
    load = results["machine"]
    console.print(
        f"load average before/after: {load['load_average_before'][0]:.2f} /"
        f" {load['load_average_after'][0]:.2f} on {load['cpus']} CPUs"
    )


def _throughput(console: Console, results: dict[str, Any], sets: dict[str, list[str]]) -> None:
    summary = results["summary"]
    wall = Table(title="all-MiniLM-L6-v2: texts/s, wall-clock (x numpy with BLAS threads)")
    cpu = Table(title="texts per CPU-second (what one core does) and its GFLOP/s")
    for table in (wall, cpu):
        for column in ["set", "tokens/text", *summary]:
            table.add_column(column, justify="right")
    wall.add_column("tokenizer (floor)", justify="right")
    wall.add_column("sentence-transformers", justify="right")
    peer = results.get("peer") or {}
    rounds = results.get("rounds") or []
    for name, texts in sets.items():
        tokens = float(results["mean_tokens"].get(name, 0.0))
        head = [f"{len(texts)} {name}", f"{tokens:.0f}"]
        wall_cells, cpu_cells = list(head), list(head)
        for column in summary.values():
            row = column.get(name) or {}
            rate, per_cpu = row.get("texts_per_s"), row.get("texts_per_cpu_s")
            if rate is None or per_cpu is None:
                wall_cells.append("-")
                cpu_cells.append("-")
                continue
            gflops = per_cpu * tokens * flops_per_token(tokens) / 1e9
            wall_cells.append(f"{rate:,.1f} (x{row['ratio_to_baseline']:.2f})")
            cpu_cells.append(f"{per_cpu:,.1f} ({gflops:.0f} GFLOP/s)")
        floors = [
            len(texts) / proc["tokenizer_seconds"][name]
            for run in rounds
            for proc in run.values()
            if name in proc.get("tokenizer_seconds", {})
        ]
        wall_cells.append(f"{statistics.median(floors):,.0f}" if floors else "-")
        peer_s = peer.get("seconds", {}).get(name)
        wall_cells.append(f"{len(texts) / statistics.median(peer_s):,.1f}" if peer_s else "-")
        wall.add_row(*wall_cells)
        cpu.add_row(*cpu_cells)
    console.print(wall)
    console.print(cpu)
    if "unavailable" in peer:
        console.print(f"sentence-transformers: unavailable ({peer['unavailable']})")


def _ceiling(console: Console, results: dict[str, Any]) -> None:
    ceilings = results.get("ceilings") or {}
    if "unavailable" in ceilings or not ceilings:
        console.print(f"ceilings: not measured {ceilings.get('unavailable', '')}")
        return
    cores = int(results["machine"]["cores_used"])
    per_chunk = GOAL_TOKENS * flops_per_token(GOAL_TOKENS)
    dense = GOAL_TOKENS * dense_flops_per_token()
    need = GOAL_PASSAGES_PER_S * per_chunk / 1e9
    console.print(
        f"goal: {GOAL_PASSAGES_PER_S:.0f} chunks/s of {GOAL_TOKENS} tokens ="
        f" {per_chunk / 1e9:.2f} GFLOP a chunk ({dense / 1e9:.2f} in the weight products)"
        f" x {GOAL_PASSAGES_PER_S:.0f} = {need:,.0f} GFLOP/s"
    )
    for name, gflops in ceilings.items():
        best = cores * gflops * 1e9 / per_chunk
        console.print(
            f"  {name}: {gflops:,.0f} GFLOP/s a core (4096x384x1536 product, CPU time) x"
            f" {cores} cores: at most {best:,.0f} chunks/s if every operation ran at that speed"
        )
    int8 = results["summary"].get("onnx int8", {}).get("passages", {}).get("texts_per_cpu_s")
    if int8:
        console.print(
            f"  onnx int8 measured: {int8:.1f} passages per CPU-second x {cores} cores ="
            f" {int8 * cores:.0f} passages/s on {cores} idle cores"
        )


def _accuracy(console: Console, results: dict[str, Any]) -> None:
    accuracy = results.get("accuracy") or {}
    if "unavailable" in accuracy or not accuracy:
        console.print(f"accuracy: not measured {accuracy.get('unavailable', '')}")
        return
    texts = accuracy["texts"]
    table = Table(
        title=f"against numpy float32 on real text: {texts['chunks']} chunks of the Q&A set,"
        f" {texts['short']} questions and short texts; retrieval: {texts['questions']}"
        " questions against every chunk"
    )
    columns = {
        "cosine, chunks: mean / min": ("cosine_chunks_mean", "cosine_chunks_min"),
        "cosine, short: mean / min": ("cosine_short_mean", "cosine_short_min"),
        "document recall @1 / @5": ("recall_at_1", "recall_at_5"),
        "same top chunk / top-5 overlap": ("same_top1_chunk", "top5_overlap"),
    }
    for column in ["variant (embedder name)", *columns]:
        table.add_column(column, justify="right")

    def cell(row: dict[str, Any], keys: tuple[str, str]) -> str:
        return " / ".join(f"{row[k]:.4f}" if k in row else "-" for k in keys)

    ref = accuracy["reference"]
    table.add_row("numpy fp32", *[cell(ref, keys) for keys in columns.values()])
    for variant, row in accuracy.items():
        if variant not in ("texts", "reference"):
            label = f"{variant} ({row['name']})"
            table.add_row(label, *[cell(row, keys) for keys in columns.values()])
    console.print(table)
