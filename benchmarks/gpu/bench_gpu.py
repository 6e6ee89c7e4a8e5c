"""GPU benchmarks: raw mlx-lm vs the engine vs the HTTP API vs mlx_lm.server.

Run (on the GPU machine, after benchmarks/gpu/run_device.sh has installed MLX):
    python3 benchmarks/gpu/bench_gpu.py --shape llama8b --out $OUT

The model is a random-weight folder in a real model's shape (benchmarks/gpu/
shapes.py), loaded through the app's normal path. Sections (--sections):
  1  single stream: decode tok/s and TTFT of raw `stream_generate`, the Engine in
     process and the HTTP API (openai SDK, streaming, ignore_eos), plus
     mlx_lm.server for reference;
  2  concurrent streaming clients: our HTTP API vs mlx_lm.server vs a raw
     `BatchGenerator` driver (aggregate tok/s, p50/p95 TTFT, p50 inter-token);
  3  multi-turn: TTFT with ~2k and ~8k tokens of history, cold vs warm
     (prefix cache), ours vs mlx_lm.server;
  4  effective weight bandwidth at single stream vs the card's peak;
  5  diagnostics on the Engine in process: TTFT split into admission and
     prefill, with the prefix cache as shipped vs with its hits turned off,
     at 1 and 8 concurrent requests.
Every measurement also counts the CUDA kernels MLX compiled (JIT) while it ran,
read from MLX's PTX cache folder: a run that compiles is not a steady state.
Servers run in their own processes (ours is `minerva serve` with timing
wrappers, benchmarks/gpu/instrument.py), clients in this one. Prints Markdown
and writes <out>/bench_<shape>.json (and .md) after every measurement;
`bench_gpu.py --report a.json [b.json ...]` prints the tables of saved runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import queue
import random
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import mlx.core as mx  # noqa: E402
import mlx_lm  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402
from mlx_lm import stream_generate  # noqa: E402
from mlx_lm.generate import BatchGenerator  # noqa: E402
from mlx_lm.sample_utils import make_sampler  # noqa: E402

import shapes  # noqa: E402
from instrument import STATS, StepStats, instrument, timed_next  # noqa: E402

T0 = time.perf_counter()


def jit_count() -> int:
    """Kernels in MLX's CUDA JIT cache (shared by every process on the machine)."""
    folder = os.environ.get("MLX_PTX_CACHE_DIR")
    pattern = f"{folder}/*.ptx" if folder else "/tmp/mlx/*/ptx/*.ptx"
    import glob

    return len(glob.glob(pattern))


def log(*args) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s]", *args, file=sys.stderr, flush=True)


# ----- results ---------------------------------------------------------------------------


@dataclass
class Single:
    path: str
    ttft_ms: float
    decode_tps: float
    tokens: int
    runs: list = field(default_factory=list)
    jit: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class Concurrent:
    system: str
    clients: int
    aggregate_tps: float
    p50_ttft_ms: float
    p95_ttft_ms: float
    p50_itl_ms: float
    tokens: int
    wall_s: float
    engine: dict | None = None
    errors: int = 0
    jit: int = 0


@dataclass
class Turn:
    system: str
    history: int
    prompt_tokens: int
    cold_ttft_ms: float
    warm_prompt_tokens: int
    warm_cached_tokens: int | None
    warm_ttft_ms: float
    cold_jit: int = 0
    warm_jit: int = 0


@dataclass
class Report:
    info: dict
    single: list = field(default_factory=list)
    concurrent: list = field(default_factory=list)
    turns: list = field(default_factory=list)
    bandwidth: dict = field(default_factory=dict)
    engine_single: dict = field(default_factory=dict)
    diag: list = field(default_factory=list)
    notes: list = field(default_factory=list)


# ----- prompts ---------------------------------------------------------------------------


class Prompts:
    """Distinct prompts of about n tokens (distinct from the first words, so no run
    gets a prefix-cache hit from another)."""

    def __init__(self, tokenizer, seed: int = 0) -> None:
        from tests.tiny_model import CORPUS

        self.tokenizer = tokenizer
        self.words = sorted({w for line in CORPUS for w in line.split()})
        self.rng = random.Random(seed)
        self.count = 0

    def text(self, n_tokens: int) -> str:
        self.count += 1
        tag = f"Request {self.count} {self.rng.randrange(10**9)}:"
        words = [self.rng.choice(self.words) for _ in range(n_tokens)]
        ids = self.tokenizer.encode(tag + " " + " ".join(words))[:n_tokens]
        return self.tokenizer.decode(ids)

    def messages(self, n_tokens: int) -> list[dict]:
        return [{"role": "user", "content": self.text(n_tokens)}]

    def history(self, n_tokens: int, turn_tokens: int = 250) -> list[dict]:
        messages, total, role = [], 0, "user"
        while total < n_tokens:
            size = min(turn_tokens, n_tokens - total)
            messages.append({"role": role, "content": self.text(size)})
            total += size + 5
            role = "assistant" if role == "user" else "user"
        if messages[-1]["role"] == "user":
            messages.append({"role": "assistant", "content": self.text(20)})
        return messages

    def chat_tokens(self, messages: list[dict]) -> list[int]:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)


