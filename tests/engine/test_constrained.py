"""Grammar-constrained decoding: JSON schemas and forced tool calls as logits processors.

The tiny random-weight model writes garbage unless constrained, so any valid
output it produces is the processor's doing.
"""

from __future__ import annotations

import json
import logging
import re
import shutil

import mlx.core as mx
import mlx_lm
import pytest
from mlx_lm import stream_generate
from mlx_lm.generate import BatchGenerator
from mlx_lm.sample_utils import make_sampler
from mlx_lm.tokenizer_utils import TokenizerWrapper
from transformers import AutoTokenizer

from app.engine.bundled import ensure_bundled_model
from app.engine.constrained import (
    GrammarProcessor,
    json_grammar,
    json_processor,
    ll_tokenizer,
    tool_call_grammar,
    tool_call_processor,
)
from app.engine.types import InvalidRequest
from tests.conftest import TINY_ID

SCHEMA = {
    "type": "object",
    "properties": {
        "color": {"enum": ["red", "green", "blue"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 99},
        "label": {"type": "string", "maxLength": 8},
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 3},
        "point": {
            "type": "object",
            "properties": {"x": {"type": "integer", "minimum": -9, "maximum": 9}},
            "required": ["x"],
            "additionalProperties": False,
        },
    },
    "required": ["color", "count", "label", "ok", "tags", "point"],
    "additionalProperties": False,
}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ADD = {  # parameters with $defs/$ref, as pydantic writes them
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "$defs": {"Digit": {"type": "integer", "minimum": 0, "maximum": 9}},
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/Digit"}, "b": {"$ref": "#/$defs/Digit"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, ADD]
DIGIT = {"type": "integer", "minimum": 0, "maximum": 9}
TOOL_SCHEMAS = {  # the arguments' schemas with $refs resolved, for validate()
    "get_weather": WEATHER["function"]["parameters"],
    "add": {
        "type": "object",
        "properties": {"a": DIGIT, "b": DIGIT},
        "required": ["a", "b"],
        "additionalProperties": False,
    },
}

# greedy, and temperature 1 with three seeds
SAMPLINGS = [(0.0, None), (1.0, 0), (1.0, 1), (1.0, 2)]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def validate(value, schema: dict, path: str = "$") -> None:
    """A JSON Schema check for the keywords these tests use (no jsonschema dependency)."""
    if "const" in schema:
        assert value == schema["const"], path
    if "enum" in schema:
        assert value in schema["enum"], path
    kind = schema.get("type")
    if kind == "object":
        assert isinstance(value, dict), path
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            assert key in value, f"{path}.{key} missing"
        if schema.get("additionalProperties") is False:
            assert set(value) <= set(props), f"{path}: extra keys {set(value) - set(props)}"
        for key, sub in props.items():
            if key in value:
                validate(value[key], sub, f"{path}.{key}")
    elif kind == "array":
        assert isinstance(value, list), path
        assert len(value) <= schema.get("maxItems", len(value)), path
        assert len(value) >= schema.get("minItems", 0), path
        for i, item in enumerate(value):
            validate(item, schema.get("items", {}), f"{path}[{i}]")
    elif kind == "string":
        assert isinstance(value, str), path
        assert len(value) <= schema.get("maxLength", len(value)), path
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), path
        assert schema.get("minimum", value) <= value <= schema.get("maximum", value), path
    elif kind == "boolean":
        assert isinstance(value, bool), path


def sampler_for(temp: float, seed: int | None):
    if seed is not None:
        mx.random.seed(seed)
    return make_sampler(temp=temp)


def generate(model, tokenizer, prompt, processors, temp=0.0, seed=None, max_tokens=200):
    """(text, finish_reason) from mlx-lm's stream_generate."""
    out = list(
        stream_generate(
            model,
            tokenizer,
            prompt,
            max_tokens=max_tokens,
            logits_processors=processors,
            sampler=sampler_for(temp, seed),
        )
    )
    return "".join(r.text for r in out), out[-1].finish_reason


def chat_prompt(tokenizer, content: str, system: str | None = None) -> list[int]:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": content})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True)


def allowed_ids(proc: GrammarProcessor, context: list[int], width: int) -> list[int]:
    """Token ids the processor leaves finite after `context`."""
    out = proc(mx.array(context), mx.zeros((1, width)))
    return [i for i, finite in enumerate(mx.isfinite(out[0]).tolist()) if finite]


