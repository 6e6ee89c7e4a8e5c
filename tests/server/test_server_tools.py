"""Chat completions with tools, reasoning and structured output, against the fake engine."""

from __future__ import annotations

import json

import openai
import pytest
from fake_engine import TOOL_SCRIPT, FakeEngine
from server_helpers import CHAT, chat_body, error_of, read_stream

from app.engine.types import ReasoningDelta, TextDelta, ToolCallDelta

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
LS = {"type": "function", "function": {"name": "ls"}}

# --- requests -----------------------------------------------------------------


async def test_tools_and_options_reach_engine(client, engine: FakeEngine) -> None:
    body = chat_body(
        tools=[WEATHER, {"type": "web_search"}, LS],
        tool_choice="required",
        parallel_tool_calls=False,
        reasoning_effort="high",
        response_format={"type": "json_object"},
    )
    assert (await client.post(CHAT, json=body)).status == 200
    assert engine.last.tools == [WEATHER, LS]  # the non-function tool is ignored
    assert engine.last.tool_choice == "required"
    assert engine.last.reasoning_effort == "high"
    assert engine.last.response_format == {"type": "json_object"}


async def test_defaults_without_tools(client, engine: FakeEngine) -> None:
    assert (await client.post(CHAT, json=chat_body(tools=[]))).status == 200
    assert engine.last.tools is None
    assert engine.last.tool_choice == "auto"
    assert engine.last.response_format is None
    assert engine.last.reasoning_effort is None


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        (None, "auto"),
        ({"type": "function", "function": {"name": "ls"}}, "ls"),
    ],
)
async def test_tool_choice_mapping(client, engine: FakeEngine, choice, expected) -> None:
    resp = await client.post(CHAT, json=chat_body(tools=[WEATHER, LS], tool_choice=choice))
    assert resp.status == 200, await resp.text()
    assert engine.last.tool_choice == expected


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"type": "json_object"}),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": {}}},
            {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": {}}},
        ),
    ],
)
async def test_response_format_mapping(
    client, engine: FakeEngine, response_format, expected
) -> None:
    resp = await client.post(CHAT, json=chat_body(response_format=response_format))
    assert resp.status == 200, await resp.text()
    assert engine.last.response_format == expected


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"tools": "get_weather"}, "tools", "valid list"),
        ({"tools": [{"type": "function"}]}, "tools[0]", "needs a 'function'"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name", "required"),
        ({"tools": [{"function": {"name": ""}}]}, "tools[0].function.name", "at least 1"),
        ({"tools": [{"function": {"name": "f", "parameters": 5}}]},
         "tools[0].function.parameters", ""),
        ({"tool_choice": "always"}, "tool_choice", "must be 'auto'"),
        ({"tool_choice": {"type": "function"}}, "tool_choice", "must be 'auto'"),
        ({"tool_choice": "required"}, "tool_choice", "needs function tools"),
        ({"tools": [LS], "tool_choice": {"type": "function", "function": {"name": "rm"}}},
         "tool_choice", "'rm', which is not among the tools"),
        ({"response_format": {"type": "yaml"}}, "response_format", "must be 'text'"),
        ({"response_format": {"type": "json_schema"}}, "response_format", "'json_schema' object"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": 3}}},
         "response_format", "JSON Schema object"),
        ({"response_format": "json"}, "response_format", ""),
        ({"parallel_tool_calls": "perhaps"}, "parallel_tool_calls", ""),
        ({"reasoning_effort": 3}, "reasoning_effort", ""),
    ],
)  # fmt: skip
async def test_invalid_tool_fields(client, engine: FakeEngine, fields, param, words) -> None:
    error = await error_of(await client.post(CHAT, json=chat_body(**fields)), 400)
    assert error["param"] == param
    assert words in error["message"]
    assert engine.requests == []


async def test_history_passes_through(client, engine: FakeEngine) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": '{"a": 1}'}}
    messages = [
        {"role": "user", "content": "list"},
        {"role": "assistant", "content": None, "reasoning_content": "I should ls.",
         "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
        {"role": "assistant",
         "tool_calls": [{"id": "call_2", "function": {"name": "ls", "arguments": {"b": 2}}}]},
        {"role": "tool", "tool_call_id": "call_2", "content": "b.txt"},
    ]  # fmt: skip
    resp = await client.post(CHAT, json=chat_body(messages=messages, tools=[LS]))
    assert resp.status == 200, await resp.text()
    assert engine.last.messages[1] == {
        "role": "assistant",
        "content": "",
        "reasoning_content": "I should ls.",
        "tool_calls": [call],
    }
    # A client that sends the arguments as an object gets them as the JSON string they mean.
    assert engine.last.messages[3]["tool_calls"] == [
        {"id": "call_2", "type": "function", "function": {"name": "ls", "arguments": '{"b": 2}'}}
    ]


async def test_malformed_history_tool_call(client) -> None:
    messages = [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}]
    error = await error_of(await client.post(CHAT, json=chat_body(messages=messages)), 400)
    assert error["param"] == "messages[0].tool_calls[0].function.name"


