"""Tools, structured output and embeddings through the engine thread.

A random-weight model writes garbage unless constrained, which makes it a
strict test of the grammar: whatever it writes must still parse. Its strings
never end on their own, so the schemas here bound them with maxLength.
"""

from __future__ import annotations

import json
import math

import pytest
from mlx_lm.utils import load_tokenizer

from app.core.settings import EngineSettings
from app.engine.chat import render_chat
from app.engine.engine import Engine
from app.engine.types import (
    GenerationRequest,
    InvalidRequest,
    ReasoningDelta,
    SamplingParams,
    TextDelta,
    ToolCallDelta,
)
from tests.conftest import TINY_ID
from tests.engine.helpers import chat, generate
from tests.engine.test_engine import make_engine

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["C", "F"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 8}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}, "country": {"type": "string", "maxLength": 12}},
    "required": ["city", "country"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def engine(models_dir):
    engine = make_engine(models_dir, context_length=2048)
    yield engine
    engine.stop()


def tool_calls(run) -> list[dict]:
    """Accumulate ToolCallDeltas by index, the way the openai SDK and OpenCode do."""
    calls: dict[int, dict] = {}
    for event in run.seen:
        if isinstance(event, ToolCallDelta):
            call = calls.setdefault(event.index, {"id": None, "name": None, "arguments": ""})
            call["id"] = call["id"] or event.id
            call["name"] = call["name"] or event.name
            call["arguments"] += event.arguments
    return [calls[i] for i in sorted(calls)]


@pytest.mark.parametrize("choice", ["required", "get_weather"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_forced_tool_call_is_a_valid_call(engine, choice, temperature):
    run = generate(
        engine,
        messages=chat("What is the weather in Paris?"),
        tools=[WEATHER, TIME] if choice == "required" else [WEATHER],
        tool_choice=choice,
        max_tokens=120,
        sampling=SamplingParams(temperature=temperature, seed=3),
    )
    assert run.finished.finish_reason == "tool_calls"
    (call,) = tool_calls(run)[:1]
    assert call["id"].startswith("call_") and call["name"] in ("get_weather", "get_time")
    arguments = json.loads(call["arguments"])
    if call["name"] == "get_weather":
        assert set(arguments) == {"city", "unit"} and arguments["unit"] in ("C", "F")
    assert not any("<tool_call>" in e.text for e in run.seen if isinstance(e, TextDelta))


def test_tool_choice_none_gives_plain_text(engine):
    run = generate(engine, messages=chat("Hi"), tools=[WEATHER], tool_choice="none", max_tokens=8)
    assert run.finished.finish_reason in ("stop", "length")
    assert not tool_calls(run)


def test_unknown_forced_function_is_a_clear_error(engine):
    run = generate(engine, messages=chat("Hi"), tools=[WEATHER], tool_choice="nope", max_tokens=8)
    assert isinstance(run.failed.error, InvalidRequest)
    assert run.failed.error.param == "tool_choice"


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_json_schema_output_parses_and_validates(engine, temperature):
    run = generate(
        engine,
        messages=chat("Where is the Eiffel tower?"),
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": CITY_SCHEMA, "strict": True}},
        max_tokens=150,
        sampling=SamplingParams(temperature=temperature, seed=5),
    )
    assert run.finished.finish_reason == "stop"
    value = json.loads(run.text)
    assert set(value) == {"city", "country"} and all(isinstance(v, str) for v in value.values())


def test_json_object_output_parses(engine):
    run = generate(engine, messages=chat("JSON please"), response_format={"type": "json_object"}, max_tokens=150)
    assert isinstance(json.loads(run.text), dict)


def test_invalid_schema_is_a_clear_error(engine):
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}
    run = generate(engine, messages=chat("Hi"), response_format=bad, max_tokens=5)
    assert run.failed.error.param == "response_format"


def test_history_with_tool_calls_renders_for_a_template_without_tools(models_dir):
    tokenizer = load_tokenizer(models_dir / TINY_ID)
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": "18 degrees"},
    ]
    request = GenerationRequest(messages=messages, tools=[WEATHER])
    text = tokenizer.decode(render_chat(tokenizer, request))
    assert "get_weather" in text.split("<|im_start|>user")[0]  # tools described in the system turn
    assert '"city": "Paris"' in text and "<tool_response>\n18 degrees\n</tool_response>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_embeddings_are_normalised_and_deterministic(engine):
    result = engine.embed(["Hello there", "The capital of France", "Hello there"]).result(60)
    assert result.model == TINY_ID and len(result.vectors) == 3 and result.prompt_tokens > 0
    for vector in result.vectors:
        assert math.isclose(sum(x * x for x in vector), 1.0, rel_tol=1e-4)
    assert result.vectors[0] == result.vectors[2] and result.vectors[0] != result.vectors[1]


def test_embedding_an_empty_text_is_a_clear_error(engine):
    with pytest.raises(InvalidRequest):
        engine.embed(["ok", ""]).result(60)


def test_reasoning_events_type_exists():
    assert ReasoningDelta("x").text == "x"


def test_thinking_model_output_goes_to_reasoning(tmp_path):
    from tests.tiny_model import build_tiny_model

    build_tiny_model(tmp_path / "tiny-thinker", thinking=True)
    engine = Engine(EngineSettings(model="tiny-thinker", context_length=512), tmp_path)
    engine.start()
    try:
        run = generate(engine, messages=chat("Hi"), max_tokens=20, reasoning_effort="low")
    finally:
        engine.stop()
    reasoning = "".join(e.text for e in run.seen if isinstance(e, ReasoningDelta))
    assert reasoning and not run.text  # the template opened <think>; nothing closed it
    assert "<think>" not in reasoning


def test_reasoning_effort_reaches_the_template(tmp_path):
    from tests.tiny_model import build_tiny_model

    tokenizer = load_tokenizer(build_tiny_model(tmp_path / "t", thinking=True))
    request = GenerationRequest(messages=chat("Hi"), reasoning_effort="high")
    text = tokenizer.decode(render_chat(tokenizer, request))
    assert "Reasoning: high" in text and text.endswith("<think>\n")