def hermes_calls(text: str) -> list[dict]:
    """What a Hermes parser reads: json.loads of each <tool_call> ... </tool_call> body."""
    bodies = re.findall(r"<tool_call>(.*?)</tool_call>", text, flags=re.S)
    return [json.loads(b) for b in bodies]


class PaddedModel:
    """The model with `extra` more vocabulary columns of high logits, like a padded embedding."""

    def __init__(self, model, extra: int, value: float = 50.0):
        self.model, self.extra, self.value = model, extra, value
        self.layers = model.layers
        self.vocab = model.model.embed_tokens.weight.shape[0]

    def __call__(self, inputs, cache=None, **kwargs):
        # Ids past the real embedding (tokens added to the tokenizer) read its last row.
        logits = self.model(mx.minimum(inputs, self.vocab - 1), cache=cache, **kwargs)
        pad = mx.full((*logits.shape[:-1], self.extra), self.value, dtype=logits.dtype)
        return mx.concatenate([logits, pad], axis=-1)


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(models_dir):
    return mlx_lm.load(str(models_dir / TINY_ID))


@pytest.fixture(scope="module")
def tiny_prompt(tiny):
    return chat_prompt(tiny[1], "Give me some JSON, please.")


@pytest.fixture(scope="module")
def marker_tokenizer(models_dir, tmp_path_factory):
    """The tiny tokenizer plus Qwen-like added `<tool_call>` tokens and a Mistral `[TOOL_CALLS]`."""
    folder = tmp_path_factory.mktemp("marker-tok")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(models_dir / TINY_ID / name, folder / name)
    hf = AutoTokenizer.from_pretrained(str(folder))
    hf.add_tokens(["<tool_call>", "</tool_call>"])  # added, not special (as in Qwen)
    hf.add_special_tokens({"additional_special_tokens": ["[TOOL_CALLS]"]})
    return TokenizerWrapper(hf)


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    return mlx_lm.load(str(ensure_bundled_model(tmp_path_factory.mktemp("bundled"))))


# --------------------------------------------------------------------------
# JSON (response_format)
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("temp", "seed"), SAMPLINGS)
def test_schema_output_parses_and_validates(tiny, tiny_prompt, temp, seed):
    model, tokenizer = tiny
    proc = json_processor(tokenizer, SCHEMA)
    text, finish = generate(model, tokenizer, tiny_prompt, [proc], temp, seed)
    assert finish == "stop"  # the grammar ended and only EOS was allowed
    validate(json.loads(text), SCHEMA)


def test_unconstrained_tiny_model_writes_garbage(tiny, tiny_prompt):
    model, tokenizer = tiny
    text, _ = generate(model, tokenizer, tiny_prompt, [], max_tokens=40)
    with pytest.raises(ValueError):
        json.loads(text)


def test_json_object_allows_an_object_and_eos_only_at_its_end(tiny):
    _, tokenizer = tiny
    proc = json_processor(tokenizer, None)
    width = len(tokenizer._tokenizer)
    eos = sorted(tokenizer.eos_token_ids)
    prompt = [1, 5, 7]
    first = allowed_ids(proc, prompt, width)
    assert tokenizer.encode('{', add_special_tokens=False)[0] in first
    for bad in ('[', '"', "1", " "):
        assert tokenizer.encode(bad, add_special_tokens=False)[0] not in first
    assert not set(eos) & set(first)

    body = tokenizer.encode('{"a": [1, "x"], "b": {"c": null}}', add_special_tokens=False)
    context = list(prompt)
    for i, token in enumerate(body):
        if i:  # the first call above already saw the prompt
            allowed = allowed_ids(proc, context, width)
            assert token in allowed, tokenizer.decode(body[:i])
            assert not set(eos) & set(allowed), f"EOS allowed after {tokenizer.decode(body[:i])!r}"
        context.append(token)
    assert allowed_ids(proc, context, width) == eos  # complete: only EOS
    assert proc.finished


