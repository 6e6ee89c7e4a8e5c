"""Random-weight model folders in real model shapes, loadable by mlx-lm and the app.

Decode speed depends on shapes and quantization, not on weight values, so a
folder built here (config.json, quantized *.safetensors, tokenizer files)
stands in for the real download on a machine without internet. The tokenizer
is the tiny byte-level BPE of tests/tiny_model.py, its vocabulary padded with
word-like tokens (" w1a2") up to the model's vocab size, so every id the
random model samples decodes to real text.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_LLAMA3_ROPE = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}
_YARN_ROPE = {
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "factor": 32.0,
    "original_max_position_embeddings": 4096,
    "rope_type": "yarn",
    "truncate": False,
}

# quant: "q4" = every Linear/Embedding affine 4-bit group 64 (mlx-community "-4bit");
# "mxfp4-q8" = MoE experts mxfp4 (group 32), everything else affine 8-bit group 64
# (mlx-community "gpt-oss-20b-MXFP4-Q8").
SHAPES: dict[str, dict] = {
    "llama8b": {
        "quant": "q4",
        "config": {
            "model_type": "llama",
            "hidden_size": 4096,
            "num_hidden_layers": 32,
            "intermediate_size": 14336,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "rms_norm_eps": 1e-5,
            "vocab_size": 128256,
            "rope_theta": 500000.0,
            "rope_scaling": _LLAMA3_ROPE,
            "max_position_embeddings": 131072,
            "tie_word_embeddings": False,
            "attention_bias": False,
            "mlp_bias": False,
        },
    },
    "gptoss20b": {
        "quant": "mxfp4-q8",
        "config": {
            "model_type": "gpt_oss",
            "num_hidden_layers": 24,
            "num_local_experts": 32,
            "num_experts_per_tok": 4,
            "vocab_size": 201088,
            "rms_norm_eps": 1e-5,
            "hidden_size": 2880,
            "intermediate_size": 2880,
            "head_dim": 64,
            "num_attention_heads": 64,
            "num_key_value_heads": 8,
            "sliding_window": 128,
            "rope_theta": 150000,
            "rope_scaling": _YARN_ROPE,
            "layer_types": ["sliding_attention", "full_attention"] * 12,
            "max_position_embeddings": 131072,
            "tie_word_embeddings": False,
        },
    },
    # Tiny versions of both, for dry runs on a CPU.
    "tiny": {
        "quant": "q4",
        "config": {
            "model_type": "llama",
            "hidden_size": 256,
            "num_hidden_layers": 2,
            "intermediate_size": 512,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 64,
            "rms_norm_eps": 1e-5,
            "vocab_size": 2048,
            "rope_theta": 500000.0,
            "rope_scaling": _LLAMA3_ROPE,
            "max_position_embeddings": 131072,
            "tie_word_embeddings": False,
        },
    },
    "tiny-moe": {
        "quant": "mxfp4-q8",
        "config": {
            "model_type": "gpt_oss",
            "num_hidden_layers": 2,
            "num_local_experts": 4,
            "num_experts_per_tok": 2,
            "vocab_size": 2048,
            "rms_norm_eps": 1e-5,
            "hidden_size": 256,
            "intermediate_size": 256,
            "head_dim": 64,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "sliding_window": 128,
            "rope_theta": 150000,
            "rope_scaling": _YARN_ROPE,
            "layer_types": ["sliding_attention", "full_attention"],
            "max_position_embeddings": 131072,
            "tie_word_embeddings": False,
        },
    },
}


def _padded_tokenizer(out: Path, vocab_size: int) -> None:
    """The tiny test tokenizer, its BPE vocab padded to `vocab_size` ids."""
    from tests.tiny_model import _tokenizer

    base = _tokenizer(out)
    path = out / "tokenizer.json"
    data = json.loads(path.read_text())
    vocab: dict[str, int] = data["model"]["vocab"]
    taken = set(vocab) | {t["content"] for t in data.get("added_tokens", [])}
    next_id, i = max(max(vocab.values()) + 1, base), 0
    while next_id < vocab_size:
        word = "\u0120w" + _base36(i)  # \u0120 is byte-level BPE's space
        i += 1
        if word in taken:
            continue
        vocab[word] = next_id
        next_id += 1
    path.write_text(json.dumps(data, ensure_ascii=False))


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    s = ""
    while True:
        n, r = divmod(n, 36)
        s = digits[r] + s
        if n == 0:
            return s


def _quant_predicate(kind: str):
    import mlx.nn as nn
    from mlx_lm.models.switch_layers import SwitchLinear

    def predicate(path: str, module) -> bool | dict:
        if isinstance(module, SwitchLinear):
            if kind == "mxfp4-q8":
                return {"group_size": 32, "bits": 4, "mode": "mxfp4"}
            return {"group_size": 64, "bits": 4, "mode": "affine"}
        if isinstance(module, (nn.Linear, nn.Embedding)):
            if module.weight.shape[-1] % 64:
                return False
            bits = 4 if kind == "q4" else 8
            return {"group_size": 64, "bits": bits, "mode": "affine"}
        return False

    return predicate


def _random_model(config: dict, quant: str, seed: int):
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.utils import _get_classes

    mx.random.seed(seed)
    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(config))
    model.set_dtype(mx.bfloat16)
    predicate = _quant_predicate(quant)
    # Quantize layer by layer so the float weights never all exist at once.
    for layer in model.layers:
        nn.quantize(layer, class_predicate=predicate)
        mx.eval(layer.parameters())
    nn.quantize(model, class_predicate=predicate)
    mx.eval(model.parameters())
    mx.eval(model(mx.array([[1, 2, 3]])))  # every kernel this quantization needs exists
    return model


def build(shape: str, out: Path, *, seed: int = 0) -> Path:
    """Write a random-weight model folder for `shape` at `out` (skipped if it exists)."""
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import save_model

    t0 = time.perf_counter()
    spec = SHAPES[shape]
    config = dict(spec["config"])
    config["eos_token_id"] = 2  # <|im_end|> of the tiny tokenizer
    out.mkdir(parents=True, exist_ok=True)
    _padded_tokenizer(out, config["vocab_size"])

    quant = spec["quant"]
    try:
        model = _random_model(config, quant, seed)
    except Exception as exc:  # e.g. no mxfp4 gather kernel on this backend
        print(f"{quant} failed ({exc}); experts fall back to affine 4-bit", file=sys.stderr)
        quant = "q4-q8"
        model = _random_model(config, quant, seed)
    save_model(out, model)
    config["quantization"] = {"group_size": 64, "bits": 4 if quant == "q4" else 8}
    (out / "quant.txt").write_text(quant)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    nbytes = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    print(f"built {shape} in {out}: {nbytes / 1e9:.2f} GB of weights, "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    del model
    mx.clear_cache()
    return out


if __name__ == "__main__":
    build(sys.argv[1], Path(sys.argv[2]))
