"""The HTTP service: OpenAI-compatible gateway, health, and graceful shutdown."""

from elevenfactor.server._app import create_app
from elevenfactor.server._runner import serve
from elevenfactor.server._state import Gateway

__all__ = ["Gateway", "create_app", "serve"]
