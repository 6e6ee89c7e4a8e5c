"""POST /v1/responses against the fake engine: input items, output items, the event stream."""

from __future__ import annotations

import json

import openai
import pytest
from fake_engine import TOOL_SCRIPT, FakeEngine
from server_helpers import RESPONSES, error_of, read_named_stream

from app.engine.types import EngineError, ReasoningDelta, TextDelta, ToolCallDelta
from app.server.keys import RESPONSES as RESPONSE_STORE
from app.server.responses_api import input_messages
from app.server.responses_protocol import ResponsesRequest

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}
CHAT_WEATHER = {
    "type": "function",
    "function": {k: v for k, v in WEATHER.items() if k != "type"},
}


def responses_body(**fields):
    return {"model": "fake-model", "input": "hi", **fields}


def messages_of(items) -> list[dict]:
    return input_messages(ResponsesRequest.model_validate({"input": items}).input)


# --- input items -> messages ----------------------------------------------------


def test_string_input_is_one_user_message() -> None:
    assert messages_of("hello") == [{"role": "user", "content": "hello"}]


def test_message_items() -> None:
    items = [
        {"type": "message", "role": "developer", "content": "Be brief."},
        {"role": "system", "content": [{"type": "input_text", "text": "Really."}]},
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}],
        },
        {
            "type": "message",
            "role": "assistant",
            "id": "msg_1",
            "status": "completed",
            "content": [{"type": "output_text", "text": "ok", "annotations": []}],
        },
    ]
    assert messages_of(items) == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Really."},
        {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": "ok"},
    ]


def test_function_calls_and_outputs() -> None:
    items = [
        {"role": "user", "content": "weather in Paris and Oslo?"},
        {"type": "reasoning", "id": "rs_1", "summary": [],
         "content": [{"type": "reasoning_text", "text": "Two cities."}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "call_2", "name": "get_weather",
         "arguments": '{"city": "Oslo"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "rain"}]},
        {"type": "function_call", "call_id": "call_3", "name": "ls", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_3", "output": ""},
    ]  # fmt: skip
    call = lambda i, name, args: {  # noqa: E731
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": name, "arguments": args},
    }
    assert messages_of(items) == [
        {"role": "user", "content": "weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "reasoning_content": "Two cities.",
            "tool_calls": [
                call(1, "get_weather", '{"city": "Paris"}'),
                call(2, "get_weather", '{"city": "Oslo"}'),
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
        {"role": "assistant", "content": "", "tool_calls": [call(3, "ls", "{}")]},
        {"role": "tool", "tool_call_id": "call_3", "content": ""},
    ]


def test_reasoning_summary_and_unknown_items() -> None:
    items = [
        {"role": "user", "content": "hi"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Greet back."}]},
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "item_reference", "id": "msg_0"},
    ]
    assert messages_of(items) == [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "Greet back.",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
    ]


# --- requests -------------------------------------------------------------------


async def test_request_reaches_engine(client, engine: FakeEngine) -> None:
    body = responses_body(
        instructions="You are terse.",
        input=[{"role": "developer", "content": "Use tools."}, {"role": "user", "content": "hi"}],
        tools=[WEATHER, {"type": "web_search"}, {"type": "namespace", "name": "mcp", "tools": []},
               {"type": "custom", "name": "apply_patch"}, {"type": "local_shell"}],
        tool_choice={"type": "function", "name": "get_weather"},
        text={"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"},
                         "strict": True}},
        max_output_tokens=3,
        temperature=0.5,
        top_p=0.9,
        reasoning={"effort": "low", "summary": "auto"},
        store=False,
        include=["reasoning.encrypted_content"],
        client_metadata={"x": "y"},
        prompt_cache_key="k",
        parallel_tool_calls=True,
        metadata={"a": "b"},
        user="me",
        truncation="auto",
        service_tier="auto",
    )  # fmt: skip
    resp = await client.post(RESPONSES, json=body)
    assert resp.status == 200, await resp.text()
    gen = engine.last
    assert gen.messages == [
        {"role": "system", "content": "You are terse."},
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "hi"},
    ]
    assert gen.tools == [CHAT_WEATHER]
    assert gen.tool_choice == "get_weather"
    assert gen.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
    }
    assert gen.max_tokens == 3
    assert (gen.sampling.temperature, gen.sampling.top_p) == (0.5, 0.9)
    assert gen.reasoning_effort == "low"
    echoed = await resp.json()
    assert echoed["text"]["format"]["type"] == "json_schema"
    assert echoed["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert echoed["max_output_tokens"] == 3 and echoed["store"] is False


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ({"type": "function", "name": "get_weather"}, "get_weather"),
    ],
)
async def test_tool_choice_mapping(client, engine: FakeEngine, choice, expected) -> None:
    body = responses_body(tools=[WEATHER], tool_choice=choice)
    assert (await client.post(RESPONSES, json=body)).status == 200
    assert engine.last.tool_choice == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ({"format": {"type": "text"}}, None),
        ({"format": {"type": "json_object"}}, {"type": "json_object"}),
        ({"verbosity": "low"}, None),
    ],
)
async def test_text_format_mapping(client, engine: FakeEngine, text, expected) -> None:
    assert (await client.post(RESPONSES, json=responses_body(text=text))).status == 200
    assert engine.last.response_format == expected


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": 5}, "input"),
        ({"input": []}, "input"),
        ({"input": [5]}, "input[0]"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
         "input[0].content"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
         "input[0].call_id"),
        ({"input": [{"type": "function_call_output", "call_id": "c"}]}, "input[0].output"),
        ({"tools": [{"type": "function"}]}, "tools[0]"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "name": "f"}}, "tool_choice"),
        ({"text": {"format": {"type": "xml"}}}, "text.format"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"previous_response_id": "resp_unknown"}, "previous_response_id"),
    ],
)  # fmt: skip
async def test_invalid_requests(client, engine: FakeEngine, fields, param) -> None:
    error = await error_of(await client.post(RESPONSES, json=responses_body(**fields)), 400)
    assert error["param"] == param
    assert engine.requests == []