def test_processor_masks_padded_vocab_entries(tiny):
    _, tokenizer = tiny
    vocab = len(tokenizer._tokenizer)
    proc = json_processor(tokenizer, SCHEMA)
    logits = mx.concatenate([mx.zeros((1, vocab)), mx.full((1, 64), 100.0)], axis=-1)
    out = proc(mx.array([1, 2, 3]), logits)
    assert out.shape == (1, vocab + 64)
    assert not mx.isfinite(out[0, vocab:]).any().item()
    assert mx.isfinite(out[0, :vocab]).any().item()


def test_padded_model_still_gives_valid_json(tiny, tiny_prompt):
    model, tokenizer = tiny
    padded = PaddedModel(model, extra=64)  # padding logits beat every real token
    text, finish = generate(padded, tokenizer, tiny_prompt, [json_processor(tokenizer, SCHEMA)], 1.0, 3)
    assert finish == "stop"
    validate(json.loads(text), SCHEMA)


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"type": "objekt"}, "objekt"),
        ({"type": "object", "properties": {"a": {"type": "strin"}}}, "strin"),
        ({"type": "string", "pattern": "[a-"}, "regex"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}, "Missing"),
        ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "not"),
        ("a string", "expected an object"),
        ([{"type": "object"}], "expected an object"),
    ],
)
def test_invalid_schema_is_rejected_at_construction(tiny, schema, fragment):
    with pytest.raises(InvalidRequest) as info:
        json_processor(tiny[1], schema)
    assert info.value.param == "response_format"
    assert info.value.message.startswith("Invalid JSON schema")
    assert fragment in info.value.message


def test_processor_reset_replays_the_same_output(tiny, tiny_prompt):
    model, tokenizer = tiny
    proc = json_processor(tokenizer, SCHEMA)
    first, _ = generate(model, tokenizer, tiny_prompt, [proc])
    proc.reset()
    again, _ = generate(model, tokenizer, tiny_prompt, [proc])
    assert again == first


def test_matcher_error_stops_constraining_without_raising(tiny, caplog):
    _, tokenizer = tiny
    proc = json_processor(tokenizer, SCHEMA)
    width = len(tokenizer._tokenizer)
    proc(mx.array([1, 2]), mx.zeros((1, width)))
    not_json = tokenizer.encode("x", add_special_tokens=False)[0]
    with caplog.at_level(logging.ERROR, logger="app.engine.constrained"):
        out = proc(mx.array([1, 2, not_json]), mx.zeros((1, width)))
    assert not proc.active
    assert mx.isfinite(out).all().item()  # logits pass through untouched
    assert "Grammar constraint failed" in caplog.text
    assert proc(mx.array([1, 2, not_json, 5]), mx.zeros((1, width))) is not None


def test_ll_tokenizer_is_cached_per_tokenizer(tiny):
    tokenizer = tiny[1]
    assert ll_tokenizer(tokenizer) is ll_tokenizer(tokenizer)
    assert ll_tokenizer(tokenizer).eos_tokens == sorted(tokenizer.eos_token_ids)


def test_every_eos_id_is_allowed_at_the_end(models_dir):
    _, tokenizer = mlx_lm.load(str(models_dir / TINY_ID))
    tokenizer.add_eos_token("<|endoftext|>")  # now {0, 2}, like models with several EOS ids
    proc = json_processor(tokenizer, {"type": "object", "properties": {}, "additionalProperties": False})
    width = len(tokenizer._tokenizer)
    body = tokenizer.encode("{}", add_special_tokens=False)
    proc(mx.array([1]), mx.zeros((1, width)))
    assert allowed_ids(proc, [1, *body], width) == [0, 2]


# --------------------------------------------------------------------------
# BatchGenerator: per-row processors
# --------------------------------------------------------------------------


def _batch_run(model, prompts, processors, max_tokens=200) -> list[list[int]]:
    eos = 2
    gen = BatchGenerator(model, stop_tokens=[[eos]], sampler=make_sampler(temp=0.0))
    uids = gen.insert(prompts, max_tokens=[max_tokens] * len(prompts), logits_processors=processors)
    out: dict[int, list[int]] = {uid: [] for uid in uids}
    done: set[int] = set()
    while len(done) < len(uids):
        for r in gen.next_generated():
            if r.finish_reason == "stop" and r.token == eos:
                done.add(r.uid)
                continue
            out[r.uid].append(r.token)
            if r.finish_reason is not None:
                done.add(r.uid)
    gen.close()
    return [out[uid] for uid in uids]