# ----- helpers ----------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def decode_tps(tokens: int, first: float, last: float) -> float:
    return (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} not healthy after {timeout} s")


def gpu_info() -> dict:
    info = {"name": "unknown", "memory": "", "peak_bw_tbs": None}
    try:
        line = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        ).stdout.strip().splitlines()[0]
        name, memory, driver = [x.strip() for x in line.split(",")]
        info.update(name=name, memory=memory, driver=driver)
    except Exception:
        info["name"] = f"{mx.default_device()} ({platform.processor() or platform.machine()})"
    name = info["name"]
    if "H200" in name:
        info["peak_bw_tbs"] = 4.8
    elif "H100" in name:
        info["peak_bw_tbs"] = 2.0 if "PCIe" in name else (3.9 if "NVL" in name else 3.35)
    return info


# ----- raw mlx-lm ---------------------------------------------------------------------------


def raw_single(model, tokenizer, prompt: list[int], n: int) -> Single:
    greedy = make_sampler(temp=0.0)
    start, times = time.perf_counter(), []
    for _ in stream_generate(model, tokenizer, prompt, max_tokens=n, sampler=greedy):
        times.append(time.perf_counter())
    return Single("raw mlx-lm stream_generate", (times[0] - start) * 1e3,
                  decode_tps(len(times), times[0], times[-1]), len(times))


def raw_batch(model, prompts: list[list[int]], n: int) -> Concurrent:
    """Insert every prompt at once into a BatchGenerator (mlx-lm defaults) and step to the end."""
    stats = StepStats()
    gen = timed_next(BatchGenerator(model), stats)
    start = time.perf_counter()
    uids = gen.insert(prompts, max_tokens=[n] * len(prompts))
    times: dict[int, list[float]] = {u: [] for u in uids}
    done: set[int] = set()
    while len(done) < len(uids):
        _, responses = gen.next()
        now = time.perf_counter()
        for r in responses:
            times[r.uid].append(now)
            if r.finish_reason is not None:
                done.add(r.uid)
    gen.close()
    results = [(start, t, len(t)) for t in times.values()]
    return summarize("raw BatchGenerator", results, start, engine=stats.snapshot())


def summarize(system: str, results: list[tuple[float, list[float], int]], t0: float,
              engine: dict | None = None) -> Concurrent:
    """results: (request start, chunk arrival times, completion tokens) per client."""
    ends = [times[-1] for _, times, _ in results if times]
    wall = max(ends) - t0
    tokens = sum(n for _, _, n in results)
    ttfts = [(times[0] - start) * 1e3 for start, times, _ in results if times]
    gaps = [(b - a) * 1e3 for _, times, _ in results for a, b in zip(times, times[1:])]
    return Concurrent(system, len(results), tokens / wall, pct(ttfts, 0.5), pct(ttfts, 0.95),
                      pct(gaps, 0.5), tokens, wall, engine)


# ----- the engine in process ----------------------------------------------------------------


def engine_many(engine, messages_list: list[list[dict]], n: int) -> list[dict]:
    """Submit every request at once; per request: start, chunk times, tokens, engine timings."""
    from app.engine.types import (
        Failed, Finished, GenerationRequest, ReasoningDelta, SamplingParams, TextDelta,
    )

    events: queue.Queue = queue.Queue()
    requests = []
    for i, messages in enumerate(messages_list):
        request = GenerationRequest(messages=messages, max_tokens=n,
                                    sampling=SamplingParams(temperature=0.0), ignore_eos=True)
        requests.append(request)
        engine.submit(request, lambda event, i=i: events.put((i, event)))
    results = [{"start": r.submitted_at, "times": [], "tokens": 0} for r in requests]
    left = len(requests)
    while left:
        i, event = events.get(timeout=300)
        if isinstance(event, (TextDelta, ReasoningDelta)):
            results[i]["times"].append(time.perf_counter())
        elif isinstance(event, Finished):
            t = event.timings
            results[i].update(tokens=event.usage.completion_tokens, cached=event.usage.cached_tokens,
                              queued_ms=t.queued_s * 1e3, engine_ttft_ms=t.ttft_s * 1e3)
            left -= 1
        elif isinstance(event, Failed):
            raise RuntimeError(event.error.message)
    return results


