"""The MCP server's tool policy: which rule gates a call, which destructive tools are exposed,
and how a bad rule is reported."""

from __future__ import annotations

import pytest

from elevenfactor.config import McpServerSettings
from elevenfactor.errors import ConfigError
from elevenfactor.runtime import AgentSpec
from elevenfactor.runtime._mcp_tools import McpTools
from elevenfactor.tools import ToolContext
from tests.support.mcp_tools import ops


def _tools(**settings: object) -> McpTools:
    agents = {
        "keeper": AgentSpec.model_validate(
            {
                "name": "keeper",
                "tools": [{"toolset": "ops", "prefix": "db_"}],
                "approval": [{"tools": ["db_drop"], "group": "dba"}],
            }
        ),
        "other": AgentSpec.model_validate(
            {"name": "other", "approval": [{"risk": ["destructive"], "group": "nobody"}]}
        ),
    }
    return McpTools(
        McpServerSettings.model_validate({"tools": ["ops.*"], **settings}), {"ops": ops}, agents
    )


async def test_the_server_rules_come_first_then_the_agents_with_their_prefix() -> None:
    policy = _tools(
        approval=[
            {
                "tools": ["ops.refund"],
                "when": [{"arg": "amount", "op": ">", "value": 100}],
                "group": "finance",
            }
        ]
    )
    exposed = await policy.exposed(ToolContext())
    assert set(exposed) == {"ops.lookup", "ops.refund", "ops.drop"}  # purge: no rule
    ts, refund = exposed["ops.refund"]
    big = policy.rule(ts, refund, {"order": "A", "amount": 500})
    assert big is not None and big.group == "finance"
    assert policy.rule(ts, refund, {"order": "A", "amount": 5}) is None
    _, drop = exposed["ops.drop"]
    rule = policy.rule(ts, drop, {"table": "t"})
    # `other` does not use the ops toolset, so its catch-all destructive rule does not apply.
    assert rule is not None and rule.group == "dba"


async def test_allow_destructive_exposes_an_ungoverned_destructive_tool() -> None:
    exposed = await _tools(allow_destructive=["ops.pur*"]).exposed(ToolContext())
    assert "ops.purge" in exposed
    ts, purge = exposed["ops.purge"]
    assert _tools(allow_destructive=["ops.pur*"]).rule(ts, purge, {"target": "x"}) is None


@pytest.mark.parametrize(
    ("rule", "key"),
    [
        ({"tools": ["x"], "colour": "red"}, "mcp_server.approval.0.colour"),
        ({"before_model": True}, "mcp_server.approval.0.before_model"),
        ({"risk": ["dangerous"]}, "mcp_server.approval.0.risk.0"),
    ],
)
def test_a_bad_rule_names_its_key(rule: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        _tools(approval=[rule])
    assert err.value.key == key
