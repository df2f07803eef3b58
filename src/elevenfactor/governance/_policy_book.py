"""The guard policies of a project, and which apply to a gateway call or an agent run.

Built once per process from the project file's ``guards:`` and the policy files
(``PolicyBook.load``, or ``PolicyBook.open`` to also find pinned versions recorded in the
store). Every reference in ``guards:`` is checked when the book is built, so a typo fails at
start-up, never on a request; afterwards ``for_call`` and ``for_agent`` are dictionary lookups.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from pathlib import Path

from elevenfactor.config._guards import GuardsConfig
from elevenfactor.errors import ConfigError
from elevenfactor.governance._policy_load import load_policy_dir, parse_policy
from elevenfactor.governance._policy_model import Policy
from elevenfactor.governance._policy_store import load_stored_policy, record_policy_version
from elevenfactor.store import Store

__all__ = ["SHIPPED_DEFAULT", "PolicyBook", "parse_policy_ref", "shipped_default"]

SHIPPED_DEFAULT = "elevenfactor:policies/default.yaml"
"""The file name the shipped default policy is recorded under."""

_REF = re.compile(r"^([^@\s]+)(?:@([^@\s]+))?$")
_HEX = re.compile(r"^[0-9a-f]{8,64}$")
_CallKey = tuple[str | None, str | None, str | None]


@cache
def shipped_default() -> Policy:
    """The ``default`` policy shipped with elevenfactor (``config/defaults/policies``)."""
    data = (
        resources.files("elevenfactor.config")
        .joinpath("defaults/policies/default.yaml")
        .read_bytes()
    )
    return parse_policy(data, file=SHIPPED_DEFAULT, policy_id="default")


def parse_policy_ref(ref: str) -> tuple[str, str | None]:
    """``strict@production`` as ``("strict", "production")``; ``strict`` as
    ``("strict", None)``. ``ConfigError`` when it is not a reference."""
    match = _REF.match(ref.strip()) if isinstance(ref, str) else None
    if match is None:
        raise ConfigError(
            f"{ref!r} is not a policy reference", expected="ID, ID@LABEL or ID@VERSION"
        )
    return match.group(1), match.group(2)


class PolicyBook:
    """The policies of a project (the files on disk, the shipped ``default`` unless a file
    replaces it, and pinned versions read from the store) and their attachments."""

    def __init__(
        self,
        policies: Mapping[str, Policy],
        config: GuardsConfig | None = None,
        *,
        directory: Path | None = None,
        pinned: Iterable[Policy] = (),
        source: str = "the project file",
    ) -> None:
        self.config = config if config is not None else GuardsConfig()
        self.directory = directory
        self._policies = dict(policies)
        self._pinned: dict[str, list[Policy]] = {}
        for policy in pinned:
            self._pinned.setdefault(policy.id, []).append(policy)
        for pid in self.config.labels:
            if pid not in self._policies and pid not in self._pinned:
                raise self._unknown(pid, key=f"guards.labels.{pid}", source=source)
        cfg = self.config
        self._default = (
            () if cfg.default is None else (self._attach(cfg.default, "guards.default", source),)
        )
        self._keys = {k: self._attach(r, f"guards.keys.{k}", source) for k, r in cfg.keys.items()}
        self._teams = {
            t: self._attach(r, f"guards.teams.{t}", source) for t, r in cfg.teams.items()
        }
        self._routes = {
            n: self._attach(r, f"guards.routes.{n}", source) for n, r in cfg.routes.items()
        }
        self._calls: dict[_CallKey, tuple[Policy, ...]] = {}
        self._agents: dict[str | None, tuple[Policy, ...]] = {None: self._default}

    @classmethod
    def load(
        cls,
        config: GuardsConfig,
        project_dir: Path,
        *,
        pinned: Iterable[Policy] = (),
        source: str = "the project file",
    ) -> PolicyBook:
        """Read every policy in ``project_dir / config.dir`` (plus the shipped ``default``
        unless the project has its own) and check every reference in ``config``: an invalid
        file or a reference to nothing is a ``ConfigError`` naming the file or the key
        (``guards.keys.NAME``). A reference to a version that is not the file on disk needs
        that version in ``pinned`` (``open`` reads them from the store)."""
        return cls(
            _read(config, project_dir),
            config,
            directory=project_dir / config.dir,
            pinned=pinned,
            source=source,
        )

    @classmethod
    async def open(
        cls,
        config: GuardsConfig,
        project_dir: Path,
        store: Store,
        *,
        source: str = "the project file",
    ) -> PolicyBook:
        """``load``, with the versions that references and labels pin but that are not the
        files on disk read from the versions recorded in ``store``. A label or reference whose
        version is in neither is a ``ConfigError`` naming the key."""
        on_disk = _read(config, project_dir)
        needed: list[tuple[str, str, str]] = [
            (f"guards.labels.{pid}.{label}", pid, version)
            for pid, pins in config.labels.items()
            for label, version in pins.items()
        ]
        refs = {"guards.default": config.default} if config.default is not None else {}
        for kind, attached in (("keys", config.keys), ("teams", config.teams)):
            refs.update({f"guards.{kind}.{name}": ref for name, ref in attached.items()})
        refs.update({f"guards.routes.{name}": ref for name, ref in config.routes.items()})
        for key, ref in refs.items():
            pid, selector = parse_policy_ref(ref)
            pins = config.labels.get(pid, {})
            if selector is not None and selector not in pins and _HEX.match(selector.lower()):
                needed.append((key, pid, selector.lower()))
        pinned: dict[str, Policy] = {}
        for key, pid, prefix in needed:
            disk = on_disk.get(pid)
            if disk is not None and disk.full_hash.startswith(prefix):
                continue
            found = await load_stored_policy(store, pid, prefix)
            if len(found) != 1:
                what = "several recorded versions" if found else "neither the file on disk nor"
                raise ConfigError(
                    f"version {prefix} of policy {pid!r} matches {what}"
                    + ("" if found else " a version recorded in the store"),
                    source=source,
                    key=key,
                    expected="a version of the policy (at least 8 hex digits): the file on "
                    "disk or one used before",
                    hint="give more hex digits" if found else None,
                )
            pinned[found[0].full_hash] = found[0]
        return cls(
            on_disk,
            config,
            directory=project_dir / config.dir,
            pinned=pinned.values(),
            source=source,
        )

    def get(self, ref: str) -> Policy:
        """The policy ``ref`` names: ``ID`` (the file on disk), ``ID@LABEL`` or
        ``ID@VERSION`` (a hex prefix of at least 8 digits), on disk or pinned. ``ConfigError``
        otherwise (use ``resolve`` to look a version up in the store)."""
        pid, selector = parse_policy_ref(ref)
        disk = self._policies.get(pid)
        if disk is None and pid not in self._pinned:
            raise self._unknown(pid)
        if selector is None:
            if disk is None:
                raise self._unknown(pid)
            return disk
        prefix, what = self._target(pid, selector)
        if disk is not None and disk.full_hash.startswith(prefix):
            return disk
        found = [p for p in self._pinned.get(pid, ()) if p.full_hash.startswith(prefix)]
        if len(found) == 1:
            return found[0]
        on_disk = f" ({disk.file} is version {disk.version})" if disk is not None else ""
        raise ConfigError(
            f"{what} of policy {pid!r} is not the file on disk{on_disk}",
            hint="versions used before are kept in the store: resolve it with the store",
        )

    async def resolve(self, ref: str, store: Store) -> Policy:
        """The policy ``ref`` names: on disk or pinned, else the version recorded in
        ``store``. ``ConfigError`` when it is none of them."""
        try:
            return self.get(ref)
        except ConfigError:
            pid, selector = parse_policy_ref(ref)
            if selector is None:
                raise
            prefix, what = self._target(pid, selector)
            found = await load_stored_policy(store, pid, prefix)
            if len(found) != 1:
                if not found and pid not in self._policies:
                    raise self._unknown(pid) from None
                versions = ", ".join(p.version for p in found)
                raise ConfigError(
                    f"{what} of policy {pid!r} is "
                    + (f"several recorded versions: {versions}" if found else "not recorded"),
                    hint="give more hex digits" if found else "neither on disk nor in the store",
                ) from None
            self._pinned.setdefault(pid, []).append(found[0])
            return found[0]

    def for_call(
        self, key_name: str | None, team_name: str | None, route: str | None
    ) -> list[Policy]:
        """The policies a gateway call is checked with: its key's, its team's and its route's
        (every attached one applies, in that order, each version once); when none is
        attached, the default (none when ``guards.default`` is null). No I/O."""
        key = (
            key_name if key_name in self._keys else None,
            team_name if team_name in self._teams else None,
            route if route in self._routes else None,
        )
        found = self._calls.get(key)
        if found is None:
            attached = [
                policy
                for policy in (
                    self._keys.get(key[0] or ""),
                    self._teams.get(key[1] or ""),
                    self._routes.get(key[2] or ""),
                )
                if policy is not None
            ]
            found = self._calls[key] = _unique(attached) if attached else self._default
        return list(found)

    def for_agent(self, agent_policy: str | None) -> list[Policy]:
        """The policies an agent run is checked with: its agent's ``policy:``, else the
        default. ``ConfigError`` when the reference names nothing on disk or pinned."""
        found = self._agents.get(agent_policy)
        if found is None:
            found = self._agents[agent_policy] = (self.get(str(agent_policy)),)
        return list(found)

    @property
    def default(self) -> list[Policy]:
        """The policy applied when none is attached (empty when ``guards.default`` is null)."""
        return list(self._default)

    def ids(self) -> list[str]:
        """The ids of the policies on disk (with the shipped ``default``), sorted."""
        return sorted(self._policies)

    def all(self) -> list[Policy]:
        """The policies on disk (with the shipped ``default``), by id."""
        return [self._policies[pid] for pid in self.ids()]

    def labels_of(self, policy_id: str, full_hash: str) -> tuple[str, ...]:
        """The labels that pin this version of ``policy_id``."""
        pins = self.config.labels.get(policy_id, {})
        return tuple(sorted(label for label, v in pins.items() if full_hash.startswith(v)))

    async def record_used(self, store: Store, policies: Iterable[Policy]) -> None:
        """Record these versions in the store (each written once per process)."""
        for policy in policies:
            await record_policy_version(store, policy)

    def _attach(self, ref: str, key: str, source: str) -> Policy:
        try:
            return self.get(ref)
        except ConfigError as exc:
            what = exc.message
            if exc.expected:
                what = what.removesuffix(f"; expected {exc.expected}")
            raise ConfigError(
                what, source=source, key=key, expected=exc.expected, hint=exc.hint
            ) from None

    def _target(self, pid: str, selector: str) -> tuple[str, str]:
        """The version prefix ``selector`` (a label or a version) stands for, and words for
        errors."""
        pins = self.config.labels.get(pid, {})
        if selector in pins:
            return pins[selector], f"label {selector!r} (version {pins[selector]})"
        if _HEX.match(selector.lower()):
            return selector.lower(), f"version {selector.lower()}"
        raise ConfigError(
            f"policy {pid!r} has no label {selector!r}",
            expected="one of its labels ("
            + (", ".join(sorted(pins)) or "none")
            + ", set under guards.labels) or a version: at least 8 lowercase hex digits",
        )

    def _unknown(
        self, pid: str, *, key: str | None = None, source: str | None = None
    ) -> ConfigError:
        where = f" in {self.directory}" if self.directory is not None else ""
        if self.directory is not None and not self.directory.is_dir():
            where += " (the directory does not exist)"
        known = ", ".join(sorted(self._policies)) or "(none)"
        return ConfigError(
            f"unknown policy {pid!r}",
            source=source,
            key=key,
            expected=f"a policy{where}: {known}",
            hint=f"create {pid}.yaml in the policies directory or fix the name",
        )


def _read(config: GuardsConfig, project_dir: Path) -> dict[str, Policy]:
    policies = load_policy_dir(project_dir / config.dir, root=project_dir)
    policies.setdefault("default", shipped_default())
    return policies


def _unique(policies: Iterable[Policy]) -> tuple[Policy, ...]:
    seen: set[str] = set()
    out = []
    for policy in policies:
        if policy.full_hash not in seen:
            seen.add(policy.full_hash)
            out.append(policy)
    return tuple(out)