def engine_single(engine, messages: list[dict], n: int) -> Single:
    (r,) = engine_many(engine, [messages], n)
    times = r["times"]
    single = Single("engine (in process)", (times[0] - r["start"]) * 1e3,
                    decode_tps(r["tokens"], times[0], times[-1]), r["tokens"])
    single.extra = {k: r[k] for k in ("queued_ms", "engine_ttft_ms", "cached")}
    return single


# ----- HTTP clients -------------------------------------------------------------------------


async def stream_chat(client, model: str, messages: list[dict], n: int, ignore_eos: bool,
                      delay: float = 0.0):
    """(start, chunk times, completion tokens, prompt tokens, cached tokens, text)."""
    if delay:
        await asyncio.sleep(delay)
    kwargs = {}
    if ignore_eos:
        kwargs["extra_body"] = {"ignore_eos": True}
    start, times, usage, text = time.perf_counter(), [], None, []
    stream = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=n, temperature=0.0, stream=True,
        stream_options={"include_usage": True}, **kwargs,
    )
    async for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta
            piece = delta.content or getattr(delta, "reasoning_content", None) or getattr(
                delta, "reasoning", None)
            if piece:
                times.append(time.perf_counter())
                text.append(delta.content or "")
        if getattr(chunk, "usage", None):
            usage = chunk.usage
    completion = usage.completion_tokens if usage else len(times)
    prompt = usage.prompt_tokens if usage else 0
    details = getattr(usage, "prompt_tokens_details", None) if usage else None
    cached = getattr(details, "cached_tokens", None) if details else None
    return start, times, completion, prompt, cached, "".join(text)


class Server:
    def __init__(self, name: str, url: str, model: str, proc: subprocess.Popen, ours: bool):
        self.name, self.url, self.model, self.proc, self.ours = name, url, model, proc, ours

    def client(self):
        from openai import AsyncOpenAI

        return AsyncOpenAI(base_url=f"{self.url}/v1", api_key="bench", max_retries=0, timeout=300)

    def stats(self, reset: bool = True) -> dict | None:
        if not self.ours:
            return None
        try:
            return http_json(f"{self.url}/bench/stats{'?reset=1' if reset else ''}")
        except Exception as exc:
            log("stats failed:", exc)
            return None

    async def _many(self, messages_list: list[list[dict]], n: int, stagger: float):
        async with self.client() as client:
            return await asyncio.gather(
                *(stream_chat(client, self.model, m, n, self.ours, i * stagger)
                  for i, m in enumerate(messages_list)),
                return_exceptions=True)

    def run(self, messages_list: list[list[dict]], n: int, stagger: float = 0.0):
        results = asyncio.run(self._many(messages_list, n, stagger))
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            log(f"{self.name}: {len(errors)} of {len(results)} requests failed: {errors[0]!r}")
            if len(errors) == len(results):
                raise errors[0]
        return [r for r in results if not isinstance(r, BaseException)], len(errors)

    def single(self, messages: list[dict], n: int) -> Single:
        ((start, times, tokens, *_),), _ = self.run([messages], n)
        label = "HTTP API (openai SDK, stream)" if self.ours else "mlx_lm.server (openai SDK, stream)"
        return Single(label, (times[0] - start) * 1e3, decode_tps(tokens, times[0], times[-1]), tokens)

    def concurrent(self, messages_list: list[list[dict]], n: int, stagger: float) -> Concurrent:
        self.stats(reset=True)
        t0 = time.perf_counter()
        results, errors = self.run(messages_list, n, stagger)
        engine = self.stats(reset=True)
        result = summarize(self.name, [(s, t, c) for s, t, c, *_ in results], t0, engine)
        result.errors = errors
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_servers(args, model_id: str, folder: Path, env: dict, logs: Path) -> list[tuple]:
    procs = []
    if "ours" in args.servers:
        port = free_port()
        cmd = [sys.executable, str(HERE / "instrument.py"), "--log-level", "WARNING", "serve",
               "--model", model_id, "--port", str(port), "--max-concurrency", str(max(args.levels)),
               "--context-length", str(args.context)]
        f = open(logs / "ours.log", "w")
        procs.append(("ours", port, subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)))
    if "mlx" in args.servers:
        port = free_port()
        cmd = [sys.executable, "-m", "mlx_lm", "server", "--model", str(folder), "--port",
               str(port), "--log-level", "WARNING"]
        f = open(logs / "mlx_server.log", "w")
        procs.append(("mlx", port, subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)))
    return procs


