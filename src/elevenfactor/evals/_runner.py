"""Running an eval from a process (the CLI, a CI job): submit the eval run — or find the
unfinished one these same arguments started, and resume it — execute it with a worker in this
process until it ends, reporting progress from its journal, and read its stored result.

``resume``: ``auto`` (default) continues an unfinished eval run of the same owner whose input
is byte for byte the one these arguments make (same suite version, overrides, tags, repeats
and concurrency), else starts a new one; ``new`` always starts one; a run id continues (or
shows, if it has ended) that eval run.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from elevenfactor.config import ProjectConfig, Settings
from elevenfactor.errors import RequestError
from elevenfactor.evals._program import EvalProgram
from elevenfactor.evals._program_input import EVAL_PROGRAM, EvalInput, eval_tags
from elevenfactor.evals._results import SuiteResult
from elevenfactor.evals._store import EvalRecord, get_result
from elevenfactor.governance import Principal
from elevenfactor.runtime._codec import encode
from elevenfactor.runtime._runs import RunInfo, get_run, submit_run
from elevenfactor.runtime._service import build_runtime, build_worker, running
from elevenfactor.store import Store, blob_hash

__all__ = [
    "EvalOutcome",
    "cases_done",
    "execute_eval",
    "find_unfinished",
    "precheck",
    "start_eval",
]

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class EvalOutcome:
    """How an eval run ended: the run, its stored result (None when the run failed before
    storing one) and whether this process resumed it."""

    run: RunInfo
    record: EvalRecord | None
    resumed: bool

    @property
    def result(self) -> SuiteResult | None:
        """The ``SuiteResult``, when stored."""
        return self.record.result if self.record is not None else None

    @property
    def error(self) -> dict[str, Any] | None:
        """The run's error (``{code, message}``) when it did not succeed."""
        return self.run.error_dict() if self.run.status != "succeeded" else None


async def precheck(
    settings: Settings, project: ProjectConfig, store: Store, payload: dict[str, Any]
) -> None:
    """Raise the error an eval run of ``payload`` would fail with at once — an unknown
    target, model or prompt version, a custom scorer that does not load — before anything is
    submitted."""
    runtime = build_runtime(settings, project)
    try:
        inp = EvalInput.parse(payload)
        program = runtime.programs.get(EVAL_PROGRAM)
        if isinstance(program, EvalProgram):
            program.check(inp)
        target = inp.suite.target
        if target.kind == "workflow":
            runtime.programs.get(target.name)
        if inp.prompt is not None and runtime.deps is not None:
            prompts = runtime.deps.prompts
            if prompts is None:
                raise RequestError("--prompt: the project has no prompts", param="prompt")
            await prompts.resolve(inp.prompt, store)
    finally:
        await runtime.aclose()


async def find_unfinished(store: Store, principal: Principal, payload: Any) -> str | None:
    """The newest unfinished eval run of ``principal`` whose input is ``payload``."""
    scope, params = principal.scope()
    row = await store.fetchone(
        "SELECT id FROM runs WHERE program = ? AND input_hash = ? AND parent_id IS NULL"
        f" AND status NOT IN ('succeeded', 'failed', 'cancelled') AND {scope}"
        " ORDER BY created_at DESC LIMIT 1",
        (EVAL_PROGRAM, blob_hash(encode(payload)), *params),
    )
    return str(row[0]) if row is not None else None


async def start_eval(
    store: Store, principal: Principal, payload: dict[str, Any], resume: str = "auto"
) -> tuple[str, bool]:
    """The eval run to execute for ``payload`` and whether it is resumed (see the module
    docstring for ``resume``)."""
    if resume not in ("auto", "new"):
        info = await get_run(store, resume, principal)
        if info.program != EVAL_PROGRAM:
            raise RequestError(
                f"run {resume} is a run of {info.program}, not an eval run",
                code="invalid_value",
                param="resume",
            )
        return info.id, True
    if resume == "auto":
        found = await find_unfinished(store, principal, payload)
        if found is not None:
            return found, True
    suite_id = str(payload["suite"]["id"])
    rid = await submit_run(
        store,
        EVAL_PROGRAM,
        payload,
        run_id=f"eval_{uuid.uuid4().hex}",
        owner=principal,
        tags=eval_tags(suite_id),
        release_id=(payload.get("overrides") or {}).get("release"),  # the release evaluated
    )
    return rid, False


async def cases_done(store: Store, run_id: str) -> int:
    """Case runs of an eval run finished so far, from its journal: scored cases and cases
    whose target failed."""
    row = await store.fetchone(
        "SELECT COUNT(*) FROM journal WHERE run_id = ? AND ((kind = 'eval' AND name = 'score')"
        " OR (status = 'failed' AND kind IN ('subrun', 'model')))",
        (run_id,),
    )
    return int(row[0]) if row is not None else 0


async def execute_eval(
    settings: Settings,
    project: ProjectConfig,
    store: Store,
    principal: Principal,
    run_id: str,
    *,
    progress: Progress | None = None,
    resumed: bool = False,
    poll: float = 0.2,
) -> EvalOutcome:
    """Execute the eval run ``run_id`` (and its child runs) with a worker in this process
    until it ends; ``progress`` is told the case runs done as they change."""
    info = await get_run(store, run_id, principal)
    if not info.finished:
        async with running(settings, project, store) as runtime:
            worker = build_worker(store, settings, project, runtime.programs)
            task = asyncio.create_task(worker.serve())
            try:
                last = -1
                while not info.finished:
                    if task.done():
                        task.result()  # the worker died: raise its error
                    done = await cases_done(store, run_id)
                    if progress is not None and done != last:
                        progress(done)
                        last = done
                    await asyncio.sleep(poll)
                    info = await get_run(store, run_id, principal)
            finally:
                await worker.shutdown(settings.shutdown_timeout)
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    if progress is not None:
        progress(await cases_done(store, run_id))
    record = None
    with contextlib.suppress(RequestError):
        record = await get_result(store, principal, run_id)
    return EvalOutcome(info, record, resumed)
