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
    # None: a quarter of the memory available when the engine starts (an 8K-token
    # chat on an 8B model alone needs ~1 GB).
    prefix_cache_bytes: int | None = None
    prefix_cache_entries: int = 32
    # Clients such as OpenCode send max_tokens far beyond small contexts; clamp
    # to what is left (and report it) instead of failing every request.
    clamp_max_tokens: bool = True
    # Admission control: requests beyond max_concurrency wait, up to this many.
    max_queued: int = 64
    # KV cache memory all running requests may reserve; None = half the memory
    # available when the model loads.
    kv_budget_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.kv_bits not in (0, 4, 8):
            raise ValueError(f"kv_bits must be 0, 4 or 8, not {self.kv_bits}")
        if self.kv_group_size not in (32, 64, 128):
            raise ValueError(f"kv_group_size must be 32, 64 or 128, not {self.kv_group_size}")
        if self.context_length < 16:
            raise ValueError(f"context_length must be at least 16, not {self.context_length}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, not {self.max_concurrency}")


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 8 << 20
    max_messages: int = 4096
    # Bearer or x-api-key; required whenever the server listens beyond loopback.
    api_key: str | None = None
    # Extra names a client may use in the Host header (DNS-rebinding defence).
    allowed_hosts: tuple[str, ...] = ()
    # Browser origins allowed to call the API; "*" only if the user says so.
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.lan and not self.api_key:
            raise ValueError(
                f"Serving on {self.host} makes the API reachable from other machines; "
                "set an API key (--api-key) first."
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {self.port}")

    @property
    def lan(self) -> bool:
        """Whether the server listens on an address other machines can reach."""
        return self.host not in LOOPBACK_HOSTS and not self.host.startswith("127.")
