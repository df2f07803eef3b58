"""m001_initial: blobs, API keys, model call records."""

STATEMENTS = (
    """CREATE TABLE blobs (
                hash TEXT PRIMARY KEY,
                size {bigint} NOT NULL,
                content {blob},
                created_at {real} NOT NULL
            )""",
    """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                prefix TEXT NOT NULL,
                key_hash TEXT NOT NULL UNIQUE,
                created_at {real} NOT NULL,
                revoked_at {real}
            )""",
    """CREATE TABLE model_calls (
                id TEXT PRIMARY KEY,
                trace_id TEXT NOT NULL,
                created_at {real} NOT NULL,
                api_key_id TEXT,
                route TEXT NOT NULL,
                provider TEXT,
                deployment TEXT,
                model TEXT,
                stream INTEGER NOT NULL,
                status TEXT NOT NULL,
                error_class TEXT,
                tokens_in INTEGER NOT NULL,
                tokens_out INTEGER NOT NULL,
                latency_ms {real} NOT NULL,
                cost {real},
                cache_hit INTEGER NOT NULL,
                failover_path TEXT NOT NULL,
                request_hash TEXT,
                response_hash TEXT
            )""",
    "CREATE INDEX model_calls_created ON model_calls (created_at)",
    "CREATE INDEX model_calls_trace ON model_calls (trace_id)",
)
