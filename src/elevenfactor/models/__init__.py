"""Factor 1: the model serving layer — messages, the Model protocol, providers and wrappers."""

from elevenfactor.models._breaker import CircuitBreaker
from elevenfactor.models._deployment import Deployment
from elevenfactor.models._failover import Failover, Weighted
from elevenfactor.models._messages import (
    AssistantMessage,
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
from elevenfactor.models._registry import ModelRegistry, Resolved, wrap_deployment
from elevenfactor.models._retry import Retry
from elevenfactor.models.providers.testing import FunctionModel, ScriptedModel

__all__ = [
    "AssistantMessage",
    "Attempt",
    "Call",
    "CircuitBreaker",
    "Deployment",
    "Failover",
    "FunctionModel",
    "Message",
    "Model",
    "ModelRegistry",
    "ModelSettings",
    "Provider",
    "Resolved",
    "Response",
    "ResponseFormat",
    "Retry",
    "ScriptedModel",
    "StreamChunk",
    "SystemMessage",
    "ToolCall",
    "ToolCallDelta",
    "ToolDefinition",
    "ToolMessage",
    "Usage",
    "UserMessage",
    "Weighted",
    "available_providers",
    "load_provider",
    "wrap_deployment",
]