async def test_engine_errors_are_openai_errors(client, engine: FakeEngine) -> None:
    error = await error_of(await client.post(RESPONSES, json=responses_body(model="gpt-9")), 404)
    assert error["code"] == "model_not_found"
    engine.state = "loading"
    resp = await client.post(RESPONSES, json=responses_body(stream=True))
    assert (await error_of(resp, 503))["code"] == "model_not_ready"


# --- non-stream responses ------------------------------------------------------------


async def test_text_response_shape(client, engine: FakeEngine) -> None:
    engine.cached_tokens = 1
    body = await (await client.post(RESPONSES, json=responses_body())).json()
    assert body["id"].startswith("resp_")
    assert body["object"] == "response"
    assert isinstance(body["created_at"], int)
    assert body["status"] == "completed"
    assert body["error"] is None and body["incomplete_details"] is None
    assert body["model"] == "fake-model"
    [message] = body["output"]
    assert message["id"].startswith("msg_")
    assert message == {
        "id": message["id"],
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [
            {"type": "output_text", "text": "Hello, world!", "annotations": [], "logprobs": []}
        ],
    }
    assert body["usage"] == {
        "input_tokens": 2,
        "input_tokens_details": {"cached_tokens": 1, "cache_write_tokens": 0},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 6,
    }


