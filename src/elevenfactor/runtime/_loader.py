"""Loading durable programs named in the project file (``programs: [module:attribute]``)."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Iterable
from pathlib import Path

from elevenfactor.errors import ConfigError
from elevenfactor.runtime._programs import Programs

__all__ = ["load_programs"]


def load_programs(refs: Iterable[str], *, base: Path | None = None) -> Programs:
    """Import each ``package.module:attribute`` and collect its programs.

    The attribute is a ``Programs`` registry (all of its programs are taken) or an async
    function (registered under its ``__name__``). ``base`` (the project directory) is put on
    ``sys.path`` first so a project's own modules import.
    """
    programs = Programs()
    if base is not None and str(base) not in sys.path:
        sys.path.insert(0, str(base))
    for i, ref in enumerate(refs):
        key = f"programs[{i}]"
        module_name, sep, attr = ref.partition(":")
        if not sep or not module_name or not attr:
            raise ConfigError(
                f"bad reference {ref!r}", key=key, expected="'package.module:attribute'"
            )
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"cannot import {module_name!r}: {exc}",
                key=key,
                hint="is the project directory on PYTHONPATH?",
            ) from None
        target = getattr(module, attr, None)
        if isinstance(target, Programs):
            for name in target:
                programs.register(name, target.get(name))
        elif inspect.iscoroutinefunction(target):
            programs.register(target.__name__, target)
        else:
            raise ConfigError(
                f"{ref!r} is {type(target).__name__}",
                key=key,
                expected="a Programs registry or an async function",
            )
    return programs
