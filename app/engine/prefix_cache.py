"""Finished requests' KV caches, kept so the next turn prefills only new tokens.

A thin layer over mlx-lm's `LRUPromptCache` (bounded by entries and bytes)
that always leaves at least one token to prefill: an exact hit returns an
empty remainder, and a request needs one token to produce its first logits.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.models.cache import LRUPromptCache, trim_prompt_cache


class PrefixCache:
    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._lru = LRUPromptCache(max_size=max_entries, max_bytes=max_bytes)

    def fetch(self, key: Any, tokens: list[int]) -> tuple[list | None, list[int]]:
        """The cache of the longest stored prefix of `tokens`, and the tokens left to prefill."""
        cache, rest = self._lru.fetch_nearest_cache(key, tokens)
        if cache is None:
            return None, tokens
        if not rest:
            trim_prompt_cache(cache, 1)
            rest = tokens[-1:]
        return cache, rest

    def store(self, key: Any, tokens: list[int], cache: list) -> None:
        """Keep a finished request's cache; evaluate it so it holds no batch arrays."""
        if not tokens or not cache:
            return
        mx.eval([x for _, x in tree_flatten([c.state for c in cache]) if isinstance(x, mx.array)])
        self._lru.insert_cache(key, list(tokens), cache)

    def clear(self) -> None:
        self._lru.trim_to(n_sequences=0)

    @property
    def nbytes(self) -> int:
        return self._lru.nbytes

    def __len__(self) -> int:
        return len(self._lru)
