"""Reading guard policy files (``policies/NAME.yaml``): YAML validated against ``PolicyFile``,
every error a ``ConfigError`` naming the file, the dotted key (``stages.input[1].threshold``)
and the line.

A policy's id is its file name without ``.yaml`` (``id:`` in the file, when given, must say
the same); its version is the SHA-256 of the file with line endings normalised (the same hash
as prompts, so a CRLF checkout has the same version), shown as 12 hex digits.
"""

from __future__ import annotations

import difflib
import re
import types
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node

from elevenfactor.config._guards import POLICY_NAME
from elevenfactor.config._yaml_doc import (
    KeyPath,
    compose,
    dotted,
    item,
    line_of,
    locate,
    located_error,
)
from elevenfactor.errors import ConfigError
from elevenfactor.governance._policy_model import Policy, PolicyFile, RuleSpec
from elevenfactor.store._versions import content_hash

__all__ = ["SUFFIXES", "load_policy_dir", "parse_policy", "policy_error", "policy_id_of"]

policy_error = located_error
"""A ``ConfigError`` whose source is ``file:line`` (details: file, line, key)."""

SUFFIXES = (".yaml", ".yml")
"""The file names a policy directory is read for."""

_NAME = re.compile(POLICY_NAME)
_PLACED = re.compile(r"^(input|retrieved|tool_call|tool_result|output)\[(\d+)\]: (.*)$", re.S)
_INDEXED = re.compile(r"^(\w+)\[(\d+)\] (.*)$", re.S)


def policy_id_of(file: str) -> str:
    """The id a policy file's name gives it: the name without ``.yaml`` (or ``.yml``)."""
    name = Path(file).name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def parse_policy(data: bytes, *, file: str, policy_id: str | None = None) -> Policy:
    """Parse and validate a policy file's bytes. ``file`` is the path shown in errors and
    recorded; the id is ``policy_id`` (default: the file's name without ``.yaml``)."""
    full_hash, normalised = content_hash(data)
    try:
        source = normalised.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = normalised.count(b"\n", 0, exc.start) + 1
        raise located_error(file, line, "the file is not valid UTF-8") from None
    pid = policy_id if policy_id is not None else policy_id_of(file)
    if not _NAME.match(pid):
        raise located_error(
            file,
            None,
            f"{pid!r} is not a valid policy id",
            expected="letters, digits, '_', '.' and '-' (not first), at most 100",
            hint="rename the file: its name without .yaml is the policy id",
        )
    node, data_ = compose(source.removeprefix("\ufeff"), file, what="a policy")
    if data_ is None:
        raise located_error(
            file,
            1,
            "the file is empty",
            expected="a mapping with at least `stages:`",
            hint="e.g. stages: {input: [{rule: secrets, action: redact}]}",
        )
    if not isinstance(data_, dict) or not isinstance(node, MappingNode):
        raise located_error(
            file, line_of(node), "a policy file must hold a mapping", expected="key: value lines"
        )
    try:
        spec = PolicyFile.model_validate(data_)
    except ValidationError as exc:
        raise _explain(exc, data_, node, file) from None
    if spec.id is not None and spec.id != pid:
        raise located_error(
            file,
            locate(node, ("id",)),
            f"id {spec.id!r} does not match the file name",
            key="id",
            expected=repr(pid),
            hint="a policy's id is its file name; rename the file or remove `id:`",
        )
    return Policy(
        id=pid, version=full_hash[:12], full_hash=full_hash, file=file, source=source, spec=spec
    )


def load_policy_dir(
    directory: Path | str,
    *,
    root: Path | None = None,
    errors: list[ConfigError] | None = None,
) -> dict[str, Policy]:
    """Every policy in ``directory`` (``*.yaml`` and ``*.yml``; none if it does not exist), by
    id. Files are recorded relative to ``root`` (default: the directory's parent, the project).
    The first invalid file raises ``ConfigError``; with an ``errors`` list every one is
    collected there instead and the valid policies are returned."""
    directory = Path(directory)
    base = root if root is not None else directory.parent
    found: list[Path] = []
    if directory.is_dir():
        found = sorted(p for p in directory.iterdir() if p.suffix in SUFFIXES and p.is_file())
    policies: dict[str, Policy] = {}
    for path in found:
        file = _relative(path, base)
        try:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise located_error(file, None, f"cannot read the file: {exc.strerror}") from None
            policy = parse_policy(data, file=file)
            other = policies.get(policy.id)
            if other is not None:
                raise located_error(
                    file,
                    None,
                    f"duplicate policy id {policy.id!r}: {other.file} has it too",
                    hint="policy ids are unique; keep one of NAME.yaml and NAME.yml",
                )
        except ConfigError as exc:
            if errors is None:
                raise
            errors.append(exc)
            continue
        policies[policy.id] = policy
    return policies


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _real_path(loc: tuple[int | str, ...], data: Any) -> tuple[KeyPath, bool]:
    """``loc`` of a pydantic error as a path into the document, and whether the error is
    about a mapping key itself: a rule's union tag (``('stages', 'input', 0, 'pii', 'kinds')``)
    and the ``[key]`` marker are dropped."""
    path: list[str | int] = []
    tagged = False  # just stepped into a list item: a union tag may come next
    for part in loc:
        if part == "[key]":
            return tuple(path), True
        if tagged and isinstance(data, dict) and data.get("rule") == part:
            tagged = False
            continue
        tagged = isinstance(data, list)
        data = item(data, part)
        path.append(part)
    return tuple(path), False


