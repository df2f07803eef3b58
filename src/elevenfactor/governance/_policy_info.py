"""A guard policy summarised for people and tools (``guard list``, ``guard show``): its
version, the labels pinning it, where the project's ``guards:`` attaches it and its rules per
stage, as plain JSON-ready data."""

from __future__ import annotations

from typing import Any

from elevenfactor.config._guards import GuardsConfig
from elevenfactor.governance._guard_types import STAGES, Stage
from elevenfactor.governance._policy_book import parse_policy_ref
from elevenfactor.governance._policy_model import Policy

__all__ = ["policy_attachments", "policy_info", "policy_labels", "policy_rules"]


def policy_attachments(cfg: GuardsConfig) -> dict[str, list[str]]:
    """Policy id to where ``guards:`` attaches it (``default``, ``key:NAME``, ``team:NAME``,
    ``route:NAME``, with ``@SELECTOR`` when the reference pins a label or version).
    ``ConfigError`` when a reference is malformed."""
    refs = [("default", cfg.default)] if cfg.default is not None else []
    for kind, attached in (("key", cfg.keys), ("team", cfg.teams), ("route", cfg.routes)):
        refs += [(f"{kind}:{name}", ref) for name, ref in attached.items()]
    out: dict[str, list[str]] = {}
    for where, ref in refs:
        pid, selector = parse_policy_ref(ref)
        out.setdefault(pid, []).append(f"{where}@{selector}" if selector else where)
    return out


def policy_labels(cfg: GuardsConfig, policy: Policy) -> list[str]:
    """The labels of ``guards.labels`` that pin this version of the policy, sorted."""
    pins = cfg.labels.get(policy.id, {})
    return sorted(label for label, v in pins.items() if policy.full_hash.startswith(v))


def policy_rules(policy: Policy, stage: Stage) -> list[dict[str, Any]]:
    """The policy's rules at ``stage`` in order: name, kind, action and non-default options."""
    return [
        {
            "rule": spec.label,
            "kind": spec.rule,
            "action": spec.action,
            "options": spec.model_dump(
                mode="json", by_alias=True, exclude_defaults=True, exclude={"rule", "action"}
            ),
        }
        for spec in policy.spec.stages.rules(stage)
    ]


def policy_info(
    policy: Policy, cfg: GuardsConfig, attached: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """Id, version, hash, reference, labels, attachments, description, file and the rules of
    every stage that has some. ``attached``: ``policy_attachments(cfg)``, when already known."""
    if attached is None:
        attached = policy_attachments(cfg)
    stages = {stage: policy_rules(policy, stage) for stage in STAGES}
    return {
        "id": policy.id,
        "version": policy.version,
        "hash": policy.full_hash,
        "ref": policy.ref,
        "labels": policy_labels(cfg, policy),
        "attached": attached.get(policy.id, []),
        "description": policy.spec.description,
        "file": policy.file,
        "stages": {stage: rules for stage, rules in stages.items() if rules},
    }