async def test_reasoning_text_and_function_call_items(client, engine: FakeEngine) -> None:
    engine.script = TOOL_SCRIPT
    body = await (await client.post(RESPONSES, json=responses_body(tools=[WEATHER]))).json()
    reasoning, message, call = body["output"]
    assert reasoning["id"].startswith("rs_")
    assert reasoning["type"] == "reasoning" and reasoning["summary"] == []
    assert reasoning["content"] == [
        {"type": "reasoning_text", "text": "The user wants the weather."}
    ]
    assert message["content"][0]["text"] == "Let me check."
    assert call["id"].startswith("fc_")
    assert call == {
        "id": call["id"],
        "type": "function_call",
        "status": "completed",
        "call_id": "call_abc",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert body["status"] == "completed"


async def test_token_limit_is_incomplete(client) -> None:
    body = await (await client.post(RESPONSES, json=responses_body(max_output_tokens=2))).json()
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete"
    assert body["output"][0]["content"][0]["text"] == "Hello,"


async def test_failure_without_stream_is_http_error(client, engine: FakeEngine) -> None:
    engine.fail_after = 1
    error = await error_of(await client.post(RESPONSES, json=responses_body()), 500)
    assert error["message"] == "The fake engine broke"


# --- streams ---------------------------------------------------------------------


async def test_stream_of_reasoning_text_and_call(client, engine: FakeEngine) -> None:
    engine.script = TOOL_SCRIPT
    resp = await client.post(RESPONSES, json=responses_body(stream=True, tools=[WEATHER]))
    events = await read_named_stream(resp)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    created, completed = events[0]["response"], events[-1]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    assert created["id"] == completed["id"] == events[1]["response"]["id"]
    assert completed["status"] == "completed"
    assert completed["usage"]["output_tokens"] == len(TOOL_SCRIPT)
    added = [e for e in events if e["type"] == "response.output_item.added"]
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert [e["output_index"] for e in added] == [e["output_index"] for e in done] == [0, 1, 2]
    assert [e["item"] for e in done] == completed["output"]
    assert added[2]["item"]["arguments"] == "" and added[2]["item"]["status"] == "in_progress"
    assert added[2]["item"]["call_id"] == "call_abc"
    deltas = [e for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert {e["item_id"] for e in deltas} == {done[2]["item"]["id"]}
    args_done = events[-3]
    assert args_done["arguments"] == '{"city": "Paris"}' and args_done["name"] == "get_weather"
    text_done = events[12]
    assert text_done["text"] == "Let me check." and text_done["item_id"] == done[1]["item"]["id"]
    assert events[13]["part"] == {
        "type": "output_text",
        "text": "Let me check.",
        "annotations": [],
        "logprobs": [],
    }
    assert events[6]["text"] == "The user wants the weather."
    assert events[3]["part"] == {"type": "reasoning_text", "text": ""}


async def test_stream_at_token_limit_ends_incomplete(client) -> None:
    resp = await client.post(RESPONSES, json=responses_body(stream=True, max_output_tokens=2))
    events = await read_named_stream(resp)
    assert events[-2]["type"] == "response.output_item.done"
    assert events[-2]["item"]["status"] == "incomplete"
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


async def test_failure_mid_stream_ends_with_response_failed(client, engine: FakeEngine) -> None:
    engine.fail_after = 2
    events = await read_named_stream(await client.post(RESPONSES, json=responses_body(stream=True)))
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["response.output_item.done", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "The fake engine broke"}
    assert failed["output"][0]["content"][0]["text"] == "Hello,"


async def test_empty_output_still_completes(client, engine: FakeEngine) -> None:
    engine.script = ()
    events = await read_named_stream(await client.post(RESPONSES, json=responses_body(stream=True)))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.completed",
    ]


# --- previous_response_id ------------------------------------------------------------


async def test_previous_response_continues_the_conversation(client, engine: FakeEngine) -> None:
    engine.script = TOOL_SCRIPT
    first = await (
        await client.post(RESPONSES, json=responses_body(instructions="Be nice.", tools=[WEATHER]))
    ).json()
    engine.script = None
    output = {"type": "function_call_output", "call_id": "call_abc", "output": "sunny"}
    body = responses_body(input=[output], previous_response_id=first["id"], stream=True)
    events = await read_named_stream(await client.post(RESPONSES, json=body))
    assert events[-1]["response"]["previous_response_id"] == first["id"]
    assert engine.last.messages == [
        {"role": "user", "content": "hi"},  # instructions are not carried over
        {
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
        {"role": "tool", "tool_call_id": "call_abc", "content": "sunny"},
    ]
    third = responses_body(input="thanks", previous_response_id=events[-1]["response"]["id"])
    assert (await client.post(RESPONSES, json=third)).status == 200
    assert engine.last.messages[-2:] == [
        {"role": "assistant", "content": "Hello, world!"},
        {"role": "user", "content": "thanks"},
    ]


async def test_store_false_keeps_nothing(client) -> None:
    body = await (await client.post(RESPONSES, json=responses_body(store=False))).json()
    assert len(client.app[RESPONSE_STORE]) == 0
    error = await error_of(
        await client.post(RESPONSES, json=responses_body(previous_response_id=body["id"])), 400
    )
    assert error["code"] == "previous_response_not_found"


def test_store_is_bounded() -> None:
    from app.server.store import ResponseStore

    store = ResponseStore(capacity=2)
    for i in range(3):
        store.put(f"r{i}", [{"role": "user", "content": str(i)}])
    assert store.get("r0") is None
    assert store.get("r1") == [{"role": "user", "content": "1"}]
    store.put("r3", [])  # r1 was used last, so r2 goes
    assert store.get("r2") is None and store.get("r1") is not None


# --- the real openai SDK -----------------------------------------------------------


def test_sdk_create_text(sdk: openai.OpenAI) -> None:
    response = sdk.responses.create(model="fake-model", input="hi", instructions="Be brief.")
    assert response.output_text == "Hello, world!"
    assert response.status == "completed"
    assert response.usage.input_tokens == 5 and response.usage.output_tokens == 4
    assert response.usage.input_tokens_details.cached_tokens == 0


def test_sdk_create_function_call(sdk: openai.OpenAI, engine: FakeEngine) -> None:
    engine.script = TOOL_SCRIPT
    response = sdk.responses.create(model="fake-model", input="weather?", tools=[WEATHER])
    kinds = [item.type for item in response.output]
    assert kinds == ["reasoning", "message", "function_call"]
    call = response.output[2]
    assert (call.call_id, call.name) == ("call_abc", "get_weather")
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert response.output[0].content[0].text == "The user wants the weather."


def test_sdk_stream_text(sdk: openai.OpenAI) -> None:
    with sdk.responses.stream(model="fake-model", input="hi") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "Hello, world!"
    assert final.output_text == "Hello, world!"
    assert final.usage.total_tokens == 6


def test_sdk_stream_function_call(sdk: openai.OpenAI, engine: FakeEngine) -> None:
    engine.script = TOOL_SCRIPT
    with sdk.responses.stream(model="fake-model", input="weather?", tools=[WEATHER]) as stream:
        snapshots = [
            event.snapshot
            for event in stream
            if event.type == "response.function_call_arguments.delta"
        ]
        final = stream.get_final_response()
    assert snapshots == ['{"city": ', '{"city": "Paris"}']
    call = final.output[-1]
    assert call.type == "function_call" and call.arguments == '{"city": "Paris"}'
    # A strict function tool: the SDK parses the arguments for us.
    assert call.parsed_arguments == {"city": "Paris"}


def test_sdk_round_trip_with_function_output(sdk: openai.OpenAI, engine: FakeEngine) -> None:
    """Codex's way: no store, the whole history (output items included) sent back each turn."""
    engine.script = TOOL_SCRIPT
    first = sdk.responses.create(model="fake-model", input="weather?", tools=[WEATHER], store=False)
    engine.script = (TextDelta("Sunny."),)
    history = [{"role": "user", "content": "weather?"}]
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": "call_abc", "output": "sunny"})
    second = sdk.responses.create(model="fake-model", input=history, tools=[WEATHER], store=False)
    assert second.output_text == "Sunny."
    assert [m["role"] for m in engine.last.messages] == ["user", "assistant", "tool"]
    assert engine.last.messages[1]["reasoning_content"] == "The user wants the weather."


def test_sdk_stream_failure_raises_no_completed(sdk: openai.OpenAI, engine: FakeEngine) -> None:
    engine.fail_after = 2
    with sdk.responses.stream(model="fake-model", input="hi") as stream:
        kinds = [event.type for event in stream]
        with pytest.raises(RuntimeError, match="response.completed"):
            stream.get_final_response()
    assert kinds[-1] == "response.failed"


def test_sdk_errors(sdk: openai.OpenAI, engine: FakeEngine) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.responses.create(model="gpt-9", input="hi", stream=True)
    assert caught.value.code == "model_not_found"
    engine.error = EngineError("Metal ran out of memory")
    with pytest.raises(openai.InternalServerError):
        sdk.responses.create(model="fake-model", input="hi")


def test_sdk_parallel_calls(sdk: openai.OpenAI, engine: FakeEngine) -> None:
    engine.script = (
        ReasoningDelta("Two."),
        ToolCallDelta(0, id="call_1", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCallDelta(1, id="call_2", name="get_weather", arguments='{"city": "Oslo"}'),
    )
    with sdk.responses.stream(model="fake-model", input="weather?", tools=[WEATHER]) as stream:
        final = stream.get_final_response()
    assert [(i.type, getattr(i, "call_id", None)) for i in final.output] == [
        ("reasoning", None),
        ("function_call", "call_1"),
        ("function_call", "call_2"),
    ]
