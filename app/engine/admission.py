"""Admission control: how many requests run, how many wait, and their KV memory.

Without a bound, a burst of long requests grows the KV cache until the machine
swaps or MLX fails. Each running request reserves prompt + max_tokens worth of
KV bytes; one that does not fit the budget, or arrives when the queue is full,
is refused with a retryable error instead.
"""

from __future__ import annotations

import mlx.core as mx

from app.engine.memory import available_memory_bytes
from app.engine.types import InvalidRequest, Overloaded


def measure_kv_bytes_per_token(loaded) -> int:
    """Bytes of KV cache one token costs, measured on a real cache of this model."""
    cache = loaded.new_cache()
    mx.eval(loaded.model(mx.array([[0]]), cache=cache))
    slots = max((getattr(c, "step", 256) for c in cache), default=256)
    return max(1, sum(c.nbytes for c in cache) // slots)


class Admission:
    def __init__(self, max_running: int, max_queued: int, kv_per_token: int, budget: int | None) -> None:
        self.max_requests = max_running + max_queued
        self.kv_per_token = kv_per_token
        self.budget = budget if budget is not None else available_memory_bytes() // 2
        self.reserved: dict[int, int] = {}

    def admit(self, key: int, tokens: int) -> None:
        """Reserve KV memory for a request of `tokens` total tokens, or refuse it."""
        need = tokens * self.kv_per_token
        if need > self.budget:
            raise InvalidRequest(
                f"This request needs {need / 1e9:.2f} GB of KV cache but the budget is "
                f"{self.budget / 1e9:.2f} GB: lower max_tokens or shorten the prompt.",
                param="max_tokens",
            )
        if len(self.reserved) >= self.max_requests:
            raise Overloaded(f"The server is busy ({len(self.reserved)} requests running or waiting); retry shortly.")
        if sum(self.reserved.values()) + need > self.budget:
            raise Overloaded("Not enough KV cache memory is free right now; retry shortly.")
        self.reserved[key] = need

    def release(self, key: int) -> None:
        self.reserved.pop(key, None)
