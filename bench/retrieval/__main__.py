"""``python -m bench.retrieval``: retrieval query latency and recall against exact search, and
ingestion throughput, on the embedded backend (SQLite + usearch) and on pgvector.

1. **queries** at 10k and 100k chunks (``--quick``: 2k) on each backend, with synthetic vectors
   (see ``data.py``): p50/p99 of the approximate vector search (top 10) and its recall@10
   against exact search; side by side, in the same run, exact (brute-force) search: a numpy
   scan of every vector in memory (the floor of any brute force), usearch's exact SIMD scan of
   the same index (embedded), a scan of the table without its index (pgvector, on a subset of
   the queries); and hybrid (BM25 + vector + RRF, the full ``search`` path without the query's
   embedding) and BM25-only search, p50/p99; BM25's recall@10 against exact BM25 (the version's
   postings scored in SQL, as for a version built before the BM25 lists, also timed).
2. **index writes** (same runs): chunks written per second through the backend (rows, BM25
   postings and vectors) and the time to build the BM25 lists and the vector index: what
   ingestion costs besides embedding.
3. **ingestion** with the real local embedder (all-MiniLM-L6-v2): ``build_index`` over a folder of
   Markdown documents; chunks per second end to end, and the share spent embedding.

Targets (2 cores): p50 <= 10 ms at 100k chunks with recall@10 >= 0.95 (the vector search;
the hybrid search, with BM25's recall@10); ingestion >= 300 chunks/s. Run nothing else
meanwhile (the bench notes other benchmarks it sees running).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from bench.retrieval.bm25 import bench_bm25
from bench.retrieval.data import DIM, Synthetic, make_markdown_corpus, synthetic
from bench.stats import summarize
from elevenfactor.config._retrieval import IndexConfig
from elevenfactor.context._index import create_index, publish_version, start_version
from elevenfactor.context._index_build import build_index
from elevenfactor.context._index_embedded import EmbeddedBackend
from elevenfactor.context._index_pg import PgVectorBackend
from elevenfactor.context._index_sql import SqlBackend
from elevenfactor.context._retrieve import Mode, Retrieval, search
from elevenfactor.store import Store, migrate, open_store

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
ORG = "org_default"


class LookupEmbedder:
    """Returns each query's stored synthetic vector (the model is not what is measured)."""

    name = "bench/synthetic"
    dim = DIM

    def __init__(self, data: Synthetic) -> None:
        self.by_text = dict(zip(data.query_texts, data.queries, strict=True))

    async def embed(self, texts: Sequence[str]) -> Any:
        return np.stack([self.by_text[t] for t in texts])


