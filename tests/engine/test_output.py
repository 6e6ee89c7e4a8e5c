"""Output parsers: answer / reasoning / tool calls from each family's real output format.

Every recorded output is fed whole, one character at a time and in random
chunks (markup split across chunks); the merged events must be identical,
markup must never reach the answer, and tool-call deltas accumulated the way
the openai SDK and OpenCode (Vercel AI SDK) do must give the expected calls.

Tokenizers are the tiny test tokenizer dressed with the real chat templates of
each family (tests/engine/recorded/templates, from the model repositories via
llama.cpp's models/templates), so family detection runs as it does on the
real models.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlx_lm.utils import load_tokenizer

from app.engine.output import (
    HermesParser,
    OutputParser,
    PassthroughParser,
    make_output_parser,
    render_tools_fallback,
    template_supports_tools,
    tool_style,
)
from app.engine.output_json import JsonScanner
from app.engine.types import ReasoningDelta, TextDelta, ToolCallDelta
from tests.conftest import TINY_ID

TEMPLATES = Path(__file__).parent / "recorded" / "templates"


def _tool(name: str, **props: str) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} tool",
            "parameters": {
                "type": "object",
                "properties": {k: {"type": v} for k, v in props.items()},
                "required": list(props),
            },
        },
    }


TOOLS = [
    _tool("get_weather", location="string", unit="string"),
    _tool("get_time", timezone="string"),
    _tool("write_file", path="string", content="string"),
    _tool("list_files"),
]

# name -> (template file, model_type, extra special tokens, expected style)
FAMILIES = {
    "qwen2.5": ("Qwen-Qwen2.5-7B-Instruct", "qwen2", ["<tool_call>", "</tool_call>"], "hermes"),
    "qwen3": (
        "Qwen-Qwen3-0.6B",
        "qwen3",
        ["<think>", "</think>", "<tool_call>", "</tool_call>"],
        "hermes",
    ),
    "qwen3.5": (
        "Qwen3.5-4B",
        "qwen3_5",
        ["<think>", "</think>", "<tool_call>", "</tool_call>"],
        "mlx:qwen3_coder",
    ),
    "hermes3": (
        "NousResearch-Hermes-3-Llama-3.1-8B-tool_use",
        "llama",
        ["<tool_call>", "</tool_call>"],
        "hermes",
    ),
    "llama3.1": ("meta-llama-Llama-3.1-8B-Instruct", "llama", ["<|python_tag|>", "<|eom_id|>"], "llama3"),
    "llama3.2": ("meta-llama-Llama-3.2-3B-Instruct", "llama", ["<|python_tag|>"], "llama3"),
    "mistral-nemo": ("mistralai-Mistral-Nemo-Instruct-2407", "mistral", ["[TOOL_CALLS]"], "mistral"),
    "mistral-small-3.2": (
        "Mistral-Small-3.2-24B-Instruct-2506",
        "mistral3",
        ["[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"],
        "mistral",
    ),
    "ministral-3-reasoning": (
        "mistralai-Ministral-3-14B-Reasoning-2512",
        "mistral3",
        ["[THINK]", "[/THINK]", "[TOOL_CALLS]", "[ARGS]"],
        "mistral",
    ),
    "gpt-oss": (
        "openai-gpt-oss-120b",
        "gpt_oss",
        ["<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|call|>", "<|return|>", "<|constrain|>"],
        "harmony",
    ),
    "deepseek-r1": ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "qwen2", ["<think>", "</think>"], "fallback"),
    "tiny": (None, "llama", [], "fallback"),  # the tiny model's ChatML template: no tools
}

MARKUP = [
    "<tool_call>", "</tool_call>", "<think>", "</think>", "<|python_tag|>", "[TOOL_CALLS]",
    "[ARGS]", "[CALL_ID]", "[THINK]", "[/THINK]", "<|channel|>", "<|message|>", "<|start|>",
    "<|end|>", "<|constrain|>", "<|call|>", "<function=", "<parameter=",
]  # fmt: skip


@pytest.fixture(scope="module")
def tokenizers(models_dir, tmp_path_factory):
    """Family name -> a real TokenizerWrapper with that family's chat template."""
    tiny = models_dir / TINY_ID
    root = tmp_path_factory.mktemp("families")
    out = {}
    for family, (template, _, extra, _) in FAMILIES.items():
        if template is None:
            out[family] = load_tokenizer(tiny)
            continue
        folder = root / family
        folder.mkdir()
        shutil.copy(tiny / "tokenizer.json", folder)
        config = json.loads((tiny / "tokenizer_config.json").read_text())
        config["chat_template"] = (TEMPLATES / f"{template}.jinja").read_text()
        config["additional_special_tokens"] = extra
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
        out[family] = load_tokenizer(folder)
    return out


