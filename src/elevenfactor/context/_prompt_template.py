"""Prompt bodies as sandboxed Jinja2 templates: compile with the checks made at load time, and
render with errors that name the file and the line.

The environment is ``ImmutableSandboxedEnvironment`` with ``StrictUndefined`` and no
autoescaping: a body may read its inputs, loop and branch, but not reach Python internals
(``{{ ''.__class__ }}``) or mutate a value (``{{ items.append(1) }}``). ``None`` renders as an
empty string, so an optional input that was not given prints nothing. Block tags on a line of
their own leave no blank line (``trim_blocks`` and ``lstrip_blocks``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from elevenfactor.errors import PromptError

__all__ = ["BodyTemplate", "compile_body", "located_error"]

_NOT_SUPPORTED = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)


def _finalize(value: Any) -> Any:
    return "" if value is None else value


@functools.cache
def _env() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def located_error(file: str, line: int | None, what: str, hint: str | None = None) -> PromptError:
    """A ``PromptError`` whose message starts ``file:line:`` and whose details hold both."""
    where = f"{file}:{line}" if line is not None else file
    exc = PromptError(f"{where}: {what}", hint=hint)
    exc.details = {"file": file, "line": line}
    return exc


@dataclass(frozen=True, slots=True)
class BodyTemplate:
    """A compiled body. ``first_line`` is the file line of the body's line 1."""

    template: Template
    file: str
    first_line: int

    def render(self, values: Mapping[str, Any]) -> str:
        """Render with ``values``; a sandbox violation or any other failure inside the body
        is a ``PromptError`` naming the file and the line."""
        try:
            return self.template.render(values)
        except SecurityError as exc:
            raise located_error(
                self.file,
                self._line(exc),
                f"the body did something the sandbox forbids: {exc}",
                hint="a prompt body may read its inputs, branch and loop; it cannot reach "
                "Python internals or change a value",
            ) from None
        except Exception as exc:  # a body is code: any failure in it is the prompt's error
            what = exc.message if isinstance(exc, TemplateError) and exc.message else str(exc)
            raise located_error(
                self.file,
                self._line(exc),
                f"rendering failed: {type(exc).__name__}: {what}",
                hint="check the expression on that line against the inputs it was given",
            ) from None

    def _line(self, exc: BaseException) -> int | None:
        """The body line the failure happened on, from the template's frame in the
        traceback (Jinja maps those frames to template lines)."""
        line = None
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == self.file:
                line = tb.tb_lineno
            tb = tb.tb_next
        return None if line is None else line + self.first_line - 1


def compile_body(body: str, *, file: str, first_line: int, declared: set[str]) -> BodyTemplate:
    """Parse and compile ``body``. Errors (a syntax error, an ``include`` or ``extends``, a
    variable that ``declared`` does not name) are ``PromptError`` naming ``file`` and the
    line, counted from ``first_line``."""
    env = _env()
    offset = first_line - 1
    try:
        ast = env.parse(body, name=file, filename=file)
    except TemplateSyntaxError as exc:
        raise located_error(
            file, exc.lineno + offset, f"template syntax error: {exc.message}"
        ) from None
    for node in ast.find_all(_NOT_SUPPORTED):
        raise located_error(
            file,
            node.lineno + offset,
            f"{{% {type(node).__name__.lower()} %}} is not supported in a prompt body",
            hint="a prompt is one self-contained file; put shared text in an input",
        )
    unknown = meta.find_undeclared_variables(ast) - declared - set(env.globals)
    if unknown:
        first = min(unknown, key=lambda name: (_first_use(ast, name), name))
        raise located_error(
            file,
            _first_use(ast, first) + offset,
            f"the body uses {first!r}, which `inputs` does not declare",
            hint=f"declare it under inputs.properties (or fix the name); declared: "
            f"{', '.join(sorted(declared)) or '(none)'}",
        )
    try:
        code = env.compile(ast, name=file, filename=file)
    except TemplateSyntaxError as exc:  # checks made at code generation
        raise located_error(
            file, exc.lineno + offset, f"template syntax error: {exc.message}"
        ) from None
    template = env.template_class.from_code(env, code, env.make_globals(None))
    return BodyTemplate(template, file, first_line)


def _first_use(ast: nodes.Template, name: str) -> int:
    """The body line where ``name`` is first read outside a construct that binds it (a loop's
    target and ``loop``, a macro's or call block's arguments, a ``with`` target)."""
    lines: list[int] = []
    _uses(ast, name, frozenset(), lines)
    if not lines:  # bound everywhere it is read (e.g. read before a `set`): its first read
        lines = [n.lineno for n in ast.find_all(nodes.Name) if n.name == name and n.ctx == "load"]
    return min(lines, default=1)


def _bound(targets: list[nodes.Node]) -> set[str]:
    return {
        n.name for t in targets for n in (t, *t.find_all(nodes.Name)) if isinstance(n, nodes.Name)
    }


def _uses(node: nodes.Node, name: str, bound: frozenset[str], lines: list[int]) -> None:
    if isinstance(node, nodes.Name):
        if node.name == name and node.ctx == "load" and name not in bound:
            lines.append(node.lineno)
        return
    inner = bound
    if isinstance(node, nodes.For):
        _uses(node.iter, name, bound, lines)
        inner = bound | _bound([node.target]) | {"loop"}
        for child in (*node.body, *node.else_, *([node.test] if node.test else [])):
            _uses(child, name, inner, lines)
        return
    if isinstance(node, (nodes.Macro, nodes.CallBlock)):
        inner = bound | _bound(list(node.args)) | {"varargs", "kwargs", "caller"}
    elif isinstance(node, nodes.With):
        for value in node.values:
            _uses(value, name, bound, lines)
        inner = bound | _bound(list(node.targets))
        for child in node.body:
            _uses(child, name, inner, lines)
        return
    for child in node.iter_child_nodes():
        _uses(child, name, inner, lines)
