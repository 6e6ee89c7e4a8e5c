"""How much memory this machine can give a model, for the load-time guard."""

from __future__ import annotations

import os
from pathlib import Path

import mlx.core as mx


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def available_memory_bytes() -> int:
    """Bytes a model may use: Metal's working-set limit on a Mac, free RAM elsewhere."""
    if mx.metal.is_available():
        info = mx.device_info()
        return int(info.get("max_recommended_working_set_size") or info["memory_size"])
    if mx.cuda.is_available():
        info = mx.device_info()
        if "memory_size" in info:
            return int(info["memory_size"])
    available = _meminfo_available()
    if available is not None:
        return available
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def weights_bytes(model_dir: Path) -> int:
    return sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
