"""Online evaluation rules made ready to score: each rule's scorers parsed (a ``suite:``'s
``defaults.expect`` first, then the rule's own ``expect``), its judge route resolved, custom
scorers loaded — when the runtime is built, so a broken rule is a configuration error at
start (and in ``config check``), never a surprise in a scoring run."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from elevenfactor.config import OnlineRule, ProjectConfig
from elevenfactor.errors import ConfigError
from elevenfactor.evals._load import load_suite
from elevenfactor.evals._observed import ScoreContext, Scorer
from elevenfactor.evals._online_specs import parse_scorer_specs
from elevenfactor.evals._scorers_ext import CustomScorer, JudgeScorer

__all__ = ["PreparedRule", "prepare_rules"]


@dataclass(frozen=True)
class PreparedRule:
    """A rule with its scorers, its judges' default route and its suite (id and version)."""

    rule: OnlineRule
    scorers: tuple[Scorer, ...]
    judge_route: str | None
    suite: str | None = None
    suite_version: str | None = None

    @property
    def name(self) -> str:
        """The rule's name."""
        return self.rule.name


def _prepare(
    rule: OnlineRule,
    key: str,
    base: Path,
    evals_dir: str,
    targets: Collection[str],
    source: str | None,
) -> PreparedRule:
    scorers: list[Scorer] = []
    judge_route = rule.judge_route
    suite_id = version = None
    if rule.suite is not None:
        path = base / evals_dir / f"{rule.suite}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"no eval suite {rule.suite!r}",
                source=source,
                key=f"{key}.suite",
                expected=f"a suite file {path.relative_to(base).as_posix()}",
            )
        suite = load_suite(path, root=base)
        scorers += suite.defaults.expect
        judge_route = judge_route or suite.defaults.judge_route
        suite_id, version = suite.id, suite.version
    try:
        scorers += parse_scorer_specs(rule.expect)
    except ValueError as exc:
        raise ConfigError(str(exc), source=source, key=f"{key}.expect") from None
    ctx = ScoreContext(base=base)
    for i, scorer in enumerate(scorers):
        if isinstance(scorer, JudgeScorer):
            route = scorer.route or judge_route
            if route is None or route not in targets:
                raise ConfigError(
                    f"judge scorer {scorer.label!r} has "
                    + ("no route" if route is None else f"an unknown route {route!r}"),
                    source=source,
                    key=f"{key}.judge_route" if route is None else f"{key}.scorers[{i}].route",
                    expected="one of: " + ", ".join(sorted(targets)),
                )
        if isinstance(scorer, CustomScorer):
            try:
                scorer.prepare(ctx)
            except ConfigError as exc:
                raise ConfigError(
                    exc.message, source=source, key=f"{key}.scorers[{i}]", hint=exc.hint
                ) from None
    if not scorers:
        raise ConfigError(f"rule {rule.name!r} has no scorers", source=source, key=f"{key}.expect")
    return PreparedRule(rule, tuple(scorers), judge_route, suite_id, version)


def prepare_rules(
    project: ProjectConfig,
    base: Path,
    *,
    source: str | None = None,
    errors: list[ConfigError] | None = None,
) -> dict[str, PreparedRule]:
    """Every online rule of ``project`` ready to score, by name. The first broken rule raises a
    ``ConfigError`` naming ``source`` (or the suite file at fault) and the key; with an
    ``errors`` list each is collected there instead (and the rule left out)."""
    targets = set(project.models) | set(project.routes)
    out: dict[str, PreparedRule] = {}
    for i, rule in enumerate(project.evals.online):
        key = f"evals.online[{i}]"
        try:
            out[rule.name] = _prepare(rule, key, base, project.evals.dir, targets, source)
        except ConfigError as exc:
            if errors is None:
                raise
            errors.append(exc)
    return out
