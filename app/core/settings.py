"""Engine and server settings: plain dataclasses, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass

BUNDLED_MODEL_ID = "smollm2-135m-instruct"


@dataclass(frozen=True)
class EngineSettings:
    model: str = BUNDLED_MODEL_ID
    context_length: int = 8192
    kv_bits: int = 0  # 0 = full precision, else 4 or 8
    kv_group_size: int = 64
    max_concurrency: int = 8
    prefill_step_size: int = 512
    prefix_cache_bytes: int = 1 << 30
    prefix_cache_entries: int = 32
    # Clients such as OpenCode send max_tokens far beyond small contexts; clamp
    # to what is left (and report it) instead of failing every request.
    clamp_max_tokens: bool = True

    def __post_init__(self) -> None:
        if self.kv_bits not in (0, 4, 8):
            raise ValueError(f"kv_bits must be 0, 4 or 8, not {self.kv_bits}")
        if self.kv_group_size not in (32, 64, 128):
            raise ValueError(f"kv_group_size must be 32, 64 or 128, not {self.kv_group_size}")
        if self.context_length < 16:
            raise ValueError(f"context_length must be at least 16, not {self.context_length}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, not {self.max_concurrency}")


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 8 << 20
