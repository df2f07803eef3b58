"""Which deployments a route or deployment name sends requests to, and what each offers: its
context window, its output cap, its GGUF file when it runs locally."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from elevenfactor.config import DeploymentConfig, ProjectConfig
from elevenfactor.errors import ConfigError, ModelNotFound

__all__ = [
    "LOCAL_DEFAULT_N_CTX",
    "ModelBudget",
    "budget_for",
    "deployments_of",
    "local_model_path",
    "window_of",
]

LOCAL_DEFAULT_N_CTX = 8192
"""The ``local`` provider's context size when neither ``n_ctx`` nor ``context_window`` is set."""


def deployments_of(project: ProjectConfig, model: str) -> list[tuple[str, DeploymentConfig]]:
    """The deployments a request to ``model`` may reach on its normal path: the deployment
    itself, a route's failover chain, or its weighted targets (routes followed). Routing rules
    and ``escalate_to`` are left out: they send requests elsewhere on purpose."""
    if model not in project.models and model not in project.routes:
        known = sorted({*project.models, *project.routes})
        raise ModelNotFound(
            f"no model or route named {model!r}",
            hint="known: " + (", ".join(known) if known else "(none configured)"),
        )
    out: dict[str, DeploymentConfig] = {}
    seen: set[str] = set()
    stack = [model]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in project.models:
            out[name] = project.models[name]
            continue
        route = project.routes.get(name)
        if route is None:
            continue
        stack.extend(reversed(route.chain or [t.model for t in route.weights or []]))
    return list(out.items())


def local_model_path(project: ProjectConfig, deployment: str) -> Path | None:
    """The GGUF file a ``local`` deployment runs (None for other providers)."""
    dep = project.models[deployment]
    provider = project.providers.get(dep.provider)
    if provider is None or provider.type != "local":
        return None
    raw = provider.options.get("model_path")
    if raw:
        return Path(str(raw)).expanduser()
    from elevenfactor.models.providers.local import default_model_path

    return default_model_path()


def window_of(project: ProjectConfig, deployment: str) -> int | None:
    """A deployment's context window: ``context_window``, or for a ``local`` one the provider's
    ``n_ctx`` (which wins, as in the provider), else 8192; None when unknown."""
    dep = project.models[deployment]
    provider = project.providers.get(dep.provider)
    if provider is not None and provider.type == "local":
        raw = provider.options.get("n_ctx")
        if raw:
            try:
                return int(raw)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"invalid value {raw!r}",
                    source=f"providers.{dep.provider}",
                    key="options.n_ctx",
                    expected="a whole number of tokens",
                ) from None
        return dep.context_window or LOCAL_DEFAULT_N_CTX
    return dep.context_window


@dataclass(frozen=True, slots=True)
class ModelBudget:
    """The window a request to a route or deployment must fit, and the output kept free."""

    window: int
    reserved_output: int

    @property
    def budget(self) -> int:
        """Tokens left for the prompt."""
        return self.window - self.reserved_output


def budget_for(
    project: ProjectConfig,
    model: str,
    *,
    reserve_output: int | None = None,
    max_tokens: int | None = None,
) -> ModelBudget:
    """The smallest window among the deployments ``model`` may reach (``deployments_of``), and
    the output to reserve: the request's ``max_tokens``, else ``reserve_output`` (the agent's
    ``context.reserve_output``), else the largest ``params.max_tokens`` or ``max_output_tokens``
    of those deployments, else a quarter of the window (at most 4096)."""
    deployments = deployments_of(project, model)
    windows = [w for name, _ in deployments if (w := window_of(project, name)) is not None]
    if not windows:
        first = deployments[0][0]
        raise ConfigError(
            f"the context window of {model!r} is unknown",
            source=f"models.{first}",
            key="context_window",
            expected="the model's context window in tokens",
        )
    window = min(windows)
    reserved = max_tokens or reserve_output
    if reserved is None:
        caps = [
            int(cap)
            for _, dep in deployments
            if (cap := dep.params.get("max_tokens") or dep.max_output_tokens)
        ]
        reserved = max(caps) if caps else min(4096, window // 4)
    return ModelBudget(window, reserved)
