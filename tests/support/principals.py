"""Principals for library-level tests (the HTTP tests use real keys instead)."""

from __future__ import annotations

from elevenfactor.governance import DEFAULT_ORG, Principal


def reviewer(name: str, *groups: str, org: str = DEFAULT_ORG) -> Principal:
    """A reviewer called ``name`` in ``groups``."""
    return Principal(
        org_id=org,
        user_id=f"user_{name}",
        user_name=name,
        roles=frozenset({"member", "reviewer"}),
        groups=frozenset(groups),
    )


def member(name: str, org: str = DEFAULT_ORG) -> Principal:
    """A plain member called ``name``."""
    return Principal(org_id=org, user_id=f"user_{name}", user_name=name)
