"""GET /health, /v1/models and /v1/models/{id}."""

from __future__ import annotations

from fake_engine import FakeEngine
from server_helpers import error_of


async def test_health_ready(client) -> None:
    resp = await client.get("/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok"
    assert body["model"] == "fake-model"
    assert body["context_length"] == 64


async def test_health_loading(client, engine: FakeEngine) -> None:
    engine.state = "loading"
    resp = await client.get("/health")
    assert resp.status == 503
    assert resp.headers["Retry-After"].isdigit()
    body = await resp.json()
    assert body["status"] == "loading"
    assert body["progress"] == 0.5


async def test_health_error(client, engine: FakeEngine) -> None:
    engine.state = "error"
    resp = await client.get("/health")
    assert resp.status == 503
    assert (await resp.json())["error"] == "weights are broken"


async def test_list_models_loaded_first_without_duplicates(
    client, engine: FakeEngine, tmp_path
) -> None:
    engine.add_model("a-model", tmp_path)
    engine.add_model("fake-model")
    engine.add_model("org/other")
    body = await (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["fake-model", "a-model", "org/other"]
    for card in body["data"]:
        assert card["object"] == "model"
        assert card["owned_by"] == "minerva"
        assert isinstance(card["created"], int)
    assert body["data"][1]["created"] > 0  # a real folder's mtime


async def test_list_models_without_loaded_model(client, engine: FakeEngine) -> None:
    engine.state = "empty"
    engine.add_model("only-on-disk")
    body = await (await client.get("/v1/models")).json()
    assert [m["id"] for m in body["data"]] == ["only-on-disk"]


async def test_get_model(client, engine: FakeEngine) -> None:
    engine.add_model("mlx-community/Qwen3-0.6B-4bit")
    resp = await client.get("/v1/models/mlx-community/Qwen3-0.6B-4bit")
    assert resp.status == 200
    assert (await resp.json())["id"] == "mlx-community/Qwen3-0.6B-4bit"
    assert (await (await client.get("/v1/models/fake-model")).json())["id"] == "fake-model"


async def test_get_unknown_model(client) -> None:
    error = await error_of(await client.get("/v1/models/nope/nothing"), 404)
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert "nope/nothing" in error["message"]
