"""Configuration: deployment settings from the environment and the project file."""

from elevenfactor.config._cache import CacheConfig, SemanticCacheConfig
from elevenfactor.config._embeddings import EmbeddingModelConfig, EmbeddingsConfig
from elevenfactor.config._evals import EvalsConfig, OnlineRule
from elevenfactor.config._guards import GuardsConfig
from elevenfactor.config._limits import LimitsConfig, RateLimitConfig
from elevenfactor.config._memory import MemoryConfig
from elevenfactor.config._project import (
    BreakerConfig,
    DeploymentConfig,
    ErrorClass,
    FailoverConfig,
    McpServerSettings,
    PriceConfig,
    ProjectConfig,
    ProviderConfig,
    QueueConfig,
    RetryConfig,
    RouteConfig,
    RouteRule,
    RouteTarget,
    default_project,
    load_project,
    parse_project,
)
from elevenfactor.config._prompts import PromptsConfig
from elevenfactor.config._retention import RetentionConfig, RetentionRule
from elevenfactor.config._retrieval import IndexConfig, RetrievalConfig
from elevenfactor.config._settings import Settings, load_settings, mask_url

__all__ = [
    "BreakerConfig",
    "CacheConfig",
    "DeploymentConfig",
    "EmbeddingModelConfig",
    "EmbeddingsConfig",
    "ErrorClass",
    "EvalsConfig",
    "FailoverConfig",
    "GuardsConfig",
    "IndexConfig",
    "LimitsConfig",
    "McpServerSettings",
    "MemoryConfig",
    "OnlineRule",
    "PriceConfig",
    "ProjectConfig",
    "PromptsConfig",
    "ProviderConfig",
    "QueueConfig",
    "RateLimitConfig",
    "RetentionConfig",
    "RetentionRule",
    "RetrievalConfig",
    "RetryConfig",
    "RouteConfig",
    "RouteRule",
    "RouteTarget",
    "SemanticCacheConfig",
    "Settings",
    "default_project",
    "load_project",
    "load_settings",
    "mask_url",
    "parse_project",
]
