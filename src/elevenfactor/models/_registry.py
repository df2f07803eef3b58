"""``ModelRegistry``: builds providers, wrapped deployments and routes from the project file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from elevenfactor.config import DeploymentConfig, LimitsConfig, ProjectConfig, RouteConfig
from elevenfactor.errors import ConfigError, ModelNotFound
from elevenfactor.models._breaker import CircuitBreaker
from elevenfactor.models._cache import ResponseCache
from elevenfactor.models._cache_backends import CacheBackend, MemoryCache
from elevenfactor.models._deployment import Deployment
from elevenfactor.models._failover import Failover, Weighted
from elevenfactor.models._limits import Limiter
from elevenfactor.models._messages import Message, ModelSettings
from elevenfactor.models._protocol import Model
from elevenfactor.models._provider import Provider, load_provider
from elevenfactor.models._ratelimit import limit_deployment
from elevenfactor.models._retry import Retry
from elevenfactor.models._routing import (
    Deferred,
    Escalate,
    cache_defaults,
    load_validator,
    model_version,
    rule_matches,
)
from elevenfactor.models._semantic_cache import Embedders, build_semantic
from elevenfactor.models._semantic_index import SemanticIndex
from elevenfactor.store import Store

__all__ = ["ModelRegistry", "Resolved", "wrap_deployment"]


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a requested model name resolved to."""

    route: str
    model: Model
    kind: str  # "route" | "model"


def wrap_deployment(
    raw: Model,
    provider: str,
    config: DeploymentConfig,
    *,
    limits: LimitsConfig | None = None,
    limiter: Limiter | None = None,
) -> Model:
    """The standard stack for one deployment: Retry(CircuitBreaker(Deployment(raw))), inside a
    ``DeploymentLimiter`` when ``limits`` limit it or the provider reports rate-limit headers
    (``limiter``: the shared one; None: one of its own, in-process)."""
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
    return limit_deployment(
        model, raw, limits=limits, limiter=limiter, provider=provider, model_id=config.model
    )


@dataclass
class ModelRegistry:
    """Every configured deployment and route, ready to call."""

    project: ProjectConfig
    providers: dict[str, Provider] = field(default_factory=dict)
    deployments: dict[str, Model] = field(default_factory=dict)
    routes: dict[str, Model] = field(default_factory=dict)
    entries: dict[str, Model] = field(default_factory=dict)
    """What ``resolve`` hands out per name: the route or deployment inside its response cache."""
    _deferred: dict[str, Model] = field(default_factory=dict, repr=False)
    cache: CacheBackend | None = None
    """Where the response cache keeps answers; closed with the registry."""
    semantic: SemanticIndex | None = None
    """The answers of the routes' semantic caches (in the store), if any route has one."""

    @classmethod
    def from_project(
        cls,
        project: ProjectConfig,
        *,
        limiter: Limiter | None = None,
        cache: CacheBackend | None = None,
        store: Store | None = None,
        embedders: Embedders | None = None,
    ) -> ModelRegistry:
        """Instantiate providers and build the wrapper stacks. Opens no connections.

        ``limiter`` enforces ``limits.deployments`` (shared through Redis when it is); None:
        each deployment with limits gets an in-process one. ``cache`` keeps the response cache
        (``open_response_cache``: Redis or the store); None: process memory. Routes with a
        ``cache.semantic`` keep those answers in ``store`` (whatever ``cache`` is) and embed
        with ``embedders`` (``open_embedders``; ``ConfigError`` if a route's is missing);
        without a ``store`` (a library user, ``config check``) they have exact caches only."""
        reg = cls(project)
        for name, pconf in project.providers.items():
            reg.providers[name] = load_provider(name, pconf)
        for name, dconf in project.models.items():
            raw = reg.providers[dconf.provider].deployment(name, dconf)
            reg.deployments[name] = wrap_deployment(
                raw, dconf.provider, dconf, limits=project.limits, limiter=limiter
            )
        for name in project.routes:
            reg._build_route(name, set())
        backend = reg.cache = cache if cache is not None else MemoryCache()
        semantic = any(r.cache is not None and r.cache.semantic for r in project.routes.values())
        if semantic and store is not None:
            reg.semantic = SemanticIndex(store)
        for name, model in [*reg.routes.items(), *reg.deployments.items()]:
            route = project.routes.get(name)
            config = route.cache if route is not None else None
            version = model_version(project, name)
            reg.entries[name] = ResponseCache(
                model,
                backend,
                config=config,
                model_version=version,
                defaults=cache_defaults(project, name),
                semantic=build_semantic(name, config, version, reg.semantic, embedders),
            )
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
                expected="weights and escalate_to that do not lead back to the route itself",
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
        if conf.escalate_to is not None:
            validator = (
                load_validator(conf.validator, f"routes.{name}.validator")
                if conf.validator
                else None
            )
            model = Escalate(name, model, self._target(conf.escalate_to, seen), validator)
        self.routes[name] = model
        return model

    def names(self) -> list[str]:
        """Every name a client may ask for: routes first, then deployments."""
        return [*self.routes, *self.deployments]

    def resolve(
        self,
        name: str | None,
        tags: Sequence[str] = (),
        *,
        messages: Sequence[Message] | None = None,
        settings: ModelSettings | None = None,
    ) -> Resolved:
        """The model for a requested name (a route or a deployment) and the request.

        A route's rules are checked in order; the first whose conditions all hold wins. Rules
        on the prompt's size or tools need ``messages`` and ``settings``: without them, a route
        that reaches such a rule resolves to a model that applies the rules per request.
        """
        if not name:
            name = self.project.default_route
        seen: list[str] = []
        present = set(tags)
        while (conf := self.project.routes.get(name)) is not None:
            rule = None
            for candidate in conf.rules:
                if not present.issuperset(candidate.tags):
                    continue
                if candidate.by_content and (messages is None or settings is None):
                    return Resolved(name, self._deferred_route(name), "route")
                if rule_matches(candidate, tags, messages, settings):
                    rule = candidate
                    break
            if rule is None:
                return Resolved(name, self.entries.get(name) or self.routes[name], "route")
            seen.append(name)
            if rule.use in seen:
                raise ConfigError(
                    f"routing rules loop: {' -> '.join([*seen, rule.use])}",
                    key=f"routes.{name}.rules",
                    expected="rules that end at a model or route",
                )
            name = rule.use
        if name in self.routes:
            return Resolved(name, self.entries.get(name) or self.routes[name], "route")
        if name in self.deployments:
            return Resolved(name, self.entries.get(name) or self.deployments[name], "model")
        raise ModelNotFound(
            f"The model {name!r} does not exist",
            param="model",
            hint="GET /v1/models lists the configured routes and models",
        )

    def _deferred_route(self, name: str) -> Model:
        model = self._deferred.get(name)
        if model is None:
            targets = [name, *(r.use for r in self.project.routes[name].rules)]
            model = self._deferred[name] = Deferred(
                self, name, [self.routes.get(t) or self.deployments[t] for t in targets]
            )
        return model

    async def aclose(self) -> None:
        """Close every provider, and the response cache's connections."""
        for provider in self.providers.values():
            await provider.aclose()
        if self.cache is not None:
            await self.cache.aclose()
