"""Where the engine thread's time goes, without touching app code.

`instrument()` wraps two engine methods: the generator's `next()` (the model
step: GPU work plus mlx-lm's own Python) and `Engine._on_token` (our per-token
Python: detokenizing, stop strings, parsers, events to the sink). The rest of
the engine thread's wall time between the first and the last step is the loop
itself: command queue, cancellation checks, waiting for the GIL.

Run as a script it is `minerva serve` (the CLI, unchanged) with the wrappers
on and a `GET /bench/stats[?reset=1]` route that returns the counters.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class StepStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self.steps = 0
            self.rows = 0  # decode responses (tokens) returned by next()
            self.next_s = 0.0
            self.on_token_s = 0.0
            self.first_start: float | None = None
            self.last_end = 0.0
            self.counters_start: dict | None = None
            self.counters_end: dict | None = None

    def snapshot(self) -> dict:
        wall = (self.last_end - self.first_start) if self.first_start else 0.0
        out = {
            "steps": self.steps,
            "tokens": self.rows,
            "wall_s": wall,
            "next_s": self.next_s,
            "on_token_s": self.on_token_s,
            "other_s": max(0.0, wall - self.next_s - self.on_token_s),
            "mean_batch": self.rows / self.steps if self.steps else 0.0,
            "ms_per_step_next": 1e3 * self.next_s / self.steps if self.steps else 0.0,
            "ms_per_step_on_token": 1e3 * self.on_token_s / self.steps if self.steps else 0.0,
            "ms_per_step_wall": 1e3 * wall / self.steps if self.steps else 0.0,
        }
        if self.counters_start and self.counters_end:
            for key in ("prompt_time", "decode_time", "prompt_tokens", "generation_tokens"):
                if key in self.counters_end:
                    out[f"gen_{key}"] = self.counters_end[key] - self.counters_start.get(key, 0)
        return out


STATS = StepStats()


def _counters(generator) -> dict | None:
    counters = getattr(generator, "_counters", None)
    if counters is None:
        return None
    try:
        return dataclasses.asdict(counters)
    except TypeError:
        return None


def timed_next(generator, stats: StepStats = STATS):
    """Wrap one BatchGenerator's `next` with step timing."""
    original = generator.next

    def next_():
        t0 = time.perf_counter()
        if stats.first_start is None:
            stats.first_start = t0
            stats.counters_start = _counters(generator)
        result = original()
        t1 = time.perf_counter()
        stats.steps += 1
        stats.rows += len(result[1])
        stats.next_s += t1 - t0
        stats.last_end = t1
        stats.counters_end = _counters(generator)
        return result

    generator.next = next_
    return generator


def instrument(stats: StepStats = STATS) -> None:
    from app.engine import engine as engine_module

    Engine = engine_module.Engine
    if getattr(Engine, "_bench_instrumented", False):
        return
    new_generator = Engine._new_generator
    on_token = Engine._on_token

    def _new_generator(self, loaded):
        return timed_next(new_generator(self, loaded), stats)

    def _on_token(self, active, response, now):
        t0 = time.perf_counter()
        try:
            return on_token(self, active, response, now)
        finally:
            t1 = time.perf_counter()
            stats.on_token_s += t1 - t0
            stats.last_end = max(stats.last_end, t1)

    Engine._new_generator = _new_generator
    Engine._on_token = _on_token
    Engine._bench_instrumented = True


def _add_stats_route() -> None:
    from aiohttp import web

    from app.server import runner

    create_app = runner.create_app

    async def stats_handler(request: web.Request) -> web.Response:
        body = STATS.snapshot()
        if request.query.get("reset"):
            STATS.reset()
        return web.json_response(body)

    def create_app_with_stats(settings, engine):
        app = create_app(settings, engine)
        app.router.add_get("/bench/stats", stats_handler)
        return app

    runner.create_app = create_app_with_stats


if __name__ == "__main__":
    instrument()
    _add_stats_route()
    from app.cli import main

    sys.exit(main(sys.argv[1:]))
