"""Pure mappings: validation errors to params, engine events to OpenAI objects."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.engine.types import (
    ContextLengthExceeded,
    ModelNotFound,
    ModelUnavailable,
    Started,
    TextDelta,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from app.server.convert import (
    ChatFormat,
    CompletionFormat,
    chat_logprobs,
    completion_logprobs,
    finish_reason,
)
from app.server.errors import from_engine_error, from_validation_error
from app.server.protocol import ChatCompletionRequest

STARTED = Started(request_id=1, model="m", prompt_tokens=3, cached_tokens=1, max_tokens=10)


def test_validation_error_param_path() -> None:
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate({"messages": [{"role": "user"}, {"role": 5}]})
    error = from_validation_error(caught.value)
    assert (error.status, error.param) == (400, "messages[1].role")
    assert error.message.startswith("Invalid value for 'messages[1].role': ")


def test_engine_errors_map_to_statuses() -> None:
    overflow = from_engine_error(
        ContextLengthExceeded("This model's maximum context length is 8 tokens.")
    )
    assert (overflow.status, overflow.code, overflow.type) == (
        400,
        "context_length_exceeded",
        "invalid_request_error",
    )
    missing = from_engine_error(ModelNotFound("no such model"))
    assert (missing.status, missing.code, missing.param) == (404, "model_not_found", "model")
    loading = from_engine_error(ModelUnavailable("loading"))
    assert (loading.status, loading.type) == (503, "server_error")
    assert "Retry-After" in loading.headers


def test_cancelled_finishes_as_stop() -> None:
    assert finish_reason("cancelled") == "stop"
    assert finish_reason("length") == "length"


def test_infinite_logprobs_become_openai_floor() -> None:
    lp = TokenLogprob(1, "a", float("-inf"), (TopLogprob(2, "b", float("nan")),))
    assert chat_logprobs([lp]).content[0].logprob == -9999.0
    assert chat_logprobs([lp]).content[0].top_logprobs[0].logprob == -9999.0
    assert completion_logprobs([lp]).token_logprobs == [-9999.0]


def test_logprob_bytes_are_utf8() -> None:
    [info] = chat_logprobs([TokenLogprob(1, "é", -1.0)]).content
    assert info.bytes == [0xC3, 0xA9]


def test_usage_chunk_and_delta_shapes() -> None:
    fmt = ChatFormat(STARTED, logprobs=False)
    usage = fmt.usage_chunk(Usage(3, 2, 1)).model_dump()
    assert usage["choices"] == []
    assert usage["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 1},
    }
    assert fmt.chunk(TextDelta("x")).model_dump()["choices"][0]["delta"] == {"content": "x"}
    assert fmt.closing("stop").model_dump()["choices"][0]["delta"] == {}


def test_completion_chunks_track_text_offset() -> None:
    fmt = CompletionFormat(STARTED, logprobs=True)
    first = fmt.chunk(TextDelta("ab", (1,), (TokenLogprob(1, "ab", -1.0),)))
    second = fmt.chunk(
        TextDelta("cd", (2, 3), (TokenLogprob(2, "c", -1.0), TokenLogprob(3, "d", -1.0)))
    )
    assert first.choices[0].logprobs.text_offset == [0]
    assert second.choices[0].logprobs.text_offset == [2, 3]
