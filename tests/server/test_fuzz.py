"""Schemathesis fuzzes every route from /openapi.json on a live server.

Thousands of generated requests against a live server over a fast scripted
engine, and a smaller run against the real engine with the tiny model: no 5xx,
every 4xx in OpenAI's (or, under /v1/messages, Anthropic's) error shape.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from fake_engine import FakeEngine
from hypothesis import HealthCheck, given, settings

from app.core.settings import EngineSettings, ServerSettings
from app.engine.engine import Engine
from app.server import ServerThread
from tests.conftest import TINY_ID


@pytest.fixture(scope="module")
def fake_server():
    with ServerThread(ServerSettings(port=0), FakeEngine()) as server:
        yield server


@pytest.fixture(scope="module")
def real_server(models_dir):
    engine = Engine(EngineSettings(model=TINY_ID, context_length=96, max_concurrency=4), models_dir)
    engine.start()
    engine.wait_ready(60)
    with ServerThread(ServerSettings(port=0), engine) as server:
        yield server
    engine.stop()


@pytest.fixture(scope="module")
def fake_schema(fake_server):
    return schemathesis.openapi.from_url(f"{fake_server.url}/openapi.json")


@pytest.fixture(scope="module")
def real_schema(real_server):
    return schemathesis.openapi.from_url(f"{real_server.url}/openapi.json")


def check_error_shape(response, path: str) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    if response.status_code < 400:
        return
    body = json.loads(response.text)
    if path.startswith("/v1/messages"):
        assert body["type"] == "error" and body["error"]["type"] and body["error"]["message"]
    else:
        assert set(body) == {"error"} and body["error"]["message"]
        assert {"message", "type", "param", "code"} <= set(body["error"])
    assert "Traceback" not in response.text


def fuzz(schema, examples_per_route: int) -> int:
    """Every operation in the schema, `examples_per_route` generated cases each; returns the count."""
    sent = 0
    history: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=examples_per_route, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            nonlocal sent
            sent += 1
            history.append(f"{case.method} {case.path} {case.body!r}"[:300])
            response = case.call(timeout=60)
            try:
                check_error_shape(response, operation.path)
            except AssertionError as exc:
                recent = "\n".join(history[-8:])
                raise AssertionError(f"{exc}\nlast requests:\n{recent}"[:4000]) from None

        run()
    return sent


def test_fuzz_every_route_fast_engine(fake_schema):
    assert fuzz(fake_schema, 400) >= 2000


def test_fuzz_every_route_real_engine(real_schema):
    assert fuzz(real_schema, 60) >= 300
