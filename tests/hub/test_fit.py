"""Memory-fit estimates: weights + KV cache + overhead against available memory."""

from __future__ import annotations

import pytest

from app.hub.fit import (
    FITS,
    TIGHT,
    WONT_FIT,
    estimate_fit,
    kv_cache_bytes,
    layer_windows,
    system_memory,
)

GB = 1e9

# The shape of openai/gpt-oss-20b's config.json (MXFP4 experts, ~12.1 GB of weights).
GPT_OSS_20B = {
    "model_type": "gpt_oss",
    "num_hidden_layers": 24,
    "hidden_size": 2880,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "sliding_window": 128,
    "layer_types": ["sliding_attention", "full_attention"] * 12,
    "max_position_embeddings": 131072,
    "num_local_experts": 32,
    "quantization": {"group_size": 32, "bits": 4, "mode": "mxfp4"},
}
GPT_OSS_WEIGHTS = 12_100_000_000

# A Llama-3-8B shape: 32 layers, 8 KV heads of 128, all full attention.
LLAMA_8B = {
    "model_type": "llama",
    "num_hidden_layers": 32,
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "torch_dtype": "bfloat16",
}


def test_gpt_oss_20b_kv_cache_grows_only_in_full_attention_layers():
    at_32k = kv_cache_bytes(GPT_OSS_20B, 32 * 1024)
    at_128k = kv_cache_bytes(GPT_OSS_20B, 128 * 1024)
    assert at_32k == pytest.approx(0.8 * GB, rel=0.03)
    assert at_128k == pytest.approx(3.2 * GB, rel=0.03)
    # 12 full layers x 2 (K, V) x 8 heads x 64 dims x 2 bytes per token;
    # the 12 sliding layers cap at 128 tokens.
    per_token_full = 12 * 2 * 8 * 64 * 2
    sliding = 12 * 2 * 8 * 64 * 2 * 128
    assert at_128k - at_32k == per_token_full * (128 - 32) * 1024
    assert at_32k == per_token_full * 32 * 1024 + sliding


def test_gpt_oss_20b_fit_on_common_macs():
    # A 16 GB Mac gives Metal ~12 GB: the weights alone do not fit.
    assert (
        estimate_fit(GPT_OSS_20B, GPT_OSS_WEIGHTS, 32768, available_bytes=12 * GB).verdict
        == WONT_FIT
    )
    roomy = estimate_fit(GPT_OSS_20B, GPT_OSS_WEIGHTS, 32768, available_bytes=36 * GB)
    assert roomy.verdict == FITS
    assert roomy.total_bytes == roomy.weights_bytes + roomy.kv_cache_bytes + roomy.overhead_bytes
    assert roomy.total_bytes == pytest.approx((12.1 + 0.8 + 2.42) * GB, rel=0.02)
    assert "Fits" in roomy.message and "0.8 GB KV cache at 32,768 tokens" in roomy.message
    tight = estimate_fit(GPT_OSS_20B, GPT_OSS_WEIGHTS, 131072, available_bytes=18 * GB)
    assert tight.verdict == TIGHT and "Tight" in tight.message
    assert (
        "Won't fit"
        in estimate_fit(GPT_OSS_20B, GPT_OSS_WEIGHTS, 131072, available_bytes=8 * GB).message
    )


def test_layer_windows_from_layer_types_and_gemma_patterns():
    assert layer_windows(GPT_OSS_20B)[:4] == [128, None, 128, None]
    gemma3 = {
        "text_config": {
            "num_hidden_layers": 12,
            "sliding_window": 1024,
            "sliding_window_pattern": 6,
        }
    }
    windows = layer_windows(gemma3)
    assert windows.count(None) == 2 and windows[5] is None and windows[11] is None
    hybrid = {"num_hidden_layers": 4, "layer_types": ["linear_attention"] * 3 + ["full_attention"]}
    assert layer_windows(hybrid) == [0, 0, 0, None]
    assert layer_windows(LLAMA_8B) == [None] * 32


def test_llama_8b_kv_cache_and_quantized_kv():
    full = kv_cache_bytes(LLAMA_8B, 8192)
    assert full == 32 * 2 * 8 * 128 * 8192 * 2  # 1.07 GB: the well-known 128 KB per token
    # 8-bit with group 64: 1 byte + a bf16 scale and bias per 64 elements.
    assert kv_cache_bytes(LLAMA_8B, 8192, kv_bits=8, kv_group_size=64) == int(
        full / 2 * (1 + 4 / 64)
    )
    assert kv_cache_bytes(LLAMA_8B, 8192, kv_bits=4, kv_group_size=32) == int(
        full / 2 * (0.5 + 4 / 32)
    )
    assert kv_cache_bytes(LLAMA_8B, 8192, sequences=4) == 4 * full


def test_sliding_layers_stay_full_precision_when_kv_is_quantized():
    quantized = kv_cache_bytes(GPT_OSS_20B, 32768, kv_bits=8)
    full_layers = 12 * 2 * 8 * 64 * 32768 * (1 + 4 / 64)
    sliding_layers = 12 * 2 * 8 * 64 * 128 * 2
    assert quantized == int(full_layers + sliding_layers)


def test_float32_models_use_four_bytes_per_element():
    converted = {**LLAMA_8B, "torch_dtype": None, "minerva_gguf": {"dtype": "float32"}}
    assert kv_cache_bytes(converted, 1024) == 2 * kv_cache_bytes(LLAMA_8B, 1024)


def test_small_model_fits_and_head_dim_defaults_from_hidden_size():
    tiny = {
        "num_hidden_layers": 2,
        "hidden_size": 128,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
    }
    assert kv_cache_bytes(tiny, 2048) == 2 * 2 * 1 * 64 * 2048 * 2
    estimate = estimate_fit(tiny, 1_000_000, 2048, available_bytes=8 * GB)
    assert estimate.verdict == FITS and estimate.overhead_bytes == 200_000


def test_system_memory_on_linux_reads_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(
        "MemTotal:       16000000 kB\nMemFree:  1000 kB\nMemAvailable:   12000000 kB\n"
    )
    info = system_memory("linux", meminfo)
    assert info.total_bytes == 16000000 * 1024 and info.available_bytes == 12000000 * 1024
    assert "MemAvailable" in info.source


def test_system_memory_on_macos_uses_the_metal_working_set(monkeypatch):
    from app.hub import fit

    monkeypatch.setattr(fit, "_sysctl_memsize", lambda: 16 * 1024**3)
    info = system_memory("darwin")
    assert info.total_bytes == 16 * 1024**3 and info.available_bytes == 12 * 1024**3


def test_system_memory_here_is_positive():
    info = system_memory()
    assert 0 < info.available_bytes <= info.total_bytes
    assert estimate_fit(LLAMA_8B, 1, 16).available_bytes > 0