# ----- sections -------------------------------------------------------------------------------


def section_single(args, rep: Report, model, tokenizer, engine, servers: dict, prompts: Prompts):
    paths: dict[str, list[Single]] = {}
    n = args.tokens

    def raw_bg_single():
        c = raw_batch(model, [prompts.chat_tokens(prompts.messages(args.prompt))], n)
        return Single("raw mlx-lm BatchGenerator (1 row)", c.p50_ttft_ms,
                      1e3 / c.p50_itl_ms if c.p50_itl_ms else 0.0, c.tokens)

    def runs():
        messages = prompts.messages(args.prompt)
        tokens = prompts.chat_tokens(messages)
        yield "raw", lambda: raw_single(model, tokenizer, tokens, n)
        yield "raw-bg", raw_bg_single
        if engine is not None:
            yield "engine", lambda: engine_single(engine, prompts.messages(args.prompt), n)
        if "ours" in servers:
            yield "api", lambda: servers["ours"].single(prompts.messages(args.prompt), n)
        if "mlx" in servers:
            yield "mlx", lambda: servers["mlx"].single(prompts.messages(args.prompt), n)

    log("section 1: warm-up")
    for _, bench in runs():
        bench()
    engine_stats = []
    for i in range(args.repeats):
        for key, bench in runs():  # interleaved, so drift hits every path alike
            STATS.reset()
            jit = jit_count()
            result = bench()
            result.jit = jit_count() - jit
            if key == "engine":
                engine_stats.append(STATS.snapshot())
            paths.setdefault(key, []).append(result)
            log(f"  {key} run {i}: ttft {result.ttft_ms:.1f} ms, {result.decode_tps:.1f} tok/s, "
                f"{result.tokens} tokens, {result.jit} kernels compiled {result.extra}")
    if engine_stats:
        rep.engine_single = {k: statistics.median(e[k] for e in engine_stats)
                             for k in engine_stats[0] if isinstance(engine_stats[0][k], (int, float))}
    for key, results in paths.items():
        rep.single.append(Single(
            results[0].path,
            statistics.median(r.ttft_ms for r in results),
            statistics.median(r.decode_tps for r in results),
            results[0].tokens,
            [(r.ttft_ms, r.decode_tps, r.tokens, r.jit, r.extra) for r in results],
            sum(r.jit for r in results),
        ))


def section_concurrent(args, rep: Report, model, servers: dict, prompts: Prompts, deadline: float):
    for clients in args.levels:
        systems = [("ours", servers.get("ours")), ("mlx", servers.get("mlx")), ("raw", None)]
        for key, server in systems:
            if key != "raw" and server is None:
                continue
            if time.monotonic() > deadline:
                rep.notes.append(f"section 2 stopped at {clients} clients ({key}): time budget")
                return
            log(f"section 2: {clients} clients, {key}: warm-up")
            for _ in range(args.warm_runs):
                warm = [prompts.messages(args.prompt) for _ in range(clients)]
                if key == "raw":
                    raw_batch(model, [prompts.chat_tokens(m) for m in warm], args.warm_tokens)
                else:
                    server.run(warm, args.warm_tokens, args.stagger / 1e3)
            for _ in range(args.concurrent_repeats):
                batch = [prompts.messages(args.prompt) for _ in range(clients)]
                jit = jit_count()
                if key == "raw":
                    result = raw_batch(model, [prompts.chat_tokens(m) for m in batch], args.tokens)
                else:
                    result = server.concurrent(batch, args.tokens, args.stagger / 1e3)
                result.jit = jit_count() - jit
                rep.concurrent.append(result)
                log(f"  {result.system} x{clients}: {result.aggregate_tps:.1f} tok/s, "
                    f"p50/p95 TTFT {result.p50_ttft_ms:.0f}/{result.p95_ttft_ms:.0f} ms, "
                    f"ITL {result.p50_itl_ms:.1f} ms, {result.tokens} tokens, {result.errors} errors, "
                    f"{result.jit} kernels compiled; engine {result.engine}")
                save(args, rep)