def _explain(exc: ValidationError, data: Any, node: Node, file: str) -> ConfigError:
    err = exc.errors(include_url=False)[0]
    kind, msg = err["type"], str(err["msg"]).removeprefix("Value error, ")
    path, at_key = _real_path(tuple(err["loc"]), data)
    expected: str | None = None
    hint: str | None = None
    if kind == "value_error" and (m := _PLACED.match(msg)) is not None:
        # StagesConfig's own check: a rule at a stage it cannot stand at, or redact by a rule
        # that cannot redact
        path = (*path, m.group(1), int(m.group(2)), "action" if "redact" in m.group(3) else "rule")
        msg = m.group(3)
    elif kind == "value_error" and (m := _INDEXED.match(msg)) and path and path[-1] == m.group(1):
        path, msg = (*path, int(m.group(2))), m.group(3)
    if kind == "extra_forbidden":
        at_key = True
        allowed = _fields_at(path[:-1], data)
        msg = "unknown key"
        expected = "one of: " + ", ".join(allowed) if allowed else None
        close = difflib.get_close_matches(str(path[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else None
    elif kind in {"union_tag_invalid", "union_tag_not_found"}:
        path = (*path, "rule")
        kinds = ", ".join(_rule_kinds())
        if kind == "union_tag_invalid":
            given = err["input"].get("rule") if isinstance(err["input"], dict) else None
            msg = f"unknown rule kind {given!r}"
            close = difflib.get_close_matches(str(given), _rule_kinds(), n=1)
            hint = f"did you mean {close[0]!r}?" if close else None
        else:
            msg = "a rule needs `rule:`, its kind"
        expected = "one of: " + kinds
    elif kind == "missing":
        msg = "missing required key"
    elif kind == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == POLICY_NAME:
        msg = f"{err['input']!r} is not a valid name"
        expected = "letters, digits, '_', '.' and '-' (not first), at most 100"
    elif "input" in err and not isinstance(err["input"], dict | list):
        msg = f"{msg} (got {err['input']!r})"
    count = exc.error_count()
    if count > 1:
        more = f"{count - 1} more problem{'s' if count > 2 else ''} in the file"
        hint = f"{hint} {more}" if hint else more
    line = locate(node, path, at_key=at_key)
    return located_error(file, line, msg, key=dotted(path), expected=expected, hint=hint)


@cache
def _rule_classes() -> dict[str, type[BaseModel]]:
    """Rule kind to its model, from ``RuleSpec``'s discriminated union."""
    out: dict[str, type[BaseModel]] = {}
    for cls in get_args(get_args(RuleSpec)[0]):
        out[get_args(cls.model_fields["rule"].annotation)[0]] = cls
    return out


def _rule_kinds() -> list[str]:
    return list(_rule_classes())


def _unwrap(tp: Any, data: Any) -> Any:
    """``tp`` without ``Annotated`` and ``None``; a union of rules as the rule ``data`` is."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin is Union or origin is types.UnionType:
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
            rule = data.get("rule") if isinstance(data, dict) else None
            return _rule_classes().get(rule) if isinstance(rule, str) else None
        else:
            return tp


def _fields_at(path: KeyPath, data: Any) -> list[str]:
    """The keys allowed in the mapping at ``path`` of a policy document (none if unknown)."""
    tp: Any = PolicyFile
    for part in path:
        tp = _unwrap(tp, data)
        data = item(data, part)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = tp.model_fields
            tp = next((f.annotation for n, f in fields.items() if part in (n, f.alias)), None)
        elif get_origin(tp) is list and isinstance(part, int):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return []
    tp = _unwrap(tp, data)
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return []
    return [f.alias or n for n, f in tp.model_fields.items()]
