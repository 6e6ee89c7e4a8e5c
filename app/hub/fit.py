"""Will a model fit in memory at a given context length? An estimate before downloading.

Memory needed = weights + KV cache + runtime overhead.

KV cache, per layer and per token of context, keys and values:
    2 x kv_heads x head_dim x bytes_per_element
where a sliding-window layer (`layer_types: sliding_attention`, or Gemma's
`sliding_window_pattern`) holds at most `sliding_window` tokens and a
full-attention layer holds the whole context. Linear-attention or recurrent
layers (e.g. Qwen3-Next's `linear_attention`) keep a fixed-size state and are
not counted.

bytes_per_element is the activation dtype's size (2 for bfloat16/float16,
4 for float32) at full precision. A quantized KV cache (kv_bits = b, group
size g, as mlx-lm's `QuantizedKVCache`) stores b bits per element plus one
scale and one bias, each in the activation dtype, per group of g elements:
    b / 8 + 2 x dtype_bytes / g
e.g. 8-bit, g = 64, bfloat16: 1 + 4/64 = 1.0625 bytes, against 2 unquantized.
mlx-lm cannot quantize a sliding-window (rotating) cache, so those layers
stay at full precision.

Overhead: activations, the allocator's slack and the runtime. We use 20% of
the weights, the same headroom the engine's load-time guard demands
(`app.engine.loader.MEMORY_HEADROOM`), so "fits" here means the engine will
accept the model too.

Limitations: multi-head latent attention (DeepSeek V2/V3's compressed KV) is
estimated as ordinary attention, so over-estimated; batches of concurrent
requests multiply the KV cache (pass `sequences`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.models import text_config

log = logging.getLogger(__name__)

GB = 1e9
WEIGHTS_OVERHEAD = 0.2  # fraction of the weights, as the engine's MEMORY_HEADROOM
FITS_FRACTION = 0.85  # at most this share of available memory: "fits"; up to all of it: "tight"
METAL_WORKING_SET = 0.75  # share of a Mac's RAM Metal lets the GPU wire by default

FITS, TIGHT, WONT_FIT = "fits", "tight", "won't fit"


@dataclass(frozen=True)
class MemoryInfo:
    """What this machine has: total RAM, and how much a model may use now."""

    total_bytes: int
    available_bytes: int
    source: str  # where the numbers came from, for the UI's "why"


@dataclass(frozen=True)
class FitEstimate:
    weights_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int
    available_bytes: int
    context_length: int
    kv_bits: int
    verdict: str  # FITS, TIGHT or WONT_FIT

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.overhead_bytes

    @property
    def message(self) -> str:
        need, have = self.total_bytes / GB, self.available_bytes / GB
        parts = (
            f"{self.weights_bytes / GB:.1f} GB weights + {self.kv_cache_bytes / GB:.1f} GB KV "
            f"cache at {self.context_length:,} tokens + {self.overhead_bytes / GB:.1f} GB overhead"
        )
        if self.verdict == FITS:
            return f"Fits: needs about {need:.1f} GB of {have:.1f} GB available ({parts})."
        if self.verdict == TIGHT:
            return (
                f"Tight: needs about {need:.1f} GB of {have:.1f} GB available ({parts}); "
                "close other apps, or use a shorter context or KV quantization."
            )
        return (
            f"Won't fit: needs about {need:.1f} GB but only {have:.1f} GB is available ({parts}). "
            "Choose a smaller or more quantized model, or a shorter context."
        )


# ----- memory on this machine --------------------------------------------------


def _meminfo(text: str) -> dict[str, int]:
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            values[key.strip()] = int(fields[0]) * 1024  # kB
    return values


def _sysctl_memsize() -> int | None:
    try:
        out = subprocess.run(
            ["sysctl", "-n", "hw.memsize"], capture_output=True, text=True, timeout=5, check=True
        )
        return int(out.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def system_memory(
    platform: str = sys.platform, meminfo_path: Path = Path("/proc/meminfo")
) -> MemoryInfo:
    """Memory for models on this machine, found without MLX.

    On a Mac the GPU's working set is capped at about 75% of RAM (what
    Metal's recommendedMaxWorkingSetSize reports); on Linux, MemAvailable.
    """
    if platform == "darwin" and (total := _sysctl_memsize()):
        return MemoryInfo(total, int(total * METAL_WORKING_SET), "75% of RAM (Metal working set)")
    try:
        values = _meminfo(meminfo_path.read_text())
        if "MemTotal" in values:
            available = values.get("MemAvailable", values["MemTotal"])
            return MemoryInfo(values["MemTotal"], available, "MemAvailable (/proc/meminfo)")
    except OSError:
        pass
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return MemoryInfo(total, total, "physical memory")


# ----- the estimate ------------------------------------------------------------------


def _dtype_bytes(config: dict[str, Any]) -> int:
    dtype = (
        (config.get("minerva_gguf") or {}).get("dtype")
        or config.get("torch_dtype")
        or config.get("dtype")
        or "bfloat16"
    )
    return 4 if str(dtype) in ("float32", "torch.float32") else 2


def layer_windows(config: dict[str, Any]) -> list[int | None]:
    """Per layer: None for full attention, a window size for sliding, 0 for no KV cache."""
    cfg = text_config(config)
    layers = int(cfg.get("num_hidden_layers") or cfg.get("n_layer") or 0)
    window = cfg.get("sliding_window")
    layer_types = cfg.get("layer_types")
    if isinstance(layer_types, list) and len(layer_types) == layers:
        return [_window_of(kind, window) for kind in layer_types]
    pattern = cfg.get("sliding_window_pattern")
    if isinstance(pattern, int) and pattern > 1 and window:
        return [None if (i + 1) % pattern == 0 else int(window) for i in range(layers)]
    return [None] * layers


def _window_of(kind: str, window: Any) -> int | None:
    if kind in ("sliding_attention", "chunked_attention"):
        return int(window) if window else None
    if kind in ("full_attention", "attention"):
        return None
    return 0  # linear attention, mamba, conv: a fixed-size state, not a growing cache


def kv_cache_bytes(
    config: dict[str, Any],
    context_length: int,
    kv_bits: int = 0,
    kv_group_size: int = 64,
    sequences: int = 1,
) -> int:
    """Bytes of KV cache for `sequences` requests of `context_length` tokens each."""
    cfg = text_config(config)
    heads = int(cfg.get("num_attention_heads") or cfg.get("n_head") or 1)
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or int(cfg.get("hidden_size", 0)) // heads)
    dtype_bytes = _dtype_bytes(config)
    full = float(dtype_bytes)
    quantized = kv_bits / 8 + 2 * dtype_bytes / kv_group_size if kv_bits else full
    total = 0.0
    for window in layer_windows(config):
        if window == 0:
            continue
        tokens = context_length if window is None else min(context_length, window)
        per_element = quantized if window is None else full
        total += 2 * kv_heads * head_dim * tokens * per_element
    return int(total * sequences)


def estimate_fit(
    config: dict[str, Any],
    weights_bytes: int,
    context_length: int,
    kv_bits: int = 0,
    kv_group_size: int = 64,
    available_bytes: int | None = None,
    sequences: int = 1,
) -> FitEstimate:
    """Weights + KV cache + overhead against available memory (this machine's by default)."""
    if available_bytes is None:
        available_bytes = system_memory().available_bytes
    kv = kv_cache_bytes(config, context_length, kv_bits, kv_group_size, sequences)
    overhead = int(weights_bytes * WEIGHTS_OVERHEAD)
    need = weights_bytes + kv + overhead
    if need <= available_bytes * FITS_FRACTION:
        verdict = FITS
    elif need <= available_bytes:
        verdict = TIGHT
    else:
        verdict = WONT_FIT
    return FitEstimate(
        weights_bytes, kv, overhead, available_bytes, context_length, kv_bits, verdict
    )
