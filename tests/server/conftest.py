"""Fixtures: a fake engine, an aiohttp test client over it, and a real server thread."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from aiohttp.test_utils import TestClient
from fake_engine import FakeEngine
from server_helpers import MAX_BODY_BYTES

from app.core.settings import ServerSettings
from app.server import ServerThread, create_app


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def settings() -> ServerSettings:
    return ServerSettings(host="127.0.0.1", port=0, max_body_bytes=MAX_BODY_BYTES)


@pytest.fixture
async def client(aiohttp_client, settings: ServerSettings, engine: FakeEngine) -> TestClient:
    return await aiohttp_client(create_app(settings, engine))


@pytest.fixture
def server(settings: ServerSettings, engine: FakeEngine) -> Iterator[ServerThread]:
    with ServerThread(settings, engine) as thread:
        yield thread


@pytest.fixture
def sdk(server: ServerThread) -> openai.OpenAI:
    """The real openai SDK; no retries, so errors surface at once."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=10)
