"""The approval page's arguments form (``server.ui._approval_form`` / ``_approval_args``): a
tool's JSON schema as fields and back. Generated schemas and arguments round-trip exactly
(fields filled from a proposal give the proposal back, ``1``, ``1.0`` and ``true`` kept apart),
also through a browser's line-ending normalisation; table tests pin which field each schema
gets, what an empty field means, and where each error is shown."""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elevenfactor.server.ui._approval_args import check, parse
from elevenfactor.server.ui._approval_form import JSON_FIELD, Group, Input, initial_values, layout


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _round_trip(schema: Any, args: dict[str, Any], *, browser: bool = False) -> dict[str, Any]:
    form = layout(schema, args)
    fields = initial_values(form, args)
    if browser:  # a browser submits every line break of a textarea as CRLF
        fields = {k: v.replace("\r\n", "\n").replace("\n", "\r\n") for k, v in fields.items()}
    out, errors = parse(form, args, fields)
    assert errors == {}, (schema, args, fields)
    return out


# -- generated schemas and arguments -------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
NAMES = st.text(alphabet=string.ascii_letters + ".~_ -", min_size=1, max_size=6)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | FLOATS | st.text(max_size=4)


def _leaf() -> st.SearchStrategy[tuple[dict[str, Any], st.SearchStrategy[Any]]]:
    enums = st.lists(SCALARS, min_size=1, max_size=4, unique_by=lambda v: json.dumps(v))
    plain = st.sampled_from(
        [
            ({"type": "string"}, st.text()),
            ({"type": "integer"}, st.integers(-(2**70), 2**70)),
            ({"type": "number"}, st.integers(-99, 99) | FLOATS),
            ({"type": "boolean"}, st.booleans()),
            ({"type": "array", "items": {"type": "string"}}, st.lists(st.text(), max_size=3)),
            ({}, JSON),  # anything: only JSON can hold it
            ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, st.text() | st.integers()),
        ]
    )
    enum = enums.map(lambda vs: ({"enum": vs}, st.sampled_from(vs)))
    return (plain | enum).flatmap(
        lambda pair: st.sampled_from(["plain", "anyof", "typelist"]).map(
            lambda how: _nullable(pair, how)
        )
    )


def _nullable(
    pair: tuple[dict[str, Any], st.SearchStrategy[Any]], how: str
) -> tuple[dict[str, Any], st.SearchStrategy[Any]]:
    schema, values = pair
    if how == "anyof":
        return {"anyOf": [schema, {"type": "null"}]}, values | st.none()
    if how == "typelist" and isinstance(schema.get("type"), str):
        return {**schema, "type": [schema["type"], "null"]}, values | st.none()
    return pair


@st.composite
def _object(draw: st.DrawFn, depth: int = 0) -> tuple[dict[str, Any], st.SearchStrategy[Any]]:
    names = draw(st.lists(NAMES, min_size=1, max_size=5, unique=True))
    props: dict[str, Any] = {}
    values: dict[str, st.SearchStrategy[Any]] = {}
    for name in names:
        nested = depth < 2 and draw(st.booleans())
        schema, strategy = draw(_object(depth + 1) if nested else _leaf())
        props[name], values[name] = schema, strategy
    required = draw(st.lists(st.sampled_from(names), unique=True))
    closed = draw(st.booleans())
    schema = {"type": "object", "properties": props, "required": required}
    if closed:
        schema["additionalProperties"] = False
    optional = {k: v for k, v in values.items() if k not in required}
    free = NAMES.filter(lambda n: n not in props)
    extra = st.just({}) if closed else st.dictionaries(free, JSON, max_size=2)
    strategy = st.tuples(
        st.fixed_dictionaries({k: values[k] for k in required}, optional=optional), extra
    ).map(lambda pair: {**pair[1], **pair[0]})
    return schema, strategy


CASES = _object().flatmap(lambda pair: st.tuples(st.just(pair[0]), pair[1]))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CASES, st.booleans())
def test_generated_arguments_come_back_unchanged(
    case: tuple[dict[str, Any], Any], browser: bool
) -> None:
    schema, args = case
    assert _same(_round_trip(schema, args, browser=browser), args)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(NAMES, JSON, max_size=4))
def test_without_a_schema_everything_is_json(args: dict[str, Any]) -> None:
    form = layout(None, args)
    assert form.nodes == () and form.json_open and form.schema is None
    assert _same(_round_trip(None, args), args)


# -- which field each schema gets ----------------------------------------------------------

