"""Quantized KV caches that work with mlx-lm's continuous batching.

mlx-lm's ``QuantizedKVCache`` cannot be merged into a batch, so
``BatchGenerator`` refuses it ("does not yet support batching with history").
This module adds:

* ``MergeableQuantizedKVCache`` -- the per-request cache (trimmable and
  deep-copyable, so the LRU prefix cache can snapshot it) whose ``merge``
  builds a batch cache;
* ``BatchQuantizedKVCache`` -- the batched counterpart of mlx-lm's
  ``BatchKVCache``, storing keys/values as ``mx.quantize`` triples
  ``(packed uint32, scales, biases)``.  It exposes ``bits``/``group_size`` so
  attention takes mlx-lm's quantized path, which accepts the boolean
  left-padding masks a batch needs;
* ``make_quantized_prompt_cache`` -- one mergeable quantized cache per layer.

Padding positions are all-zero triples (they dequantize to 0 and are masked).
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.base import create_causal_mask
from mlx_lm.models.cache import KVCache, QuantizedKVCache, _BaseCache, dynamic_roll

QArrays = Tuple[mx.array, mx.array, mx.array]  # (packed, scales, biases)

SUPPORTED_BITS = (2, 3, 4, 5, 6, 8)
SUPPORTED_GROUP_SIZES = (32, 64, 128)


def _qmap(fn: Callable[..., mx.array], *qs: QArrays) -> QArrays:
    """Apply ``fn`` component-wise to quantized triples."""
    return tuple(fn(*xs) for xs in zip(*qs))  # type: ignore[return-value]


def _qzeros(like: QArrays, batch: int, length: int) -> QArrays:
    """All-zero triple shaped like ``like`` with the given batch and length."""
    return _qmap(
        lambda x: mx.zeros((batch, x.shape[1], length, x.shape[3]), x.dtype), like
    )


def _qnbytes(*qs: Optional[QArrays]) -> int:
    return sum(x.nbytes for q in qs if q is not None for x in q)


class MergeableQuantizedKVCache(QuantizedKVCache):
    """Per-request ``QuantizedKVCache`` that ``BatchGenerator`` can batch."""

    def size(self) -> int:
        # mlx-lm's base ``size()`` returns 0, which would make merge drop history.
        return self.offset if self.keys is not None else 0

    @property
    def nbytes(self) -> int:
        return _qnbytes(self.keys, self.values)

    @classmethod
    def merge(cls, caches: Sequence[QuantizedKVCache]) -> "BatchQuantizedKVCache":
        return BatchQuantizedKVCache.merge(caches)


class BatchQuantizedKVCache(_BaseCache):
    """Left-padded batch of quantized KV caches (mirrors ``BatchKVCache``).

    ``offset`` (per row) counts real tokens, ``left_padding`` (per row) the
    padding in front of them and ``_idx`` the shared write position.
    """

    step = 256

    def __init__(self, left_padding: List[int], group_size: int = 64, bits: int = 8):
        self.keys: Optional[QArrays] = None
        self.values: Optional[QArrays] = None
        self.left_padding = mx.array(left_padding)
        self.offset = mx.array([-p for p in left_padding])
        self.group_size = group_size
        self.bits = bits
        self._idx = 0
        self._right_padding: Optional[mx.array] = None

    # -- model-facing -----------------------------------------------------
    def update_and_fetch(
        self, keys: mx.array, values: mx.array
    ) -> Tuple[QArrays, QArrays]:
        prev, n = self._idx, keys.shape[2]
        if self.keys is None or prev + n > self.keys[0].shape[2]:
            new_len = (self.step + n - 1) // self.step * self.step
            B, H = keys.shape[:2]
            el_per_int = 32 // self.bits

            def init(dim: int) -> QArrays:
                g = dim // self.group_size
                return (
                    mx.zeros((B, H, new_len, dim // el_per_int), mx.uint32),
                    mx.zeros((B, H, new_len, g), keys.dtype),
                    mx.zeros((B, H, new_len, g), keys.dtype),
                )

            new_k, new_v = init(keys.shape[3]), init(values.shape[3])
            if self.keys is not None:
                cat = lambda old, new: mx.concatenate([old[..., :prev, :], new], 2)
                new_k = _qmap(cat, self.keys, new_k)
                new_v = _qmap(cat, self.values, new_v)
            self.keys, self.values = new_k, new_v

        self.offset = self.offset + n
        self._idx += n
        qk = mx.quantize(keys, group_size=self.group_size, bits=self.bits)
        qv = mx.quantize(values, group_size=self.group_size, bits=self.bits)
        for dst, src in zip(self.keys + self.values, qk + qv):
            dst[..., prev : self._idx, :] = src
        return self.keys_and_values()

    def keys_and_values(self) -> Tuple[QArrays, QArrays]:
        cut = lambda x: x[..., : self._idx, :]
        return _qmap(cut, self.keys), _qmap(cut, self.values)

    def make_mask(self, N: int, return_array: bool = False, **kwargs: Any) -> mx.array:
        # Always an array: rows differ in left padding.
        return create_causal_mask(
            N, offset=self._idx, left_padding=self.left_padding, **kwargs
        )

    # -- prompt chunks ----------------------------------------------------
    def prepare(
        self,
        *,
        left_padding: Optional[List[int]] = None,
        lengths: Optional[List[int]] = None,
        right_padding: Optional[List[int]] = None,
    ) -> None:
        if left_padding is not None:
            if self.keys is not None:
                raise ValueError("Left padding can only be added to an empty cache")
            lp = mx.array(left_padding)
            self.left_padding = self.left_padding + lp
            self.offset = self.offset - lp
        if right_padding is not None and max(right_padding) > 0:
            self._right_padding = mx.array(right_padding)

    def finalize(self) -> None:
        """Turn the right padding of the last chunk into left padding.

        Rolling each row right by its padding moves the padded tail out of
        ``[:_idx]`` (or around to the front, where ``left_padding`` masks it).
        """
        if self._right_padding is None:
            return
        pad = self._right_padding
        roll = lambda x: dynamic_roll(x, pad[:, None], axis=2)
        self.keys = _qmap(roll, self.keys)
        self.values = _qmap(roll, self.values)
        self.offset = self.offset - pad
        self.left_padding = self.left_padding + pad
        self._right_padding = None

    # -- batch management -------------------------------------------------
    def filter(self, batch_indices: List[int]) -> None:
        """Keep only ``batch_indices``, then drop padding all rows share."""
        if self.keys is not None:
            take = lambda x: x[batch_indices]
            self.keys, self.values = _qmap(take, self.keys), _qmap(take, self.values)
        self.offset = self.offset[batch_indices]
        self.left_padding = self.left_padding[batch_indices]

        shift = min(self.left_padding.tolist(), default=0)
        if shift > 0:
            if self.keys is not None:
                drop = lambda x: x[..., shift:, :]
                self.keys = _qmap(drop, self.keys)
                self.values = _qmap(drop, self.values)
            self._idx -= shift
            self.left_padding = self.left_padding - shift

    def extend(self, other: "BatchQuantizedKVCache") -> None:
        """Append ``other``'s rows, right-justifying both at the same ``_idx``."""
        self._check_compatible(other)
        if self.keys is None and other.keys is None:
            self.left_padding = mx.concatenate([self.left_padding, other.left_padding])
            self.offset = mx.concatenate([self.offset, other.offset])
            return

        like_k = self.keys if self.keys is not None else other.keys
        like_v = self.values if self.values is not None else other.values
        max_idx = max(self._idx, other._idx)
        max_len = max(c.keys[0].shape[2] for c in (self, other) if c.keys is not None)

        def pad(c: BatchQuantizedKVCache) -> tuple:
            k, v = c.keys, c.values
            if k is None:
                B = c.offset.shape[0]
                k, v = _qzeros(like_k, B, 0), _qzeros(like_v, B, 0)
            left = max_idx - c._idx
            right = max_len - k[0].shape[2] - left
            if right < 0:
                k = _qmap(lambda x: x[..., :right, :], k)
                v = _qmap(lambda x: x[..., :right, :], v)
                right = 0
            if left or right:
                widths = [(0, 0), (0, 0), (left, right), (0, 0)]
                k = _qmap(lambda x: mx.pad(x, widths), k)
                v = _qmap(lambda x: mx.pad(x, widths), v)
            return k, v, c.offset, c.left_padding + left

        (k1, v1, o1, l1), (k2, v2, o2, l2) = pad(self), pad(other)
        cat = lambda a, b: mx.concatenate([a, b])
        self.keys, self.values = _qmap(cat, k1, k2), _qmap(cat, v1, v2)
        self.offset, self.left_padding = cat(o1, o2), cat(l1, l2)
        self._idx = max_idx

    def extract(self, idx: int) -> MergeableQuantizedKVCache:
        """Row ``idx`` as a per-request cache (padding stripped)."""
        cache = MergeableQuantizedKVCache(group_size=self.group_size, bits=self.bits)
        if self.keys is None:
            return cache
        padding = self.left_padding.tolist()[idx]
        row = lambda x: mx.contiguous(x[idx : idx + 1, :, padding : self._idx])
        cache.keys, cache.values = _qmap(row, self.keys), _qmap(row, self.values)
        cache.offset = cache.keys[0].shape[2]
        return cache

    @classmethod
    def merge(cls, caches: Sequence[QuantizedKVCache]) -> "BatchQuantizedKVCache":
        """Left-pad per-request quantized caches into one batch."""
        group_size, bits = caches[0].group_size, caches[0].bits
        if any((c.group_size, c.bits) != (group_size, bits) for c in caches):
            raise ValueError("Cannot batch quantized caches with different settings")
        lengths = [c.offset if c.keys is not None else 0 for c in caches]
        max_len = max(lengths)
        padding = [max_len - n for n in lengths]
        cache = cls(padding, group_size=group_size, bits=bits)
        if max_len == 0:
            return cache

        first = next(c for c in caches if c.keys is not None and c.offset > 0)
        keys = _qzeros(first.keys, len(caches), max_len)
        values = _qzeros(first.values, len(caches), max_len)
        for i, (p, n, c) in enumerate(zip(padding, lengths, caches)):
            if n == 0:
                continue
            for dst, src in zip(keys + values, c.keys + c.values):
                dst[i : i + 1, :, p:] = src[..., :n, :]
        cache.keys, cache.values = keys, values
        cache.offset = cache.offset + max_len
        cache._idx = max_len
        return cache

    def _check_compatible(self, other: "BatchQuantizedKVCache") -> None:
        if (self.group_size, self.bits) != (other.group_size, other.bits):
            raise ValueError("Cannot batch quantized caches with different settings")

    # -- bookkeeping ------------------------------------------------------
    @property
    def state(self) -> tuple:
        return self.keys, self.values, self.offset, self.left_padding, self._idx

    @state.setter
    def state(self, v: tuple) -> None:
        self.keys, self.values, self.offset, self.left_padding, self._idx = v

    def is_trimmable(self) -> bool:
        return True

    def trim(self, n: int) -> int:
        n = min(self._idx, n)
        self._idx -= n
        self.offset = self.offset - n
        return n

    def size(self) -> int:
        return self._idx

    def empty(self) -> bool:
        return self.keys is None

    @property
    def nbytes(self) -> int:
        return _qnbytes(self.keys, self.values)


