"""Convert a llama, qwen2 or qwen3 GGUF file into an MLX model folder mlx-lm can load.

The weights stay quantized: MLX reads Q4_0, Q4_1 and Q8_0 blocks straight
into its own affine (weight, scales, biases) format, so nothing is
re-quantized and the converted model computes what llama.cpp computes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.core.gguf_header import (
    PRE_TOKENIZER_KINDS,
    GGUFError,
    GGUFHeader,
    import_problem,
)
from app.core.gguf_header import read_gguf_header as _read_header
from app.engine.types import ModelLoadError

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]

# Bump when the converter's output changes, so stale conversions get redone.
CONVERTER_VERSION = 1

# Files an MLX model folder written by `convert_gguf` must contain.
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

# GGUF tensor names -> mlx-lm parameter names (llama, qwen2 and qwen3 share them).
_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TENSOR_NAME = re.compile(r"^(?:blk\.(\d+)\.)?([a-z_]+)\.(weight|bias|scales|biases)$")

# Pre-tokenizer splits in front of ByteLevel, from llama.cpp's llama-vocab.cpp
# (the kinds are named in app.core.gguf_header.PRE_TOKENIZER_KINDS).
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2's tokenizer.json regex: Llama 3's, but digits one by one.
_QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLIT_REGEXES = {"llama3": _LLAMA3_REGEX, "qwen2": _QWEN2_REGEX}

_TOKEN_TYPE_CONTROL = 3
_TOKEN_TYPE_USER_DEFINED = 4


# --------------------------------------------------------------------------
# Header: validate cheaply before MLX reads (possibly gigabytes of) tensors.
# --------------------------------------------------------------------------


def read_gguf_header(path: Path) -> GGUFHeader:
    """Parse a GGUF's metadata and tensor table; raise ModelLoadError if it is not one."""
    try:
        return _read_header(path)
    except GGUFError as exc:
        raise ModelLoadError(str(exc)) from exc


def check_supported(header: GGUFHeader) -> None:
    """Refuse, with a readable reason, anything this converter cannot do exactly."""
    if (problem := import_problem(header)) is not None:
        raise ModelLoadError(problem)


