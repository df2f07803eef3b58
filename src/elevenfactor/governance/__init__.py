"""Factors 8, 10, 11: governance. For now: API keys."""

from elevenfactor.governance._keys import ApiKey, KeyVerifier, create_key, list_keys, revoke_key

__all__ = ["ApiKey", "KeyVerifier", "create_key", "list_keys", "revoke_key"]
