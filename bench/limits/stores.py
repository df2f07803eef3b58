"""The shared services the targets use: a PostgreSQL schema and a Redis key prefix of this run's
own, checked before use and removed afterwards."""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass, field

__all__ = ["PG_URL", "REDIS_URL", "Services"]

PG_URL = os.environ.get("ELEVENFACTOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = "redis://127.0.0.1:6379/0"
_REDIS_HOST, _REDIS_PORT = "127.0.0.1", 6379


@dataclass
class Services:
    """PostgreSQL schemas and Redis prefixes handed out in this run, for cleaning up."""

    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    schemas: list[str] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)

    @staticmethod
    def check_postgres() -> str | None:
        """Why PostgreSQL cannot be used, or None."""
        import psycopg

        try:
            with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            return f"PostgreSQL at {PG_URL}: {exc}"
        return None

    @staticmethod
    def check_redis() -> str | None:
        """Why Redis cannot be used, or None."""
        import redis

        try:
            redis.Redis.from_url(REDIS_URL, socket_timeout=5).ping()
        except redis.RedisError as exc:
            return f"Redis at {REDIS_URL}: {exc}"
        return None

    @property
    def redis_host_port(self) -> tuple[str, int]:
        """Where Redis listens (for LiteLLM's ``redis_host``/``redis_port``)."""
        return _REDIS_HOST, _REDIS_PORT

    def postgres_url(self, name: str) -> str:
        """A new empty schema of this run; the URL that makes it the search path."""
        import psycopg

        schema = f"bench_limits_{self.run}_{name.replace('-', '_')}"
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        self.schemas.append(schema)
        sep = "&" if "?" in PG_URL else "?"
        return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"

    def redis_env(self, name: str) -> dict[str, str]:
        """``REDIS_URL`` and a ``ELEVENFACTOR_REDIS_PREFIX`` of this run and target."""
        prefix = f"bench-limits-{self.run}-{name}:"
        self.prefixes.append(prefix)
        return {"REDIS_URL": REDIS_URL, "ELEVENFACTOR_REDIS_PREFIX": prefix}

    def litellm_id(self, name: str) -> str:
        """A deployment id for LiteLLM, unique to this run: its Redis keys contain it."""
        ident = f"bench-limits-{self.run}-{name}"
        self.prefixes.append(f"*{ident}*")
        return ident

    def cleanup(self) -> None:
        """Drop the schemas, delete the Redis keys; never fails the run."""
        import psycopg
        import redis

        with contextlib.suppress(psycopg.Error), psycopg.connect(PG_URL, autocommit=True) as conn:
            for schema in self.schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        with contextlib.suppress(redis.RedisError):
            client = redis.Redis.from_url(REDIS_URL)
            for prefix in self.prefixes:
                pattern = prefix if prefix.startswith("*") else prefix + "*"
                keys = list(client.scan_iter(match=pattern, count=1000))
                for i in range(0, len(keys), 500):
                    client.delete(*keys[i : i + 500])