_CACHE_REASONS = {
    "RotatingKVCache": "it uses sliding-window attention",
    "ChunkedKVCache": "it uses chunked attention",
    "ArraysCache": "it has recurrent/state-space layers",
    "MambaCache": "it has recurrent/state-space layers",
    "CacheList": "it uses composite per-layer caches",
}


def _head_dim(model: nn.Module) -> Optional[int]:
    """Best-effort head size from the model config (None when unknown)."""
    args = getattr(model, "args", None)
    head_dim = getattr(args, "head_dim", None)
    if head_dim is None:
        hidden = getattr(args, "hidden_size", None)
        heads = getattr(args, "num_attention_heads", None)
        if isinstance(hidden, int) and isinstance(heads, int) and heads > 0:
            head_dim = hidden // heads
    return head_dim if isinstance(head_dim, int) else None


def make_quantized_prompt_cache(
    model: nn.Module, bits: int, group_size: int
) -> List[MergeableQuantizedKVCache]:
    """One mergeable quantized KV cache per layer.

    Only models whose layers all use a plain ``KVCache`` qualify: sliding
    windows, chunked attention and recurrent state have no quantized batch
    cache.  Raises ``ValueError`` explaining why otherwise.
    """

    def unavailable(reason: str) -> ValueError:
        return ValueError(
            f"KV cache quantization is not available for this model ({reason})"
        )

    if bits not in SUPPORTED_BITS:
        raise ValueError(
            f"Unsupported KV cache bits {bits}; use one of {SUPPORTED_BITS}"
        )
    if group_size not in SUPPORTED_GROUP_SIZES:
        raise ValueError(
            f"Unsupported KV cache group size {group_size}; "
            f"use one of {SUPPORTED_GROUP_SIZES}"
        )

    if hasattr(model, "make_cache"):
        layers = model.make_cache()
        for c in layers:
            if type(c) is not KVCache:
                name = type(c).__name__
                raise unavailable(_CACHE_REASONS.get(name, f"it uses {name} layers"))
        num_layers = len(layers)
    else:
        num_layers = len(model.layers)

    head_dim = _head_dim(model)
    if head_dim is not None and head_dim % group_size:
        raise unavailable(
            f"head size {head_dim} is not a multiple of group size {group_size}"
        )
    return [
        MergeableQuantizedKVCache(group_size=group_size, bits=bits)
        for _ in range(num_layers)
    ]
