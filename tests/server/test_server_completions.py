"""POST /v1/completions: prompts, shapes, logprobs and the unsupported options."""

from __future__ import annotations

import pytest
from fake_engine import FakeEngine
from server_helpers import COMPLETIONS, error_of, read_stream


def completion_body(**fields):
    return {"model": "fake-model", "prompt": "Say hello", **fields}


async def test_non_stream_response_shape(client, engine: FakeEngine) -> None:
    resp = await client.post(COMPLETIONS, json=completion_body(max_tokens=3))
    body = await resp.json()
    assert body["id"].startswith("cmpl-")
    assert body["object"] == "text_completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "fake-model"
    assert body["choices"] == [
        {"index": 0, "text": "Hello, world", "logprobs": None, "finish_reason": "length"}
    ]
    assert body["usage"]["prompt_tokens"] == 2
    assert body["usage"]["completion_tokens"] == 3
    assert engine.last.prompt_text == "Say hello"
    assert engine.last.messages is None and engine.last.prompt_tokens is None


@pytest.mark.parametrize(
    ("prompt", "text", "tokens"),
    [
        ("abc", "abc", None),
        (["abc"], "abc", None),
        ([1, 2, 3], None, [1, 2, 3]),
        ([[4, 5]], None, [4, 5]),
    ],
)
async def test_prompt_forms(client, engine: FakeEngine, prompt, text, tokens) -> None:
    resp = await client.post(COMPLETIONS, json=completion_body(prompt=prompt))
    assert resp.status == 200, await resp.text()
    assert (engine.last.prompt_text, engine.last.prompt_tokens) == (text, tokens)


@pytest.mark.parametrize("prompt", [["a", "b"], [[1], [2]], [], 5, None, [1, "a"], {"text": "x"}])
async def test_bad_prompts(client, prompt) -> None:
    error = await error_of(await client.post(COMPLETIONS, json=completion_body(prompt=prompt)), 400)
    assert error["param"] == "prompt"
    assert error["type"] == "invalid_request_error"


async def test_several_prompts_message(client) -> None:
    error = await error_of(
        await client.post(COMPLETIONS, json=completion_body(prompt=["a", "b"])), 400
    )
    assert "Only one prompt per request" in error["message"]


async def test_missing_prompt(client) -> None:
    error = await error_of(await client.post(COMPLETIONS, json={"model": "fake-model"}), 400)
    assert error["param"] == "prompt"


async def test_stream(client) -> None:
    body = completion_body(stream=True, stream_options={"include_usage": True})
    chunks = await read_stream(await client.post(COMPLETIONS, json=body))
    assert all(c["object"] == "text_completion" and c["id"].startswith("cmpl-") for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "Hello, world!"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])
    assert chunks[-2]["choices"] == [
        {"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}
    ]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == 6


async def test_logprobs(client, engine: FakeEngine) -> None:
    body = await (await client.post(COMPLETIONS, json=completion_body(logprobs=2))).json()
    assert engine.last.logprobs is True and engine.last.top_logprobs == 2
    assert body["choices"][0]["logprobs"] == {
        "tokens": ["Hello", ",", " world", "!"],
        "token_logprobs": [-0.25] * 4,
        "top_logprobs": [{f"{t}#0": -0.5, f"{t}#1": -1.0} for t in ["Hello", ",", " world", "!"]],
        "text_offset": [0, 5, 6, 12],
    }


async def test_logprobs_zero_means_chosen_tokens_only(client, engine: FakeEngine) -> None:
    body = await (await client.post(COMPLETIONS, json=completion_body(logprobs=0))).json()
    assert engine.last.logprobs is True and engine.last.top_logprobs == 0
    assert body["choices"][0]["logprobs"]["top_logprobs"] == [{}, {}, {}, {}]


async def test_streamed_logprobs_keep_text_offsets(client) -> None:
    chunks = await read_stream(
        await client.post(COMPLETIONS, json=completion_body(stream=True, logprobs=1))
    )
    offsets = [c["choices"][0]["logprobs"]["text_offset"] for c in chunks[:-1]]
    assert offsets == [[0], [5], [6], [12]]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("logprobs", 6),
        ("logprobs", -1),
        ("echo", True),
        ("suffix", "end"),
        ("best_of", 3),
        ("n", 2),
    ],
)
async def test_unsupported_or_invalid_options(client, field, value) -> None:
    error = await error_of(
        await client.post(COMPLETIONS, json=completion_body(**{field: value})), 400
    )
    assert error["param"] == field


async def test_harmless_legacy_options_accepted(client) -> None:
    body = completion_body(echo=False, suffix="", best_of=1, n=1, user="me")
    assert (await client.post(COMPLETIONS, json=body)).status == 200
