"""The HTTP routes: each handler validates, hands over, and answers."""

from __future__ import annotations

import asyncio
import json
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from app.server.convert import (
    ChatFormat,
    CompletionFormat,
    chat_generation_request,
    completion_generation_request,
    model_list,
)
from app.server.errors import RETRY_AFTER_S, APIError, from_validation_error
from app.server.generation import json_model, respond
from app.server.keys import ENGINE
from app.server.protocol import ChatCompletionRequest, CompletionRequest, ModelList

routes = web.RouteTableDef()

M = TypeVar("M", bound=BaseModel)


async def parse_body(request: web.Request, model: type[M]) -> M:
    """Invalid JSON and invalid fields both become 400s that say what is wrong."""
    raw = await request.read()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise APIError(400, f"The request body is not valid JSON ({exc})") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


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
    return await respond(
        request, gen, ChatFormat, stream=bool(body.stream), include_usage=body.include_usage
    )


@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, CompletionRequest)
    gen = completion_generation_request(body)
    return await respond(
        request, gen, CompletionFormat, stream=bool(body.stream), include_usage=body.include_usage
    )