def test_batch_generator_constrains_only_its_row(tiny):
    model, tokenizer = tiny
    constrained_prompt = chat_prompt(tokenizer, "Give me some JSON, please.")
    free_prompt = chat_prompt(tokenizer, "Tell me something long about Paris and Rome.")
    proc = json_processor(tokenizer, SCHEMA)
    json_row, free_row = _batch_run(model, [constrained_prompt, free_prompt], [[proc], []])
    validate(json.loads(tokenizer.decode(json_row)), SCHEMA)
    # The unconstrained row is exactly what it is when no row has a processor.
    _, reference = _batch_run(model, [constrained_prompt, free_prompt], [[], []])
    assert free_row == reference
    with pytest.raises(ValueError):
        json.loads(tokenizer.decode(free_row))


# --------------------------------------------------------------------------
# Tool calls
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", [None, "get_weather", "add"])
@pytest.mark.parametrize(("temp", "seed"), SAMPLINGS[:2])
def test_forced_hermes_tool_call(tiny, tiny_prompt, name, temp, seed):
    model, tokenizer = tiny
    proc = tool_call_processor(tokenizer, TOOLS, name, "hermes")
    text, finish = generate(model, tokenizer, tiny_prompt, [proc], temp, seed)
    assert finish == "stop"
    assert text.startswith("<tool_call>\n") and text.endswith("\n</tool_call>")
    [call] = hermes_calls(text)
    assert set(call) == {"name", "arguments"}
    assert call["name"] == name or (name is None and call["name"] in TOOL_SCHEMAS)
    validate(call["arguments"], TOOL_SCHEMAS[call["name"]])


def test_llama3_tool_call(tiny, tiny_prompt):
    model, tokenizer = tiny
    proc = tool_call_processor(tokenizer, TOOLS, "add", "llama3")
    text, finish = generate(model, tokenizer, tiny_prompt, [proc], 1.0, 0)
    assert finish == "stop"
    call = json.loads(text)
    assert list(call) == ["name", "parameters"] and call["name"] == "add"
    validate(call["parameters"], TOOL_SCHEMAS["add"])


@pytest.mark.parametrize("parallel", [False, True])
def test_mistral_tool_call(tiny, tiny_prompt, parallel):
    model, tokenizer = tiny
    proc = tool_call_processor(tokenizer, TOOLS, None, "mistral", parallel=parallel)
    text, finish = generate(model, tokenizer, tiny_prompt, [proc], 1.0, 1, max_tokens=400)
    assert finish == "stop"
    assert text.startswith("[TOOL_CALLS]")
    calls = json.loads(text[len("[TOOL_CALLS]") :])
    assert isinstance(calls, list) and len(calls) >= 1
    if not parallel:
        assert len(calls) == 1
    for call in calls:
        validate(call["arguments"], TOOL_SCHEMAS[call["name"]])


def test_parallel_hermes_grammar_accepts_several_calls(tiny):
    _, tokenizer = tiny
    proc = tool_call_processor(tokenizer, TOOLS, None, "hermes", parallel=True)
    text = (
        '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
    )
    ids = tokenizer.encode(text, add_special_tokens=False)
    width = len(tokenizer._tokenizer)
    proc(mx.array([1]), mx.zeros((1, width)))
    for i, token in enumerate(ids[1:], start=1):
        assert token in allowed_ids(proc, [1, *ids[:i]], width), tokenizer.decode(ids[:i])
    assert 2 in allowed_ids(proc, [1, *ids], width)  # EOS after any complete call


def test_special_token_markers_are_used_as_tokens(tiny, tiny_prompt, marker_tokenizer):
    model, _ = tiny
    tok = marker_tokenizer
    markers = ["<tool_call>", "</tool_call>", "[TOOL_CALLS]"]
    open_id, close_id, mistral_id = tok.convert_tokens_to_ids(markers)
    assert "<[" in tool_call_grammar(tok, TOOLS, None, "hermes")
    width = len(tok._tokenizer)
    assert allowed_ids(tool_call_processor(tok, TOOLS, None, "hermes"), [1], width) == [open_id]
    assert allowed_ids(tool_call_processor(tok, TOOLS, None, "mistral"), [1], width) == [mistral_id]

    # End to end: the model's vocab is smaller than this tokenizer's, so pad it.
    padded = PaddedModel(model, extra=64, value=0.0)
    proc = tool_call_processor(tok, TOOLS, "get_weather", "hermes")
    tokens = [
        r.token
        for r in stream_generate(
            padded, tok, tiny_prompt, max_tokens=100, logits_processors=[proc], sampler=make_sampler(0.0)
        )
    ]
    assert tokens[0] == open_id and close_id in tokens
    [call] = hermes_calls(tok.decode(tokens))
    assert call["name"] == "get_weather"
    validate(call["arguments"], TOOL_SCHEMAS["get_weather"])