# --- responses ----------------------------------------------------------------


async def test_tool_call_non_stream(client, engine: FakeEngine) -> None:
    engine.script = TOOL_SCRIPT
    body = await (await client.post(CHAT, json=chat_body(tools=[WEATHER]))).json()
    assert body["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Let me check.",
                "reasoning_content": "The user wants the weather.",
                "tool_calls": [
                    {
                        "id": "call_abc",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ]
    assert body["usage"]["completion_tokens"] == len(TOOL_SCRIPT)


async def test_bare_tool_calls_have_null_content(client, engine: FakeEngine) -> None:
    engine.script = (
        ToolCallDelta(0, id="call_1", name="ls", arguments="{}"),
        ToolCallDelta(1, id="call_2", name="get_weather", arguments='{"city": "Oslo"}'),
    )
    body = await (await client.post(CHAT, json=chat_body(tools=[WEATHER, LS]))).json()
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert "reasoning_content" not in message
    assert [c["id"] for c in message["tool_calls"]] == ["call_1", "call_2"]
    assert body["choices"][0]["finish_reason"] == "tool_calls"


async def test_reasoning_without_tools(client, engine: FakeEngine) -> None:
    engine.script = (ReasoningDelta("Hmm."), TextDelta("Yes."))
    body = await (await client.post(CHAT, json=chat_body())).json()
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Yes.",
        "reasoning_content": "Hmm.",
    }
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_tool_call_stream(client, engine: FakeEngine) -> None:
    engine.script = TOOL_SCRIPT
    body = chat_body(tools=[WEATHER], stream=True, stream_options={"include_usage": True})
    chunks = await read_stream(await client.post(CHAT, json=body))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "The user wants "},
        {"reasoning_content": "the weather."},
        {"content": "Let me check."},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == len(TOOL_SCRIPT)


async def test_parallel_calls_stream_with_their_own_index(client, engine: FakeEngine) -> None:
    engine.script = (
        ToolCallDelta(0, id="call_1", name="ls", arguments="{"),
        ToolCallDelta(0, arguments="}"),
        ToolCallDelta(1, id="call_2", name="ls", arguments='{"path": "/"}'),
    )
    chunks = await read_stream(await client.post(CHAT, json=chat_body(stream=True, tools=[LS])))
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[1:-1]]
    assert [(c["index"], c.get("id"), c["function"]["arguments"]) for c in calls] == [
        (0, "call_1", "{"),
        (0, None, "}"),
        (1, "call_2", '{"path": "/"}'),
    ]


async def test_failure_after_tool_call_ends_cleanly(client, engine: FakeEngine) -> None:
    engine.script = TOOL_SCRIPT
    engine.fail_after = 4
    chunks = await read_stream(await client.post(CHAT, json=chat_body(stream=True)))
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert not any("error" in c for c in chunks)


# --- the real openai SDK ------------------------------------------------------


def test_sdk_stream_helper_accumulates_tool_call(sdk: openai.OpenAI, engine: FakeEngine) -> None:
    engine.script = TOOL_SCRIPT
    with sdk.chat.completions.stream(
        model="fake-model", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER]
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.delta" in kinds
    assert "tool_calls.function.arguments.done" in kinds
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert (call.id, call.type, call.function.name) == ("call_abc", "function", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert choice.message.content == "Let me check."


def test_sdk_non_stream_tool_call(sdk: openai.OpenAI, engine: FakeEngine) -> None:
    engine.script = TOOL_SCRIPT[3:]
    completion = sdk.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    message = completion.choices[0].message
    assert message.content is None
    assert message.tool_calls[0].function.arguments == '{"city": "Paris"}'
    assert engine.last.tool_choice == "get_weather"


def test_sdk_sends_history_back(sdk: openai.OpenAI, engine: FakeEngine) -> None:
    """A whole tool round trip: what the SDK got back, it can send as history."""
    engine.script = TOOL_SCRIPT
    messages = [{"role": "user", "content": "weather?"}]
    first = sdk.chat.completions.create(model="fake-model", messages=messages, tools=[WEATHER])
    assistant = first.choices[0].message
    engine.script = None
    messages += [
        assistant.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": assistant.tool_calls[0].id, "content": "sunny"},
    ]
    second = sdk.chat.completions.create(model="fake-model", messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == "Hello, world!"
    sent = engine.last.messages
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'
    assert sent[1]["reasoning_content"] == "The user wants the weather."
    assert sent[2] == {"role": "tool", "tool_call_id": "call_abc", "content": "sunny"}
