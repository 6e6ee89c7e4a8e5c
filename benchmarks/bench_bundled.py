"""Single-stream and concurrent speed of the bundled model: raw mlx-lm vs engine vs HTTP API.

Run: `uv run python benchmarks/bench_bundled.py [--tokens 128] [--repeats 3]`.
Prints a Markdown table and writes benchmarks/out/bundled.json.

All three paths decode the same chat prompt greedily for exactly --tokens
tokens (EOS ignored) so their tok/s compare like for like. The prefix cache
is off, so every TTFT includes the whole prefill, as raw mlx-lm's does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import queue
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx.core as mx  # noqa: E402
import mlx_lm  # noqa: E402
from mlx_lm import stream_generate  # noqa: E402
from mlx_lm.sample_utils import make_sampler  # noqa: E402

from app.core.paths import models_dir  # noqa: E402
from app.core.settings import BUNDLED_MODEL_ID, EngineSettings, ServerSettings  # noqa: E402
from app.engine.bundled import ensure_bundled_model  # noqa: E402
from app.engine.engine import Engine  # noqa: E402
from app.engine.types import Finished, GenerationRequest, SamplingParams, TextDelta  # noqa: E402
from app.server.runner import ServerThread  # noqa: E402

MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]


@dataclass
class Single:
    path: str
    ttft_ms: float
    decode_tps: float
    tokens: int


@dataclass
class Concurrent:
    clients: int
    aggregate_tps: float
    p50_ttft_ms: float
    tokens: int


def _decode_tps(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


def bench_raw(model_path: Path, n: int) -> Single:
    model, tokenizer = mlx_lm.load(str(model_path))
    tokenizer.eos_token_ids = set()
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    greedy = make_sampler(temp=0.0)
    start, times = time.perf_counter(), []
    for _ in stream_generate(model, tokenizer, prompt, max_tokens=n, sampler=greedy):
        times.append(time.perf_counter())
    return Single("raw mlx-lm stream_generate", (times[0] - start) * 1e3, _decode_tps(times), len(times))


def bench_engine(engine: Engine, n: int) -> Single:
    events: queue.Queue = queue.Queue()
    request = GenerationRequest(
        messages=MESSAGES, max_tokens=n, sampling=SamplingParams(temperature=0.0), ignore_eos=True
    )
    engine.submit(request, events.put)
    times = []
    while True:
        event = events.get()
        if isinstance(event, TextDelta):
            times.append(time.perf_counter())
        elif isinstance(event, Finished):
            break
    ttft = (times[0] - request.submitted_at) * 1e3
    return Single("engine (in process)", ttft, _decode_tps(times), event.usage.completion_tokens)


async def _stream_one(client, n: int) -> tuple[float, list[float], int]:
    start, times, tokens = time.perf_counter(), [], 0
    stream = await client.chat.completions.create(
        model=BUNDLED_MODEL_ID,
        messages=MESSAGES,
        max_tokens=n,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter())
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return start, times, tokens


async def _clients(url: str, clients: int, n: int):
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=600) as client:
        return await asyncio.gather(*(_stream_one(client, n) for _ in range(clients)))


def bench_api_single(url: str, n: int) -> Single:
    ((start, times, tokens),) = asyncio.run(_clients(url, 1, n))
    return Single("HTTP API (openai SDK, stream)", (times[0] - start) * 1e3, _decode_tps(times), tokens)


def bench_api_concurrent(url: str, clients: int, n: int) -> Concurrent:
    t0 = time.perf_counter()
    results = asyncio.run(_clients(url, clients, n))
    wall = max(times[-1] for _, times, _ in results) - t0
    tokens = sum(t for _, _, t in results)
    ttfts = [(times[0] - start) * 1e3 for start, times, _ in results]
    return Concurrent(clients, tokens / wall, statistics.median(ttfts), tokens)


def _median(runs: list[Single]) -> Single:
    return Single(
        runs[0].path,
        statistics.median(r.ttft_ms for r in runs),
        statistics.median(r.decode_tps for r in runs),
        runs[0].tokens,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", default="1,4,8")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    path = ensure_bundled_model(models_dir())
    settings = EngineSettings(model=BUNDLED_MODEL_ID, prefix_cache_entries=0, max_concurrency=max(levels))
    engine = Engine(settings, models_dir())
    engine.start()
    engine.wait_ready()
    server = ServerThread(ServerSettings(port=0), engine)
    server.start()

    singles: list[Single] = []
    bench_raw(path, 8), bench_engine(engine, 8), bench_api_single(server.url, 8)  # warm-up
    for bench in (lambda: bench_raw(path, args.tokens), lambda: bench_engine(engine, args.tokens),
                  lambda: bench_api_single(server.url, args.tokens)):
        singles.append(_median([bench() for _ in range(args.repeats)]))
        print(f"  {singles[-1]}", file=sys.stderr)
    concurrent = []
    for clients in levels:
        bench_api_concurrent(server.url, clients, 4)  # compile this batch size first
        concurrent.append(bench_api_concurrent(server.url, clients, args.tokens))
        print(f"  {concurrent[-1]}", file=sys.stderr)
    server.stop()
    engine.stop()
    report(singles, concurrent, args)


def report(singles: list[Single], concurrent: list[Concurrent], args) -> None:
    raw = singles[0]
    info = (f"{time.strftime('%Y-%m-%d')}, {platform.machine()} {platform.processor() or ''}, "
            f"MLX {mx.__version__} ({mx.default_device()}), mlx-lm {mlx_lm.__version__}, "
            f"{args.tokens} tokens, median of {args.repeats}")
    print(f"\nBundled model ({BUNDLED_MODEL_ID}, Q4_1 -> MLX 4-bit): {info}\n")
    print("| path | TTFT (ms) | decode tok/s | vs raw |")
    print("|---|---:|---:|---:|")
    for s in singles:
        print(f"| {s.path} | {s.ttft_ms:.0f} | {s.decode_tps:.2f} | {s.decode_tps / raw.decode_tps:.1%} |")
    print("\n| concurrent streams (HTTP API) | aggregate tok/s | p50 TTFT (ms) |")
    print("|---:|---:|---:|")
    for c in concurrent:
        print(f"| {c.clients} | {c.aggregate_tps:.2f} | {c.p50_ttft_ms:.0f} |")
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    data = {"info": info, "single": [asdict(s) for s in singles], "concurrent": [asdict(c) for c in concurrent]}
    (out / "bundled.json").write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
