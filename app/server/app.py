"""The aiohttp application: settings and engine in, a ready-to-run app out."""

from __future__ import annotations

import logging

from aiohttp import web

from app.core.settings import ServerSettings
from app.engine.types import EngineLike
from app.server.errors import error_middleware
from app.server.security import add_cors_headers, security_middleware
from app.server.handlers import routes
from app.server.keys import ENGINE, IN_FLIGHT, RESPONSES, SETTINGS
from app.server.store import ResponseStore

log = logging.getLogger(__name__)


def create_app(settings: ServerSettings, engine: EngineLike) -> web.Application:
    """The OpenAI-compatible API over `engine`; it does not own or stop the engine."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[error_middleware, security_middleware],
    )
    app[SETTINGS] = settings
    app[ENGINE] = engine
    app[IN_FLIGHT] = set()
    app[RESPONSES] = ResponseStore()
    app.add_routes(routes)
    app.on_shutdown.append(_cancel_in_flight)
    app.on_response_prepare.append(add_cors_headers)
    return app


async def _cancel_in_flight(app: web.Application) -> None:
    """Stop running generations so their handlers finish instead of holding shutdown up."""
    tokens = list(app[IN_FLIGHT])
    if tokens:
        log.info("Shutting down: cancelling %d running generation(s)", len(tokens))
    for token in tokens:
        token.cancel()