SCHEMA = {
    "type": "object",
    "required": ["to", "amount", "address"],
    "additionalProperties": False,
    "$defs": {
        "Address": {
            "type": "object",
            "required": ["city"],
            "properties": {"city": {"type": "string"}, "zip": {"type": ["integer", "null"]}},
        }
    },
    "properties": {
        "memo": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "to": {"type": "string", "description": "Who gets it."},
        "amount": {"type": "integer", "minimum": 0, "maximum": 1000},
        "rate": {"type": "number"},
        "urgent": {"type": "boolean"},
        "currency": {"enum": ["EUR", "USD"]},
        "level": {"enum": [1, "one", None]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {"$ref": "#/$defs/Address"},
        "a.b": {"type": "string"},
        "odd": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        "remote": {"$ref": "https://example.com/schema.json"},
    },
}
PROPOSED = {"to": "ann", "amount": 5, "address": {"city": "Paris"}, "level": None, "odd": 3}


def _fields(form: Any) -> dict[str, Input]:
    return {i.label: i for i in form.inputs()}


def test_each_schema_gets_its_field() -> None:
    form = layout(SCHEMA, PROPOSED)
    fields = _fields(form)
    kinds = {label: (f.kind, f.required, f.nullable) for label, f in fields.items()}
    assert kinds == {
        "to": ("string", True, False),
        "amount": ("integer", True, False),
        "address.city": ("string", True, False),
        "address.zip": ("integer", False, True),
        "memo": ("string", False, True),
        "rate": ("number", False, False),
        "urgent": ("enum", False, False),
        "currency": ("enum", False, False),
        "level": ("enum", False, False),
        "tags": ("json", False, False),
        "a.b": ("string", False, False),
    }
    assert [n.label for n in form.nodes][:3] == ["to", "amount", "address"]  # required first
    assert isinstance(form.nodes[2], Group)
    assert fields["a.b"].name == "arg.a~1b" and fields["address.city"].name == "arg.address.city"
    assert fields["urgent"].options == (("true", "true"), ("false", "false"))
    assert fields["currency"].options == (("EUR", "EUR"), ("USD", "USD"))
    assert fields["level"].options == (("1", "1"), ('"one"', '"one"'), ("null", "(null)"))
    assert fields["to"].description == "Who gets it."
    assert form.json_open and form.json_keys == ("odd",)  # unformable: in the JSON textarea
    values = initial_values(form, PROPOSED)
    assert values["arg.level"] == "null" and values["arg.urgent"] == ""
    assert values[JSON_FIELD] == '{"odd": 3}'
    assert len({f.id for f in fields.values()}) == len(fields)


@pytest.mark.parametrize(
    ("value", "kind"),
    [("one line", "string"), ("two\nlines", "text"), ("nul\x00", None), (7, None)],
)
def test_a_value_its_field_cannot_hold_goes_to_json(value: Any, kind: str | None) -> None:
    form = layout({"type": "object", "properties": {"s": {"type": "string"}}}, {"s": value})
    assert [i.kind for i in form.inputs()] == ([kind] if kind else [])
    assert form.json_keys == (() if kind else ("s",))
    assert _same(_round_trip(form.schema, {"s": value}), {"s": value})


# -- what an empty field means, and where errors go -----------------------------------------


@pytest.mark.parametrize(
    ("proposed", "typed", "expected"),
    [
        ({"memo": "hi"}, "", {"memo": None}),  # nullable, cleared: null
        ({"memo": ""}, "", {"memo": ""}),  # as proposed
        ({}, "", {}),  # not proposed, left empty: absent
        ({}, "x", {"memo": "x"}),
    ],
)
def test_an_empty_field_means_what_the_proposal_meant(
    proposed: dict[str, Any], typed: str, expected: dict[str, Any]
) -> None:
    schema = {"type": "object", "properties": {"memo": {"type": ["string", "null"]}}}
    out, errors = parse(layout(schema, proposed), proposed, {"arg.memo": typed})
    assert errors == {} and out == expected


def _edit(changes: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    form = layout(SCHEMA, PROPOSED)
    out, errors = parse(form, PROPOSED, {**initial_values(form, PROPOSED), **changes})
    return out, errors or check(form, out)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"arg.amount": "1.5"}, "arg.amount", "enter a whole number"),
        ({"arg.rate": "NaN"}, "arg.rate", "enter a number"),
        ({"arg.rate": "1e999"}, "arg.rate", "enter a number"),
        ({"arg.currency": "GBP"}, "arg.currency", "choose one of the listed values"),
        ({"arg.tags": "[1,"}, "arg.tags", "not valid JSON"),
        ({"arg.amount": ""}, "arg.amount", "required"),
        ({"arg.address.city": "", "arg.to": "bo"}, "arg.address.city", ""),
        ({"arg.amount": "1001"}, "arg.amount", "1001 is greater than the maximum of 1000"),
        ({"arg.tags": '["a", 2]'}, "arg.tags", "2 is not of type 'string'"),
        ({"arg.address.zip": "x"}, "arg.address.zip", "enter a whole number"),
        ({JSON_FIELD: "[1]"}, JSON_FIELD, "must be a JSON object"),
        ({JSON_FIELD: '{"to": "x"}'}, JSON_FIELD, "has a field of its own"),
        ({JSON_FIELD: '{"odd": 3, "new": 1}'}, JSON_FIELD, "Additional properties"),
        ({JSON_FIELD: '{"odd": NaN}'}, JSON_FIELD, "not valid JSON"),
    ],
)
def test_each_error_is_keyed_by_its_field(
    changes: dict[str, str], field: str, message: str
) -> None:
    out, errors = _edit(changes)
    if not message:  # a required string cleared is "", which the schema allows
        assert errors == {} and out["address"] == {"city": ""}
        return
    assert message in errors.get(field, ""), errors


def test_a_valid_edit_gives_the_edited_arguments() -> None:
    changes = {"arg.amount": "90", "arg.address.zip": "75001", "arg.tags": '["x"]'}
    changes |= {"arg.urgent": "true", "arg.rate": "0.5", JSON_FIELD: '{"odd": "three"}'}
    out, errors = _edit(changes)
    assert errors == {}
    address = {"city": "Paris", "zip": 75001}
    assert out == {"to": "ann", "amount": 90, "address": address, "level": None, "odd": "three",
                   "tags": ["x"], "urgent": True, "rate": 0.5}  # fmt: skip


def test_an_unusable_schema_leaves_json_and_checks_nothing() -> None:
    form = layout({"type": 5}, {"a": 1})
    assert form.schema is None and form.problem and "not valid JSON Schema" in form.problem
    assert form.json_open and form.json_keys == ("a",)
    assert check(form, {"anything": True}) == {}
    listed = layout({"type": "array"}, {"a": 1})  # valid, but not an object of arguments
    assert listed.nodes == () and check(listed, {"a": 1}) != {}
