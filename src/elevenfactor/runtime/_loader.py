"""Loading durable programs named in the project file (``programs: [module:attribute]``), and
importing the project's own references."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Iterable
from pathlib import Path

from elevenfactor.errors import ConfigError
from elevenfactor.runtime._programs import Programs

__all__ = ["import_ref", "load_programs", "report"]


def report(error: ConfigError, errors: list[ConfigError] | None) -> None:
    """Raise ``error``; or, when ``errors`` is a list (``config check``), collect it and go on."""
    if errors is None:
        raise error
    errors.append(error)


def _on_path(base: Path | None) -> None:
    if base is not None and str(base) not in sys.path:
        sys.path.insert(0, str(base))


def import_ref(
    ref: str, key: str, *, base: Path | None = None, source: str | None = None
) -> object:
    """Import ``package.module:attribute`` (``base``, the project directory, on ``sys.path``).

    Any failure, including an exception raised by the module while it imports, is a
    ``ConfigError`` naming ``source`` and ``key``.
    """
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"bad reference {ref!r}",
            source=source,
            key=key,
            expected="'package.module:attribute'",
        )
    _on_path(base)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may raise anything while it imports
        raise ConfigError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {exc}",
            source=source,
            key=key,
            hint="is the module in the project directory or on PYTHONPATH?",
        ) from None
    if not hasattr(module, attr):
        raise ConfigError(
            f"module {module_name!r} has no attribute {attr!r}", source=source, key=key
        )
    return getattr(module, attr)


def load_programs(
    refs: Iterable[str],
    *,
    base: Path | None = None,
    source: str | None = None,
    errors: list[ConfigError] | None = None,
) -> Programs:
    """Import each ``package.module:attribute`` and collect its programs.

    The attribute is a ``Programs`` registry (all of its programs are taken) or an async
    function (registered under its ``__name__``). ``base`` (the project directory) is put on
    ``sys.path`` first so a project's own modules import. Errors name ``source`` (the project
    file) and the key; with an ``errors`` list they are collected instead of raised.
    """
    programs = Programs()
    for i, ref in enumerate(refs):
        key = f"programs[{i}]"
        try:
            target = import_ref(ref, key, base=base, source=source)
            if isinstance(target, Programs):
                found = [(name, target.get(name)) for name in target]
            elif inspect.iscoroutinefunction(target):
                found = [(target.__name__, target)]
            else:
                raise ConfigError(
                    f"{ref!r} is {type(target).__name__}",
                    source=source,
                    key=key,
                    expected="a Programs registry or an async function",
                )
            for name, program in found:
                if name in programs and programs.get(name) is not program:
                    raise ConfigError(
                        f"a program named {name!r} is already registered", source=source, key=key
                    )
                programs.register(name, program)
        except ConfigError as exc:
            report(exc, errors)
    return programs
