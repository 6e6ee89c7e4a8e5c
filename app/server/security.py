"""Who may talk to the API: Host check, API key, CORS.

A local server is reachable by any web page the user opens. Checking the Host
header defeats DNS rebinding (Ollama's CVE-2024-28224); CORS headers go only to
origins the user listed; an API key, compared in constant time, guards the
server whenever it listens beyond loopback.
"""

from __future__ import annotations

import hmac
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from app.core.settings import LOOPBACK_HOSTS, ServerSettings
from app.server.errors import APIError
from app.server.keys import SETTINGS

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health"})
_CORS_HEADERS = "Authorization, Content-Type, x-api-key, anthropic-version, OpenAI-Organization"


def _hostname(host_header: str) -> str:
    """`127.0.0.1:8080` -> `127.0.0.1`; `[::1]:8080` -> `::1`."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def host_allowed(settings: ServerSettings, host_header: str | None) -> bool:
    if settings.lan:
        return True  # LAN clients use the machine's own names; the API key guards it
    if not host_header:
        return False
    name = _hostname(host_header).lower()
    return name in LOOPBACK_HOSTS or name in {h.lower() for h in settings.allowed_hosts}


def key_matches(settings: ServerSettings, request: web.Request) -> bool:
    if not settings.api_key:
        return True
    auth = request.headers.get("Authorization", "")
    given = auth[7:] if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    return hmac.compare_digest(given.encode(), settings.api_key.encode())


def origin_allowed(settings: ServerSettings, origin: str | None) -> bool:
    return bool(origin) and ("*" in settings.cors_origins or origin in settings.cors_origins)


@web.middleware
async def security_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    if not host_allowed(settings, request.host):
        log.warning("Refused a request for host %r (allowed: loopback names)", request.host)
        raise APIError(403, f"Host '{request.host}' is not allowed.", code="host_not_allowed")
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return _preflight(settings, request)
    if request.path not in OPEN_PATHS and not key_matches(settings, request):
        raise APIError(
            401,
            "Missing or wrong API key: send it as 'Authorization: Bearer <key>' or 'x-api-key'.",
            type="authentication_error",
            code="invalid_api_key",
        )
    return await handler(request)


def _preflight(settings: ServerSettings, request: web.Request) -> web.Response:
    origin = request.headers.get("Origin")
    if not origin_allowed(settings, origin):
        raise APIError(403, "Cross-origin requests from this origin are not allowed.", code="cors_forbidden")
    return web.Response(status=204)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: CORS headers on every response (errors too) for allowed origins."""
    origin = request.headers.get("Origin")
    if not origin_allowed(request.app[SETTINGS], origin):
        return
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Vary"] = "Origin"
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = _CORS_HEADERS
    response.headers["Access-Control-Max-Age"] = "600"
