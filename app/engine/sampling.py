"""Per-request samplers and logits processors, built from mlx-lm's pieces.

`BatchGenerator` samples all rows in one call only when they share the same
sampler object, so unseeded samplers are cached per parameter set. Every
sampler owns its PRNG key: mlx-lm's compiled sampler reads MLX's global random
state, which another thread may have left holding lazy arrays this thread
cannot evaluate. A seeded request gets its own sampler and key.
"""

from __future__ import annotations

import os
from typing import Callable

import mlx.core as mx
from mlx_lm.sample_utils import (
    apply_min_p,
    apply_top_k,
    apply_top_p,
    greedy_sampler,
    make_logits_processors,
)

from app.engine.types import SamplingParams

Sampler = Callable[[mx.array], mx.array]


def _filters(p: SamplingParams) -> list[Callable[[mx.array], mx.array]]:
    """The same filter chain, in the same order, as mlx-lm's make_sampler."""
    chain: list[Callable[[mx.array], mx.array]] = []
    if 0 < p.top_p < 1.0:
        chain.append(lambda x: apply_top_p(x, p.top_p))
    if p.min_p != 0.0:
        chain.append(lambda x: apply_min_p(x, p.min_p))
    if p.top_k > 0:
        # top_k at or beyond the vocabulary keeps everything (mlx-lm would raise mid-batch).
        chain.append(lambda x: apply_top_k(x, p.top_k) if p.top_k < x.shape[-1] else x)
    return chain


def _keyed_sampler(p: SamplingParams, seed: int) -> Sampler:
    key = mx.random.key(seed % (1 << 64))  # OpenAI allows any integer; MLX wants uint64
    chain = _filters(p)
    inv_temp = 1.0 / p.temperature

    def sample(logprobs: mx.array) -> mx.array:
        nonlocal key
        key, sub = mx.random.split(key)
        for apply in chain:
            logprobs = apply(logprobs)
        return mx.random.categorical(logprobs * inv_temp, key=sub)

    return sample


class Samplers:
    """The engine thread's samplers: one per unseeded parameter set, so rows batch."""

    MAX_SHARED = 64

    def __init__(self) -> None:
        self._shared: dict[SamplingParams, Sampler] = {}

    def for_request(self, p: SamplingParams) -> Sampler:
        if p.greedy:
            return greedy_sampler
        if p.seed is not None:
            return _keyed_sampler(p, p.seed)
        sampler = self._shared.get(p)
        if sampler is None:
            if len(self._shared) >= self.MAX_SHARED:
                self._shared.clear()
            sampler = self._shared[p] = _keyed_sampler(p, int.from_bytes(os.urandom(4), "little"))
        return sampler


def processors_for(p: SamplingParams) -> list:
    """Logits processors (penalties, logit bias) for one request; [] when none apply."""
    return make_logits_processors(
        logit_bias=dict(p.logit_bias) or None,
        repetition_penalty=p.repetition_penalty,
        presence_penalty=p.presence_penalty or None,
        frequency_penalty=p.frequency_penalty or None,
    )
