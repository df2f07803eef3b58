"""``FunctionToolset``: typed Python functions (sync or async) as tools.

```python
tools = FunctionToolset()

@tools.tool(risk="read", timeout=5)
async def weather(city: str, days: int = 1) -> dict[str, float]:
    '''Forecast for a city.

    Args:
        city: The city name, e.g. "Paris".
        days: How many days ahead.
    '''
```

The schema comes from the signature and docstring. Bad arguments, the tool's own exceptions and
timeouts come back as ``is_error`` results the model can act on; ``raise_errors=True`` lets the
tool's exceptions propagate instead (useful in tests and for programmatic callers). Sync
functions run in a worker thread so they never block the event loop; a sync function that
overruns its timeout cannot be interrupted, only abandoned.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from pydantic import ValidationError

from elevenfactor.errors import RunError
from elevenfactor.tools._base import Risk, Tool, ToolContext, ToolResult
from elevenfactor.tools._signature import Signature, format_validation_error
from elevenfactor.tools._timeout import call_with_timeout

__all__ = ["FunctionTool", "FunctionToolset"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """A registered function and the tool it is presented as."""

    tool: Tool
    func: Callable[..., Any]
    signature: Signature


class FunctionToolset:
    """Python functions as a toolset. Register with ``@toolset.tool`` or ``toolset.add(func)``."""

    def __init__(
        self,
        functions: Iterable[Callable[..., Any]] = (),
        *,
        name: str = "functions",
        risk: Risk = "destructive",
        timeout: float | None = None,
        raise_errors: bool = False,
    ) -> None:
        """``risk`` and ``timeout`` are the defaults for tools that do not declare their own."""
        self.name = name
        self.default_risk: Risk = risk
        self.default_timeout = timeout
        self.raise_errors = raise_errors
        self._tools: dict[str, FunctionTool] = {}
        for func in functions:
            self.add(func)

    def __repr__(self) -> str:
        return f"FunctionToolset({self.name!r})"

    def add(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        risk: Risk | None = None,
        timeout: float | None = None,
    ) -> FunctionTool:
        """Register ``func`` as a tool named ``name`` (default: the function's name)."""
        tool_name = name or getattr(func, "__name__", None)
        if not tool_name:
            raise TypeError(f"{func!r} has no __name__; pass name=")
        if tool_name in self._tools:
            raise ValueError(f"{self!r} already has a tool named {tool_name!r}")
        signature = Signature(func, name=tool_name)
        tool = Tool(
            name=tool_name,
            description=description if description is not None else signature.description,
            parameters=signature.parameters,
            risk=risk or self.default_risk,
            timeout=timeout if timeout is not None else self.default_timeout,
            output_schema=signature.output_schema,
        )
        registered = FunctionTool(tool=tool, func=func, signature=signature)
        self._tools[tool_name] = registered
        return registered

    @overload
    def tool(self, func: F) -> F: ...

    @overload
    def tool(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        risk: Risk | None = None,
        timeout: float | None = None,
    ) -> Callable[[F], F]: ...

    def tool(
        self,
        func: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        risk: Risk | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Decorator: ``@toolset.tool`` or ``@toolset.tool(risk="write", timeout=5)``. The
        function is returned unchanged, so it stays directly callable."""

        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            self.add(f, name=name, description=description, risk=risk, timeout=timeout)
            return f

        return register(func) if func is not None else register

    async def list_tools(self, ctx: ToolContext) -> list[Tool]:
        return [registered.tool for registered in self._tools.values()]

    async def call_tool(self, name: str, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        registered = self._tools.get(name)
        if registered is None:
            return ToolResult.error(f"No tool named {name!r}.", code="tool_not_found")
        try:
            positional, keywords = registered.signature.bind(args, ctx)
        except ValidationError as exc:
            return ToolResult.error(format_validation_error(name, exc), code="invalid_arguments")
        return await call_with_timeout(
            name,
            registered.tool.timeout,
            lambda: self._run(registered, positional, keywords),
        )

    async def _run(
        self, registered: FunctionTool, positional: list[Any], keywords: dict[str, Any]
    ) -> ToolResult:
        func = registered.func
        try:
            if inspect.iscoroutinefunction(func):
                value = await func(*positional, **keywords)
            else:
                value = await asyncio.to_thread(functools.partial(func, *positional, **keywords))
                if inspect.isawaitable(value):  # a sync wrapper around a coroutine function
                    value = await value
            return ToolResult.from_value(value)
        except RunError:
            raise  # the run is cancelled or lost its lease: not the tool's failure
        except Exception as exc:
            if self.raise_errors:
                raise
            return ToolResult.error(f"{type(exc).__name__}: {exc}", code="tool_error")
