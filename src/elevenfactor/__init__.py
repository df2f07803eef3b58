"""elevenfactor: a runtime that takes AI agents from demo to production.

The public surface is re-exported here; everything in ``_private`` modules may change.
"""

from elevenfactor._version import __version__
from elevenfactor.config import ProjectConfig, Settings, load_project, load_settings
from elevenfactor.errors import ElevenFactorError
from elevenfactor.models import (
    AssistantMessage,
    Call,
    FunctionModel,
    Message,
    Model,
    ModelRegistry,
    ModelSettings,
    Response,
    ScriptedModel,
    StreamChunk,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolMessage,
    Usage,
    UserMessage,
)
from elevenfactor.store import Store, migrate, open_store

__all__ = [
    "AssistantMessage",
    "Call",
    "ElevenFactorError",
    "FunctionModel",
    "Message",
    "Model",
    "ModelRegistry",
    "ModelSettings",
    "ProjectConfig",
    "Response",
    "ScriptedModel",
    "Settings",
    "Store",
    "StreamChunk",
    "SystemMessage",
    "ToolCall",
    "ToolDefinition",
    "ToolMessage",
    "Usage",
    "UserMessage",
    "__version__",
    "load_project",
    "load_settings",
    "migrate",
    "open_store",
]
