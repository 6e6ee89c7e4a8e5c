"""The repos the fake hub serves in tests: the real bundled model, and small synthetic ones."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.hub.hub_server import FakeHub, make_safetensors

BUNDLED = "mlx-community/SmolLM2-135M-Instruct-4bit"
SMALL = "acme/small-mlx"  # ~4 MB, for the fault tests
SMALL_2 = "acme/small-mlx-2"
SMALL_3 = "acme/small-mlx-3"
FP16 = "acme/tiny-fp16"  # unquantized, gated
GGUF = "bartowski/Tiny-Qwen-GGUF"
QWEN_MLX = "mlx-community/Tiny-Qwen-4bit"
OTHER_MLX = "someone/Tiny-Qwen-mlx-8bit"
PRIVATE = "acme/secret-mlx"

GGUF_FILES = ["Tiny-Qwen-Q4_K_M.gguf", "Tiny-Qwen-Q8_0.gguf"]
TOKEN = "hf_test_token"

SMALL_CONFIG = {
    "model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000,
    "max_position_embeddings": 4096, "tie_word_embeddings": True,
    "quantization": {"group_size": 64, "bits": 8, "mode": "affine"},
}


def small_files(weights: int = 1_000_000) -> dict[str, bytes]:
    """config, tokenizer bits and ~4 MB of random (incompressible, unique) weights."""
    st = make_safetensors({"w": ("F32", [weights])})
    st = st[: len(st) - 4 * weights] + os.urandom(4 * weights)
    return {
        "config.json": json.dumps(SMALL_CONFIG).encode(),
        "tokenizer.json": b'{"version": "1.0"}',
        "tokenizer_config.json": b"{}",
        "chat_template.jinja": b"{{ messages }}",
        "model.safetensors": st,
        "README.md": b"# small",
        "modeling_small.py": b"print('never run me')",
        "original/consolidated.safetensors": make_safetensors({"x": ("F16", [8])}),
    }


def populate(hub: FakeHub, bundled: Path) -> None:
    files = {p.name: p for p in sorted(bundled.iterdir()) if p.is_file()}
    hub.add_repo(BUNDLED, files | {"README.md": b"# SmolLM2", "model.py": b"import os"},
                 tags=["mlx", "safetensors", "llama", "license:apache-2.0"],
                 card_data={"license": "apache-2.0", "library_name": "mlx"}, library_name="mlx",
                 downloads=500, likes=10, last_modified="2024-06-01T00:00:00.000Z")
    hub.add_repo(QWEN_MLX, small_files(), tags=["mlx", "license:mit"], library_name="mlx",
                 downloads=100, likes=50, last_modified="2025-01-01T00:00:00.000Z")
    hub.add_repo(OTHER_MLX, small_files(), tags=["mlx"], library_name="mlx",
                 downloads=10_000, likes=1, last_modified="2024-03-01T00:00:00.000Z")
    for repo in (SMALL, SMALL_2, SMALL_3):
        hub.add_repo(repo, small_files(), tags=["mlx"], library_name="mlx", downloads=1)
    hub.add_repo(PRIVATE, small_files(), tags=["mlx"], private=True)
    fp16_config = {k: v for k, v in SMALL_CONFIG.items() if k != "quantization"}
    hub.add_repo(FP16, {"config.json": json.dumps(fp16_config).encode(),
                        "model.safetensors": make_safetensors({"a": ("F16", [1000, 64]),
                                                               "b": ("BF16", [300])})},
                 tags=["safetensors", "license:llama3"], gated="manual", downloads=3)
    gguf = {name: b"GGUF\x03\x00\x00\x00" + os.urandom(200_000 + i) for i, name in enumerate(GGUF_FILES)}
    hub.add_repo(GGUF, gguf | {"README.md": b"# gguf"}, tags=["gguf", "license:apache-2.0"],
                 downloads=7_000, likes=70, last_modified="2025-02-01T00:00:00.000Z",
                 gguf={"total": 494_032_768, "architecture": "qwen2", "context_length": 32768})
