"""POST /v1/messages (Anthropic's API) against the fake engine: blocks, stop reasons, streams."""

from __future__ import annotations

from dataclasses import dataclass

import anthropic
import pytest
from fake_engine import TOOL_SCRIPT, FakeEngine
from server_helpers import MESSAGES, anthropic_error_of, read_named_stream

from app.engine.types import (
    ContextLengthExceeded,
    EngineError,
    Finished,
    ReasoningDelta,
    TextDelta,
    Timings,
    ToolCallDelta,
    Usage,
)
from app.server import ServerThread
from app.server.messages_api import chat_messages, stop_info, tool_use_id
from app.server.messages_protocol import MessagesRequest

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CHAT_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": WEATHER["input_schema"],
    },
}


def messages_body(**fields):
    return {
        "model": "fake-model",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        **fields,
    }


def converted(**fields) -> list[dict]:
    return chat_messages(MessagesRequest.model_validate(messages_body(**fields)))


@pytest.fixture
def claude(server: ServerThread) -> anthropic.Anthropic:
    """The real anthropic SDK; no retries, so errors surface at once."""
    return anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0, timeout=10)


# --- blocks -> messages ---------------------------------------------------------


def test_system_string_and_blocks() -> None:
    assert converted(system="Be brief.")[0] == {"role": "system", "content": "Be brief."}
    blocks = [
        {"type": "text", "text": "You are Claude Code."},
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
    ]
    assert converted(system=blocks)[0] == {
        "role": "system",
        "content": "You are Claude Code.\nBe brief.",
    }
    assert converted()[0] == {"role": "user", "content": "hi"}


def test_tool_turns() -> None:
    turns = [
        {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Check it.", "signature": "sig"},
                {"type": "redacted_thinking", "data": "xyz"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "ls", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                 "content": [{"type": "text", "text": "no"}, {"type": "text", "text": "such dir"},
                             {"type": "image", "source": {"type": "base64", "data": "AAAA"}}]},
                {"type": "text", "text": "Go on."},
            ],
        },
        {"role": "assistant", "content": "Sunny."},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_3"}]},
    ]  # fmt: skip
    assert converted(messages=turns) == [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "reasoning_content": "Check it.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "ls", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {
            "role": "tool",
            "tool_call_id": "toolu_2",
            "content": "no\nsuch dir\n[image content omitted: this model only reads text]",
        },
        {"role": "user", "content": "Go on."},
        {"role": "assistant", "content": "Sunny."},
        {"role": "tool", "tool_call_id": "toolu_3", "content": ""},
    ]


def test_stop_reasons() -> None:
    def info(reason):
        return stop_info(Finished(reason, Usage(1, 1), Timings())).model_dump()

    assert info("stop") == {"stop_reason": "end_turn", "stop_sequence": None}
    assert info("cancelled") == {"stop_reason": "end_turn", "stop_sequence": None}
    assert info("length") == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert info("tool_calls") == {"stop_reason": "tool_use", "stop_sequence": None}


def test_stop_sequence_once_the_engine_reports_it() -> None:
    @dataclass(frozen=True)
    class FinishedAtStop(Finished):
        stop_sequence: str | None = None

    finished = FinishedAtStop("stop", Usage(1, 1), Timings(), stop_sequence="\n\nHuman:")
    assert stop_info(finished).model_dump() == {
        "stop_reason": "stop_sequence",
        "stop_sequence": "\n\nHuman:",
    }


def test_tool_use_ids() -> None:
    assert tool_use_id("call_abc") == "toolu_abc"
    assert tool_use_id("toolu_abc") == "toolu_abc"
    assert tool_use_id("xyz") == "toolu_xyz"


# --- requests -------------------------------------------------------------------