class TimedEmbedder:
    """Wraps an embedder and adds up the seconds spent in ``embed``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.seconds = 0.0

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return list(self.inner.count_tokens(texts))

    async def embed(self, texts: Sequence[str]) -> Any:
        start = time.perf_counter()
        try:
            return await self.inner.embed(texts)
        finally:
            self.seconds += time.perf_counter() - start


def _ms(values: list[float]) -> dict[str, float]:
    return {k: (v * 1000 if k != "n" else v) for k, v in summarize(values).items()}


async def bench_queries(
    store: Store,
    backend: SqlBackend,
    n: int,
    n_queries: int,
    kind: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    log(f"{backend.kind} {n:,} {kind}: generating")
    data = synthetic(n, n_queries, kind)
    info = await create_index(
        store, ORG, f"bench-{backend.kind}-{n}-{kind}", backend=backend.kind,
        location=backend.location, embedder=LookupEmbedder.name, dim=DIM,
        settings={"embedder_ref": "bench"}, source=None,
    )  # fmt: skip
    version = await start_version(
        store, info.id, embedder=LookupEmbedder.name, dim=DIM, settings={"embedder_ref": "bench"}
    )
    await backend.prepare(info.id, version, DIM)
    log(f"{backend.kind} {n:,}: writing")
    start = time.perf_counter()
    row = 0
    for g in range(0, len(data.docs), 50):
        items = []
        for doc, chunks in data.docs[g : g + 50]:
            items.append((doc, chunks, data.vectors[row : row + len(chunks)]))
            row += len(chunks)
        await backend.write_documents(info.id, version, ORG, items)
    write_s = time.perf_counter() - start
    log(f"{backend.kind} {n:,}: building the BM25 lists and the vector index")
    t0 = time.perf_counter()
    counts = await backend.finalize(info.id, version, DIM)
    finalize_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    await backend.build_bm25(info.id, version)  # again, alone: what the lists cost
    lists_s = time.perf_counter() - t0
    await publish_version(
        store, info, version, counts=counts | {"embedded": 0, "reused": 0}, skipped=[]
    )
    log(f"{backend.kind} {n:,}: querying")
    truth: list[set[int]] = []
    brute: list[float] = []
    for q in data.queries:
        t0 = time.perf_counter()
        sims = data.vectors @ q
        top = np.argpartition(-sims, 10)[:10]
        top = top[np.argsort(-sims[top])]
        brute.append(time.perf_counter() - t0)
        truth.append({int(i) + 1 for i in top})
    for q in data.queries[:10]:  # warm up: open the files, map the pages, prepare statements
        await backend.vector_search(info.id, version, ORG, q, 10, {}, total=n)
    ann: list[float] = []
    recall: list[float] = []
    for q, exact in zip(data.queries, truth, strict=True):
        t0 = time.perf_counter()
        found = await backend.vector_search(info.id, version, ORG, q, 10, {}, total=n)
        ann.append(time.perf_counter() - t0)
        recall.append(len({k for k, _ in found} & exact) / 10)
    backend_exact: list[float] = []
    exact_recall: list[float] = []
    for q, exact in list(zip(data.queries, truth, strict=True))[: min(20, n_queries)]:
        if isinstance(backend, EmbeddedBackend):
            view = backend._view(info.id, version)
            t0 = time.perf_counter()
            found_keys = {int(k) for k in view.search(q, 10, exact=True).keys}
            backend_exact.append(time.perf_counter() - t0)
        else:
            t0 = time.perf_counter()
            found = await backend._exact(info.id, version, ORG, q, 10, {})
            backend_exact.append(time.perf_counter() - t0)
            found_keys = {k for k, _ in found}
        exact_recall.append(len(found_keys & exact) / 10)
    bm25 = await bench_bm25(backend, info.id, version, data.query_texts, n, counts)
    retrieval = Retrieval(store, backend, None)
    embedder = LookupEmbedder(data)
    modes: dict[str, list[float]] = {"hybrid": [], "bm25": [], "vector (search())": []}
    ref = retrieval.index(info.name)
    for text in data.query_texts:
        for label in modes:
            mode = cast(Mode, "vector" if label.startswith("vector") else label)
            t0 = time.perf_counter()
            await search(ref, text, org_id=ORG, k=10, mode=mode, embedder=embedder)
            modes[label].append(time.perf_counter() - t0)
    await backend.drop_index(info.id)
    return {
        "backend": backend.kind,
        "vectors": kind,
        "chunks": n,
        "queries": n_queries,
        "write_chunks_per_s": n / write_s,
        "write_s": write_s,
        "vector_index_build_s": finalize_s - lists_s,
        "bm25_lists_build_s": lists_s,
        "ann_ms": _ms(ann),
        "recall_at_10": float(np.mean(recall)),
        "brute_force_numpy_ms": _ms(brute),
        "brute_force_backend_ms": _ms(backend_exact),
        "brute_force_backend_kind": "usearch exact scan"
        if backend.kind == "embedded"
        else "SQL scan without the HNSW index",
        "brute_force_backend_recall": float(np.mean(exact_recall)),
        "search_ms": {label: _ms(v) for label, v in modes.items()},
        **bm25,
    }


async def bench_ingest(
    store: Store, backend: SqlBackend, copies: int, workdir: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    from elevenfactor.context._embed_local import LocalEmbedder

    folder = workdir / f"corpus-{backend.kind}"
    files = make_markdown_corpus(folder, copies)
    embedder = TimedEmbedder(LocalEmbedder())
    await embedder.inner.embed(["warm up the model"])
    embedder.seconds = 0.0
    retrieval = Retrieval(store, backend, None)
    log(f"{backend.kind}: ingesting {files} documents with all-MiniLM-L6-v2")
    report = await build_index(
        retrieval, f"ingest-{backend.kind}", IndexConfig(source=str(folder)), source=folder,
        org_id=ORG, embedder=embedder,
    )  # fmt: skip
    rest = report.seconds - embedder.seconds
    return {
        "backend": backend.kind,
        "documents": report.documents,
        "chunks": report.chunks,
        "seconds": report.seconds,
        "chunks_per_s": report.chunks / report.seconds,
        "embedding_s": embedder.seconds,
        "embedding_chunks_per_s": report.chunks / embedder.seconds,
        "rest_s": rest,
        "rest_chunks_per_s": report.chunks / rest if rest > 0 else None,
    }


def _pgserver(workdir: Path) -> tuple[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

        server = get_server(workdir / "pgdata", "delete")
    url = server.get_uri()
    return url, server


def _others() -> list[str]:
    out = subprocess.run(["pgrep", "-af", "bench\\."], capture_output=True, text=True).stdout
    me = str(os.getpid())
    return [
        line for line in out.splitlines() if not line.startswith(me) and "retrieval" not in line
    ]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    os.chmod(workdir, 0o755)
    server = None
    results: dict[str, Any] = {"queries": [], "ingestion": []}
    try:
        store = await open_store(f"sqlite:///{workdir}/main.db")
        await migrate(store)
        backends: list[Callable[[], SqlBackend]] = []
        if "embedded" in args.backends:
            backends.append(lambda: EmbeddedBackend(workdir / "indexes"))
        if "pgvector" in args.backends:
            url = args.pg
            if url is None:
                log("starting pgserver (PostgreSQL 16 + pgvector)")
                url, server = _pgserver(workdir)
            backends.append(lambda: PgVectorBackend(url))
        for make in backends:
            for n in args.sizes:
                for kind in args.vectors:
                    backend = make()
                    try:
                        results["queries"].append(
                            await bench_queries(store, backend, n, args.queries, kind, log)
                        )
                    finally:
                        await backend.close()
            if args.copies:
                backend = make()
                try:
                    results["ingestion"].append(
                        await bench_ingest(store, backend, args.copies, workdir, log)
                    )
                finally:
                    await backend.close()
        await store.close()
    finally:
        if server is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def _targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for q in results["queries"]:
        if q["chunks"] >= 100_000:
            out.append({
                "target": f"{q['backend']} ({q['vectors']} vectors) p50 <= 10 ms at 100k,"
                " recall@10 >= 0.95",
                "p50_ms": q["ann_ms"]["p50"], "recall": q["recall_at_10"],
                "met": q["ann_ms"]["p50"] <= 10 and q["recall_at_10"] >= 0.95,
            })  # fmt: skip
            hybrid = q["search_ms"]["hybrid"]["p50"]
            out.append({
                "target": f"{q['backend']} ({q['vectors']} vectors) hybrid p50 <= 10 ms at 100k,"
                " BM25 recall@10 >= 0.95",
                "p50_ms": hybrid, "recall": q["bm25_recall_at_10"],
                "met": hybrid <= 10 and q["bm25_recall_at_10"] >= 0.95,
            })  # fmt: skip
    for i in results["ingestion"]:
        out.append({
            "target": f"{i['backend']} ingestion >= 300 chunks/s",
            "chunks_per_s": i["chunks_per_s"], "met": i["chunks_per_s"] >= 300,
        })  # fmt: skip
    return out


def _print(results: dict[str, Any]) -> None:
    print("\nqueries (ms; synthetic vectors)")
    print(
        f"{'backend':9} {'vectors':9} {'chunks':>7} {'ANN p50':>8} {'p99':>7} {'recall':>7}"
        f" {'brute np':>9} {'brute be':>9} {'hybrid':>7} {'p99':>7} {'bm25':>7} {'p99':>7}"
        f" {'recall':>7} {'bm25 sql':>8} {'write/s':>8} {'index s':>8}"
    )
    for q in results["queries"]:
        print(
            f"{q['backend']:9} {q['vectors']:9} {q['chunks']:>7} {q['ann_ms']['p50']:>8.3f} "
            f"{q['ann_ms']['p99']:>7.3f} {q['recall_at_10']:>7.3f} "
            f"{q['brute_force_numpy_ms']['p50']:>9.3f} {q['brute_force_backend_ms']['p50']:>9.3f} "
            f"{q['search_ms']['hybrid']['p50']:>7.3f} {q['search_ms']['hybrid']['p99']:>7.3f} "
            f"{q['search_ms']['bm25']['p50']:>7.3f} {q['search_ms']['bm25']['p99']:>7.3f} "
            f"{q['bm25_recall_at_10']:>7.3f} {q['bm25_postings_sql_ms']['p50']:>8.3f} "
            f"{q['write_chunks_per_s']:>8.0f} {q['vector_index_build_s']:>8.1f}"
        )
    if results["ingestion"]:
        print("\ningestion with all-MiniLM-L6-v2")
        for i in results["ingestion"]:
            print(
                f"{i['backend']:9} {i['chunks']} chunks in {i['seconds']:.1f}s:"
                f" {i['chunks_per_s']:.0f} chunks/s (embedding {i['embedding_s']:.1f}s ="
                f" {i['embedding_chunks_per_s']:.0f} chunks/s; the rest"
                f" {i['rest_chunks_per_s'] or 0:.0f} chunks/s)"
            )
    print("\ntargets")
    for t in results["targets"]:
        print(f"  {'met ' if t['met'] else 'MISS'} {t['target']}: {t}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.retrieval", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2k chunks, 50 queries, 2 copies.")
    parser.add_argument("--sizes", default=None, help="Chunk counts, e.g. 10000,100000.")
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--copies", type=int, default=None, help="Copies of the Q&A corpus.")
    parser.add_argument("--backends", default="embedded,pgvector")
    parser.add_argument(
        "--vectors", default="lowrank,isotropic", help="Synthetic shapes (see data.py)."
    )
    parser.add_argument("--pg", default=None, help="A PostgreSQL URL with pgvector.")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (
        [2000] if args.quick else [10_000, 100_000]
    )  # fmt: skip
    args.queries = args.queries or (50 if args.quick else 200)
    args.copies = args.copies if args.copies is not None else (2 if args.quick else 20)
    args.backends = args.backends.split(",")
    args.vectors = args.vectors.split(",")
    others = _others()
    load = os.getloadavg()
    if others:
        print(f"warning: other benchmarks are running: {others}")
    started = dt.datetime.now(dt.UTC)
    results = asyncio.run(main_async(args))
    results["targets"] = _targets(results)
    results["meta"] = {
        "started": started.isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "args": {k: v for k, v in vars(args).items() if k != "pg"},
        "other_benchmarks": others,
        "load_average_at_start": load,
        "load_average_at_end": os.getloadavg(),
        "vectors": "synthetic for the query runs: lowrank (embedding-like) and isotropic (hard"
        " case), 384 dimensions; see bench/retrieval/data.py",
    }
    _print(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"retrieval-{started.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
