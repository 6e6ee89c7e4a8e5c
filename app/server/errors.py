"""Every failure leaves as OpenAI's error body: `{"error": {message, type, param, code}}`.

Clients (the openai SDK, Zed) only show the message when it sits in that
shape, and a stack trace never helps them, so one middleware turns our own
errors, aiohttp's HTTP exceptions and anything unexpected into it. Under
`/v1/messages` the body takes Anthropic's shape instead,
`{"type": "error", "error": {type, message}}`, which is what Anthropic's SDKs
and Claude Code read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from app.engine.types import EngineError
from app.server.messages_protocol import AnthropicErrorDetail, AnthropicErrorResponse
from app.server.protocol import ErrorDetail, ErrorResponse

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5

ANTHROPIC_PREFIX = "/v1/messages"

_ENGINE_STATUS = {
    "invalid_request": 400,
    "not_found": 404,
    "overloaded": 429,
    "unavailable": 503,
    "internal": 500,
}

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


class APIError(Exception):
    """An error to send to the client as it is."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or ("server_error" if status >= 500 else "invalid_request_error")
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def response(self, anthropic: bool = False) -> web.Response:
        body = self.anthropic_body() if anthropic else self.openai_body()
        return web.Response(
            status=self.status,
            text=body.model_dump_json(),
            content_type="application/json",
            headers=self.headers,
        )

    def openai_body(self) -> ErrorResponse:
        detail = ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=detail)

    def anthropic_body(self) -> AnthropicErrorResponse:
        """Claude Code compacts the conversation when it reads "prompt is too long"."""
        kind = _ANTHROPIC_TYPES.get(self.status)
        kind = kind or ("api_error" if self.status >= 500 else "invalid_request_error")
        message = self.message
        if self.code == "context_length_exceeded":
            message = f"prompt is too long: {message}"
        return AnthropicErrorResponse(error=AnthropicErrorDetail(type=kind, message=message))


def from_engine_error(error: EngineError) -> APIError:
    """Map an engine error's `kind` to a status; its message is meant for the client."""
    status = _ENGINE_STATUS.get(error.kind, 500)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else None
    return APIError(status, error.message, param=error.param, code=error.code, headers=headers)


def _param(loc: Sequence[int | str]) -> str | None:
    """`("messages", 0, "content")` -> `"messages[0].content"`.

    Parts written `[like this]` are skipped: pydantic's `[key]` tags, and the
    tags our discriminated unions use for the same reason.
    """
    param = ""
    for part in loc:
        if isinstance(part, int):
            param += f"[{part}]"
        elif not part.startswith("["):
            param += f".{part}" if param else part
    return param or None


def from_validation_error(exc: ValidationError) -> APIError:
    """The first problem, naming the field in `param` as OpenAI does."""
    first = exc.errors(include_url=False)[0]
    param = _param(first["loc"])
    where = f"Invalid value for '{param}': " if param else "Invalid request: "
    return APIError(400, where + first["msg"], param=param)


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> APIError:
    if exc.status == 404:
        message = f"Invalid URL ({request.method} {request.path})"
    elif exc.status == 405:
        message = f"Method {request.method} is not allowed for {request.path}"
    else:
        message = exc.text or exc.reason
    headers = {
        k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")
    }
    return APIError(exc.status, message, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into OpenAI's (or, for /v1/messages, Anthropic's) error body."""
    anthropic = request.path == ANTHROPIC_PREFIX or request.path.startswith(ANTHROPIC_PREFIX + "/")
    try:
        return await handler(request)
    except APIError as exc:
        level = logging.WARNING if exc.status >= 500 else logging.INFO
        log.log(level, "%s %s -> %d: %s", request.method, request.path, exc.status, exc.message)
        return exc.response(anthropic)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(request, exc).response(anthropic)
    except ConnectionResetError:
        raise  # the client left: nobody to answer
    except Exception:
        log.exception("Unexpected error handling %s %s", request.method, request.path)
        error = APIError(500, "The server had an error while processing your request.")
        return error.response(anthropic)
