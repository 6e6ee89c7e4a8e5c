"""`GET /openapi.json`: the API described from the same pydantic models that validate it.

Fuzzers (schemathesis) and client generators read it; it can never drift from
what the server accepts because it is built from those models at startup.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.server.embeddings_api import EmbeddingRequest
from app.server.messages_protocol import MessagesRequest
from app.server.protocol import ChatCompletionRequest, CompletionRequest, ErrorResponse
from app.server.responses_protocol import ResponsesRequest

POSTS: dict[str, tuple[type[BaseModel], str]] = {
    "/v1/chat/completions": (ChatCompletionRequest, "Create a chat completion"),
    "/v1/completions": (CompletionRequest, "Create a text completion"),
    "/v1/responses": (ResponsesRequest, "Create a model response (Responses API)"),
    "/v1/messages": (MessagesRequest, "Create a message (Anthropic Messages API)"),
    "/v1/embeddings": (EmbeddingRequest, "Create embeddings"),
}
GETS = {
    "/health": "Server and model status",
    "/v1/models": "List models",
    "/v1/models/{model_id}": "Retrieve a model",
}
_ERRORS = {
    str(code): {"description": text, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    for code, text in [(400, "Invalid request"), (401, "Missing or wrong API key"), (404, "Not found"),
                       (413, "Body too large"), (503, "No model ready")]
}


def _ok(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"type": "object"}}, "text/event-stream": {"schema": {"type": "string"}}},
    }


def build_openapi(version: str) -> dict[str, Any]:
    models = [(m, "validation") for m, _ in POSTS.values()] + [(ErrorResponse, "serialization")]
    _, schemas = models_json_schema(models, ref_template="#/components/schemas/{model}")
    paths: dict[str, Any] = {}
    for path, (model, summary) in POSTS.items():
        paths[path] = {"post": {
            "summary": summary,
            "operationId": path.strip("/").replace("/", "_"),
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}},
            "responses": {"200": _ok(summary), **_ERRORS},
        }}
    for path, summary in GETS.items():
        operation: dict[str, Any] = {"summary": summary, "operationId": "get_" + path.strip("/").replace("/", "_").strip("{}"),
                                     "responses": {"200": _ok(summary), **_ERRORS}}
        if "{model_id}" in path:
            operation["parameters"] = [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}]
        paths[path] = {"get": operation}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Minerva local API", "version": version,
                 "description": "OpenAI- and Anthropic-compatible API of a local Minerva server."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": schemas.get("$defs", {})},
    }