# --------------------------------------------------------------------------
# Loading and translating.
# --------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """mx.array metadata values -> Python numbers/lists; strings pass through."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def load_gguf(path: Path, scratch_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """mx.load a GGUF -> (weights, plain metadata).

    MLX opens GGUF files read-write, so a read-only file (a system-wide
    install) is first copied into `scratch_dir`.
    """
    import mlx.core as mx

    source = path
    if not os.access(path, os.W_OK):
        source = scratch_dir / "source.gguf"
        log.info("%s is read-only; loading it from a copy", path)
        shutil.copyfile(path, source)
    try:
        weights, metadata = mx.load(str(source), return_metadata=True)
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelLoadError(f"Cannot read GGUF file {path.name}: {exc}") from exc
    finally:
        if source != path:
            source.unlink(missing_ok=True)
    return weights, {k: _plain(v) for k, v in metadata.items()}


def _f32(value: float) -> float:
    """A float32 metadata value as its shortest decimal (1e-05, not 9.99999974e-06)."""
    import numpy as np

    return float(str(np.float32(value)))


def build_config(meta: dict[str, Any], header: GGUFHeader) -> dict[str, Any]:
    """mlx-lm config.json fields (llama, qwen2 or qwen3) from GGUF metadata."""
    arch = header.architecture

    def get(key: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise ModelLoadError(f"The GGUF file lacks required metadata '{arch}.{key}'")
        return value

    hidden = int(get("embedding_length"))
    heads = int(get("attention.head_count"))
    head_dim = int(meta.get(f"{arch}.attention.key_length", hidden // heads))
    rope_dims = int(meta.get(f"{arch}.rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        raise ModelLoadError(
            f"Partial rotary embeddings ({rope_dims} of {head_dim} dims) are not supported"
        )
    tokens = meta.get("tokenizer.ggml.tokens") or []
    config: dict[str, Any] = {
        **_ARCH_NAMES[arch],
        "hidden_size": hidden,
        "num_hidden_layers": int(get("block_count")),
        "intermediate_size": int(get("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get(f"{arch}.attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": _f32(get("attention.layer_norm_rms_epsilon", 1e-5)),
        "vocab_size": int(meta.get(f"{arch}.vocab_size", len(tokens))),
        "rope_theta": _f32(get("rope.freq_base", 10000.0)),
        "rope_traditional": arch == "llama",
        "max_position_embeddings": int(get("context_length")),
        "tie_word_embeddings": "output.weight" not in header.tensors,
    }
    config.update(_arch_specifics(arch, header, config))
    config.update(_rope_scaling(meta, arch))
    config.update(_special_token_ids(meta))
    return config


_ARCH_NAMES = {
    "llama": {"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
    "qwen2": {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]},
    "qwen3": {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"]},
}


def _arch_specifics(arch: str, header: GGUFHeader, config: dict[str, Any]) -> dict[str, Any]:
    """What differs between the supported architectures, checked against mlx-lm's classes.

    RoPE: llama.cpp's converter permutes Q/K rows of llama-arch models for its
    interleaved ("normal") RoPE, and MLX's traditional RoPE is that same
    rotation, so llama keeps `rope_traditional: true` with no un-permuting.
    Qwen2/Qwen3 are stored unpermuted for the NeoX-style rotation, which is
    MLX's default (`rope_traditional: false`).
    """
    tensors = header.tensors
    if arch == "llama":
        return {
            "attention_bias": "blk.0.attn_q.bias" in tensors,
            "mlp_bias": "blk.0.ffn_up.bias" in tensors,
        }
    if arch == "qwen2":
        if config["head_dim"] * config["num_attention_heads"] != config["hidden_size"]:
            raise ModelLoadError("This qwen2 GGUF has a head size mlx-lm's qwen2 cannot express")
        if "blk.0.attn_q.bias" not in tensors:
            raise ModelLoadError("This qwen2 GGUF lacks the Q/K/V biases Qwen2 models have")
        return {}
    if "blk.0.attn_q_norm.weight" not in tensors:
        raise ModelLoadError("This qwen3 GGUF lacks the Q/K norms Qwen3 models have")
    return {}


def _rope_scaling(meta: dict[str, Any], arch: str) -> dict[str, Any]:
    kind = meta.get(f"{arch}.rope.scaling.type", "none")
    if kind == "none":
        return {}
    factor = meta.get(f"{arch}.rope.scaling.factor")
    if kind == "linear" and factor:
        return {"rope_scaling": {"type": "linear", "factor": _f32(factor)}}
    raise ModelLoadError(f"Unsupported RoPE scaling '{kind}'")


def _special_token_ids(meta: dict[str, Any]) -> dict[str, Any]:
    ids: dict[str, Any] = {}
    if (bos := meta.get("tokenizer.ggml.bos_token_id")) is not None:
        ids["bos_token_id"] = int(bos)
    # Chat models may end a turn with an end-of-turn token distinct from EOS.
    keys = (
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    )
    eos = [int(meta[k]) for k in keys if meta.get(k) is not None]
    eos = list(dict.fromkeys(eos))
    if eos:
        ids["eos_token_id"] = eos[0] if len(eos) == 1 else eos
    return ids


def mlx_weight_name(gguf_name: str) -> str:
    """`blk.3.attn_q.scales` -> `model.layers.3.self_attn.q_proj.scales`."""
    match = _TENSOR_NAME.match(gguf_name)
    if match:
        layer, part, suffix = match.groups()
        if layer is None and part in _GLOBAL_NAMES:
            return f"{_GLOBAL_NAMES[part]}.{suffix}"
        if layer is not None and part in _BLOCK_NAMES:
            return f"model.layers.{layer}.{_BLOCK_NAMES[part]}.{suffix}"
    raise ModelLoadError(
        f"Unexpected tensor '{gguf_name}': this GGUF is not a plain llama, qwen2 or "
        "qwen3 model (mixture-of-experts and other variants are not supported)"
    )


def default_dtype() -> str:
    """float32 on CPU, bfloat16 on Apple GPUs.

    GGUF scales are float16, but float16 activations overflow in these
    models (SmolLM2 reaches ~25k in the residual stream) and garble the
    output; on MLX's CPU backend bfloat16 and float16 are also ~10x slower
    than float32. bfloat16 is what MLX's own quantized models use on Metal.
    """
    import mlx.core as mx

    return "bfloat16" if mx.metal.is_available() else "float32"


def translate_weights(weights: dict[str, Any], dtype: str) -> dict[str, Any]:
    """Rename to mlx-lm parameter names; float tensors (scales, norms) go to `dtype`."""
    import mlx.core as mx

    target = getattr(mx, dtype)
    out = {}
    for name, array in weights.items():
        if mx.issubdtype(array.dtype, mx.floating) and array.dtype != target:
            array = array.astype(target)
        out[mlx_weight_name(name)] = array
    return out


def quantization_config(weights: dict[str, Any], header: GGUFHeader) -> dict[str, Any] | None:
    """The `quantization` entry for config.json, from the loaded packed weights.

    The most common (group_size, bits) becomes the default; modules that
    differ, or are stored unquantized, get a per-module entry, which mlx-lm
    applies through its class_predicate.
    """
    per_module: dict[str, dict[str, int] | bool] = {}
    for gguf_name, info in header.tensors.items():
        if not gguf_name.endswith(".weight") or len(info.shape) != 2:
            continue
        module = mlx_weight_name(gguf_name)[: -len(".weight")]
        scales = weights.get(f"{module}.scales")
        if scales is None:
            per_module[module] = False
            continue
        in_dims = info.shape[-1]
        packed = weights[f"{module}.weight"].shape[-1]
        per_module[module] = {
            "group_size": in_dims // scales.shape[-1],
            "bits": packed * 32 // in_dims,
        }
    counts = Counter((q["group_size"], q["bits"]) for q in per_module.values() if q)
    if not counts:
        return None
    (group_size, bits), _ = counts.most_common(1)[0]
    default = {"group_size": group_size, "bits": bits}
    config: dict[str, Any] = dict(default)
    config.update({m: q for m, q in per_module.items() if q != default})
    return config


# --------------------------------------------------------------------------
# Tokenizer.
# --------------------------------------------------------------------------


def _pre_tokenizer(kind: str) -> Any:
    from tokenizers import Regex, pre_tokenizers

    regex = _SPLIT_REGEXES.get(kind)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=regex is None)
    if kind == "digits":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if regex is not None:
        split = pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False)
        return pre_tokenizers.Sequence([split, byte_level])
    return byte_level


def build_tokenizer(meta: dict[str, Any]) -> Any:
    """A byte-level BPE `tokenizers.Tokenizer` from the GGUF vocab and merges."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        log.warning("GGUF vocab has %d duplicate tokens", len(tokens) - len(vocab))
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    kind = PRE_TOKENIZER_KINDS[meta.get("tokenizer.ggml.pre", "default")]
    # Llama 3's tokenizer.json takes whole words found in the vocab as they are.
    llama3 = kind == "llama3"
    bpe = models.BPE(vocab=vocab, merges=merges, byte_fallback=False, ignore_merges=llama3)
    tokenizer = Tokenizer(bpe)
    if kind == "qwen2":
        tokenizer.normalizer = normalizers.NFC()  # as Qwen2's own tokenizer.json
    tokenizer.pre_tokenizer = _pre_tokenizer(kind)
    tokenizer.decoder = decoders.ByteLevel()

    types = meta.get("tokenizer.ggml.token_type") or []
    added = [
        AddedToken(tokens[i], special=t == _TOKEN_TYPE_CONTROL, normalized=False)
        for i, t in enumerate(types)
        if t in (_TOKEN_TYPE_CONTROL, _TOKEN_TYPE_USER_DEFINED)
    ]
    tokenizer.add_special_tokens([a for a in added if a.special])
    tokenizer.add_tokens([a for a in added if not a.special])

    bos_id = meta.get("tokenizer.ggml.bos_token_id")
    if meta.get("tokenizer.ggml.add_bos_token") and bos_id is not None:
        bos = tokens[int(bos_id)]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0",
            pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
            special_tokens=[(bos, int(bos_id))],
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def build_tokenizer_config(meta: dict[str, Any], context_length: int) -> dict[str, Any]:
    """tokenizer_config.json: special tokens and the chat template."""
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": context_length,
    }
    for name, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown")):
        token_id = meta.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None and 0 <= int(token_id) < len(tokens):
            config[f"{name}_token"] = tokens[int(token_id)]
    if template := meta.get("tokenizer.chat_template"):
        config["chat_template"] = template
    return config