def section_turns(args, rep: Report, servers: dict, prompts: Prompts, deadline: float):
    for key in ("ours", "mlx"):
        server = servers.get(key)
        if server is None:
            continue
        sizes = [("warm-up", args.history[0])] + [(str(h), h) for h in args.history]
        for label, size in sizes:
            if time.monotonic() > deadline:
                rep.notes.append(f"section 3 stopped at {key} {size}: time budget")
                return
            history = prompts.history(size)
            first = history + [{"role": "user", "content": prompts.text(30)}]
            jit0 = jit_count()
            ((s1, t1, _, p1, _, reply),), _ = server.run([first], args.turn_tokens)
            second = first + [{"role": "assistant", "content": reply},
                              {"role": "user", "content": prompts.text(30)}]
            jit1 = jit_count()
            ((s2, t2, _, p2, cached, _),), _ = server.run([second], args.turn_tokens)
            turn = Turn(server.name, size, p1, (t1[0] - s1) * 1e3, p2, cached, (t2[0] - s2) * 1e3,
                        jit1 - jit0, jit_count() - jit1)
            log(f"section 3 {key} {label}: {turn}")
            if label != "warm-up":
                rep.turns.append(turn)
                save(args, rep)


def section_diag(args, rep: Report, engine, prompts: Prompts, deadline: float):
    """TTFT on the engine in process: admission vs prefill, prefix hits on vs off, 1 and 8 requests."""
    fetch = engine._prefix.fetch
    try:
        for mode in ("as shipped", "prefix hits off"):
            if mode == "prefix hits off":
                engine._prefix.fetch = lambda key, tokens: (None, tokens)
            for clients in args.diag_levels:
                if time.monotonic() > deadline:
                    rep.notes.append(f"section 5 stopped at {mode} x{clients}: time budget")
                    return
                engine_many(engine, [prompts.messages(args.prompt) for _ in range(clients)], 8)
                for i in range(args.diag_repeats):
                    STATS.reset()
                    jit = jit_count()
                    t0 = time.perf_counter()
                    results = engine_many(engine, [prompts.messages(args.prompt)
                                                   for _ in range(clients)], args.diag_tokens)
                    wall = time.perf_counter() - t0
                    stats = STATS.snapshot()
                    row = {
                        "mode": mode, "clients": clients, "run": i,
                        "p50_ttft_ms": pct([(r["times"][0] - r["start"]) * 1e3 for r in results], 0.5),
                        "max_ttft_ms": max((r["times"][0] - r["start"]) * 1e3 for r in results),
                        "p50_queued_ms": pct([r["queued_ms"] for r in results], 0.5),
                        "cached": [r["cached"] for r in results],
                        "prefill_s": stats.get("gen_prompt_time", 0.0),
                        "decode_s": stats.get("gen_decode_time", 0.0),
                        "ms_per_step_next": stats["ms_per_step_next"],
                        "ms_per_step_on_token": stats["ms_per_step_on_token"],
                        "ms_per_step_other": 1e3 * stats["other_s"] / max(1, stats["steps"]),
                        "p50_itl_ms": pct([(b - a) * 1e3 for r in results
                                           for a, b in zip(r["times"], r["times"][1:])], 0.5),
                        "wall_s": wall, "jit": jit_count() - jit,
                    }
                    rep.diag.append(row)
                    log(f"section 5: {row}")
                    save(args, rep)
    finally:
        engine._prefix.fetch = fetch


def section_bandwidth(rep: Report, model, config: dict, gpu: dict):
    total = embed = experts = 0
    for name, value in tree_flatten(model.parameters()):
        total += value.nbytes
        if "embed_tokens" in name:
            embed += value.nbytes
        elif ".experts." in name:
            experts += value.nbytes
    n_experts = config.get("num_local_experts")
    k = config.get("num_experts_per_tok")
    per_token = total - embed - experts + (experts * k / n_experts if n_experts else experts)
    rep.bandwidth = {"weights_bytes": total, "embedding_bytes": embed, "expert_bytes": experts,
                     "bytes_per_token": per_token, "peak_tbs": gpu.get("peak_bw_tbs")}
    for s in rep.single:
        rep.bandwidth[s.path] = per_token * s.decode_tps / 1e12


# ----- report ---------------------------------------------------------------------------------


def save(args, rep: Report) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_{args.shape}.json").write_text(json.dumps(asdict(rep), indent=2, default=str))


