"""Who gets in: Host check (DNS rebinding), CORS allow-list, API key, LAN mode, limits."""

from __future__ import annotations

import json

import pytest
from fake_engine import FakeEngine
from server_helpers import CHAT, chat_body

from app.core.settings import ServerSettings
from app.server import create_app

KEY = "s3cret-key"


async def make_client(aiohttp_client, **settings):
    return await aiohttp_client(create_app(ServerSettings(port=0, **settings), FakeEngine()))


async def test_foreign_host_header_is_refused(aiohttp_client):
    client = await make_client(aiohttp_client)
    resp = await client.post(CHAT, json=chat_body(), headers={"Host": "evil.example"})
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "host_not_allowed"
    for host in ("localhost:8080", "127.0.0.1", "[::1]:8080"):
        assert (await client.get("/v1/models", headers={"Host": host})).status == 200


async def test_allowed_hosts_extend_the_loopback_names(aiohttp_client):
    client = await make_client(aiohttp_client, allowed_hosts=("minerva.local",))
    assert (await client.get("/v1/models", headers={"Host": "minerva.local:8080"})).status == 200


async def test_cors_is_off_by_default(aiohttp_client):
    client = await make_client(aiohttp_client)
    resp = await client.post(CHAT, json=chat_body(), headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    preflight = await client.options(
        CHAT, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status == 403 and "Access-Control-Allow-Origin" not in preflight.headers


async def test_cors_for_listed_origins_only(aiohttp_client):
    client = await make_client(aiohttp_client, cors_origins=("https://app.example",))
    preflight = await client.options(
        CHAT, headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    resp = await client.post(CHAT, json=chat_body(), headers={"Origin": "https://app.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = await client.post(CHAT, json=chat_body(), headers={"Origin": "https://other.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


async def test_api_key_required_when_set(aiohttp_client):
    client = await make_client(aiohttp_client, api_key=KEY)
    missing = await client.post(CHAT, json=chat_body())
    assert missing.status == 401 and (await missing.json())["error"]["code"] == "invalid_api_key"
    wrong = await client.post(CHAT, json=chat_body(), headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    assert (await client.post(CHAT, json=chat_body(), headers={"Authorization": f"Bearer {KEY}"})).status == 200
    assert (await client.post(CHAT, json=chat_body(), headers={"x-api-key": KEY})).status == 200
    assert (await client.get("/health")).status in (200, 503)  # health stays open, it holds no data


def test_lan_mode_without_a_key_refuses_to_start():
    with pytest.raises(ValueError, match="API key"):
        ServerSettings(host="0.0.0.0")
    assert ServerSettings(host="0.0.0.0", api_key=KEY).lan


async def test_traversal_in_model_name_is_not_found(aiohttp_client):
    client = await make_client(aiohttp_client)
    resp = await client.get("/v1/models/..%2F..%2Fetc%2Fpasswd")
    assert resp.status == 404


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe not utf-8",
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}).encode(),
        json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(),
        json.dumps({"messages": [{"role": "user", "content": "\x00\x01\x1b[31m"}], "temperature": 1e308}).encode(),
        json.dumps({"messages": 12}).encode(),
    ],
)
async def test_hostile_bodies_get_clean_4xx(aiohttp_client, body):
    client = await make_client(aiohttp_client)
    resp = await client.post(CHAT, data=body, headers={"Content-Type": "application/json"})
    assert 400 <= resp.status < 500
    error = (await resp.json())["error"]
    assert error["message"] and "Traceback" not in error["message"]


async def test_too_many_messages(aiohttp_client):
    client = await make_client(aiohttp_client, max_messages=3)
    body = chat_body(messages=[{"role": "user", "content": "x"}] * 4)
    resp = await client.post(CHAT, json=body)
    assert resp.status == 400 and "Too many messages" in (await resp.json())["error"]["message"]


async def test_openapi_describes_the_api(aiohttp_client):
    client = await make_client(aiohttp_client)
    spec = await (await client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    assert {"/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/embeddings", "/v1/models"} <= set(spec["paths"])
    schema = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["$ref"].split("/")[-1] in spec["components"]["schemas"]


async def test_a_huge_max_tokens_is_clamped_not_fatal(aiohttp_client):
    client = await make_client(aiohttp_client)
    resp = await client.post(CHAT, json=chat_body(max_tokens=10**30))
    assert resp.status == 200 and "x-minerva-max-tokens-clamped" in resp.headers
