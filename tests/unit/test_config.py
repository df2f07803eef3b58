"""Configuration: typed, validated, with errors that name the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from elevenfactor.config import default_project, load_project, load_settings, parse_project
from elevenfactor.errors import ConfigError

BASE = {
    "providers": {"o": {"type": "openai", "base_url": "http://127.0.0.1:1/v1"}},
    "models": {
        "a": {"provider": "o", "model": "m-a", "context_window": 1000},
        "b": {"provider": "o", "model": "m-b", "context_window": 9000},
    },
    "routes": {"default": {"chain": ["a", "b"]}},
}


def test_default_project_is_the_local_model() -> None:
    project = default_project()
    assert project.providers["local"].type == "local"
    assert project.routes["default"].chain == ["smollm2"]


def test_env_substitution_with_defaults_and_escapes() -> None:
    data = {
        **BASE,
        "providers": {
            "o": {
                "type": "openai",
                "base_url": "${URL}",
                "api_key": "${KEY:-fallback}",
                "headers": {"x": "$${literal}"},
            }
        },
    }
    project = parse_project(data, env={"URL": "http://h/v1"})
    prov = project.providers["o"]
    assert prov.base_url == "http://h/v1"
    assert prov.api_key is not None and prov.api_key.get_secret_value() == "fallback"
    assert prov.headers == {"x": "${literal}"}


def test_undefined_variable_names_file_and_key() -> None:
    data = {**BASE, "providers": {"o": {"type": "openai", "api_key": "${MISSING_KEY}"}}}
    with pytest.raises(ConfigError) as info:
        parse_project(data, source="proj.yaml", env={})
    msg = str(info.value)
    assert "proj.yaml" in msg and "providers.o.api_key" in msg and "MISSING_KEY" in msg
    assert info.value.code == "config_invalid"


@pytest.mark.parametrize(
    ("patch", "key", "fragment"),
    [
        ({"models": {"a": {"provider": "nope", "model": "x"}}}, "models.a.provider", "o"),
        ({"routes": {"default": {"chain": ["a", "zzz"]}}}, "routes.default.chain[1]", "zzz"),
        (
            {"routes": {"default": {"chain": ["a"], "weights": [{"model": "b"}]}}},
            "routes.default",
            "exactly one",
        ),
        (
            {"models": {"a": {"provider": "o", "model": "x", "timeout": 0}}},
            "models.a.timeout",
            "greater than 0",
        ),
        (
            {"models": {"a": {"provider": "o", "model": "x", "colour": "red"}}},
            "models.a.colour",
            "unknown key",
        ),
        (
            {"routes": {"default": {"chain": ["a"], "failover": {"on": ["meteor"]}}}},
            "routes.default.failover.on.0",
            "rate_limit",
        ),
        ({"default_route": "elsewhere"}, "default_route", "elsewhere"),
    ],
)
def test_invalid_config_is_precise(patch: dict[str, object], key: str, fragment: str) -> None:
    data = {**BASE, **patch}
    with pytest.raises(ConfigError) as info:
        parse_project(data, source="elevenfactor.yaml", env={})
    msg = str(info.value)
    assert msg.startswith("elevenfactor.yaml: ") and key in msg and fragment in msg


def test_load_project_reports_yaml_position(tmp_path: Path) -> None:
    path = tmp_path / "elevenfactor.yaml"
    path.write_text("providers:\n  o: {type: openai\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+"):
        load_project(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_project(tmp_path / "missing.yaml")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@db/x")
    monkeypatch.setenv("ELEVENFACTOR_DEV", "true")
    settings = load_settings()
    assert settings.port == 9123 and settings.dev
    assert settings.masked()["database_url"] == "postgresql://u:***@db/x"
    assert load_settings(port=7000).port == 7000  # an argument beats the environment
    monkeypatch.setenv("PORT", "eighty")
    with pytest.raises(ConfigError, match="PORT"):
        load_settings()


def test_embedded_default_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("ELEVENFACTOR_DATA_DIR", str(tmp_path))
    assert load_settings().resolved_database_url() == f"sqlite:///{tmp_path}/elevenfactor.db"


def test_every_setting_is_documented_in_the_readme() -> None:
    """The configuration table cannot drift from the code: each setting's variable is in it."""
    from pathlib import Path

    from elevenfactor.config import Settings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    internal = {"listen_fd"}  # set by the `serve --workers` supervisor for its children
    aliases = {
        "database_url": "DATABASE_URL",
        "redis_url": "REDIS_URL",
        "port": "PORT",
        "web_concurrency": "WEB_CONCURRENCY",
    }
    missing = [
        aliases.get(name, f"ELEVENFACTOR_{name.upper()}")
        for name in Settings.model_fields
        if name not in internal
        and f"`{aliases.get(name, f'ELEVENFACTOR_{name.upper()}')}`" not in readme
    ]
    assert not missing, f"settings missing from the README's configuration table: {missing}"
