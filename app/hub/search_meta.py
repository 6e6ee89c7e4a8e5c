"""What a model's config.json and hub metadata say about it: quantization, size, context.

Pure functions over dicts, so they work on any repo and are tested without a network.
"""

from __future__ import annotations

import re
from typing import Any

from app.core.models import Quantization, text_config

# Quantization modes whose bit width is implied by the name.
_MODE_BITS = {"mxfp4": 4, "nvfp4": 4, "fp8": 8, "mxfp8": 8}
_CONTEXT_KEYS = ("max_position_embeddings", "max_sequence_length", "seq_length", "n_positions",
                 "n_ctx", "model_max_length")
_GGUF_QUANT = re.compile(r"(?<![A-Za-z0-9])(I?Q[1-8](?:_[A-Z0-9]+)*|[BF]F?16|F32|MXFP4)(?![A-Za-z0-9])",
                         re.IGNORECASE)


__all__ = ["Quantization", "context_length", "gguf_quant_label", "params_from_config",
           "params_from_safetensors", "parse_quantization"]


def parse_quantization(config: dict[str, Any]) -> Quantization | None:
    """From MLX's `quantization` or transformers' `quantization_config` (mode = its quant_method).

    MLX's per-layer overrides (nested dicts) are ignored: the top level is the model's own.
    """
    q = config.get("quantization")
    mlx = isinstance(q, dict)
    if not mlx:
        q = config.get("quantization_config")
    if not isinstance(q, dict):
        return None
    mode = str(q.get("mode") or q.get("quant_method") or "affine")
    bits = _int(q.get("bits")) or _MODE_BITS.get(mode.lower())
    return Quantization(bits, _int(q.get("group_size")), mode)


def context_length(config: dict[str, Any]) -> int | None:
    cfg = text_config(config)
    for key in _CONTEXT_KEYS:
        if (value := _int(cfg.get(key))) is not None:
            return value
    return None


def gguf_quant_label(filename: str) -> str | None:
    """`Qwen2.5-7B-Instruct-Q4_K_M.gguf` -> `Q4_K_M`."""
    matches = _GGUF_QUANT.findall(filename.rsplit("/", 1)[-1])
    return matches[-1].upper() if matches else None


def params_from_config(config: dict[str, Any]) -> int | None:
    """Parameter count from a decoder's dimensions (dense or mixture-of-experts): an estimate."""
    cfg = text_config(config)
    hidden = _first(cfg, "hidden_size", "d_model", "n_embd")
    layers = _first(cfg, "num_hidden_layers", "n_layer", "num_layers")
    vocab = _first(cfg, "vocab_size")
    if not (hidden and layers and vocab):
        return None
    heads = _first(cfg, "num_attention_heads", "n_head") or max(1, hidden // 64)
    kv_heads = _first(cfg, "num_key_value_heads") or heads
    head_dim = _first(cfg, "head_dim") or hidden // heads
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    ffn = _first(cfg, "intermediate_size", "ffn_dim", "n_inner") or 4 * hidden
    experts = _first(cfg, "num_local_experts", "num_experts", "n_routed_experts")
    if experts:
        expert_ffn = _first(cfg, "moe_intermediate_size") or ffn
        shared = _first(cfg, "n_shared_experts", "num_shared_experts") or 0
        mlp = (experts + shared) * 3 * hidden * expert_ffn + hidden * experts
    else:
        mlp = 3 * hidden * ffn
    embeddings = vocab * hidden * (1 if cfg.get("tie_word_embeddings", False) else 2)
    return layers * (attention + mlp + 2 * hidden) + embeddings + hidden


def params_from_safetensors(parameters: dict[str, int], quant: Quantization | None) -> int:
    """Element counts per dtype -> parameters, unpacking quantized U32 weights (an estimate then)."""
    total = sum(parameters.values())
    if quant is None or not quant.bits:
        return total
    packed = parameters.get("U32", 0)
    weights = packed * 32 // quant.bits
    affine = quant.mode == "affine"
    side = weights // quant.group_size * (2 if affine else 1) if quant.group_size else 0
    return weights + max(0, total - packed - side)


def _first(cfg: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        if (value := _int(cfg.get(key))) is not None:
            return value
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