# --------------------------------------------------------------------------
# The whole conversion.
# --------------------------------------------------------------------------


def model_folder_complete(path: Path) -> bool:
    """True if `path` holds every file a converted model needs, none empty."""
    return all((path / name).is_file() and (path / name).stat().st_size > 0 for name in MODEL_FILES)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _remove_stale_partials(out_dir: Path, max_age_s: float = 3600.0) -> None:
    """Delete temp folders left by crashed conversions (not a running one's)."""
    for stale in out_dir.parent.glob(f".{out_dir.name}.*.partial"):
        try:
            if time.time() - stale.stat().st_mtime > max_age_s:
                log.info("Removing stale partial conversion %s", stale)
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    """Rename the finished folder to `out_dir`, replacing any old one.

    A directory rename is atomic, so readers see either the old folder, no
    folder, or the complete new one: never a half-written model.
    """
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.{os.getpid()}.old.partial"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out_dir, old)
    os.rename(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def convert_gguf(
    gguf_path: Path,
    out_dir: Path,
    progress: Progress | None = None,
    *,
    dtype: str | None = None,
) -> Path:
    """Convert a llama, qwen2 or qwen3 GGUF into an MLX model folder at `out_dir`; return it.

    `dtype` is the float type for scales, biases and norms (and so for the
    activations); None picks `default_dtype()` for this machine.

    Raises ModelLoadError for unsupported architectures, quantization or
    tokenizers and for corrupt files. The folder appears all at once.
    """
    import mlx.core as mx

    report = progress or (lambda fraction, message: None)
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    started = time.perf_counter()

    report(0.0, "Reading GGUF header")
    header = read_gguf_header(gguf_path)
    check_supported(header)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out_dir)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent)
    )
    staging.chmod(0o755)  # mkdtemp makes it owner-only; the model folder should not be
    try:
        report(0.05, "Loading weights")
        raw_weights, meta = load_gguf(gguf_path, staging)

        report(0.6, "Translating weights")
        config = build_config(meta, header)
        dtype = dtype or default_dtype()
        weights = translate_weights(raw_weights, dtype)
        del raw_weights
        if (quantization := quantization_config(weights, header)) is not None:
            config["quantization"] = quantization
        config["minerva_gguf"] = {
            "converter_version": CONVERTER_VERSION,
            "dtype": dtype,
            "source": gguf_path.name,
            "source_bytes": gguf_path.stat().st_size,
        }

        report(0.7, "Building tokenizer")
        build_tokenizer(meta).save(str(staging / "tokenizer.json"))
        _write_json(
            staging / "tokenizer_config.json",
            build_tokenizer_config(meta, config["max_position_embeddings"]),
        )

        report(0.8, "Writing weights")
        mx.save_safetensors(str(staging / "model.safetensors"), weights, metadata={"format": "mlx"})
        # config.json last: a folder without it is never mistaken for a model.
        _write_json(staging / "config.json", config)

        report(0.95, "Finishing")
        _swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("Converted %s to %s in %.1f s", gguf_path.name, out_dir, time.perf_counter() - started)
    report(1.0, "Done")
    return out_dir
