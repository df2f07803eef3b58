"""``ModelRegistry``: builds providers, wrapped deployments and routes from the project file."""

from __future__ import annotations

from dataclasses import dataclass, field

from elevenfactor.config import DeploymentConfig, ProjectConfig, RouteConfig
from elevenfactor.errors import ConfigError, ModelNotFound
from elevenfactor.models._breaker import CircuitBreaker
from elevenfactor.models._deployment import Deployment
from elevenfactor.models._failover import Failover, Weighted
from elevenfactor.models._protocol import Model
from elevenfactor.models._provider import Provider, load_provider
from elevenfactor.models._retry import Retry

__all__ = ["ModelRegistry", "Resolved", "wrap_deployment"]


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a requested model name resolved to."""

    route: str
    model: Model
    kind: str  # "route" | "model"


def wrap_deployment(raw: Model, provider: str, config: DeploymentConfig) -> Model:
    """The standard stack for one deployment: Retry(CircuitBreaker(Deployment(raw)))."""
    model: Model = Deployment(
        raw,
        provider=provider,
        model_id=config.model,
        timeout=config.timeout,
        first_token_timeout=config.first_token_timeout,
    )
    if config.breaker is not None:
        model = CircuitBreaker(model, config.breaker)
    if config.retry.attempts > 1:
        model = Retry(model, config.retry)
    return model


@dataclass
class ModelRegistry:
    """Every configured deployment and route, ready to call."""

    project: ProjectConfig
    providers: dict[str, Provider] = field(default_factory=dict)
    deployments: dict[str, Model] = field(default_factory=dict)
    routes: dict[str, Model] = field(default_factory=dict)

    @classmethod
    def from_project(cls, project: ProjectConfig) -> ModelRegistry:
        """Instantiate providers and build the wrapper stacks. Opens no connections."""
        reg = cls(project)
        for name, pconf in project.providers.items():
            reg.providers[name] = load_provider(name, pconf)
        for name, dconf in project.models.items():
            raw = reg.providers[dconf.provider].deployment(name, dconf)
            reg.deployments[name] = wrap_deployment(raw, dconf.provider, dconf)
        for name in project.routes:
            reg._build_route(name, set())
        return reg

    def _target(self, name: str, seen: set[str]) -> Model:
        if name in self.deployments:
            return self.deployments[name]
        return self._build_route(name, seen)

    def _build_route(self, name: str, seen: set[str]) -> Model:
        if name in self.routes:
            return self.routes[name]
        if name in seen:
            raise ConfigError(
                f"route cycle through {name!r}",
                key=f"routes.{name}",
                expected="weights that do not lead back to the route itself",
            )
        seen.add(name)
        conf: RouteConfig = self.project.routes[name]
        model: Model
        if conf.chain is not None:
            model = Failover(name, [self.deployments[m] for m in conf.chain], conf.failover)
        else:
            assert conf.weights is not None
            model = Weighted(
                name, [(self._target(t.model, seen), t.weight) for t in conf.weights], conf.failover
            )
        self.routes[name] = model
        return model

    def names(self) -> list[str]:
        """Every name a client may ask for: routes first, then deployments."""
        return [*self.routes, *self.deployments]

    def resolve(self, name: str | None, tags: list[str] | tuple[str, ...] = ()) -> Resolved:
        """The model for a requested name (a route or a deployment) and the request's tags.

        Tag rules of a route are checked in order; the first whose tags are all present wins.
        """
        if not name:
            name = self.project.default_route
        seen: list[str] = []
        while (conf := self.project.routes.get(name)) is not None:
            rule = next((r for r in conf.rules if set(r.tags) <= set(tags)), None)
            if rule is None:
                return Resolved(name, self.routes[name], "route")
            seen.append(name)
            if rule.use in seen:
                raise ConfigError(
                    f"tag rules loop: {' -> '.join([*seen, rule.use])}",
                    key=f"routes.{name}.rules",
                    expected="rules that end at a model or route",
                )
            name = rule.use
        if name in self.routes:
            return Resolved(name, self.routes[name], "route")
        if name in self.deployments:
            return Resolved(name, self.deployments[name], "model")
        raise ModelNotFound(
            f"The model {name!r} does not exist",
            param="model",
            hint="GET /v1/models lists the configured routes and models",
        )

    async def aclose(self) -> None:
        """Close every provider."""
        for provider in self.providers.values():
            await provider.aclose()
