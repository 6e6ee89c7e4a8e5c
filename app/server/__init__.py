"""The OpenAI-compatible HTTP API, plus Anthropic's Messages API (aiohttp); it never imports MLX."""

from app.server.app import create_app
from app.server.runner import ServerThread, serve

__all__ = ["ServerThread", "create_app", "serve"]