async def test_request_reaches_engine(client, engine: FakeEngine) -> None:
    body = messages_body(
        system="Be brief.",
        temperature=0.3,
        top_p=0.8,
        top_k=20,
        stop_sequences=["\n\nHuman:", ""],
        tools=[WEATHER, {"type": "web_search_20250305", "name": "web_search"},
               {"type": "custom", "name": "ls"}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        thinking={"type": "enabled", "budget_tokens": 1024},
        output_config={"effort": "medium"},
        metadata={"user_id": "u"},
        context_management={"edits": []},
    )  # fmt: skip
    headers = {"x-api-key": "sk-ant-whatever", "anthropic-version": "2023-06-01"}
    resp = await client.post(MESSAGES, json=body, headers=headers)
    assert resp.status == 200, await resp.text()
    gen = engine.last
    assert gen.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert (gen.sampling.temperature, gen.sampling.top_p, gen.sampling.top_k) == (0.3, 0.8, 20)
    assert gen.max_tokens == 100
    assert gen.stop == ("\n\nHuman:",)
    empty = {"type": "object", "properties": {}}
    assert gen.tools == [
        CHAT_WEATHER,
        {"type": "function", "function": {"name": "ls", "parameters": empty}},
    ]
    assert gen.tool_choice == "required"
    assert gen.reasoning_effort == "medium"
    assert gen.response_format is None


async def test_output_format_is_structured_output(client, engine: FakeEngine) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    config = {"format": {"type": "json_schema", "schema": schema}}
    resp = await client.post(MESSAGES, json=messages_body(output_config=config))
    assert resp.status == 200, await resp.text()
    assert engine.last.response_format == {"type": "json_schema", "json_schema": {"schema": schema}}
    assert engine.last.reasoning_effort is None


async def test_bearer_auth_is_not_rejected(client) -> None:
    resp = await client.post(MESSAGES, json=messages_body(), headers={"Authorization": "Bearer x"})
    assert resp.status == 200


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "tool", "name": "get_weather"}, "get_weather"),
        ({"type": "none"}, "none"),
        (None, "auto"),
    ],
)
async def test_tool_choice_mapping(client, engine: FakeEngine, choice, expected) -> None:
    resp = await client.post(MESSAGES, json=messages_body(tools=[WEATHER], tool_choice=choice))
    assert resp.status == 200, await resp.text()
    assert engine.last.tool_choice == expected


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"max_tokens": None}, "'max_tokens'"),
        ({"max_tokens": 0}, "'max_tokens'"),
        ({"messages": []}, "'messages'"),
        ({"messages": [{"role": "system", "content": "x"}]}, "'messages[0].role'"),
        ({"messages": [{"role": "user", "content": 5}]}, "'messages[0].content'"),
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
         "type 'image' are not supported"),
        ({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f"}]}]},
         "'messages[0].content[0].id'"),
        ({"system": [{"type": "image"}]}, "'system'"),
        ({"tools": [{"description": "no name"}]}, "'tools[0].name'"),
        ({"tool_choice": {"type": "sometimes"}}, "'tool_choice'"),
        ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "rm"}},
         "not among the tools"),
        ({"tool_choice": {"type": "any"}}, "needs function tools"),
        ({"temperature": 1.5}, "'temperature'"),
        ({"top_k": -1}, "'top_k'"),
        ({"output_config": {"format": {"type": "yaml"}}}, "'output_config.format'"),
        ({"stop_sequences": ["STOP", 1]}, "'stop_sequences'"),
    ],
)  # fmt: skip
async def test_invalid_requests_in_anthropic_shape(
    client, engine: FakeEngine, fields, words
) -> None:
    body = {k: v for k, v in messages_body(**fields).items() if v is not None}
    error = await anthropic_error_of(await client.post(MESSAGES, json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert words in error["message"]
    assert engine.requests == []


async def test_invalid_json_in_anthropic_shape(client) -> None:
    error = await anthropic_error_of(await client.post(MESSAGES, data=b"{"), 400)
    assert "not valid JSON" in error["message"]


async def test_unknown_subroute_in_anthropic_shape(client) -> None:
    error = await anthropic_error_of(await client.post(f"{MESSAGES}/batches", json={}), 404)
    assert error["type"] == "not_found_error"
    assert (await anthropic_error_of(await client.get(MESSAGES), 405))["type"] == (
        "invalid_request_error"
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_engine_errors_in_anthropic_shape(client, engine: FakeEngine, stream) -> None:
    resp = await client.post(MESSAGES, json=messages_body(model="no-such-model", stream=stream))
    assert (await anthropic_error_of(resp, 404))["type"] == "not_found_error"
    engine.state = "loading"
    resp = await client.post(MESSAGES, json=messages_body(stream=stream))
    assert (await anthropic_error_of(resp, 503))["type"] == "overloaded_error"
    assert resp.headers["Retry-After"].isdigit()
    engine.state = "ready"
    engine.error = EngineError("Metal ran out of memory")
    resp = await client.post(MESSAGES, json=messages_body(stream=stream))
    assert await anthropic_error_of(resp, 500) == {
        "type": "api_error",
        "message": "Metal ran out of memory",
    }


async def test_context_overflow_says_prompt_is_too_long(client, engine: FakeEngine) -> None:
    engine.error = ContextLengthExceeded("This model's maximum context length is 64 tokens.")
    error = await anthropic_error_of(await client.post(MESSAGES, json=messages_body()), 400)
    assert error["message"].startswith("prompt is too long: This model's maximum context")


# --- non-stream responses ------------------------------------------------------------


async def test_text_message_shape(client, engine: FakeEngine) -> None:
    engine.cached_tokens = 1
    body = await (await client.post(MESSAGES, json=messages_body())).json()
    assert body["id"].startswith("msg_")
    assert body == {
        "id": body["id"],
        "type": "message",
        "role": "assistant",
        "model": "fake-model",
        "content": [{"type": "text", "text": "Hello, world!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 1,
            "output_tokens": 4,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 1,
        },
    }


async def test_thinking_text_and_tool_use_blocks(client, engine: FakeEngine) -> None:
    engine.script = TOOL_SCRIPT
    body = await (await client.post(MESSAGES, json=messages_body(tools=[WEATHER]))).json()
    assert body["content"] == [
        {"type": "thinking", "thinking": "The user wants the weather.", "signature": ""},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_abc", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    assert body["stop_reason"] == "tool_use"


async def test_max_tokens_stop_reason(client) -> None:
    body = await (await client.post(MESSAGES, json=messages_body(max_tokens=2))).json()
    assert body["content"] == [{"type": "text", "text": "Hello,"}]
    assert body["stop_reason"] == "max_tokens"


async def test_broken_tool_arguments_become_empty_input(client, engine: FakeEngine, caplog) -> None:
    engine.script = (ToolCallDelta(0, id="call_1", name="ls", arguments='{"path": '),)
    body = await (await client.post(MESSAGES, json=messages_body())).json()
    assert body["content"] == [{"type": "tool_use", "id": "toolu_1", "name": "ls", "input": {}}]
    assert "not a JSON object" in caplog.text


# --- streams ---------------------------------------------------------------------


async def test_stream_events(client, engine: FakeEngine) -> None:
    engine.script = TOOL_SCRIPT
    resp = await client.post(MESSAGES, json=messages_body(stream=True, tools=[WEATHER]))
    events = await read_named_stream(resp)
    assert [(e["type"], e.get("index")) for e in events] == [
        ("message_start", None),
        ("ping", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    start = events[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == 2 and start["usage"]["output_tokens"] == 0
    assert events[2]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert events[3]["delta"] == {"type": "thinking_delta", "thinking": "The user wants "}
    assert events[6]["content_block"] == {"type": "text", "text": ""}
    assert events[7]["delta"] == {"type": "text_delta", "text": "Let me check."}
    assert events[9]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_abc",
        "name": "get_weather",
        "input": {},
    }
    assert [e["delta"] for e in events[10:12]] == [
        {"type": "input_json_delta", "partial_json": '{"city": '},
        {"type": "input_json_delta", "partial_json": '"Paris"}'},
    ]
    assert events[13]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[13]["usage"]["output_tokens"] == len(TOOL_SCRIPT)


async def test_failure_mid_stream_ends_with_error_event(client, engine: FakeEngine) -> None:
    engine.fail_after = 2
    events = await read_named_stream(await client.post(MESSAGES, json=messages_body(stream=True)))
    assert [e["type"] for e in events][-3:] == [
        "content_block_delta",
        "content_block_stop",
        "error",
    ]
    assert events[-1]["error"] == {"type": "api_error", "message": "The fake engine broke"}


# --- the real anthropic SDK ----------------------------------------------------------


def test_sdk_create_text(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="fake-model", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "Hello, world!"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 2 and message.usage.output_tokens == 4


def test_sdk_create_thinking_and_tool_use(claude: anthropic.Anthropic, engine: FakeEngine) -> None:
    engine.script = TOOL_SCRIPT
    message = claude.messages.create(
        model="fake-model",
        max_tokens=100,
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER],
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    thinking, text, tool = message.content
    assert thinking.type == "thinking" and thinking.thinking == "The user wants the weather."
    assert text.text == "Let me check."
    assert (tool.type, tool.id, tool.name, tool.input) == (
        "tool_use",
        "toolu_abc",
        "get_weather",
        {"city": "Paris"},
    )
    assert message.stop_reason == "tool_use"


def test_sdk_stream_text(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="fake-model", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello, world!"
    assert final.content[0].text == "Hello, world!"
    assert final.usage.output_tokens == 4 and final.stop_reason == "end_turn"


def test_sdk_stream_thinking_and_tool_use(claude: anthropic.Anthropic, engine: FakeEngine) -> None:
    engine.script = TOOL_SCRIPT
    with claude.messages.stream(
        model="fake-model",
        max_tokens=100,
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER],
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "thinking" in kinds and "input_json" in kinds and "text" in kinds
    assert [block.type for block in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].thinking == "The user wants the weather."
    assert final.content[2].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"


def test_sdk_tool_round_trip(claude: anthropic.Anthropic, engine: FakeEngine) -> None:
    engine.script = TOOL_SCRIPT
    messages = [{"role": "user", "content": "weather?"}]
    first = claude.messages.create(
        model="fake-model", max_tokens=100, messages=messages, tools=[WEATHER]
    )
    engine.script = (ReasoningDelta("Sunny it is."), TextDelta("Sunny."))
    messages += [
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_abc", "content": "sunny"}],
        },
    ]
    second = claude.messages.create(
        model="fake-model", max_tokens=100, messages=messages, tools=[WEATHER]
    )
    assert [block.type for block in second.content] == ["thinking", "text"]
    assert engine.last.messages[1]["tool_calls"][0]["id"] == "toolu_abc"
    assert engine.last.messages[2] == {
        "role": "tool",
        "tool_call_id": "toolu_abc",
        "content": "sunny",
    }


def test_sdk_errors(claude: anthropic.Anthropic, engine: FakeEngine) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude.messages.create(
            model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model="fake-model", max_tokens=10, messages=[])
    engine.fail_after = 1
    with pytest.raises(anthropic.APIStatusError, match="The fake engine broke"):
        with claude.messages.stream(
            model="fake-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            stream.get_final_message()


def test_claude_model_names_use_the_loaded_model():
    from app.server.messages_api import local_model_name

    assert local_model_name("claude-sonnet-4-5") is None
    assert local_model_name("") is None
    assert local_model_name("qwen3-4b") == "qwen3-4b"
