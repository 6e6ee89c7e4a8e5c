"""Agent APIs against the real bundled model: tool calls, structured output, Responses, Messages.

The bundled SmolLM2-135M has no tool support of its own; with
`tool_choice: "required"` the grammar makes its calls real, parseable model
output, which is what these tests drive through the official SDKs.
"""

from __future__ import annotations

import json

import anthropic
import openai
import pytest
from pydantic import BaseModel

from app.core.settings import BUNDLED_MODEL_ID, EngineSettings, ServerSettings
from app.engine.engine import Engine
from app.server import ServerThread

pytestmark = pytest.mark.real_model

MODEL = BUNDLED_MODEL_ID
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


class Place(BaseModel):
    city: str
    country: str


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    engine = Engine(
        EngineSettings(model=MODEL, context_length=2048), tmp_path_factory.mktemp("agent-models")
    )
    engine.start()
    assert engine.wait_ready(timeout=300).state == "ready"
    with ServerThread(ServerSettings(port=0), engine) as server:
        yield server
    engine.stop()


@pytest.fixture(scope="module")
def api(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_streamed_tool_call_then_result_then_answer(api):
    with api.chat.completions.stream(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=60, temperature=0
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert "paris" in json.loads(call.function.arguments)["city"].lower()

    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees Celsius."},
    ]
    answer = api.chat.completions.create(
        model=MODEL, messages=history, tools=[WEATHER], max_tokens=40, temperature=0
    )
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.choices[0].message.content


def test_streamed_tool_call_deltas_have_index_id_and_name_first(api):
    chunks = list(
        api.chat.completions.create(
            model=MODEL,
            messages=ASK,
            tools=[WEATHER],
            tool_choice="required",
            max_tokens=60,
            temperature=0,
            stream=True,
        )
    )
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert (
        deltas[0].index == 0
        and deltas[0].id.startswith("call_")
        and deltas[0].function.name == "get_weather"
    )
    assert all(d.index == 0 and isinstance(d.function.arguments, str) for d in deltas)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert not any(
        c.choices[0].delta.content and "<tool_call>" in c.choices[0].delta.content
        for c in chunks
        if c.choices
    )


def test_non_streamed_named_tool_call(api):
    reply = api.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=60,
        temperature=0,
    )
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"]
    assert reply.choices[0].finish_reason == "tool_calls"


def test_parse_with_a_pydantic_model(api):
    completion = api.chat.completions.parse(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": "Which city is the capital of France, and in which country is it?",
            }
        ],
        response_format=Place,
        max_tokens=100,
        temperature=0,
    )
    place = completion.choices[0].message.parsed
    assert isinstance(place, Place) and place.city


def test_responses_create_text(api):
    response = api.responses.create(
        model=MODEL, input="What is the capital of France?", max_output_tokens=30, temperature=0
    )
    assert response.status == "completed"
    assert "Paris" in response.output_text
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0


def test_responses_stream_function_call(api):
    tool = {"type": "function", **WEATHER["function"]}
    with api.responses.stream(
        model=MODEL,
        input=ASK[0]["content"],
        tools=[tool],
        tool_choice="required",
        max_output_tokens=60,
        temperature=0,
    ) as stream:
        events = [e.type for e in stream]
        response = stream.get_final_response()
    call = next(item for item in response.output if item.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments)["city"]
    assert "response.output_item.done" in events and events[-1] == "response.completed"


def test_responses_stream_text(api):
    with api.responses.stream(
        model=MODEL, input="What is the capital of France?", max_output_tokens=30, temperature=0
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        response = stream.get_final_response()
    assert "".join(deltas) == response.output_text and "Paris" in response.output_text


def test_anthropic_messages_text_and_tool_use(live):
    client = anthropic.Anthropic(base_url=live.url, api_key="unused", max_retries=0)
    message = client.messages.create(
        model=MODEL,
        max_tokens=30,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        extra_body={"temperature": 0},
    )
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert "Paris" in message.content[0].text

    tool = {
        "name": "get_weather",
        "description": "Get the weather",
        "input_schema": WEATHER["function"]["parameters"],
    }
    with client.messages.stream(
        model=MODEL, max_tokens=60, messages=ASK, tools=[tool], tool_choice={"type": "any"}, extra_body={"temperature": 0}
    ) as stream:
        final = stream.get_final_message()
    use = next(block for block in final.content if block.type == "tool_use")
    assert final.stop_reason == "tool_use" and use.name == "get_weather" and use.input["city"]

    history = ASK + [
        {"role": "assistant", "content": [block.model_dump() for block in final.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"}]},
    ]
    answer = client.messages.create(model=MODEL, max_tokens=30, messages=history, tools=[tool])
    assert answer.content and answer.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_embeddings_with_the_sdk_defaults(api):
    result = api.embeddings.create(model=MODEL, input=["Paris is in France.", "Rome is in Italy."])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 576
    assert result.usage.prompt_tokens > 0
