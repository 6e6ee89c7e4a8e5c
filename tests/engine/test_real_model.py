"""Engine behaviour that only the real bundled model can show."""

from __future__ import annotations

import pytest

from app.core.settings import BUNDLED_MODEL_ID, EngineSettings
from app.engine.engine import Engine
from tests.engine.helpers import chat, generate

pytestmark = pytest.mark.real_model

QUESTION = chat("What is the capital of France? Answer in one sentence, then name two other French cities.")


def start(models_dir, **settings) -> Engine:
    engine = Engine(EngineSettings(model=BUNDLED_MODEL_ID, context_length=1024, **settings), models_dir)
    engine.start()
    assert engine.wait_ready(timeout=300).state == "ready"
    return engine


@pytest.fixture(scope="module")
def bundled_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bundled")


def test_8bit_kv_cache_gives_the_same_greedy_text(bundled_dir):
    full = start(bundled_dir)
    try:
        expected = generate(full, messages=QUESTION, max_tokens=32, ignore_eos=True)
    finally:
        full.stop()
    q8 = start(bundled_dir, kv_bits=8)
    try:
        got = generate(q8, messages=QUESTION, max_tokens=32, ignore_eos=True)
    finally:
        q8.stop()
    assert "Paris" in expected.text
    assert got.text == expected.text


def test_second_turn_prefills_only_new_tokens(bundled_dir):
    engine = start(bundled_dir)
    try:
        turn1 = generate(engine, messages=QUESTION, max_tokens=24)
        history = QUESTION + [
            {"role": "assistant", "content": turn1.text},
            {"role": "user", "content": "And of Italy?"},
        ]
        turn2 = generate(engine, messages=history, max_tokens=8)
    finally:
        engine.stop()
    started, timings = turn2.started, turn2.finished.timings
    assert started.cached_tokens >= turn1.started.prompt_tokens
    assert timings.prefill_tokens == started.prompt_tokens - started.cached_tokens
    assert timings.prefill_tokens < 20


WEATHER_TOOL = {
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


def test_forced_tool_call_from_the_real_model(bundled_dir):
    import json

    from app.engine.types import ToolCallDelta

    engine = start(bundled_dir)
    try:
        run = generate(
            engine, messages=chat("What is the weather like in Paris today?"),
            tools=[WEATHER_TOOL], tool_choice="required", max_tokens=60,
        )
    finally:
        engine.stop()
    deltas = [e for e in run.seen if isinstance(e, ToolCallDelta)]
    assert run.finished.finish_reason == "tool_calls"
    assert deltas[0].name == "get_weather" and deltas[0].id.startswith("call_")
    arguments = json.loads("".join(d.arguments for d in deltas))
    assert "paris" in arguments["city"].lower()
