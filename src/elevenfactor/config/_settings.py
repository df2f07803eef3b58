"""Deployment settings from the environment (twelve-factor III).

Precedence, highest first: a command-line argument > the project file > the environment > the
default. Deployment settings (URLs, port, secrets) live only in the environment; the project file
holds models, providers and routes, which are code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from elevenfactor.errors import ConfigError

__all__ = ["Settings", "load_settings"]

_SECRET_KEYS = ("database_url", "redis_url", "retrieval_url")
_HIDDEN_KEYS = ("ledger_signing_key", "guard_vault_key", "metrics_token")


class Settings(BaseSettings):
    """Typed deployment settings, read from ``ELEVENFACTOR_*`` and the standard variables."""

    model_config = SettingsConfigDict(env_prefix="ELEVENFACTOR_", extra="ignore", frozen=True)

    data_dir: Path = Field(default=Path(".elevenfactor"), description="Where embedded state lives.")
    config_file: Path | None = Field(
        default=None, description="Project file; defaults to ./elevenfactor.yaml if present."
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "ELEVENFACTOR_DATABASE_URL"),
        description="sqlite:///path or postgresql://...; defaults to SQLite under data_dir.",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "ELEVENFACTOR_REDIS_URL"),
        description="Redis URL for budget counters, rate limits and the response cache, shared"
        " by every process (credentials masked in output); unset: the store and in-process.",
    )
    retrieval_url: str | None = Field(
        default=None,
        description="Where retrieval indexes live: a postgresql:// URL (pgvector there), or a"
        " folder (a path or file:///path) for the embedded backend (SQLite + usearch files);"
        " unset: `indexes/` beside the SQLite store's file, or data_dir/indexes with a"
        " PostgreSQL store (credentials masked in output).",
    )
    host: str = Field(default="127.0.0.1", description="Interface to bind.")
    port: int = Field(
        default=8000,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("PORT", "ELEVENFACTOR_PORT"),
        description="Port to bind.",
    )
    dev: bool = Field(default=False, description="Allow unauthenticated requests from loopback.")
    log_level: str = Field(default="info", description="One of debug, info, warning, error.")
    log_scrub: bool = Field(
        default=True,
        description="Mask secrets and personal data (e-mail, phone, cards, IBAN, national ids; "
        "not IP addresses) in every log line with the guard redactors.",
    )
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, gt=0, description="Largest request body accepted, in bytes."
    )
    shutdown_timeout: float = Field(
        default=30.0, ge=0, description="Seconds in-flight requests get to finish on SIGTERM."
    )
    drain_seconds: float = Field(
        default=1.0, ge=0, description="Seconds to answer 503 (readiness off) before closing."
    )
    record_payloads: bool = Field(default=True, description="Store request/response bodies.")
    trace_content: bool = Field(
        default=False,
        description="With tracing on (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER set),"
        " add each model call's prompt and completion to its span as events, in the form the"
        " call record stores (guard-redacted); needs record_payloads too. Off: no content in"
        " spans.",
    )
    web_concurrency: int = Field(
        default=1,
        ge=1,
        le=64,
        validation_alias=AliasChoices("WEB_CONCURRENCY", "ELEVENFACTOR_WEB_CONCURRENCY"),
        description="Server processes sharing one listening socket.",
    )
    listen_fd: int | None = Field(
        default=None, description="Serve on this inherited socket (set by the supervisor)."
    )
    in_process_worker: bool | None = Field(
        default=None,
        description="Run a worker inside `serve`; default: yes on SQLite, no on PostgreSQL.",
    )
    worker_concurrency: int = Field(default=8, ge=1, description="Runs a worker executes at once.")
    worker_queues: str = Field(default="default", description="Comma-separated queues to serve.")
    worker_poll_interval: float = Field(
        default=1.0,
        gt=0,
        description="Longest wait of an idle worker between polls for runnable runs (due timers,"
        " dead workers' runs); new and woken runs wake it at once (PostgreSQL: LISTEN/NOTIFY).",
    )
    approval_webhook: str | None = Field(
        default=None, description="URL POSTed (JSON) when an approval becomes pending."
    )
    redis_prefix: str = Field(
        default="elevenfactor:",
        min_length=1,
        description="Prefix of every Redis key (budget counters, rate limits, cache), so several"
        " deployments can share one Redis.",
    )
    hold_ttl: float = Field(
        default=300.0,
        gt=0,
        description="Seconds a budget reservation lives if its process dies before settling it;"
        " then it expires and the budget gets the amount back. A call running longer than this"
        " is still charged in full when it ends.",
    )
    lease_seconds: float = Field(default=15.0, gt=0.5, description="Run lease; heartbeats at 1/3.")
    allowed_hosts: str = Field(
        default="",
        description="Comma-separated Host values served besides loopback in dev mode; outside"
        " dev mode, if set, the only ones served.",
    )
    allowed_origins: str = Field(
        default="", description="Comma-separated browser origins accepted (e.g. a dashboard)."
    )
    purge_interval: float = Field(
        default=300.0,
        ge=0,
        description="Seconds between purges of expired memories and cached answers in `serve`"
        " and `worker` (0: never; expired rows are not served either way).",
    )
    ui_session_idle: float = Field(
        default=8 * 3600.0,
        gt=0,
        description="Seconds a dashboard (`/ui`) sign-in lasts without a page view.",
    )
    ui_session_max: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="Seconds a dashboard sign-in lasts at most, however active.",
    )
    ui_secure_cookies: bool = Field(
        default=False,
        description="Mark dashboard cookies `Secure` even on plain HTTP (set it behind a TLS"
        " proxy; requests seen as https get it anyway).",
    )
    ledger_seal_interval: float = Field(
        default=0.5, gt=0, description="Seconds between ledger seals in `serve` and `worker`."
    )
    ledger_signing_key: str | None = Field(
        default=None,
        description="Ed25519 private key (base64 of the 32-byte seed) that signs ledger heads.",
    )
    ledger_verify_key: str | None = Field(
        default=None,
        description="Ed25519 public key (base64, 32 bytes) that `audit verify --against` trusts.",
    )
    ledger_head_dir: Path | None = Field(
        default=None,
        description="Where `serve` writes a signed ledger head every ledger_head_interval.",
    )
    ledger_head_interval: float = Field(
        default=300.0, gt=0, description="Seconds between scheduled signed head exports."
    )
    guard_vault_key: str | None = Field(
        default=None,
        description="AES-256 key (base64 of 32 bytes) that encrypts agent runs' placeholder maps"
        " (guard rules that `redact` in `placeholder` mode); unset: runs mask instead.",
    )
    guard_vault_ttl: float = Field(
        default=86400.0,
        gt=0,
        description="Seconds a run's placeholder map is kept after the run ends (then purged).",
    )
    metrics: bool = Field(
        default=True,
        description="Collect Prometheus metrics and serve them on `GET /metrics` (false: every"
        " metric hook is a no-op and /metrics answers 404).",
    )
    metrics_token: str | None = Field(
        default=None,
        description="Bearer token for Prometheus scrapers on `GET /metrics`: sees every"
        " organisation's gauges (an admin API key sees its own organisation's).",
    )
    metrics_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="Seconds the store-derived gauges of `/metrics` (runs, approvals, budgets,"
        " leases) are reused between scrapes, so frequent scrapes never load the store.",
    )

    release: str | None = Field(
        default=None,
        description="Pin this process to a release (its id, an id prefix of at least 8 hex"
        " digits, or its name; `elevenfactor release list`): `serve` and `worker` refuse to"
        " start when the files on disk are not that release's, and every run and model call"
        " records it. Unset: the release active in `environment`, if any.",
    )
    environment: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="The deployment environment this process belongs to (`production`,"
        " `staging`...): without `release`, it runs the release `elevenfactor release activate"
        " --env` made active there (none ever activated: no release, nothing is checked).",
    )

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"debug", "info", "warning", "error"}:
            raise ValueError("one of debug, info, warning, error")
        return value

    def resolved_database_url(self) -> str:
        """The store URL: ``DATABASE_URL`` or the embedded SQLite file under ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'elevenfactor.db').as_posix()}"

    def resolved_config_file(self) -> Path | None:
        """The project file in use, or None for the built-in default."""
        if self.config_file is not None:
            return self.config_file
        candidate = Path("elevenfactor.yaml")
        return candidate if candidate.exists() else None

    def serves_worker(self) -> bool:
        """Whether ``serve`` runs an in-process worker."""
        if self.in_process_worker is not None:
            return self.in_process_worker
        return self.resolved_database_url().startswith("sqlite")

    def masked(self) -> dict[str, Any]:
        """The settings as a dict, with credentials in URLs masked."""
        out = self.model_dump(mode="json")
        out["database_url"] = self.resolved_database_url()
        for key in _SECRET_KEYS:
            if out.get(key):
                out[key] = mask_url(out[key])
        for key in _HIDDEN_KEYS:
            if out.get(key):
                out[key] = "***"
        return out


def mask_url(url: str) -> str:
    """Hide the password in ``scheme://user:password@host/...``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; ``overrides`` (command-line arguments) win."""
    try:
        clean = {k: v for k, v in overrides.items() if v is not None}
        return Settings(**clean)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        env_name = (
            key.upper()
            if key.upper() in {"DATABASE_URL", "REDIS_URL", "PORT"}
            else (f"ELEVENFACTOR_{key.upper()}")
        )
        raise ConfigError(
            f"invalid value {err.get('input')!r}",
            source="environment",
            key=env_name,
            expected=err["msg"],
        ) from None
