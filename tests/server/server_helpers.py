"""Small helpers for reading the server's answers in tests."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import ClientResponse

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"
EMBEDDINGS = "/v1/embeddings"
MAX_BODY_BYTES = 64 * 1024


def chat_body(**fields: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], **fields}


def sse_payloads(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order, checking the framing as we go."""
    assert text.endswith("\n\n"), "every event ends with a blank line"
    payloads = []
    for block in text.strip("\n").split("\n\n"):
        assert block.startswith("data: "), block
        payloads.append(block[len("data: ") :])
    return payloads


async def read_stream(resp: ClientResponse) -> list[dict[str, Any]]:
    """The JSON chunks of a finished stream; asserts it ends with exactly one [DONE]."""
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    payloads = sse_payloads(await resp.text())
    assert payloads[-1] == "[DONE]"
    assert "[DONE]" not in payloads[:-1]
    return [json.loads(p) for p in payloads[:-1]]


async def error_of(resp: ClientResponse, status: int) -> dict[str, Any]:
    """The `error` object of an OpenAI-shaped error response with `status`."""
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/json")
    body = await resp.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in error["message"]
    return error


async def read_named_stream(resp: ClientResponse) -> list[dict[str, Any]]:
    """The events of a Responses/Anthropic stream: `event: <type>` naming each JSON `type`."""
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    text = await resp.text()
    assert text.endswith("\n\n"), "every event ends with a blank line"
    events = []
    for block in text.strip("\n").split("\n\n"):
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: "), block
        data = json.loads(data_line[len("data: ") :])
        assert data["type"] == name_line[len("event: ") :]
        events.append(data)
    return events


async def anthropic_error_of(resp: ClientResponse, status: int) -> dict[str, Any]:
    """The `error` object of an Anthropic-shaped error response with `status`."""
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/json")
    body = await resp.json()
    assert body["type"] == "error" and set(body) == {"type", "error"}
    assert set(body["error"]) == {"type", "message"} and body["error"]["message"]
    return body["error"]
