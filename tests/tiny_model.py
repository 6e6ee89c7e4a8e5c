"""A tiny random-weight llama with a real byte-level BPE tokenizer and ChatML template.

Fast engine tests run on it: MLX on a Linux CPU decodes the real bundled
model at ~10 tok/s, this one at hundreds.
"""

from __future__ import annotations

import json
from pathlib import Path

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Hello there! How are you today? I am fine, thank you very much.",
    "Large language models predict the next token from the previous ones.",
    "Minerva runs models locally on a Mac with MLX, and on Linux too.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Émoji and accents: café, naïve, 日本語.",
] * 20


THINKING_CHATML = (
    "{% if reasoning_effort is defined %}<|im_start|>system\nReasoning: {{ reasoning_effort }}<|im_end|>\n{% endif %}"
    + CHATML.replace("<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant\n<think>\n{% endif %}")
)


def _tokenizer(out: Path, thinking: bool = False) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIALS + (["<think>", "</think>"] if thinking else []),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "chat_template": THINKING_CHATML if thinking else CHATML,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return tok.get_vocab_size()


def build_tiny_model(
    out: Path, *, layers: int = 2, hidden: int = 128, seed: int = 0, thinking: bool = False
) -> Path:
    """`thinking=True`: <think> tokens and a Qwen3-style template that opens <think>."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    out.mkdir(parents=True, exist_ok=True)
    vocab = _tokenizer(out, thinking)
    config = {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": hidden * 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab,
        "rope_theta": 10000.0,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
        "eos_token_id": SPECIALS.index("<|im_end|>"),
    }
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    # Wider weights than the default init, so greedy text is varied, not one token.
    weights = {
        k: mx.random.normal(v.shape) * 0.2 if v.ndim == 2 else v
        for k, v in tree_flatten(model.parameters())
    }
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out
