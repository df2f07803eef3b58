"""Wiring a worker from settings and the project file, for ``serve`` and ``elevenfactor worker``."""

from __future__ import annotations

from pathlib import Path

from elevenfactor.config import ProjectConfig, Settings
from elevenfactor.runtime._loader import load_programs
from elevenfactor.runtime._programs import Programs
from elevenfactor.runtime._webhooks import webhook_hook
from elevenfactor.runtime._worker import Worker, WorkerOptions, queues_from
from elevenfactor.store import Store

__all__ = ["build_worker", "project_programs"]


def project_programs(settings: Settings, project: ProjectConfig) -> Programs:
    """The programs the project file names, imported relative to the project directory."""
    source = settings.resolved_config_file()
    base = source.resolve().parent if source is not None else Path.cwd()
    return load_programs(project.programs, base=base)


def build_worker(
    store: Store,
    settings: Settings,
    project: ProjectConfig,
    programs: Programs | None = None,
    *,
    queues: list[str] | None = None,
    concurrency: int | None = None,
) -> Worker:
    """A worker over ``store`` configured from the environment and the project file."""
    options = WorkerOptions(
        queues=queues_from(queues or settings.worker_queues.split(",")),
        concurrency=concurrency or settings.worker_concurrency,
        lease_seconds=settings.lease_seconds,
        queue_limits={
            name: q.concurrency for name, q in project.queues.items() if q.concurrency is not None
        },
    )
    hooks = {}
    if settings.approval_webhook:
        hooks["approval_pending"] = webhook_hook(settings.approval_webhook)
    return Worker(store, programs or project_programs(settings, project), options, hooks=hooks)
