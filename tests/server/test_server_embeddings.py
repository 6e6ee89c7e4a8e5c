"""POST /v1/embeddings against the fake engine: inputs, both encodings, errors, the SDK."""

from __future__ import annotations

import base64
import struct

import openai
import pytest
from fake_engine import FakeEngine
from server_helpers import EMBEDDINGS, error_of

from app.engine.types import EngineError, InvalidRequest

# The fake engine's vector for text k is [len(text), k / 4, -0.5, 0.125].


async def test_float_response_shape(client, engine: FakeEngine) -> None:
    resp = await client.post(EMBEDDINGS, json={"model": "fake-model", "input": ["a b", "cdef"]})
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [3.0, 0.0, -0.5, 0.125]},
            {"object": "embedding", "index": 1, "embedding": [4.0, 0.25, -0.5, 0.125]},
        ],
        "model": "fake-model",
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }
    assert engine.embedded == [(["a b", "cdef"], "fake-model")]


async def test_single_string_and_no_model(client, engine: FakeEngine) -> None:
    body = await (await client.post(EMBEDDINGS, json={"input": "hello"})).json()
    assert [d["embedding"] for d in body["data"]] == [[5.0, 0.0, -0.5, 0.125]]
    assert engine.embedded == [(["hello"], None)]


async def test_base64_is_little_endian_float32(client) -> None:
    body = {"input": ["a b", "cdef"], "encoding_format": "base64"}
    data = (await (await client.post(EMBEDDINGS, json=body)).json())["data"]
    raw = base64.b64decode(data[1]["embedding"])
    assert raw == struct.pack("<4f", 4.0, 0.25, -0.5, 0.125)


async def test_matching_dimensions_accepted(client) -> None:
    resp = await client.post(EMBEDDINGS, json={"input": "x", "dimensions": 4})
    assert resp.status == 200


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"input": [1, 2, 3]}, "input", "token-id inputs are not supported"),
        ({"input": [[1, 2]]}, "input", "token-id inputs are not supported"),
        ({"input": []}, "input", "non-empty"),
        ({"input": ""}, "input", "must not be empty"),
        ({"input": None}, "input", ""),
        ({"input": ["x"] * 2049}, "input", "at most 2048"),
        ({"input": "x", "encoding_format": "hex"}, "encoding_format", ""),
        ({"input": "x", "dimensions": 0}, "dimensions", ""),
        ({"input": "x", "dimensions": 256}, "dimensions", "have 4 dimensions"),
        ({}, "input", "required"),
    ],
)
async def test_invalid_requests(client, fields, param, words) -> None:
    error = await error_of(await client.post(EMBEDDINGS, json=fields), 400)
    assert error["param"] == param
    assert words in error["message"]


async def test_engine_errors(client, engine: FakeEngine) -> None:
    error = await error_of(await client.post(EMBEDDINGS, json={"input": "x", "model": "m2"}), 404)
    assert error["code"] == "model_not_found"
    engine.embed_error = InvalidRequest("This model cannot embed", code="embeddings_unsupported")
    error = await error_of(await client.post(EMBEDDINGS, json={"input": "x"}), 400)
    assert error["code"] == "embeddings_unsupported"
    engine.embed_error = None
    engine.state = "loading"
    resp = await client.post(EMBEDDINGS, json={"input": "x"})
    assert (await error_of(resp, 503))["code"] == "model_not_ready"
    assert resp.headers["Retry-After"].isdigit()


async def test_engine_raising_at_once(client, engine: FakeEngine, monkeypatch) -> None:
    def refuse(texts, model=None):
        raise EngineError("The engine is shutting down")

    monkeypatch.setattr(engine, "embed", refuse)
    error = await error_of(await client.post(EMBEDDINGS, json={"input": "x"}), 500)
    assert error["message"] == "The engine is shutting down"


def test_sdk_decodes_default_base64(sdk: openai.OpenAI) -> None:
    """The SDK asks for base64 by default and decodes it: the floats must come out right."""
    result = sdk.embeddings.create(model="fake-model", input=["a b", "cdef"])
    assert [d.embedding for d in result.data] == [
        [3.0, 0.0, -0.5, 0.125],
        [4.0, 0.25, -0.5, 0.125],
    ]
    assert result.usage.prompt_tokens == 3
    floats = sdk.embeddings.create(model="fake-model", input="xy", encoding_format="float")
    assert floats.data[0].embedding == [2.0, 0.0, -0.5, 0.125]


def test_sdk_error(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="fake-model", input="x", dimensions=8)
    assert caught.value.param == "dimensions"
