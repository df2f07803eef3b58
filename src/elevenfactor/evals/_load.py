"""Reading eval suite files (``evals/NAME.yaml``, format in ``_suite``): every error a
``ConfigError`` naming the file, the line and the dotted key (``cases[2].expect[0].pattern``);
a JSONL cases file's errors name its own file and line.

A suite's id is its file name without ``.yaml``; its version is the SHA-256 of the suite file
(line endings normalised, as prompts and policies) followed by its cases file, when it has
one, shown as 12 hex digits. Cases without an id get ``case-N`` (N: their position among all
of the suite's cases, from 1); ids are unique in a suite.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node

from elevenfactor.config._guards import POLICY_NAME
from elevenfactor.config._yaml_doc import compose, locate, located_error
from elevenfactor.errors import ConfigError
from elevenfactor.evals._explain import explain
from elevenfactor.evals._suite import Case, PromptfooTest, Suite, SuiteFile
from elevenfactor.governance._policy_load import policy_id_of
from elevenfactor.store._versions import content_hash

__all__ = ["load_suite", "load_suite_dir", "parse_suite"]

_KeyPath = tuple[str | int, ...]


def _decode(data: bytes, file: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise located_error(file, line, "the file is not valid UTF-8") from None


def _validate(model: type[BaseModel], data: Any, file: str, node: Node) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:

        def line_at(path: _KeyPath, at_key: bool) -> int:
            return locate(node, path, at_key=at_key)

        raise explain(exc, data, model, file, line_at) from None


def _read_cases(path: Path, file: str) -> tuple[list[Case], bytes]:
    """The cases of a JSONL file (a line holding ``assert`` is a promptfoo test)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise located_error(file, None, f"cannot read the cases file: {exc.strerror}") from None
    _, normalised = content_hash(raw)
    text = _decode(normalised, file)
    cases: list[Case] = []
    for n, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            msg = f"not valid JSON: {getattr(exc, 'msg', exc)}"
            raise located_error(file, n, msg, expected="one JSON object per line") from None
        if not isinstance(data, dict):
            raise located_error(file, n, "a case must be a JSON object", expected="{...}")
        model: type[Case | PromptfooTest] = PromptfooTest if "assert" in data else Case

        def at_line(_path: _KeyPath, _at_key: bool, line: int = n) -> int:
            return line

        try:
            item = model.model_validate(data)
        except ValidationError as exc:
            raise explain(exc, data, model, file, at_line) from None
        cases.append(item.to_case() if isinstance(item, PromptfooTest) else item)
    return cases, normalised


def parse_suite(
    data: bytes,
    *,
    file: str,
    directory: Path | None = None,
    suite_id: str | None = None,
) -> Suite:
    """Parse and validate a suite file's bytes. ``file`` is the path shown in errors;
    ``directory`` is where ``cases_file`` is read from (default: ``file``'s directory)."""
    full_hash, normalised = content_hash(data)
    source = _decode(normalised, file)
    sid = suite_id if suite_id is not None else policy_id_of(file)
    if not re.match(POLICY_NAME, sid):
        raise located_error(
            file,
            None,
            f"{sid!r} is not a valid suite id",
            expected="letters, digits, '_', '.' and '-' (not first), at most 100",
            hint="rename the file: its name without .yaml is the suite id",
        )
    node, doc = compose(source.removeprefix("\ufeff"), file)
    if doc is None or node is None:
        raise located_error(
            file, 1, "the file is empty", expected="a mapping with `target:` and `cases:`"
        )
    if not isinstance(doc, dict) or not isinstance(node, MappingNode):
        raise located_error(
            file, locate(node, ()), "a suite file must hold a mapping", expected="key: value"
        )
    spec: SuiteFile = _validate(SuiteFile, doc, file, node)
    if spec.id is not None and spec.id != sid:
        raise located_error(
            file,
            locate(node, ("id",)),
            f"id {spec.id!r} does not match the file name",
            key="id",
            expected=repr(sid),
            hint="a suite's id is its file name; rename the file or remove `id:`",
        )
    located: list[tuple[Case, str, int | None]] = []
    for i, case in enumerate(spec.cases):
        located.append((case, file, locate(node, ("cases", i))))
    for i, test in enumerate(spec.tests):
        located.append((test.to_case(), file, locate(node, ("tests", i))))
    version_bytes = normalised
    if spec.cases_file is not None:
        base = directory if directory is not None else Path(file).parent
        path = base / spec.cases_file
        cases_name = (Path(file).parent / spec.cases_file).as_posix()
        if not path.is_file():
            raise located_error(
                file,
                locate(node, ("cases_file",)),
                f"the cases file {spec.cases_file!r} does not exist",
                key="cases_file",
                hint="a cases file is relative to the suite file",
            )
        read, raw = _read_cases(path, cases_name)
        located.extend((c, cases_name, None) for c in read)
        version_bytes = normalised + b"\0" + raw
        full_hash = content_hash(version_bytes)[0]
    if not located:
        raise located_error(
            file,
            1,
            "the suite has no cases",
            key="cases",
            hint="add `cases:`, `tests:` (promptfoo) or `cases_file:`",
        )
    cases = _with_ids(located)
    return Suite(
        id=sid,
        version=full_hash[:12],
        full_hash=full_hash,
        file=file,
        description=spec.description,
        target=spec.target,
        defaults=spec.defaults,
        cases=tuple(cases),
    )


def _with_ids(located: list[tuple[Case, str, int | None]]) -> list[Case]:
    seen: dict[str, str] = {}
    out: list[Case] = []
    for n, (case, file, line) in enumerate(located, start=1):
        cid = case.id or f"case-{n}"
        if cid in seen:
            raise located_error(
                file,
                line,
                f"duplicate case id {cid!r} (also at {seen[cid]})",
                key="id",
                hint="case ids are unique within a suite",
            )
        seen[cid] = f"{file}:{line}" if line is not None else file
        out.append(case if case.id else case.model_copy(update={"id": cid}))
    return out


def load_suite(path: Path | str, *, root: Path | None = None) -> Suite:
    """Read the suite file at ``path`` (and its cases file). Files are named in errors and
    recorded relative to ``root`` (default: the current directory) when they are under it."""
    path = Path(path)
    base = (root if root is not None else Path.cwd()).resolve()
    try:
        file = path.resolve().relative_to(base).as_posix()
    except ValueError:
        file = path.as_posix()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise located_error(file, None, f"cannot read the suite file: {exc.strerror}") from None
    return parse_suite(data, file=file, directory=path.parent)


def load_suite_dir(
    directory: Path | str, *, root: Path | None = None, errors: list[ConfigError] | None = None
) -> dict[str, Suite]:
    """Every suite in ``directory`` (``*.yaml``/``*.yml``), by id. The first invalid one
    raises; with an ``errors`` list each is collected there instead."""
    directory = Path(directory)
    found = sorted(p for p in directory.glob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    suites: dict[str, Suite] = {}
    for p in found:
        try:
            suite = load_suite(p, root=root if root is not None else directory.parent)
        except ConfigError as exc:
            if errors is None:
                raise
            errors.append(exc)
            continue
        suites[suite.id] = suite
    return suites
