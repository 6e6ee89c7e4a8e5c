"""The real openai SDK against a real server thread (port 0) over the fake engine."""

from __future__ import annotations

import openai
import pytest
from fake_engine import FakeEngine

from app.engine.types import ModelUnavailable

MESSAGES = [{"role": "user", "content": "hi"}]


def test_chat(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="fake-model", messages=MESSAGES)
    assert completion.choices[0].message.content == "Hello, world!"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == 6
    assert completion.usage.prompt_tokens_details.cached_tokens == 0


def test_chat_stream_with_usage(sdk: openai.OpenAI) -> None:
    chunks = list(
        sdk.chat.completions.create(
            model="fake-model",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello, world!"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 4


def test_stream_helper(sdk: openai.OpenAI) -> None:
    with sdk.chat.completions.stream(
        model="fake-model", messages=MESSAGES, logprobs=True
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "content.delta" in events and "content.done" in events
    assert final.choices[0].message.content == "Hello, world!"
    assert final.choices[0].finish_reason == "stop"
    assert [lp.token for lp in final.choices[0].logprobs.content] == ["Hello", ",", " world", "!"]


def test_completions(sdk: openai.OpenAI) -> None:
    completion = sdk.completions.create(
        model="fake-model", prompt="Say hello", max_tokens=2, logprobs=1
    )
    assert completion.choices[0].text == "Hello,"
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].logprobs.tokens == ["Hello", ","]
    streamed = sdk.completions.create(model="fake-model", prompt="Say hello", stream=True)
    assert "".join(c.choices[0].text for c in streamed) == "Hello, world!"


def test_models(sdk: openai.OpenAI, engine: FakeEngine) -> None:
    engine.add_model("org/other")
    assert [m.id for m in sdk.models.list()] == ["fake-model", "org/other"]
    assert sdk.models.retrieve("org/other").owned_by == "minerva"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("org/missing")


def test_bad_request_keeps_message_and_param(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="fake-model", messages=MESSAGES, n=2)
    assert "Only n=1 is supported" in caught.value.message
    assert caught.value.param == "n"
    assert caught.value.type == "invalid_request_error"


def test_unknown_model(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="gpt-17", messages=MESSAGES, stream=True)
    assert "The model 'gpt-17' does not exist" in caught.value.message
    assert caught.value.code == "model_not_found"


def test_context_overflow(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "w " * 200}]
        )
    assert "maximum context length is 64 tokens" in caught.value.message
    assert caught.value.code == "context_length_exceeded"


def test_unavailable(sdk: openai.OpenAI, engine: FakeEngine) -> None:
    engine.error = ModelUnavailable("The model is still loading")
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model="fake-model", messages=MESSAGES)
    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after"].isdigit()
    assert "still loading" in caught.value.message


def test_clamp_header_via_raw_response(sdk: openai.OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="fake-model", messages=MESSAGES, max_tokens=32000
    )
    assert raw.headers["x-minerva-max-tokens-clamped"] == "62"
    assert raw.parse().choices[0].message.content == "Hello, world!"
