"""Load: 64 streaming clients for two minutes, some hanging up mid-stream.

Every stream that runs to its end must be complete (content, one finish
reason, usage, [DONE]); every hang-up must free its slot; memory must come
back to where it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path

import aiohttp
import pytest

from app.core.settings import EngineSettings, ServerSettings
from app.engine.engine import Engine
from app.server import ServerThread
from tests.conftest import TINY_ID

CLIENTS = 64
SECONDS = float(os.environ.get("MINERVA_LOAD_SECONDS", "120"))


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def mlx_bytes() -> int:
    """Memory MLX holds (arrays and its buffer cache): the engine's share of the process."""
    import mlx.core as mx

    return mx.get_active_memory() + mx.get_cache_memory()


async def one_stream(session: aiohttp.ClientSession, url: str, rng: random.Random, stats: dict) -> None:
    max_tokens = rng.randint(4, 40)
    body = {
        "messages": [{"role": "user", "content": f"Load {rng.random()}"}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    hang_up_after = rng.randint(1, 5) if rng.random() < 0.2 else None
    async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
        if resp.status == 429:
            stats["refused"] += 1
            return
        assert resp.status == 200, await resp.text()
        events, done = [], False
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            events.append(json.loads(line[6:]))
            if hang_up_after is not None and len(events) >= hang_up_after:
                stats["hung_up"] += 1
                return  # leaving the context manager drops the connection
    reasons = [e["choices"][0]["finish_reason"] for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    usage = events[-1]["usage"]
    assert done and len(reasons) == 1 and reasons[0] in ("stop", "length"), events[-3:]
    assert events[-1]["choices"] == [] and 0 < usage["completion_tokens"] <= max_tokens
    stats["complete"] += 1


async def client_loop(url: str, seed: int, deadline: float, stats: dict) -> None:
    rng = random.Random(seed)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < deadline:
            await one_stream(session, url, rng, stats)


@pytest.mark.timeout(SECONDS + 240)
def test_64_clients_with_random_hang_ups(models_dir):
    settings = EngineSettings(model=TINY_ID, context_length=256, max_concurrency=16, max_queued=64,
                              prefix_cache_bytes=8 << 20)
    engine = Engine(settings, models_dir)
    engine.start()
    engine.wait_ready(60)
    stats = {"complete": 0, "hung_up": 0, "refused": 0}
    try:
        with ServerThread(ServerSettings(port=0), engine) as server:
            asyncio.run(client_loop(server.url, -1, time.monotonic() + 5, stats))  # warm every shape once
            # The prefix cache is bounded memory kept on purpose; count it apart.
            baseline, mlx_baseline = rss_bytes(), mlx_bytes() - engine._prefix.nbytes
            deadline = time.monotonic() + SECONDS
            asyncio.run(_all_clients(server.url, deadline, stats))
            settle = time.monotonic() + 10
            while engine.active_requests and time.monotonic() < settle:
                time.sleep(0.1)
            assert engine.active_requests == 0
            after, mlx_after = rss_bytes(), mlx_bytes() - engine._prefix.nbytes
    finally:
        engine.stop()
    print(f"load: {stats}, MLX {mlx_baseline / 1e6:.1f} MB -> {mlx_after / 1e6:.1f} MB, "
          f"process RSS {baseline / 1e6:.0f} MB -> {after / 1e6:.0f} MB")
    assert stats["complete"] > CLIENTS and stats["hung_up"] > 0
    # 10%, or 1 MB for the tiny model whose whole footprint is a few MB (sampler keys etc.).
    assert mlx_after <= max(mlx_baseline * 1.10, mlx_baseline + (1 << 20))
    # The clients live in this process too, so RSS gets a looser bound.
    assert after <= baseline * 1.30


async def _all_clients(url: str, deadline: float, stats: dict) -> None:
    await asyncio.gather(*(client_loop(url, seed, deadline, stats) for seed in range(CLIENTS)))
