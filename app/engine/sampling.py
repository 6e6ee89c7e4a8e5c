"""Per-request samplers and logits processors, built from mlx-lm's pieces.

`BatchGenerator` samples all rows in one call only when they share the same
sampler object, so unseeded samplers are cached per parameter set. A seeded
request gets its own sampler with its own PRNG key: MLX's global random state
is per thread and shared by every request on the engine thread.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import mlx.core as mx
from mlx_lm.sample_utils import (
    apply_min_p,
    apply_top_k,
    apply_top_p,
    greedy_sampler,
    make_logits_processors,
    make_sampler,
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
        chain.append(lambda x: apply_top_k(x, p.top_k))
    return chain


def _seeded_sampler(p: SamplingParams) -> Sampler:
    key = mx.random.key(p.seed)
    chain = _filters(p)
    inv_temp = 1.0 / p.temperature

    def sample(logprobs: mx.array) -> mx.array:
        nonlocal key
        key, sub = mx.random.split(key)
        for apply in chain:
            logprobs = apply(logprobs)
        return mx.random.categorical(logprobs * inv_temp, key=sub)

    return sample


@lru_cache(maxsize=64)
def _shared_sampler(p: SamplingParams) -> Sampler:
    return make_sampler(temp=p.temperature, top_p=p.top_p, min_p=p.min_p, top_k=p.top_k)


def sampler_for(p: SamplingParams) -> Sampler:
    """A sampler for one request: shared when possible so rows batch together."""
    if p.greedy:
        return greedy_sampler
    if p.seed is not None:
        return _seeded_sampler(p)
    return _shared_sampler(p)


def processors_for(p: SamplingParams) -> list:
    """Logits processors (penalties, logit bias) for one request; [] when none apply."""
    return make_logits_processors(
        logit_bias=dict(p.logit_bias) or None,
        repetition_penalty=p.repetition_penalty,
        presence_penalty=p.presence_penalty or None,
        frequency_penalty=p.frequency_penalty or None,
    )
