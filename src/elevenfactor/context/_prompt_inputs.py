"""A prompt's inputs: checked against its JSON Schema before rendering, with errors that name
the prompt and the input; and inputs given as ``key=value`` text (the CLI's ``--input``)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from elevenfactor.errors import PromptError, PromptInputError

__all__ = ["check_inputs", "describe_inputs", "inputs_from_pairs"]


def check_inputs(
    ref: str, schema: Mapping[str, Any], validator: Draft202012Validator, inputs: Any
) -> dict[str, Any]:
    """``inputs`` validated against ``schema``, with every declared input that was not given
    set to its schema ``default`` (or ``None``), ready to render. Raises ``PromptInputError``
    naming the prompt (``ref``) and the first input at fault."""
    if not isinstance(inputs, Mapping) or not all(isinstance(k, str) for k in inputs):
        raise PromptInputError(
            f"prompt {ref}: inputs must be an object of names to values, "
            f"got {type(inputs).__name__}",
            param="inputs",
            hint=describe_inputs(schema),
        )
    values = dict(inputs)
    try:
        error = best_match(validator.iter_errors(values))
    except Exception as exc:  # e.g. a $ref that resolves nowhere: the schema's fault
        raise PromptError(
            f"prompt {ref}: its inputs schema cannot be checked: {type(exc).__name__}: {exc}",
            hint="fix `inputs` in the prompt's front matter",
        ) from None
    if error is not None:
        name, what = _explain(error, schema, values)
        raise PromptInputError(
            f"prompt {ref}: {what}",
            param=f"inputs.{name}" if name else "inputs",
            hint=describe_inputs(schema),
        )
    for name, prop in (schema.get("properties") or {}).items():
        if name not in values:
            default = prop.get("default") if isinstance(prop, Mapping) else None
            values[name] = copy.deepcopy(default)
    return values


def _explain(
    error: ValidationError, schema: Mapping[str, Any], values: Mapping[str, Any]
) -> tuple[str | None, str]:
    if error.path:
        first = str(error.path[0])
        where = "".join(f"[{p!r}]" for p in list(error.path)[1:])
        return first, f"input {first!r}{where}: {error.message}"
    if error.validator == "required":
        required = error.validator_value if isinstance(error.validator_value, list) else []
        missing = [str(r) for r in required if r not in values]
        name = missing[0] if missing else None
        return name, f"missing required input {name!r}"
    if error.validator == "additionalProperties":
        declared = set(schema.get("properties") or {})
        extra = sorted(k for k in values if k not in declared)
        name = extra[0] if extra else None
        return name, f"unknown input {name!r} (the prompt does not declare it)"
    return None, f"inputs: {error.message}"


def describe_inputs(schema: Mapping[str, Any]) -> str:
    """The declared inputs in one line, for hints: ``customer (string, required), tier
    (string: free|pro)``."""
    required = set(schema.get("required") or ())
    parts = []
    for name, prop in (schema.get("properties") or {}).items():
        prop = prop if isinstance(prop, Mapping) else {}
        kind = prop.get("type", "any")
        kind = "|".join(kind) if isinstance(kind, list) else str(kind)
        if "enum" in prop:
            kind += ": " + "|".join(str(v) for v in prop["enum"])
        parts.append(f"{name} ({kind}{', required' if name in required else ''})")
    return "inputs: " + (", ".join(parts) if parts else "(none)")


def inputs_from_pairs(schema: Mapping[str, Any], pairs: Iterable[str]) -> dict[str, Any]:
    """``key=value`` texts as inputs. A value is kept as text when its input is declared as a
    string (or not declared); otherwise it is read as JSON (``count=3``, ``flags=[1,2]``,
    ``on=true``), and kept as text if it is not JSON, for the schema check to report."""
    props = schema.get("properties") or {}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise PromptInputError(
                f"an input must be given as key=value, got {pair!r}",
                param="inputs",
                hint=describe_inputs(schema),
            )
        prop = props.get(key)
        kind = prop.get("type") if isinstance(prop, Mapping) else None
        kinds = set(kind) if isinstance(kind, list) else {kind}
        if kind is None or "string" in kinds:
            out[key] = text
            continue
        try:
            out[key] = orjson.loads(text)
        except orjson.JSONDecodeError:
            out[key] = text
    return out
