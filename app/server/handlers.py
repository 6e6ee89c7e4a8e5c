"""The HTTP routes: each handler validates, hands over, and answers."""

from __future__ import annotations

import asyncio
import json
from functools import partial
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from app.core.version import app_version
from app.engine.types import EngineError
from app.server.convert import (
    ChatFormat,
    CompletionFormat,
    chat_generation_request,
    completion_generation_request,
    model_list,
)
from app.server.embeddings_api import EmbeddingRequest, embedding_response, wrong_dimensions
from app.server.openapi import build_openapi
from app.server.errors import RETRY_AFTER_S, APIError, from_engine_error, from_validation_error
from app.server.generation import json_model, respond
from app.server.keys import ENGINE, RESPONSES
from app.server.messages_api import MessagesFormat, messages_generation_request
from app.server.messages_protocol import MessagesRequest
from app.server.output import Output
from app.server.protocol import ChatCompletionRequest, CompletionRequest, ModelList
from app.server.responses_api import (
    ResponsesFormat,
    conversation,
    responses_generation_request,
)
from app.server.responses_protocol import ResponsesRequest
from app.server.store import ResponseStore

routes = web.RouteTableDef()

M = TypeVar("M", bound=BaseModel)


async def parse_body(request: web.Request, model: type[M]) -> M:
    """Invalid JSON and invalid fields both become 400s that say what is wrong."""
    raw = await request.read()
    try:
        data = json.loads(raw)
    except ValueError as exc:  # includes invalid UTF-8
        raise APIError(400, f"The request body is not valid JSON ({exc})") from None
    except RecursionError:
        raise APIError(400, "The request body is nested too deeply.") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    except RecursionError:
        raise APIError(400, "The request body is nested too deeply.") from None


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_openapi(app_version()))


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """200 once a model is ready, 503 (with its state) before that."""
    status = request.app[ENGINE].model_status()
    body = {
        "status": "ok" if status.state == "ready" else status.state,
        "model": status.model_id,
        "context_length": status.context_length,
        "progress": status.progress,
        "error": status.error,
    }
    if status.state == "ready":
        return web.json_response(body)
    return web.json_response(body, status=503, headers={"Retry-After": str(RETRY_AFTER_S)})


async def _models(request: web.Request) -> ModelList:
    engine = request.app[ENGINE]
    # Listing local models touches the disk: keep it off the event loop.
    available = await asyncio.to_thread(engine.available_models)
    return model_list(engine.model_status(), available)


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    return json_model(await _models(request))


@routes.get("/v1/models/{model_id:.+}")
async def get_model(request: web.Request) -> web.Response:
    """Model ids may contain '/', hence the greedy route pattern."""
    model_id = request.match_info["model_id"]
    for card in (await _models(request)).data:
        if card.id == model_id:
            return json_model(card)
    raise APIError(
        404, f"The model '{model_id}' does not exist", param="model", code="model_not_found"
    )


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, ChatCompletionRequest)
    gen = chat_generation_request(body)
    fmt = partial(ChatFormat, logprobs=gen.logprobs, include_usage=body.include_usage)
    return await respond(request, gen, fmt, stream=bool(body.stream))


@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, CompletionRequest)
    gen = completion_generation_request(body)
    fmt = partial(CompletionFormat, logprobs=gen.logprobs, include_usage=body.include_usage)
    return await respond(request, gen, fmt, stream=bool(body.stream))


def _history(store: ResponseStore, body: ResponsesRequest) -> list[dict[str, Any]]:
    """The conversation a `previous_response_id` continues (none without one)."""
    if not body.previous_response_id:
        return []
    found = store.get(body.previous_response_id)
    if found is None:
        raise APIError(
            400,
            f"Previous response with id '{body.previous_response_id}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return found


@routes.post("/v1/responses")
async def responses(request: web.Request) -> web.StreamResponse:
    """Stateless, unless the client continues a stored response by `previous_response_id`."""
    body = await parse_body(request, ResponsesRequest)
    store = request.app[RESPONSES]
    messages = conversation(body, _history(store, body))

    def remember(response_id: str, output: Output) -> None:
        store.put(response_id, [*messages, output.assistant_message()])

    gen = responses_generation_request(body, messages)
    fmt = partial(ResponsesFormat, body=body, remember=None if body.store is False else remember)
    return await respond(request, gen, fmt, stream=bool(body.stream))


@routes.post("/v1/messages")
async def messages(request: web.Request) -> web.StreamResponse:
    """Anthropic's API; errors on this route take Anthropic's shape (see errors.py)."""
    body = await parse_body(request, MessagesRequest)
    gen = messages_generation_request(body)
    return await respond(request, gen, MessagesFormat, stream=bool(body.stream))


@routes.post("/v1/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    body = await parse_body(request, EmbeddingRequest)
    try:
        future = request.app[ENGINE].embed(body.input, body.model or None)
        result = await asyncio.wrap_future(future)
    except EngineError as exc:
        raise from_engine_error(exc) from None
    problem = wrong_dimensions(body, result)
    if problem is not None:
        raise APIError(400, problem, param="dimensions")
    return json_model(embedding_response(body, result))
