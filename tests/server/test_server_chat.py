"""POST /v1/chat/completions against the fake engine: shapes, parameters, messages."""

from __future__ import annotations

from fake_engine import FakeEngine
from server_helpers import CHAT, chat_body, read_stream

from app.engine.types import SamplingParams


async def test_non_stream_response_shape(client, engine: FakeEngine) -> None:
    resp = await client.post(CHAT, json=chat_body())
    assert resp.status == 200
    body = await resp.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "fake-model"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello, world!"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {
        "prompt_tokens": 2,
        "completion_tokens": 4,
        "total_tokens": 6,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert "x-minerva-max-tokens-clamped" not in resp.headers


async def test_cached_tokens_reported(client, engine: FakeEngine) -> None:
    engine.cached_tokens = 1
    body = await (await client.post(CHAT, json=chat_body())).json()
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 1}


async def test_stream_chunks(client) -> None:
    chunks = await read_stream(await client.post(CHAT, json=chat_body(stream=True)))
    for chunk in chunks:
        assert chunk["id"] == chunks[0]["id"] and chunk["id"].startswith("chatcmpl-")
        assert chunk["object"] == "chat.completion.chunk"
        assert isinstance(chunk["created"], int)
        assert chunk["model"] == "fake-model"
        assert chunk.get("usage") is None
    assert chunks[0]["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    middle = chunks[1:-1]
    assert [c["choices"][0]["delta"] for c in middle] == [
        {"content": "Hello"},
        {"content": ","},
        {"content": " world"},
        {"content": "!"},
    ]
    assert all(
        c["choices"][0]["index"] == 0 and c["choices"][0]["finish_reason"] is None for c in middle
    )
    assert chunks[-1]["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    ]


async def test_stream_include_usage(client) -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True})
    chunks = await read_stream(await client.post(CHAT, json=body))
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 4
    assert chunks[-1]["usage"]["total_tokens"] == 6


async def test_sampling_params_reach_engine(client, engine: FakeEngine) -> None:
    body = chat_body(
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        repetition_penalty=1.1,
        logit_bias={"42": 5, "7": -100},
        chat_template_kwargs={"enable_thinking": False},
    )
    assert (await client.post(CHAT, json=body)).status == 200
    assert engine.last.sampling == SamplingParams(
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        seed=7,
        repetition_penalty=1.1,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias=((7, -100.0), (42, 5.0)),
    )
    assert engine.last.chat_template_kwargs == {"enable_thinking": False}


async def test_defaults_and_nulls_mean_engine_defaults(client, engine: FakeEngine) -> None:
    body = chat_body(temperature=None, top_p=None, top_k=-1, stop=None, max_tokens=None, n=1)
    assert (await client.post(CHAT, json=body)).status == 200
    assert engine.last.sampling == SamplingParams()
    assert engine.last.stop == ()
    assert engine.last.max_tokens is None
    assert engine.last.logprobs is False


async def test_missing_model_uses_loaded_model(client, engine: FakeEngine) -> None:
    body = chat_body()
    del body["model"]
    resp = await client.post(CHAT, json=body)
    assert (await resp.json())["model"] == "fake-model"
    assert engine.last.model is None


async def test_max_completion_tokens_is_max_tokens(client, engine: FakeEngine) -> None:
    body = await (await client.post(CHAT, json=chat_body(max_completion_tokens=2))).json()
    assert engine.last.max_tokens == 2
    assert body["choices"][0]["message"]["content"] == "Hello,"
    assert body["choices"][0]["finish_reason"] == "length"
    await client.post(CHAT, json=chat_body(max_tokens=3, max_completion_tokens=1))
    assert engine.last.max_tokens == 1


async def test_stop_strings(client, engine: FakeEngine) -> None:
    body = await (await client.post(CHAT, json=chat_body(stop=["", " wor"]))).json()
    assert engine.last.stop == (" wor",)
    assert body["choices"][0]["message"]["content"] == "Hello,"
    assert body["choices"][0]["finish_reason"] == "stop"
    await client.post(CHAT, json=chat_body(stop="!"))
    assert engine.last.stop == ("!",)


