"""A client that goes away cancels its generation; so does stopping the server."""

from __future__ import annotations

import asyncio
import threading
import time

import aiohttp
import openai
import pytest
from aiohttp import web
from fake_engine import FakeEngine
from server_helpers import CHAT, chat_body

from app.server import ServerThread, create_app
from app.server.keys import IN_FLIGHT


@pytest.fixture
def slow_engine(engine: FakeEngine) -> FakeEngine:
    """About 20 s of output unless cancelled."""
    engine.pieces = ("tok ",) * 2000
    engine.delay_s = 0.01
    engine.context_length = 100_000
    return engine


async def _wait_for_cancel(engine: FakeEngine, within_s: float = 1.0) -> None:
    assert await asyncio.to_thread(engine.saw_cancel.wait, within_s), "engine never saw the cancel"


async def test_disconnect_mid_stream_cancels(client, slow_engine: FakeEngine) -> None:
    resp = await client.post(CHAT, json=chat_body(stream=True))
    assert resp.status == 200
    assert (await resp.content.readline()).startswith(b"data: ")
    resp.close()
    await _wait_for_cancel(slow_engine)
    assert slow_engine.finish_reasons == ["cancelled"]
    for _ in range(50):
        if not client.app[IN_FLIGHT]:
            break
        await asyncio.sleep(0.02)
    assert client.app[IN_FLIGHT] == set()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/responses", {"input": "hi", "stream": True}),
        ("/v1/messages", {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
                          "stream": True}),
    ],
)  # fmt: skip
async def test_disconnect_mid_stream_cancels_other_apis(
    client, slow_engine: FakeEngine, path: str, body: dict
) -> None:
    resp = await client.post(path, json=body)
    assert resp.status == 200
    assert (await resp.content.readline()).startswith(b"event: ")
    resp.close()
    await _wait_for_cancel(slow_engine)
    assert slow_engine.finish_reasons == ["cancelled"]


async def test_disconnect_while_waiting_for_whole_response_cancels(
    client, slow_engine: FakeEngine
) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await client.post(CHAT, json=chat_body(), timeout=aiohttp.ClientTimeout(total=0.3))
    await _wait_for_cancel(slow_engine)


async def test_finished_request_is_not_cancelled(client, engine: FakeEngine) -> None:
    assert (await client.post(CHAT, json=chat_body())).status == 200
    await asyncio.sleep(0.3)
    assert not engine.last.cancel.cancelled
    assert client.app[IN_FLIGHT] == set()


def test_sdk_stream_close_cancels(sdk: openai.OpenAI, slow_engine: FakeEngine) -> None:
    stream = sdk.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    next(stream)
    next(stream)
    stream.close()
    assert slow_engine.saw_cancel.wait(1.0)


def test_stop_ends_running_streams_cleanly(
    server: ServerThread, sdk: openai.OpenAI, slow_engine: FakeEngine
) -> None:
    stream = sdk.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    next(stream)
    started = time.monotonic()
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    rest = list(stream)  # ends with a finish chunk and [DONE], not an error
    stopper.join(10)
    assert not stopper.is_alive()
    assert time.monotonic() - started < 3
    assert slow_engine.saw_cancel.is_set()
    assert rest[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("stream", [False, True])
async def test_disconnect_cancels_under_aiohttp_default_runner(
    settings, slow_engine: FakeEngine, stream: bool
) -> None:
    """aiohttp's own default does not cancel handlers: the app must notice by itself."""
    runner = web.AppRunner(create_app(settings, slow_engine))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}{CHAT}"
        async with aiohttp.ClientSession() as session:
            with pytest.raises(asyncio.TimeoutError):
                timeout = aiohttp.ClientTimeout(total=0.3)
                async with session.post(
                    url, json=chat_body(stream=stream), timeout=timeout
                ) as resp:
                    await resp.read()
        await _wait_for_cancel(slow_engine)
    finally:
        await runner.cleanup()
