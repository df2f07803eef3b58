"""Factor 1: the model serving layer — messages, the Model protocol, providers and wrappers."""

from elevenfactor.models._breaker import CircuitBreaker
from elevenfactor.models._cache import ResponseCache, cache_key
from elevenfactor.models._cache_backends import (
    CacheBackend,
    MemoryCache,
    RedisCache,
    StoreCache,
    open_response_cache,
    purge_expired,
)
from elevenfactor.models._deployment import Deployment
from elevenfactor.models._failover import Failover, Weighted
from elevenfactor.models._limits import (
    Limiter,
    LimitKey,
    LimitWait,
    LocalLimits,
    Permit,
    limit_wait,
    limits_for,
    open_limiter,
    priority_of,
)
from elevenfactor.models._messages import (
    AssistantMessage,
    CacheRequest,
    Message,
    ModelSettings,
    Response,
    ResponseFormat,
    StreamChunk,
    SystemMessage,
    ToolCall,
    ToolCallDelta,
    ToolDefinition,
    ToolMessage,
    Usage,
    UserMessage,
)
from elevenfactor.models._protocol import Attempt, Call, Model
from elevenfactor.models._provider import Provider, available_providers, load_provider
from elevenfactor.models._ratelimit import DeploymentLimiter, estimate_tokens
from elevenfactor.models._registry import ModelRegistry, Resolved, wrap_deployment
from elevenfactor.models._retry import Retry
from elevenfactor.models._routing import Escalate, Validator, prompt_tokens
from elevenfactor.models._semantic_cache import SemanticCache, semantic_namespace
from elevenfactor.models._semantic_index import SemanticIndex, purge_semantic_expired
from elevenfactor.models.providers.testing import FunctionModel, ScriptedModel

__all__ = [
    "AssistantMessage",
    "Attempt",
    "CacheBackend",
    "CacheRequest",
    "Call",
    "CircuitBreaker",
    "Deployment",
    "DeploymentLimiter",
    "Escalate",
    "Failover",
    "FunctionModel",
    "LimitKey",
    "LimitWait",
    "Limiter",
    "LocalLimits",
    "MemoryCache",
    "Message",
    "Model",
    "ModelRegistry",
    "ModelSettings",
    "Permit",
    "Provider",
    "RedisCache",
    "Resolved",
    "Response",
    "ResponseCache",
    "ResponseFormat",
    "Retry",
    "ScriptedModel",
    "SemanticCache",
    "SemanticIndex",
    "StoreCache",
    "StreamChunk",
    "SystemMessage",
    "ToolCall",
    "ToolCallDelta",
    "ToolDefinition",
    "ToolMessage",
    "Usage",
    "UserMessage",
    "Validator",
    "Weighted",
    "available_providers",
    "cache_key",
    "estimate_tokens",
    "limit_wait",
    "limits_for",
    "load_provider",
    "open_limiter",
    "open_response_cache",
    "priority_of",
    "prompt_tokens",
    "purge_expired",
    "purge_semantic_expired",
    "semantic_namespace",
    "wrap_deployment",
]