def prompt_tail(tokenizer, tools, **kwargs) -> str:
    """The end of the real rendered prompt, as the engine passes it."""
    messages = [{"role": "user", "content": "What's the weather in Paris?"}]
    if tools and template_supports_tools(tokenizer):
        kwargs["tools"] = tools
    text = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, **kwargs
    )
    return text[-200:]


# Driving a parser and reading its events the way clients do.


def feed_chunks(parser: OutputParser, chunks: list[str]) -> list:
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.finish()
    return events


def splits(text: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(text):
        n = rng.randint(1, 12)
        out.append(text[i : i + n])
        i += n
    return out


def merged(events: list) -> list[tuple]:
    """Events with consecutive pieces joined and ids left out: equal for any chunking."""
    out: list[list] = []
    for e in events:
        if isinstance(e, (TextDelta, ReasoningDelta)):
            kind = type(e).__name__
            if out and out[-1][0] == kind:
                out[-1][1] += e.text
            else:
                out.append([kind, e.text])
        else:
            assert isinstance(e, ToolCallDelta)
            if e.id is None and out and out[-1][0] == "call" and out[-1][1] == e.index:
                out[-1][3] += e.arguments
            else:
                out.append(["call", e.index, e.name, e.arguments])
    return [tuple(x) for x in out]


@dataclass
class Output:
    content: str
    reasoning: str
    calls: list[tuple[str, dict]]
    events: list


def openai_accumulate(events: list) -> Output:
    """What the openai SDK's stream accumulator and OpenCode's AI SDK build from the deltas."""
    content, reasoning = [], []
    calls: dict[int, dict] = {}
    finished: dict[int, int] = {}  # AI SDK: a call is done once its arguments parse as JSON
    ids = set()
    for e in events:
        if isinstance(e, TextDelta):
            content.append(e.text)
        elif isinstance(e, ReasoningDelta):
            reasoning.append(e.text)
        else:
            if e.index not in calls:
                # The first delta of a call: OpenCode fails without a string id and a name.
                assert isinstance(e.id, str) and e.id.startswith("call_"), e
                assert isinstance(e.name, str) and e.name, e
                assert e.id not in ids
                ids.add(e.id)
                assert e.index == len(calls), "calls are numbered 0, 1, 2... in order"
                calls[e.index] = {"id": e.id, "name": e.name, "arguments": e.arguments}
            else:
                assert e.id is None and e.name is None, "only the first delta names the call"
                assert e.index not in finished, "arguments kept coming after they were valid JSON"
                calls[e.index]["arguments"] += e.arguments
            if _parses(calls[e.index]["arguments"]):
                finished[e.index] = 1
    out = []
    for index in sorted(calls):
        call = calls[index]
        args = json.loads(call["arguments"])  # strict, like JSON.parse
        assert isinstance(args, dict)
        out.append((call["name"], args))
    return Output("".join(content), "".join(reasoning), out, events)


def _parses(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def parse_all_ways(make, text: str, seeds=range(6)) -> Output:
    """Feed whole, per character and in random chunks; all must agree. Returns the whole-feed result."""
    whole = feed_chunks(make(), [text])
    per_char = feed_chunks(make(), list(text))
    expected = merged(whole)
    assert merged(per_char) == expected
    outs = [openai_accumulate(whole), openai_accumulate(per_char)]
    for seed in seeds:
        events = feed_chunks(make(), splits(text, seed))
        assert merged(events) == expected, f"seed {seed}"
        outs.append(openai_accumulate(events))
    for out in outs[1:]:
        assert (out.content, out.reasoning, out.calls) == (
            outs[0].content,
            outs[0].reasoning,
            outs[0].calls,
        )
    return outs[0]


# Recorded outputs, in each family's real format (from its chat template and docs).


@dataclass
class Case:
    id: str
    family: str
    output: str
    content: str = ""
    reasoning: str = ""
    calls: list[tuple[str, dict]] = field(default_factory=list)
    tools: bool = True
    template_kwargs: dict = field(default_factory=dict)


CASES = [
    # Qwen2.5: one call, then two parallel calls with text before them.
    Case(
        "qwen2.5-call",
        "qwen2.5",
        '<tool_call>\n{"name": "get_weather", "arguments": '
        '{"location": "Paris, France", "unit": "celsius"}}\n</tool_call>',
        calls=[("get_weather", {"location": "Paris, France", "unit": "celsius"})],
    ),
    Case(
        "qwen2.5-parallel",
        "qwen2.5",
        "I'll look up both for you.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Zürich"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {"timezone": "Asia/Tokyo"}}\n</tool_call>',
        content="I'll look up both for you.",
        calls=[
            ("get_weather", {"location": "Zürich"}),
            ("get_time", {"timezone": "Asia/Tokyo"}),
        ],
    ),
    Case(
        "qwen2.5-answer",
        "qwen2.5",
        "The weather in Paris is 21 °C and sunny.\n\nAnything else? <3 <tool",
        content="The weather in Paris is 21 °C and sunny.\n\nAnything else? <3 <tool",
    ),
    # Qwen3 thinking mode: the model opens <think> itself.
    Case(
        "qwen3-think-call",
        "qwen3",
        "<think>\nThe user wants the weather in Paris. I should call get_weather with "
        'location "Paris".\n</think>\n\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n</tool_call>',
        reasoning='The user wants the weather in Paris. I should call get_weather with location "Paris".',
        calls=[("get_weather", {"location": "Paris"})],
    ),
    Case(
        "qwen3-think-answer-no-tools",
        "qwen3",
        "<think>\nSimple greeting; answer briefly.\n</think>\n\nHello! How can I help you today?",
        reasoning="Simple greeting; answer briefly.",
        content="Hello! How can I help you today?",
        tools=False,
    ),
    Case(
        "qwen3-no-think",
        "qwen3",
        '<tool_call>\n{"name": "list_files", "arguments": {}}\n</tool_call>',
        calls=[("list_files", {})],
        template_kwargs={"enable_thinking": False},
    ),
    # A long argument with escapes, written as code by a coding agent.
    Case(
        "qwen3-write-file",
        "qwen3",
        "<think>\nWrite the script.\n</think>\n\n<tool_call>\n"
        + json.dumps(
            {
                "name": "write_file",
                "arguments": {
                    "path": "hello.py",
                    "content": 'def main():\n    print("Hello, \\"world\\" {}")\n\nmain()\n',
                },
            }
        )
        + "\n</tool_call>",
        reasoning="Write the script.",
        calls=[
            (
                "write_file",
                {
                    "path": "hello.py",
                    "content": 'def main():\n    print("Hello, \\"world\\" {}")\n\nmain()\n',
                },
            )
        ],
    ),
    # Qwen3.5 (Qwen3-Coder XML calls; the template opens <think> in the prompt).
    Case(
        "qwen3.5-think-xml-call",
        "qwen3.5",
        "The user asks for the weather in Paris. Use get_weather.\n</think>\n\n"
        "<tool_call>\n<function=get_weather>\n<parameter=location>\nParis\n</parameter>\n"
        "<parameter=unit>\ncelsius\n</parameter>\n</function>\n</tool_call>",
        reasoning="The user asks for the weather in Paris. Use get_weather.",
        calls=[("get_weather", {"location": "Paris", "unit": "celsius"})],
    ),
    # Hermes 3 (Llama 3.1 base, Hermes format).
    Case(
        "hermes3-call",
        "hermes3",
        '<tool_call>\n{"arguments": {"location": "Paris"}, "name": "get_weather"}\n</tool_call>',
        calls=[("get_weather", {"location": "Paris"})],
    ),
    # Llama 3.1: the whole message is the call; or after <|python_tag|>.
    Case(
        "llama3.1-json",
        "llama3.1",
        '{"name": "get_weather", "parameters": {"location": "Paris", "unit": "celsius"}}',
        calls=[("get_weather", {"location": "Paris", "unit": "celsius"})],
    ),
    Case(
        "llama3.1-python-tag",
        "llama3.1",
        '<|python_tag|>{"name": "get_time", "parameters": {"timezone": "Europe/Paris"}}',
        calls=[("get_time", {"timezone": "Europe/Paris"})],
    ),
    Case(
        "llama3.1-answer",
        "llama3.1",
        "It is sunny in Paris today {as far as I know}.",
        content="It is sunny in Paris today {as far as I know}.",
    ),
    Case(
        "llama3.1-json-answer",
        "llama3.1",
        '{"name": "Paris", "parameters": {"population": 2100000}}',
        content='{"name": "Paris", "parameters": {"population": 2100000}}',
    ),
    # Llama 3.2: several calls separated by ";", and the "type": "function" variant.
    Case(
        "llama3.2-parallel",
        "llama3.2",
        '{"type": "function", "name": "get_weather", "parameters": {"location": "Paris"}}; '
        '{"name": "get_time", "parameters": {"timezone": "Europe/Paris"}}',
        calls=[
            ("get_weather", {"location": "Paris"}),
            ("get_time", {"timezone": "Europe/Paris"}),
        ],
    ),
    # Mistral v3 (Nemo, 7B v0.3): a JSON array of calls.
    Case(
        "mistral-nemo-array",
        "mistral-nemo",
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"location": "Paris"}}, '
        '{"name": "get_time", "arguments": {"timezone": "Europe/Paris"}}]',
        calls=[
            ("get_weather", {"location": "Paris"}),
            ("get_time", {"timezone": "Europe/Paris"}),
        ],
    ),
    # Mistral Small 3.2: name[CALL_ID]id[ARGS]{...} per call.
    Case(
        "mistral-small-3.2",
        "mistral-small-3.2",
        'Let me check.[TOOL_CALLS]get_weather[CALL_ID]aB3dE7gH1[ARGS]{"location": "Paris"}'
        '[TOOL_CALLS]get_time[CALL_ID]Zx9Yw8Vu7[ARGS]{"timezone": "Europe/Paris"}',
        content="Let me check.",
        calls=[
            ("get_weather", {"location": "Paris"}),
            ("get_time", {"timezone": "Europe/Paris"}),
        ],
    ),
    # Ministral 3 / Magistral: [THINK] reasoning, then name[ARGS]{...}.
    Case(
        "ministral-3-think-call",
        "ministral-3-reasoning",
        "[THINK]The user wants Paris weather. I'll call get_weather.[/THINK]"
        '[TOOL_CALLS]get_weather[ARGS]{"location": "Paris", "unit": "celsius"}',
        reasoning="The user wants Paris weather. I'll call get_weather.",
        calls=[("get_weather", {"location": "Paris", "unit": "celsius"})],
    ),
    # gpt-oss harmony (the prompt ends with <|start|>assistant; <|call|>/<|return|> are EOS).
    Case(
        "gpt-oss-call",
        "gpt-oss",
        '<|channel|>analysis<|message|>User asks: "What\'s the weather in Paris?" We need to use '
        "get_weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather "
        '<|constrain|>json<|message|>{"location":"Paris","unit":"celsius"}',
        reasoning='User asks: "What\'s the weather in Paris?" We need to use get_weather.',
        calls=[("get_weather", {"location": "Paris", "unit": "celsius"})],
    ),
    Case(
        "gpt-oss-final",
        "gpt-oss",
        "<|channel|>analysis<|message|>Simple question. Answer directly.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Paris is the capital of **France**.",
        reasoning="Simple question. Answer directly.",
        content="Paris is the capital of **France**.",
        tools=False,
    ),
    Case(
        "gpt-oss-preamble-two-calls",
        "gpt-oss",
        "<|channel|>analysis<|message|>Need both weather and time.<|end|>"
        "<|start|>assistant<|channel|>commentary<|message|>Checking weather and time now.<|end|>"
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
        '<|message|>{"location":"Paris"}<|call|>'
        "<|start|>assistant to=functions.get_time<|channel|>commentary json"
        '<|message|>{"timezone":"Europe/Paris"}<|call|>',
        reasoning="Need both weather and time.",
        content="Checking weather and time now.",
        calls=[
            ("get_weather", {"location": "Paris"}),
            ("get_time", {"timezone": "Europe/Paris"}),
        ],
    ),
    # DeepSeek-R1 distill: the template opens <think>; no tools.
    Case(
        "deepseek-r1-think",
        "deepseek-r1",
        "Okay, so the user asks for 6 times 7. That's 42.\n</think>\n\n**42**",
        reasoning="Okay, so the user asks for 6 times 7. That's 42.",
        content="**42**",
        tools=False,
    ),
    # The tiny model (no tool support in its template): the fallback Hermes format.
    Case(
        "tiny-fallback-call",
        "tiny",
        '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n</tool_call>',
        calls=[("get_weather", {"location": "Paris"})],
    ),
]