def markdown(rep: Report) -> str:
    lines = []
    info = rep.info
    lines.append(f"#### {info['shape_label']} on {info['gpu']['name']}, {info['date']}\n")
    lines.append(f"MLX {info['mlx']} ({info['device']}), mlx-lm {info['mlx_lm']}, Python "
                 f"{info['python']}; {info['weights_gb']:.2f} GB of weights ({info['quant']}); "
                 f"greedy; prompt ~{info['prompt']} tokens, {info['tokens']} generated tokens.\n")
    if rep.single:
        raw = rep.single[0]
        lines += ["| path | TTFT (ms) | decode tok/s | vs raw | runs: decode tok/s | kernels compiled |",
                  "|---|---:|---:|---:|---|---:|"]
        for s in rep.single:
            runs = ", ".join(f"{r[1]:.0f}" for r in s.runs)
            lines.append(f"| {s.path} | {s.ttft_ms:.1f} | {s.decode_tps:.1f} | "
                         f"{s.decode_tps / raw.decode_tps:.1%} | {runs} | {s.jit} |")
        lines.append("")
    if rep.engine_single.get("steps"):
        e = rep.engine_single
        lines.append(f"Engine thread at single stream (in process, {e['steps']} steps): "
                     f"{e['ms_per_step_next']:.2f} ms/step in the generator's next(), "
                     f"{e['ms_per_step_on_token']:.3f} ms/step in our per-token Python, "
                     f"{1e3 * e['other_s'] / e['steps']:.3f} ms/step elsewhere in the loop.\n")
    if rep.concurrent:
        lines += ["| clients | system | aggregate tok/s | p50 TTFT (ms) | p95 TTFT (ms) | "
                  "p50 inter-token (ms) | tokens | errors | kernels compiled |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for c in rep.concurrent:
            lines.append(f"| {c.clients} | {c.system} | {c.aggregate_tps:.1f} | {c.p50_ttft_ms:.0f} | "
                         f"{c.p95_ttft_ms:.0f} | {c.p50_itl_ms:.1f} | {c.tokens} | {c.errors} | {c.jit} |")
        lines.append("")
        engines = [c for c in rep.concurrent if c.engine]
        if engines:
            lines += ["| clients | system | steps | mean batch | ms/step in next() | "
                      "ms/step per-token Python | ms/step other | prefill s | decode s |",
                      "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
            for c in engines:
                e = c.engine
                other = 1e3 * e["other_s"] / e["steps"] if e["steps"] else 0.0
                lines.append(f"| {c.clients} | {c.system} | {e['steps']} | {e['mean_batch']:.1f} | "
                             f"{e['ms_per_step_next']:.2f} | {e['ms_per_step_on_token']:.2f} | "
                             f"{other:.2f} | {e.get('gen_prompt_time', 0):.2f} | "
                             f"{e.get('gen_decode_time', 0):.2f} |")
            lines.append("")
    if rep.turns:
        lines += ["| system | history | prompt tokens | cold TTFT (ms) | warm prompt | cached | "
                  "warm TTFT (ms) | warm/cold | kernels compiled (cold/warm) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for t in rep.turns:
            lines.append(f"| {t.system} | {t.history} | {t.prompt_tokens} | {t.cold_ttft_ms:.0f} | "
                         f"{t.warm_prompt_tokens} | {t.warm_cached_tokens} | {t.warm_ttft_ms:.0f} | "
                         f"{t.warm_ttft_ms / t.cold_ttft_ms:.1%} | {t.cold_jit}/{t.warm_jit} |")
        lines.append("")
    if rep.diag:
        lines += ["| engine in process | requests | run | p50 TTFT (ms) | p50 admission (ms) | "
                  "prefill s | ms/step next() | ms/step per-token | ms/step other | "
                  "p50 inter-token (ms) | cached tokens | kernels compiled |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
        for d in rep.diag:
            lines.append(f"| {d['mode']} | {d['clients']} | {d['run']} | {d['p50_ttft_ms']:.0f} | "
                         f"{d['p50_queued_ms']:.1f} | {d['prefill_s']:.2f} | "
                         f"{d['ms_per_step_next']:.2f} | {d['ms_per_step_on_token']:.3f} | "
                         f"{d['ms_per_step_other']:.3f} | {d['p50_itl_ms']:.1f} | "
                         f"{sorted(set(d['cached']))} | {d['jit']} |")
        lines.append("")
    if rep.bandwidth:
        b = rep.bandwidth
        peak = b.get("peak_tbs")
        lines += [f"Weights read per decoded token: {b['bytes_per_token'] / 1e9:.2f} GB "
                  f"(of {b['weights_bytes'] / 1e9:.2f} GB; embedding table and unrouted experts "
                  "not read).\n", "| path | effective TB/s | of peak |", "|---|---:|---:|"]
        for s in rep.single:
            bw = b.get(s.path, 0.0)
            lines.append(f"| {s.path} | {bw:.2f} | {bw / peak:.0%} |" if peak else
                         f"| {s.path} | {bw:.3f} | n/a |")
        lines.append("")
    lines += targets(rep)
    for note in rep.notes:
        lines.append(f"- note: {note}")
    return "\n".join(lines)


def targets(rep: Report) -> list[str]:
    rows = []
    single = {}
    for s in rep.single:
        key = ("raw-bg" if "BatchGenerator" in s.path else s.path.split(" ")[0])
        single[key] = s
    raw, raw_bg = single.get("raw"), single.get("raw-bg")
    if raw:
        for key, label in (("engine", "engine decode ≥ 97% of raw"), ("HTTP", "API decode ≥ 97% of raw")):
            if key in single:
                r = single[key].decode_tps / raw.decode_tps
                extra = (f" ({single[key].decode_tps / raw_bg.decode_tps:.1%} of raw BatchGenerator)"
                         if raw_bg else "")
                rows.append((label, f"{r:.1%}{extra}", r >= 0.97))
        if "HTTP" in single:
            base = single.get("engine", raw)
            d = single["HTTP"].ttft_ms - base.ttft_ms
            rows.append((f"API TTFT overhead ≤ 15 ms (vs {base.path.split(' ')[0]})", f"{d:+.1f} ms", d <= 15))
    by = {(c.clients, c.system.split(" ")[0]): c for c in rep.concurrent}
    for clients in sorted({c.clients for c in rep.concurrent}):
        ours, mlx, raw_b = (by.get((clients, k)) for k in ("ours", "mlx_lm.server", "raw"))
        if clients < 8 or ours is None:
            continue
        if mlx:
            r = ours.aggregate_tps / mlx.aggregate_tps
            rows.append((f"{clients} streams: aggregate ≥ 1.2× mlx_lm.server", f"{r:.2f}×", r >= 1.2))
            rows.append((f"{clients} streams: p95 TTFT ≤ mlx_lm.server",
                         f"{ours.p95_ttft_ms:.0f} vs {mlx.p95_ttft_ms:.0f} ms",
                         ours.p95_ttft_ms <= mlx.p95_ttft_ms))
        if raw_b:
            r = ours.aggregate_tps / raw_b.aggregate_tps
            rows.append((f"{clients} streams: aggregate ≥ 90% of raw BatchGenerator", f"{r:.1%}", r >= 0.9))
    for t in rep.turns:
        if t.system.startswith("ours"):
            r = t.warm_ttft_ms / t.cold_ttft_ms
            rows.append((f"warm TTFT ≤ 15% of cold ({t.history} history)", f"{r:.1%}", r <= 0.15))
    if not rows:
        return []
    out = ["| target | measured | met |", "|---|---:|:-:|"]
    out += [f"| {a} | {b} | {'yes' if ok else 'NO'} |" for a, b, ok in rows]
    return out + [""]


# ----- main -------------------------------------------------------------------------------------


def load_report(paths: list[str]) -> Report:
    """One Report from the JSON of several runs of one shape (e.g. sections 1,3,5 and 2)."""
    rep = None
    for path in paths:
        data = json.loads(Path(path).read_text())
        part = Report(
            info=data["info"],
            single=[Single(**s) for s in data["single"]],
            concurrent=[Concurrent(**c) for c in data["concurrent"]],
            turns=[Turn(**t) for t in data["turns"]],
            bandwidth=data["bandwidth"], engine_single=data["engine_single"],
            diag=data.get("diag", []), notes=data.get("notes", []),
        )
        if rep is None:
            rep = part
            continue
        for name in ("single", "concurrent", "turns", "diag", "notes"):
            getattr(rep, name).extend(getattr(part, name))
        rep.bandwidth = rep.bandwidth or part.bandwidth
        rep.engine_single = rep.engine_single or part.engine_single
    return rep


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--report":
        print(markdown(load_report(sys.argv[2:])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="llama8b", choices=sorted(shapes.SHAPES))
    parser.add_argument("--sections", default="1,2,3,4")
    parser.add_argument("--servers", default="ours,mlx")
    parser.add_argument("--root", default=os.environ.get("BENCH_ROOT", "/root/minerva"))
    parser.add_argument("--out", default=os.environ.get("OUT", str(ROOT / "benchmarks" / "out")))
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens (sections 1-2)")
    parser.add_argument("--tokens", type=int, default=256, help="generated tokens (sections 1-2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--concurrent-repeats", type=int, default=1)
    parser.add_argument("--warm-runs", type=int, default=1)
    parser.add_argument("--warm-tokens", type=int, default=16)
    parser.add_argument("--history", default="2000,8000")
    parser.add_argument("--turn-tokens", type=int, default=16)
    parser.add_argument("--context", type=int, default=16384)
    parser.add_argument("--stagger", type=float, default=10.0, help="ms between HTTP clients' starts")
    parser.add_argument("--diag-levels", default="1,8")
    parser.add_argument("--diag-repeats", type=int, default=2)
    parser.add_argument("--diag-tokens", type=int, default=64)
    parser.add_argument("--budget", type=float, default=480, help="seconds before sections are cut")
    args = parser.parse_args()
    args.levels = [int(x) for x in args.concurrency.split(",")]
    args.diag_levels = [int(x) for x in args.diag_levels.split(",")]
    args.history = [int(x) for x in args.history.split(",")]
    args.servers = [s for s in args.servers.split(",") if s]
    sections = {int(x) for x in args.sections.split(",")}
    deadline = time.monotonic() + args.budget

    root = Path(args.root)
    models = root / "models"
    model_id = f"bench-{args.shape}"
    folder = shapes.build(args.shape, models / model_id)
    log("model folder ready")
    env = dict(os.environ, MINERVA_DATA_DIR=str(root), PYTHONUNBUFFERED="1")
    os.environ["MINERVA_DATA_DIR"] = str(root)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # Servers load in their own processes while this one loads its two copies.
    procs = start_servers(args, model_id, folder, env, out) if sections & {1, 2, 3} else []
    jit_start = jit_count()

    model, tokenizer = mlx_lm.load(str(folder))
    tokenizer.eos_token_ids = set()  # raw paths ignore EOS, like ignore_eos
    config = json.loads((folder / "config.json").read_text())
    weights = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    gpu = gpu_info()
    spec = shapes.SHAPES[args.shape]
    rep = Report(info={
        "date": time.strftime("%Y-%m-%d"), "shape": args.shape,
        "shape_label": {"llama8b": "Llama-3.1-8B shape, 4-bit", "gptoss20b":
                        "GPT-OSS-20B shape, MXFP4 experts + 8-bit"}.get(args.shape, args.shape),
        "gpu": gpu, "device": str(mx.default_device()), "mlx": mx.__version__,
        "mlx_lm": mlx_lm.__version__, "python": platform.python_version(),
        "quant": (folder / "quant.txt").read_text() if (folder / "quant.txt").exists() else spec["quant"], "weights_gb": weights / 1e9, "prompt": args.prompt,
        "tokens": args.tokens, "repeats": args.repeats, "args": vars(args),
    })
    prompts = Prompts(tokenizer)

    engine = None
    if sections & {1, 5}:
        from app.core.settings import EngineSettings
        from app.engine.engine import Engine

        instrument()
        engine = Engine(EngineSettings(model=model_id, context_length=args.context,
                                       max_concurrency=max(args.levels)), models)
        engine.start()
        status = engine.wait_ready(timeout=600)
        if status.state != "ready":
            raise RuntimeError(f"engine: {status}")
        log("engine ready")

    servers = {}
    for key, port, proc in procs:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, timeout=600)
        servers[key] = Server("ours (HTTP API)" if key == "ours" else "mlx_lm.server",
                              url, model_id if key == "ours" else "default_model", proc, key == "ours")
        log(f"{key} server ready at {url}")

    try:
        if 1 in sections:
            section_single(args, rep, model, tokenizer, engine, servers, prompts)
            save(args, rep)
        if 5 in sections:
            section_diag(args, rep, engine, prompts, deadline)
        if engine is not None:
            engine.stop()
            engine = None
            mx.clear_cache()
        if 3 in sections:  # before 2: cheap, and 2 stops itself at the time budget
            section_turns(args, rep, servers, prompts, deadline)
        if 2 in sections:
            section_concurrent(args, rep, model, servers, prompts, deadline)
        if 4 in sections and rep.single:
            section_bandwidth(rep, model, config, gpu)
    finally:
        for server in servers.values():
            server.stop()
        for _, _, proc in procs:
            if proc.poll() is None:
                proc.kill()
        rep.info["kernels_compiled_total"] = jit_count() - jit_start
        save(args, rep)
        text = markdown(rep)
        print(text)
        (out / f"bench_{args.shape}.md").write_text(text)
        log("done")


if __name__ == "__main__":
    main()
