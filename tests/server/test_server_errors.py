"""Every failure is an OpenAI-shaped error with the right status, and never a stack trace."""

from __future__ import annotations

import pytest
from fake_engine import FakeEngine
from server_helpers import CHAT, MAX_BODY_BYTES, chat_body, error_of, read_stream

from app.engine.types import EngineError, InvalidRequest


async def test_invalid_json(client) -> None:
    resp = await client.post(
        CHAT, data=b'{"model": "x", "messages": [', headers={"Content-Type": "application/json"}
    )
    error = await error_of(resp, 400)
    assert error["type"] == "invalid_request_error"
    assert "not valid JSON" in error["message"]
    assert error["param"] is None


async def test_empty_body(client) -> None:
    error = await error_of(await client.post(CHAT, data=b""), 400)
    assert "not valid JSON" in error["message"]


async def test_body_not_an_object(client) -> None:
    error = await error_of(await client.post(CHAT, json=[1, 2]), 400)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"min_p": 2}, "min_p"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"seed": "x"}, "seed"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "many"}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"n": 2}, "n"),
        ({"n": 0}, "n"),
        ({"stop": 5}, "stop"),
        ({"stop": ["a", 1]}, "stop"),
        ({"stream": "maybe"}, "stream"),
        ({"stream_options": "yes"}, "stream_options"),
        ({"logprobs": "sure"}, "logprobs"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"logit_bias": {"12": "a lot"}}, "logit_bias.12"),
        ({"logit_bias": {"12": 101}}, "logit_bias.12"),
        ({"logit_bias": {"not-a-token": 1}}, "logit_bias.not-a-token"),
        ({"model": 5}, "model"),
        ({"messages": "hi"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": None}, "messages"),
        ({"messages": ["hi"]}, "messages[0]"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": ["hi"]}]}, "messages[0].content"),
    ],
)
async def test_invalid_fields_name_the_param(client, engine: FakeEngine, fields, param) -> None:
    error = await error_of(await client.post(CHAT, json=chat_body(**fields)), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param in error["message"]
    assert engine.requests == []


async def test_missing_messages(client) -> None:
    error = await error_of(await client.post(CHAT, json={"model": "fake-model"}), 400)
    assert error["param"] == "messages"
    assert "Field required" in error["message"]


async def test_n_message_is_clear(client) -> None:
    error = await error_of(await client.post(CHAT, json=chat_body(n=2)), 400)
    assert "Only n=1 is supported" in error["message"]


async def test_image_part_rejected_clearly(client) -> None:
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, part]}]
    error = await error_of(await client.post(CHAT, json=chat_body(messages=messages)), 400)
    assert error["param"] == "messages[0].content"
    assert "'image_url' are not supported" in error["message"]


async def test_unknown_model(client) -> None:
    error = await error_of(await client.post(CHAT, json=chat_body(model="gpt-17")), 404)
    assert error == {
        "message": "The model 'gpt-17' does not exist",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


async def test_unknown_model_when_streaming_is_still_an_http_error(client) -> None:
    error = await error_of(
        await client.post(CHAT, json=chat_body(model="gpt-17", stream=True)), 404
    )
    assert error["code"] == "model_not_found"


async def test_context_overflow(client) -> None:
    messages = [{"role": "user", "content": "word " * 100}]
    error = await error_of(
        await client.post(CHAT, json=chat_body(messages=messages, stream=True)), 400
    )
    assert error["message"].startswith("This model's maximum context length is 64 tokens")
    assert error["code"] == "context_length_exceeded"
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages"


@pytest.mark.parametrize("state", ["loading", "empty", "error"])
async def test_unavailable_while_not_ready(client, engine: FakeEngine, state) -> None:
    engine.state = state
    resp = await client.post(CHAT, json=chat_body())
    error = await error_of(resp, 503)
    assert resp.headers["Retry-After"].isdigit()
    assert error["type"] == "server_error"
    assert error["code"] == "model_not_ready"


async def test_engine_invalid_request(client, engine: FakeEngine) -> None:
    engine.error = InvalidRequest(
        "Token id 999999 is out of range", param="prompt", code="invalid_token"
    )
    error = await error_of(await client.post(CHAT, json=chat_body()), 400)
    assert error == {
        "message": "Token id 999999 is out of range",
        "type": "invalid_request_error",
        "param": "prompt",
        "code": "invalid_token",
    }


async def test_engine_internal_error(client, engine: FakeEngine) -> None:
    engine.error = EngineError("Metal ran out of memory")
    error = await error_of(await client.post(CHAT, json=chat_body()), 500)
    assert error["type"] == "server_error"
    assert error["message"] == "Metal ran out of memory"


async def test_unexpected_exception_is_a_generic_500(
    client, engine: FakeEngine, monkeypatch, caplog
) -> None:
    def broken_submit(request, sink):
        raise RuntimeError("secret internals at /Users/me/minerva")

    monkeypatch.setattr(engine, "submit", broken_submit)
    resp = await client.post(CHAT, json=chat_body())
    error = await error_of(resp, 500)
    assert error["type"] == "server_error"
    assert "secret" not in error["message"]
    assert "secret internals" in caplog.text  # logged for us, not sent to them


async def test_failure_mid_generation_without_stream_is_http_error(
    client, engine: FakeEngine
) -> None:
    engine.fail_after = 2
    error = await error_of(await client.post(CHAT, json=chat_body()), 500)
    assert error["message"] == "The fake engine broke"


async def test_failure_mid_stream_ends_stream_cleanly(client, engine: FakeEngine) -> None:
    engine.fail_after = 2
    body = chat_body(stream=True, stream_options={"include_usage": True})
    resp = await client.post(CHAT, json=body)
    chunks = await read_stream(resp)
    assert not any("error" in chunk for chunk in chunks)
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["Hello", ","]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 2


async def test_unknown_route(client) -> None:
    error = await error_of(await client.post("/v1/chat/complete", json=chat_body()), 404)
    assert error["message"] == "Invalid URL (POST /v1/chat/complete)"
    assert error["type"] == "invalid_request_error"
    await error_of(await client.get("/"), 404)


async def test_wrong_method(client) -> None:
    resp = await client.get(CHAT)
    error = await error_of(resp, 405)
    assert "GET" in error["message"]
    assert "POST" in resp.headers["Allow"]


async def test_body_too_large(client) -> None:
    body = chat_body(messages=[{"role": "user", "content": "x" * (MAX_BODY_BYTES + 1)}])
    error = await error_of(await client.post(CHAT, json=body), 413)
    assert error["type"] == "invalid_request_error"
    assert str(MAX_BODY_BYTES) in error["message"]