def make_for(tokenizers, case: Case):
    tokenizer = tokenizers[case.family]
    _, model_type, _, _ = FAMILIES[case.family]
    tools = TOOLS if case.tools else None
    tail = prompt_tail(tokenizer, tools, **case.template_kwargs)
    return lambda: make_output_parser(
        tokenizer, model_type=model_type, tools=tools, prompt_text_tail=tail
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_recorded_output(tokenizers, case):
    make = make_for(tokenizers, case)
    out = parse_all_ways(make, case.output)
    assert out.content == case.content
    assert out.reasoning == case.reasoning
    assert out.calls == case.calls
    for marker in MARKUP:
        assert marker not in out.content and marker not in out.reasoning
    parser = make()
    feed_chunks(parser, [case.output])
    assert parser.tool_calls == len(case.calls)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_detection(tokenizers, family):
    _, model_type, _, style = FAMILIES[family]
    assert tool_style(tokenizers[family], model_type) == style
    assert template_supports_tools(tokenizers[family]) == (style != "fallback")


def test_thinking_start_from_the_prompt(tokenizers):
    """Qwen3 and DeepSeek-R1 templates may end the prompt inside <think>."""
    qwen3 = tokenizers["qwen3"]
    assert prompt_tail(qwen3, None).endswith("<|im_start|>assistant\n")
    off = prompt_tail(qwen3, None, enable_thinking=False)
    assert off.endswith("<think>\n\n</think>\n\n")
    out = parse_all_ways(
        lambda: make_output_parser(qwen3, model_type="qwen3", tools=None, prompt_text_tail=off),
        "Hello there.",
    )
    assert (out.content, out.reasoning) == ("Hello there.", "")
    opened = "<|im_start|>assistant\n<think>\n"
    out = parse_all_ways(
        lambda: make_output_parser(qwen3, model_type="qwen3", tools=None, prompt_text_tail=opened),
        "Hmm, a greeting.\n</think>\n\nHello there.",
    )
    assert (out.content, out.reasoning) == ("Hello there.", "Hmm, a greeting.")


def test_no_tools_means_tool_call_text_is_content(tokenizers):
    text = 'Use it like this:\n<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>'
    for family in ("qwen2.5", "qwen3"):
        tokenizer = tokenizers[family]
        make = lambda: make_output_parser(tokenizer, model_type=None, tools=None)  # noqa: E731
        out = parse_all_ways(make, text)
        assert out.content == text and out.calls == []
        assert make().tool_calls == 0
    assert isinstance(make_output_parser(tokenizers["qwen2.5"], model_type=None, tools=[]), PassthroughParser)


def test_plain_text_passes_through_unchanged(tokenizers):
    text = "  Leading spaces, trailing newlines and <b>tags</b> stay.\n\n"
    for family in ("qwen2.5", "llama3.1", "mistral-nemo", "tiny"):
        tokenizer = tokenizers[family]
        _, model_type, _, _ = FAMILIES[family]
        for tools in (None, TOOLS):
            out = parse_all_ways(
                lambda: make_output_parser(tokenizer, model_type=model_type, tools=tools), text
            )
            assert out.content == text, (family, tools)


def test_unterminated_call_that_is_complete_json_is_parsed(tokenizers):
    """Generation may end without </tool_call> (a stop string, EOS removed)."""
    make = lambda: make_output_parser(tokenizers["qwen2.5"], model_type="qwen2", tools=TOOLS)  # noqa: E731
    out = parse_all_ways(make, '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Oslo"}}')
    assert out.calls == [("get_weather", {"location": "Oslo"})]
    assert out.content == ""


@pytest.mark.parametrize(
    "family, text",
    [
        ("qwen2.5", '<tool_call>\n{"name": "write_file", "arguments": {"path": "a.py", "content": "imp'),
        ("qwen2.5", '<tool_call>\n{"name": "get_wea'),
        ("mistral-small-3.2", '[TOOL_CALLS]get_weather[ARGS]{"location": "Par'),
        ("llama3.1", '{"name": "get_weather", "parameters": {"location": "Par'),
        ("qwen3.5", "<tool_call>\n<function=get_weather>\n<parameter=location>\nPar"),
    ],
)
def test_truncated_call_is_returned_as_text(tokenizers, family, text):
    """Cut by max_tokens: never lose the text (the header may already have gone out)."""
    _, model_type, _, _ = FAMILIES[family]
    make = lambda: make_output_parser(tokenizers[family], model_type=model_type, tools=TOOLS)  # noqa: E731
    events = feed_chunks(make(), [text])
    assert merged(feed_chunks(make(), list(text))) == merged(events)
    content = "".join(e.text for e in events if isinstance(e, TextDelta))
    body = text.split("]", 1)[-1] if family.startswith("mistral") else text
    assert body.split("{", 1)[-1] in content  # the model's text survives


def test_invalid_json_in_a_call_is_text_and_logged(tokenizers, caplog):
    make = lambda: make_output_parser(tokenizers["qwen2.5"], model_type="qwen2", tools=TOOLS)  # noqa: E731
    # Invalid before the name is known: no call at all.
    bad = "<tool_call>\n{'name': 'get_weather', 'arguments': {'location': 'Paris'}}\n</tool_call>"
    with caplog.at_level(logging.WARNING, logger="app.engine.output"):
        out = parse_all_ways(make, "Sure. " + bad)
    assert out.calls == [] and out.content == "Sure.\n\n" + bad
    assert any("no valid call" in r.getMessage() for r in caplog.records)
    # Invalid after the header went out: the raw text still reaches the user, logged.
    caplog.clear()
    bad = '<tool_call>\n{"name": "get_weather", "arguments": {"location": Paris}}\n</tool_call>'
    with caplog.at_level(logging.WARNING):
        parser = make()
        events = feed_chunks(parser, [bad])
    content = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert '{"location": Paris}' in content
    assert caplog.records
    # A valid call after a broken one in the same output still works.
    parser = make()
    events = feed_chunks(
        parser,
        [bad + '\n<tool_call>\n{"name": "get_time", "arguments": {"timezone": "UTC"}}\n</tool_call>'],
    )
    calls = [e for e in events if isinstance(e, ToolCallDelta) and e.name == "get_time"]
    assert len(calls) == 1 and calls[0].arguments == '{"timezone": "UTC"}'


def test_harmony_bad_arguments_are_text(tokenizers):
    tail = prompt_tail(tokenizers["gpt-oss"], TOOLS)
    make = lambda: make_output_parser(  # noqa: E731
        tokenizers["gpt-oss"], model_type="gpt_oss", tools=TOOLS, prompt_text_tail=tail
    )
    text = "<|channel|>commentary to=functions.get_weather<|message|>location=Paris<|call|>"
    events = feed_chunks(make(), [text])
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "location=Paris"


def test_harmony_without_tools_and_plain_text(tokenizers):
    tail = prompt_tail(tokenizers["gpt-oss"], None)
    assert tail.endswith("<|start|>assistant")
    make = lambda: make_output_parser(  # noqa: E731
        tokenizers["gpt-oss"], model_type="gpt_oss", tools=None, prompt_text_tail=tail
    )
    # A call without declared tools is not a call (nor an answer); text with no markup is text.
    text = '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"location":"Paris"}'
    out = parse_all_ways(make, text)
    assert (out.calls, out.content, out.reasoning) == ([], "", '{"location":"Paris"}')
    out = parse_all_ways(make, "Just text.")
    assert out.content == "Just text."


def test_arguments_with_raw_newlines_and_as_a_json_string(tokenizers):
    make = lambda: make_output_parser(tokenizers["qwen2.5"], model_type="qwen2", tools=TOOLS)  # noqa: E731
    raw_newline = (
        '<tool_call>\n{"name": "write_file", "arguments": '
        '{"path": "a.txt", "content": "one\ntwo\tthree"}}\n</tool_call>'
    )
    out = parse_all_ways(make, raw_newline)
    assert out.calls == [("write_file", {"path": "a.txt", "content": "one\ntwo\tthree"})]
    as_string = (
        '<tool_call>\n{"name": "get_weather", '
        '"arguments": "{\\"location\\": \\"Paris\\"}"}\n</tool_call>'
    )
    out = parse_all_ways(make, as_string)
    assert out.calls == [("get_weather", {"location": "Paris"})]
    no_args = '<tool_call>\n{"name": "list_files"}\n</tool_call>'
    assert parse_all_ways(make, no_args).calls == [("list_files", {})]


def test_header_goes_out_before_arguments_finish(tokenizers):
    """OpenCode shows the call as soon as its name is known; arguments stream."""
    parser = make_output_parser(tokenizers["qwen3"], model_type="qwen3", tools=TOOLS)
    events = parser.feed('<tool_call>\n{"name": "write_file", "arguments": {"path": "a.py", "content": "x = ')
    assert [e.name for e in events if isinstance(e, ToolCallDelta)] == ["write_file"]
    args = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    assert args == '{"path": "a.py", "content": "x = '
    more = parser.feed('1"}}\n</tool_call>') + parser.finish()
    assert "".join(e.arguments for e in more if isinstance(e, ToolCallDelta)) == '1"}'
    assert parser.tool_calls == 1


def test_mistral_ids_fit_mistral_templates(tokenizers):
    """Mistral templates refuse tool call ids that are not 9 characters long."""
    parser = make_output_parser(tokenizers["mistral-nemo"], model_type="mistral", tools=TOOLS)
    events = feed_chunks(parser, ['[TOOL_CALLS][{"name": "get_time", "arguments": {}}]'])
    ids = [e.id for e in events if isinstance(e, ToolCallDelta) and e.id]
    assert len(ids) == 1 and len(ids[0]) == 9 and ids[0].startswith("call_")
    history = [
        {"role": "user", "content": "Time?"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": ids[0], "type": "function", "function": {"name": "get_time", "arguments": {}}}
            ],
        },
        {"role": "tool", "tool_call_id": ids[0], "content": "12:00"},
    ]
    tokenizers["mistral-nemo"].apply_chat_template(history, tools=TOOLS, tokenize=False)