def test_plain_text_markers_on_a_vocab_without_them(tiny):
    grammar = tool_call_grammar(tiny[1], TOOLS, None, "hermes")
    assert '"<tool_call>"' in grammar and "<[" not in grammar


def test_unknown_function_name_is_rejected(tiny):
    with pytest.raises(InvalidRequest) as info:
        tool_call_processor(tiny[1], TOOLS, "get_time", "hermes")
    assert info.value.param == "tool_choice"
    assert "get_time" in info.value.message


def test_bad_tools_are_rejected(tiny):
    broken = {"type": "function", "function": {"name": "f", "parameters": {"type": "strin"}}}
    with pytest.raises(InvalidRequest) as info:
        tool_call_processor(tiny[1], [WEATHER, broken], None, "hermes")
    assert info.value.param == "tools" and "'f'" in info.value.message and "strin" in info.value.message
    with pytest.raises(InvalidRequest) as info:
        tool_call_processor(tiny[1], [], None, "hermes")
    assert info.value.param == "tools"


def test_function_without_parameters_gets_empty_arguments(tiny, tiny_prompt):
    model, tokenizer = tiny
    tools = [{"type": "function", "function": {"name": "ping"}}]
    proc = tool_call_processor(tokenizer, tools, None, "hermes")
    text, _ = generate(model, tokenizer, tiny_prompt, [proc])
    assert hermes_calls(text) == [{"name": "ping", "arguments": {}}]


def test_json_layout_is_compact_with_json_dumps_separators(tiny):
    """No free whitespace: what models see in training, and no newline loops."""
    _, tokenizer = tiny
    proc = GrammarProcessor(tokenizer, json_grammar(SCHEMA["properties"]["point"]))
    width = len(tokenizer._tokenizer)

    def first_id(text: str) -> int:
        return tokenizer.encode(text, add_special_tokens=False)[0]

    allowed_ids(proc, [1], width)  # the prompt
    after_brace = allowed_ids(proc, [1, first_id("{")], width)
    assert first_id('"') in after_brace
    assert first_id(" ") not in after_brace and first_id("\n") not in after_brace
    key = tokenizer.encode('{"x":', add_special_tokens=False)
    after_colon = allowed_ids(proc, [1, *key], width)
    assert first_id(" ") in after_colon and first_id("1") not in after_colon


# --------------------------------------------------------------------------
# The real bundled model
# --------------------------------------------------------------------------


@pytest.mark.real_model
def test_real_model_json_schema_answer(bundled):
    model, tokenizer = bundled
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    prompt = chat_prompt(tokenizer, "What is the capital of France? Give the city and its country.",
                         system="Reply with a JSON object.")
    text, finish = generate(model, tokenizer, prompt, [json_processor(tokenizer, schema)], max_tokens=60)
    assert finish == "stop"
    answer = json.loads(text)
    validate(answer, schema)
    assert answer["city"] == "Paris"


@pytest.mark.real_model
def test_real_model_forced_tool_call(bundled):
    model, tokenizer = bundled
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
    system = (
        "You can call this function by writing <tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>\n'
        + json.dumps(tool["function"])
    )
    prompt = chat_prompt(tokenizer, "What's the weather like in Paris today?", system=system)
    proc = tool_call_processor(tokenizer, [tool], None, "hermes")
    text, finish = generate(model, tokenizer, prompt, [proc], max_tokens=60)
    assert finish == "stop"
    [call] = hermes_calls(text)
    assert call["name"] == "get_weather"
    validate(call["arguments"], tool["function"]["parameters"])
    assert "Paris" in call["arguments"]["city"]
