"""Configuration: deployment settings from the environment and the project file."""

from elevenfactor.config._cache import CacheConfig
from elevenfactor.config._limits import LimitsConfig, RateLimitConfig
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
from elevenfactor.config._settings import Settings, load_settings, mask_url

__all__ = [
    "BreakerConfig",
    "CacheConfig",
    "DeploymentConfig",
    "ErrorClass",
    "FailoverConfig",
    "LimitsConfig",
    "McpServerSettings",
    "PriceConfig",
    "ProjectConfig",
    "ProviderConfig",
    "QueueConfig",
    "RateLimitConfig",
    "RetryConfig",
    "RouteConfig",
    "RouteRule",
    "RouteTarget",
    "Settings",
    "default_project",
    "load_project",
    "load_settings",
    "mask_url",
    "parse_project",
]
