"""Pure mappings: validation errors to params, engine events to OpenAI objects."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.engine.types import (
    ContextLengthExceeded,
    Finished,
    ModelNotFound,
    ModelUnavailable,
    ReasoningDelta,
    Started,
    TextDelta,
    Timings,
    TokenLogprob,
    ToolCallDelta,
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
from app.server.output import Output, ReasoningPart, TextPart, ToolCallPart
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
    output = Output()
    [chunk] = fmt.delta(output.add(TextDelta("x")), output)
    assert chunk.model_dump()["choices"][0]["delta"] == {"content": "x"}
    [closing] = fmt.closing(output, Finished("stop", Usage(3, 1), Timings()))
    assert closing.model_dump()["choices"][0]["delta"] == {}


def test_completion_chunks_track_text_offset() -> None:
    fmt = CompletionFormat(STARTED, logprobs=True)
    first = fmt.chunk(TextDelta("ab", (1,), (TokenLogprob(1, "ab", -1.0),)))
    second = fmt.chunk(
        TextDelta("cd", (2, 3), (TokenLogprob(2, "c", -1.0), TokenLogprob(3, "d", -1.0)))
    )
    assert first.choices[0].logprobs.text_offset == [0]
    assert second.choices[0].logprobs.text_offset == [2, 3]


def test_output_gathers_parts_in_order() -> None:
    output = Output()
    added = [
        output.add(ReasoningDelta("a")),
        output.add(ReasoningDelta("b")),
        output.add(TextDelta("c", (1, 2))),
        output.add(ToolCallDelta(0, id="call_1", name="f", arguments="{")),
        output.add(ToolCallDelta(1, id="call_2", name="g")),
        output.add(ToolCallDelta(0, arguments="}")),  # routed by index, not to the last call
        output.add(TextDelta("d")),
    ]
    assert [(a.index, a.new) for a in added] == [
        (0, True),
        (0, False),
        (1, True),
        (2, True),
        (3, True),
        (2, False),
        (4, True),
    ]
    assert output.parts == [
        ReasoningPart("ab"),
        TextPart("c"),
        ToolCallPart(0, "call_1", "f", "{}"),
        ToolCallPart(1, "call_2", "g", ""),
        TextPart("d"),
    ]
    assert (output.text, output.reasoning, output.text_tokens) == ("cd", "ab", 2)
    assert output.assistant_message() == {
        "role": "assistant",
        "content": "cd",
        "reasoning_content": "ab",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": ""}},
        ],
    }


def test_output_edge_cases() -> None:
    output = Output()
    lp = TokenLogprob(1, "", -1.0)
    assert output.add(TextDelta("", (1,), (lp,))) is None  # counted, but nothing to show
    assert (output.parts, output.logprobs, output.text_tokens) == ([], [lp], 1)
    call = output.add(ToolCallDelta(0, name="f")).part
    assert call.id.startswith("call_") and len(call.id) > len("call_")
    assert output.assistant_message()["content"] == ""


def test_chat_tool_call_chunks() -> None:
    fmt = ChatFormat(STARTED)
    output = Output()

    def delta(event):
        [chunk] = fmt.delta(output.add(event), output)
        return chunk.model_dump()["choices"][0]["delta"]

    assert delta(ToolCallDelta(0, id="call_1", name="f", arguments="{")) == {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "f", "arguments": "{"},
            }
        ]
    }
    assert delta(ToolCallDelta(0, arguments="}")) == {
        "tool_calls": [{"index": 0, "function": {"arguments": "}"}}]
    }
    assert delta(ReasoningDelta("r")) == {"reasoning_content": "r"}
    response = fmt.response(output, Finished("tool_calls", Usage(3, 3), Timings())).model_dump()
    assert response["choices"][0]["finish_reason"] == "tool_calls"
    assert response["choices"][0]["message"]["content"] is None