def test_fallback_renderer(tokenizers):
    text = render_tools_fallback(TOOLS)
    assert "<tools>" in text and "</tools>" in text and "<tool_call>" in text
    lines = text.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0].splitlines()
    assert [json.loads(line)["function"]["name"] for line in lines] == [
        t["function"]["name"] for t in TOOLS
    ]
    tiny = tokenizers["tiny"]
    assert not template_supports_tools(tiny)
    prompt = tiny.apply_chat_template(
        [{"role": "system", "content": text}, {"role": "user", "content": "Weather in Paris?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text in prompt
    assert isinstance(make_output_parser(tiny, model_type="llama", tools=TOOLS), HermesParser)


def test_thinking_markers_split_across_chunks_are_held_back(tokenizers):
    parser = make_output_parser(tokenizers["qwen3"], model_type="qwen3", tools=None)
    events = parser.feed("<thi")
    assert events == []
    events = parser.feed("nk>Plan</th")
    assert merged(events) == [("ReasoningDelta", "Plan")]
    events = parser.feed("ink>Answer") + parser.finish()
    assert merged(events) == [("TextDelta", "Answer")]


def test_json_scanner():
    cases = {
        '{"a": [1, -2.5e3, true, null, "x\\"y\\u00e9"]} tail': (44, True),
        '{"a": 1': (7, False),
        '{"a": 01}': (7, None),
        '{"a" 1}': (5, None),
        "[]": (2, True),
        '"s"': (3, True),
        "{'a': 1}": (1, None),
    }
    for text, (end, done) in cases.items():
        scan = JsonScanner()
        got, _ = scan.feed(text)
        if done is None:
            assert scan.error, text
        else:
            assert scan.done == done and got == end, text
    scan = JsonScanner()
    pieces = [scan.feed(c)[1] for c in '{"a": "x\ny"}']
    assert "".join(pieces) == '{"a": "x\\ny"}' and scan.done


def test_parser_speed(tokenizers):
    """Per-token work stays small: a 4000-character call streamed in 3-character tokens."""
    content = "print('hello world')\n" * 190
    call = {"name": "write_file", "arguments": {"path": "a.py", "content": content}}
    text = "<tool_call>\n" + json.dumps(call) + "\n</tool_call>"
    parser = make_output_parser(tokenizers["qwen3"], model_type="qwen3", tools=TOOLS)
    chunks = [text[i : i + 3] for i in range(0, len(text), 3)]
    start = time.perf_counter()
    out = openai_accumulate(feed_chunks(parser, chunks))
    per_token = (time.perf_counter() - start) / len(chunks)
    assert out.calls == [("write_file", {"path": "a.py", "content": content})]
    assert per_token < 200e-6, f"{per_token * 1e6:.0f} µs per token"


def test_repeated_think_start_and_stray_think_end_never_leak(tokenizers):
    qwen3 = tokenizers["qwen3"]
    opened = "<|im_start|>assistant\n<think>\n"
    make = lambda: make_output_parser(  # noqa: E731
        qwen3, model_type="qwen3", tools=None, prompt_text_tail=opened
    )
    out = parse_all_ways(make, "<think>\nLet me think.\n</think>\n\nDone.")
    assert (out.reasoning, out.content) == ("Let me think.", "Done.")
    make = lambda: make_output_parser(qwen3, model_type="qwen3", tools=None)  # noqa: E731
    out = parse_all_ways(make, "Some thoughts.\n</think>\n\nDone.")
    assert "</think>" not in out.content and out.content.endswith("Done.")


def test_needs_output_parser(tokenizers):
    from app.engine.output import needs_output_parser

    assert not needs_output_parser(tokenizers["qwen2.5"], "qwen2", None)
    assert needs_output_parser(tokenizers["qwen2.5"], "qwen2", TOOLS)
    assert needs_output_parser(tokenizers["qwen3"], "qwen3", None)
    assert needs_output_parser(tokenizers["gpt-oss"], "gpt_oss", None)
    # mlx-lm does not know Mistral's [THINK]; the parser does.
    assert not tokenizers["ministral-3-reasoning"].has_thinking
    assert needs_output_parser(tokenizers["ministral-3-reasoning"], "mistral3", None)
    parser = make_output_parser(tokenizers["ministral-3-reasoning"], model_type="mistral3", tools=None)
    out = openai_accumulate(feed_chunks(parser, ["[THINK]Easy.[/THINK]Hi!"]))
    assert (out.reasoning, out.content) == ("Easy.", "Hi!")


def test_harmony_recipients_that_are_not_client_functions(tokenizers):
    tail = prompt_tail(tokenizers["gpt-oss"], TOOLS)
    make = lambda: make_output_parser(  # noqa: E731
        tokenizers["gpt-oss"], model_type="gpt_oss", tools=TOOLS, prompt_text_tail=tail
    )
    # A built-in tool of gpt-oss (browser) is no client call; a declared name without prefix is.
    text = (
        '<|channel|>analysis to=browser.search <|constrain|>json<|message|>{"query":"paris"}<|call|>'
        '<|start|>assistant<|channel|>commentary to=get_time <|constrain|>json<|message|>{}<|call|>'
    )
    out = parse_all_ways(make, text)
    assert out.calls == [("get_time", {})]
    assert out.reasoning == '{"query":"paris"}' and out.content == ""