async def test_clamped_max_tokens_header(client, engine: FakeEngine) -> None:
    for stream in (False, True):
        resp = await client.post(CHAT, json=chat_body(max_tokens=32000, stream=stream))
        assert resp.status == 200
        assert resp.headers["x-minerva-max-tokens-clamped"] == "62"  # 64 - 2 prompt tokens
        await resp.read()


async def test_unknown_fields_ignored(client, engine: FakeEngine) -> None:
    body = chat_body(
        user="me",
        store=False,
        parallel_tool_calls=True,
        prompt_cache_key="abc",
        reasoning_effort="low",
        metadata={"a": "b"},
        response_format={"type": "text"},
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        some_future_field={"x": [1, 2]},
    )
    body["messages"][0]["cache_control"] = {"type": "ephemeral"}
    resp = await client.post(CHAT, json=body)
    assert resp.status == 200, await resp.text()


async def test_content_variants(client, engine: FakeEngine) -> None:
    tool_call = {"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        },
        {"role": "assistant", "content": None, "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
        {"role": "assistant", "content": "", "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": "call_1", "name": "ls", "content": ""},
        {"role": "assistant", "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "b.txt"}]},
        {"role": "user", "content": "thanks"},
    ]
    resp = await client.post(CHAT, json=chat_body(messages=messages))
    assert resp.status == 200, await resp.text()
    assert engine.last.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one\ntwo"},
        {"role": "assistant", "content": "", "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
        {"role": "assistant", "content": "", "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": "call_1", "name": "ls", "content": ""},
        {"role": "assistant", "content": "", "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "b.txt"},
        {"role": "user", "content": "thanks"},
    ]


async def test_consecutive_same_role_messages(client, engine: FakeEngine) -> None:
    messages = [
        {"role": "system", "content": "a"},
        {"role": "system", "content": "b"},
        {"role": "user", "content": "title this"},
        {"role": "user", "content": "the conversation"},
    ]
    assert (await client.post(CHAT, json=chat_body(messages=messages))).status == 200
    assert [m["role"] for m in engine.last.messages] == ["system", "system", "user", "user"]


async def test_developer_role_becomes_system(client, engine: FakeEngine) -> None:
    messages = [{"role": "developer", "content": "rules"}, {"role": "user", "content": "hi"}]
    assert (await client.post(CHAT, json=chat_body(messages=messages))).status == 200
    assert engine.last.messages[0] == {"role": "system", "content": "rules"}


async def test_logprobs_non_stream(client, engine: FakeEngine) -> None:
    body = await (await client.post(CHAT, json=chat_body(logprobs=True, top_logprobs=2))).json()
    assert engine.last.logprobs is True and engine.last.top_logprobs == 2
    content = body["choices"][0]["logprobs"]["content"]
    assert [lp["token"] for lp in content] == ["Hello", ",", " world", "!"]
    assert content[0] == {
        "token": "Hello",
        "logprob": -0.25,
        "bytes": list(b"Hello"),
        "top_logprobs": [
            {"token": "Hello#0", "logprob": -0.5, "bytes": list(b"Hello#0")},
            {"token": "Hello#1", "logprob": -1.0, "bytes": list(b"Hello#1")},
        ],
    }


async def test_logprobs_streamed_per_chunk(client) -> None:
    chunks = await read_stream(await client.post(CHAT, json=chat_body(stream=True, logprobs=True)))
    for chunk in chunks[1:-1]:
        choice = chunk["choices"][0]
        [lp] = choice["logprobs"]["content"]
        assert lp["token"] == choice["delta"]["content"]
        assert lp["top_logprobs"] == []


async def test_top_logprobs_without_logprobs_is_ignored(client, engine: FakeEngine) -> None:
    body = await (await client.post(CHAT, json=chat_body(top_logprobs=3))).json()
    assert engine.last.logprobs is False and engine.last.top_logprobs == 0
    assert body["choices"][0]["logprobs"] is None
