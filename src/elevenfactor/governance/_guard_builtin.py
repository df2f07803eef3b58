"""The built-in guards (factor 10): one per rule kind of a policy file, built once from its
spec by ``build_guard`` (regexes compiled, kinds and patterns validated: a bad rule is a
``ConfigError`` naming the policy file and the rule's place).

Every guard implements the ``Guard`` protocol (``name``, ``async check``). The pipeline uses
the cheaper entry points underneath: ``start(views, ctx)`` for content rules and
``start_call(tool, args)`` for tool-call rules return either the findings at once (every
rule-based check: microseconds, no task) or an awaitable (the relevance judge; SQL parsing of
large input, in a worker thread) that the pipeline runs concurrently with the others.

**Tool-call rules.** ``tools`` and ``args`` see every call. ``sql``, ``paths``, ``urls`` and
``money`` apply to tools matching their ``tools`` patterns (compared as written and folded:
NFKC, case folding) and read the arguments their ``args`` paths name (dotted, ``*`` any key
or list element). Without ``args`` they read the usual argument names at any depth, with
keys compared without case, ``_`` and ``-`` (``filePath`` is ``filepath``): ``SQL_ARGS``,
``PATH_ARGS``, ``URL_ARGS``; ``money`` reads the whole arguments object. Strings and lists of
strings are checked; findings are about the whole value (positions -1) and their detail
starts with the argument's path (``query: …``), never its value.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Literal

from jsonschema.exceptions import SchemaError

from elevenfactor.errors import ConfigError
from elevenfactor.governance._guard_args import (
    arg_values,
    check_predicates,
    tool_allowed,
    tool_matches,
)
from elevenfactor.governance._guard_content import (
    PhraseMatcher,
    SchemaCheck,
    TextViews,
    TopicMatcher,
    find_length_over,
)
from elevenfactor.governance._guard_judge import Judge, RelevanceGuard
from elevenfactor.governance._guard_money import find_money_over
from elevenfactor.governance._guard_paths import find_path_escapes
from elevenfactor.governance._guard_pii import find_pii
from elevenfactor.governance._guard_secrets import SECRET_KINDS, find_secrets
from elevenfactor.governance._guard_sql import find_destructive_sql
from elevenfactor.governance._guard_types import Action, Finding, Stage, Verdict
from elevenfactor.governance._guard_urls import find_url_violations

__all__ = [
    "PATH_ARGS",
    "SQL_ARGS",
    "SQL_THREAD_CHARS",
    "URL_ARGS",
    "BuiltinGuard",
    "Findings",
    "build_guard",
]

Findings = list[Finding] | Awaitable[list[Finding]]
"""What ``start`` returns: findings now, or an awaitable of them."""

SQL_ARGS = ("sql", "query", "statement", "command")
PATH_ARGS = (
    "path", "file", "filename", "filepath", "dir", "directory", "dest", "destination", "src",
    "source",
)  # fmt: skip
URL_ARGS = ("url", "uri", "href", "link", "endpoint", "webhook")
SQL_THREAD_CHARS = 2000
"""SQL arguments longer than this (in total) are parsed in a worker thread."""
_MAX_DEPTH = 32


class BuiltinGuard:
    """A guard built from one rule spec. ``action``, ``name`` (the rule's label) and ``mode``
    (how ``redact`` rewrites: ``placeholder`` or ``mask``) come from the spec."""

    tool_call: ClassVar[bool] = False
    """Reads a tool call (``start_call``) rather than text (``start``)."""
    deferred: ClassVar[bool] = False
    """Needs the whole text: a stream runs it at the end."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.action: Action = spec.action
        self.mode: Literal["placeholder", "mask"] = getattr(spec, "mode", "mask")

    @property
    def name(self) -> str:
        """The rule's label (its ``name``, else its kind)."""
        return str(self.spec.label)

    def start(self, views: TextViews, ctx: Mapping[str, Any]) -> Findings:
        """Findings about a text (content rules)."""
        raise NotImplementedError(f"rule {self.name!r} does not read text")

    def start_call(self, tool: str, args: Mapping[str, Any]) -> Findings:
        """Findings about a tool call (tool-call rules)."""
        raise NotImplementedError(f"rule {self.name!r} does not read tool calls")

    async def check(self, stage: Stage, content: str, ctx: Mapping[str, Any]) -> Verdict:
        """The ``Guard`` protocol: tool-call rules read ``ctx["tool"]`` and ``ctx["args"]``
        (else ``content`` as the JSON of the arguments)."""
        if self.tool_call:
            args = ctx.get("args")
            if not isinstance(args, Mapping):
                args = json.loads(content) if content else {}
            pending = self.start_call(str(ctx.get("tool", "")), args)
        else:
            pending = self.start(TextViews(content), ctx)
        findings = pending if isinstance(pending, list) else await pending
        if not findings:
            return Verdict("allow")
        return Verdict(self.action, tuple(findings), rule=self.name)


class _Pii(BuiltinGuard):
    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self._kinds = None if spec.kinds is None else tuple(spec.kinds)
        find_pii("", self._kinds)  # raises ValueError for an unknown kind

    def start(self, views: TextViews, ctx: Mapping[str, Any]) -> Findings:
        return find_pii(views.text, self._kinds)


class _Secrets(BuiltinGuard):
    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self._kinds = None if spec.kinds is None else frozenset(spec.kinds)
        unknown = sorted((self._kinds or set()) - set(SECRET_KINDS))
        if unknown:
            raise ValueError(f"unknown secret kinds {unknown}; known: {', '.join(SECRET_KINDS)}")

    def start(self, views: TextViews, ctx: Mapping[str, Any]) -> Findings:
        found = find_secrets(views.text)
        return found if self._kinds is None else [f for f in found if f.kind in self._kinds]


class _Injection(BuiltinGuard):
    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        from elevenfactor.governance._guard_injection import find_injection  # heavy: lazily

        self._find = find_injection

    def start(self, views: TextViews, ctx: Mapping[str, Any]) -> Findings:
        threshold, classifier = self.spec.threshold, self.spec.classifier
        return self._find(views.text, threshold=threshold, classifier=classifier)


class _Phrases(BuiltinGuard):
    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self._matcher = PhraseMatcher(spec.deny, spec.patterns)

    def start(self, views: TextViews, ctx: Mapping[str, Any]) -> Findings:
        return self._matcher.find(views)


class _Topics(BuiltinGuard):
    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self._matcher = TopicMatcher(spec.deny, spec.min_hits)

    def start(self, views: TextViews, ctx: Mapping[str, Any]) -> Findings:
        return self._matcher.find(views)


class _Length(BuiltinGuard):
    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.max_chars: int = spec.max_chars

    def start(self, views: TextViews, ctx: Mapping[str, Any]) -> Findings:
        return find_length_over(len(views.text), self.max_chars)


class _JsonSchema(BuiltinGuard):
    deferred = True

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self._check = SchemaCheck(spec.schema_)

    def start(self, views: TextViews, ctx: Mapping[str, Any]) -> Findings:
        return self._check.find(views.text)


class _Relevance(BuiltinGuard):
    deferred = True

    def __init__(self, spec: Any, judge: Judge | None) -> None:
        super().__init__(spec)
        self._guard = RelevanceGuard(spec, judge)

    def start(self, views: TextViews, ctx: Mapping[str, Any]) -> Findings:
        question = ctx.get("question")
        return self._guard.find(views.text, question if isinstance(question, str) else "")


class _Tools(BuiltinGuard):
    tool_call = True

    def start_call(self, tool: str, args: Mapping[str, Any]) -> Findings:
        return tool_allowed(tool, self.spec.allow, self.spec.deny)


class _Args(BuiltinGuard):
    tool_call = True

    def start_call(self, tool: str, args: Mapping[str, Any]) -> Findings:
        found: list[Finding] = []
        for pattern, rules in self.spec.tools.items():
            if tool_matches(tool, (pattern,)):
                found.extend(check_predicates(dict(args), rules))
        return found


class _Scoped(BuiltinGuard):
    """A rule that reads some arguments of the tools it applies to."""

    tool_call = True
    defaults: ClassVar[tuple[str, ...]] = ()

    def start_call(self, tool: str, args: Mapping[str, Any]) -> Findings:
        if not tool_matches(tool, self.spec.tools):
            return []
        if self.spec.args:
            picked = [hit for path in self.spec.args for hit in arg_values(args, path)]
        else:
            picked = list(_named(args, frozenset(self.defaults), "", 0))
        return self._scan(picked)

    def _scan(self, picked: list[tuple[str, Any]]) -> Findings:
        return self._collect(picked)

    def _collect(self, picked: list[tuple[str, Any]]) -> list[Finding]:
        found: list[Finding] = []
        for where, value in picked:
            for text in _strings(value):
                found.extend(_about(where, f) for f in self._value(text))
        return found

    def _value(self, text: str) -> list[Finding]:
        raise NotImplementedError


class _Sql(_Scoped):
    defaults = SQL_ARGS

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        find_destructive_sql("SELECT 1", spec.dialect)  # raises ValueError for an unknown dialect

    def _scan(self, picked: list[tuple[str, Any]]) -> Findings:
        size = sum(len(text) for _, value in picked for text in _strings(value))
        if size > SQL_THREAD_CHARS:
            return asyncio.to_thread(self._collect, picked)
        return self._collect(picked)

    def _value(self, text: str) -> list[Finding]:
        return find_destructive_sql(text, self.spec.dialect)


class _Paths(_Scoped):
    defaults = PATH_ARGS

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self._root = Path(spec.root)

    def _value(self, text: str) -> list[Finding]:
        return find_path_escapes(text, self._root)


class _Urls(_Scoped):
    defaults = URL_ARGS

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        find_url_violations("https://example.com/", spec.allow)  # raises for a bad pattern

    def _value(self, text: str) -> list[Finding]:
        return find_url_violations(text, self.spec.allow)


class _Money(_Scoped):
    def start_call(self, tool: str, args: Mapping[str, Any]) -> Findings:
        if not tool_matches(tool, self.spec.tools):
            return []
        if not self.spec.args:
            return find_money_over(dict(args), self.spec.max, self.spec.currency)
        found: list[Finding] = []
        for path in self.spec.args:
            for where, value in arg_values(args, path):
                over = find_money_over(value, self.spec.max, self.spec.currency)
                found.extend(_about(where, f) for f in over)
        return found


_CONTENT: dict[str, Callable[[Any], BuiltinGuard]] = {
    "pii": _Pii,
    "secrets": _Secrets,
    "injection": _Injection,
    "phrases": _Phrases,
    "topics": _Topics,
    "length": _Length,
    "json_schema": _JsonSchema,
    "tools": _Tools,
    "args": _Args,
    "sql": _Sql,
    "paths": _Paths,
    "urls": _Urls,
    "money": _Money,
}


def build_guard(
    spec: Any, *, judge: Judge | None = None, source: str | None = None, key: str | None = None
) -> BuiltinGuard:
    """The guard for one rule spec of a policy file. Raises ``ConfigError`` (naming
    ``source``, the policy file, and ``key``, the rule's place) when the rule cannot be
    built: an unknown PII or secret kind, SQL dialect, URL pattern, an invalid JSON Schema."""
    try:
        if spec.rule == "relevance":
            return _Relevance(spec, judge)
        return _CONTENT[spec.rule](spec)
    except (ValueError, SchemaError) as exc:
        message = exc.message if isinstance(exc, SchemaError) else str(exc)
        raise ConfigError(
            f"rule {spec.rule!r} cannot be built: {message}", source=source, key=key
        ) from exc
    except KeyError:
        raise ConfigError(f"unknown rule kind {spec.rule!r}", source=source, key=key) from None


def _key(name: object) -> str:
    return str(name).casefold().replace("_", "").replace("-", "")


def _named(node: Any, names: frozenset[str], where: str, depth: int) -> Iterator[tuple[str, Any]]:
    """``(path, value)`` for every key in ``names`` at any depth of ``node``."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(node, Mapping):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if _key(key) in names:
                yield path, value
            yield from _named(value, names, path, depth + 1)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _named(value, names, f"{where}.{i}" if where else str(i), depth + 1)


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)) and depth < _MAX_DEPTH:
        for item in value:
            yield from _strings(item, depth + 1)


def _about(where: str, finding: Finding) -> Finding:
    return replace(finding, start=-1, end=-1, detail=f"{where}: {finding.detail}")
