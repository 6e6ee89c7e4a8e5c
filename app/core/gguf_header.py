"""Read a GGUF file's header (metadata and tensor table) in pure Python.

Kept free of MLX so the model registry can describe GGUF files, and say
whether Minerva can import them, without loading the engine. The engine's
converter (`app.engine.gguf`) uses the same reader and checks.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO


class GGUFError(ValueError):
    """The file is not a GGUF this code can read, or cannot be imported."""


# GGML tensor type ids (ggml.h), for naming what a file uses.
GGML_TYPE_NAMES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
    17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
    23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M",
    30: "BF16", 39: "MXFP4",
}  # fmt: skip
# The types MLX loads exactly -> (elements per block, bytes per block).
SUPPORTED_BLOCKS = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 8: (32, 34)}
SUPPORTED_TENSOR_TYPES = frozenset(SUPPORTED_BLOCKS)  # F32, F16, Q4_0, Q4_1, Q8_0
SUPPORTED_TYPE_NAMES = "Q4_0, Q4_1 or Q8_0, or unquantized F16/F32"

# GGUF architectures the converter maps onto mlx-lm model classes.
SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3")
SUPPORTED_ARCHITECTURE_NAMES = "llama (Llama, Mistral, SmolLM, TinyLlama, ...), qwen2 and qwen3"

# tokenizer.ggml.pre -> pre-tokenizer kind, after llama.cpp's llama-vocab.cpp.
# Anything unknown is refused rather than guessed.
PRE_TOKENIZER_KINDS = {
    "default": "gpt2",
    "gpt-2": "gpt2",
    "smollm": "digits",
    "starcoder": "digits",
    "refact": "digits",
    "llama-bpe": "llama3",
    "llama3": "llama3",
    "llama-v3": "llama3",
    "smaug-bpe": "llama3",
    "qwen2": "qwen2",
    "deepseek-r1-qwen": "qwen2",
    "megrez": "qwen2",
}

# GGUF metadata value types: id -> struct format (None: string / array).
_VALUE_FORMATS: dict[int, str | None] = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
    8: None, 9: None, 10: "<Q", 11: "<q", 12: "<d",
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry; `shape` is in MLX order (outermost first)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int

    @property
    def type_name(self) -> str:
        return GGML_TYPE_NAMES.get(self.ggml_type, f"type {self.ggml_type}")

    @property
    def elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass(frozen=True)
class GGUFHeader:
    """What a GGUF says about itself, read without touching the tensor data."""

    version: int
    metadata: dict[str, Any]  # scalars and strings only; arrays are skipped
    tensors: dict[str, TensorInfo]

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch_value(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def main_tensor_type(self) -> str | None:
        """The type holding most matrix elements (what a file is "quantized as")."""
        counts: Counter[str] = Counter()
        for info in self.tensors.values():
            if len(info.shape) >= 2:
                counts[info.type_name] += info.elements
        return counts.most_common(1)[0][0] if counts else None


def _read(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise GGUFError("The GGUF file ends early (incomplete download?)")
    return struct.unpack(fmt, data)[0]


def _read_string(f: BinaryIO, file_size: int) -> str:
    length = _read(f, "<Q")
    if length > file_size - f.tell():
        raise GGUFError("The GGUF file is corrupt (a string runs past the end)")
    return f.read(length).decode("utf-8", errors="replace")


def _skip_array(f: BinaryIO, file_size: int) -> None:
    """Skip one array value without decoding it (token lists are large)."""
    elem_type, count = _read(f, "<I"), _read(f, "<Q")
    if elem_type == 8:
        for _ in range(count):
            f.seek(_read(f, "<Q"), os.SEEK_CUR)
    elif (fmt := _VALUE_FORMATS.get(elem_type)) is not None:
        f.seek(struct.calcsize(fmt) * count, os.SEEK_CUR)
    else:
        raise GGUFError(f"The GGUF file is corrupt (array of value type {elem_type})")
    if f.tell() > file_size:
        raise GGUFError("The GGUF file ends early (incomplete download?)")


def _read_value(f: BinaryIO, value_type: int, file_size: int) -> Any:
    if value_type == 8:
        return _read_string(f, file_size)
    if value_type == 9:
        _skip_array(f, file_size)
        return None
    fmt = _VALUE_FORMATS.get(value_type)
    if fmt is None:
        raise GGUFError(f"The GGUF file is corrupt (metadata value type {value_type})")
    return _read(f, fmt)


def tensor_nbytes(info: TensorInfo) -> int:
    """Bytes of a tensor's data; only for SUPPORTED_BLOCKS types."""
    block, block_bytes = SUPPORTED_BLOCKS[info.ggml_type]
    return (info.elements + block - 1) // block * block_bytes


def read_gguf_header(path: Path) -> GGUFHeader:
    """Parse a GGUF's metadata and tensor table; GGUFError if it is not one."""
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as f:
            return _parse_header(f, file_size)
    except OSError as exc:
        raise GGUFError(f"Cannot read {path}: {exc.strerror or exc}") from exc


def _parse_header(f: BinaryIO, file_size: int) -> GGUFHeader:
    if f.read(4) != b"GGUF":
        raise GGUFError("Not a GGUF file (bad magic bytes)")
    version = _read(f, "<I")
    if version not in (2, 3):
        raise GGUFError(f"Unsupported GGUF version {version} (need 2 or 3)")
    tensor_count, kv_count = _read(f, "<Q"), _read(f, "<Q")
    if tensor_count > file_size or kv_count > file_size:
        raise GGUFError("The GGUF file is corrupt (impossible header counts)")

    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = _read_string(f, file_size)
        value = _read_value(f, _read(f, "<I"), file_size)
        if value is not None:
            metadata[key] = value

    tensors: dict[str, TensorInfo] = {}
    offsets: dict[str, int] = {}
    for _ in range(tensor_count):
        name = _read_string(f, file_size)
        n_dims = _read(f, "<I")
        if n_dims > 8:
            raise GGUFError(f"The GGUF file is corrupt (tensor {name} has {n_dims} dims)")
        dims = [_read(f, "<Q") for _ in range(n_dims)]
        tensors[name] = TensorInfo(name, tuple(reversed(dims)), _read(f, "<I"))
        offsets[name] = _read(f, "<Q")

    alignment = int(metadata.get("general.alignment", 32)) or 32
    data_start = -(-f.tell() // alignment) * alignment
    for name, info in tensors.items():
        if info.ggml_type not in SUPPORTED_BLOCKS:
            continue  # refused by import_problem, with a better message
        if data_start + offsets[name] + tensor_nbytes(info) > file_size:
            raise GGUFError(
                f"The GGUF file is truncated: tensor {name} runs past the end "
                "(incomplete download?)"
            )
    return GGUFHeader(version, metadata, tensors)


def import_problem(header: GGUFHeader) -> str | None:
    """Why Minerva cannot import this GGUF exactly, or None if it can.

    Every message names what is supported, so the user knows what to get
    instead.
    """
    arch = header.architecture
    if int(header.metadata.get("split.count", 1) or 1) > 1:
        return (
            "This GGUF is one part of a split model: merge the parts into one file "
            "(llama-gguf-split --merge) and import that"
        )
    if arch not in SUPPORTED_ARCHITECTURES:
        return (
            f"Unsupported model architecture '{arch}': Minerva can import GGUF models of "
            f"the {SUPPORTED_ARCHITECTURE_NAMES} architectures"
        )
    bad = Counter(
        t.type_name for t in header.tensors.values() if t.ggml_type not in SUPPORTED_TENSOR_TYPES
    )
    if bad:
        found = ", ".join(f"{name} ({n} tensors)" for name, n in bad.most_common())
        return (
            f"Unsupported GGUF quantization: {found}. Minerva can import GGUF files "
            f"quantized as {SUPPORTED_TYPE_NAMES}"
        )
    tokenizer_model = header.metadata.get("tokenizer.ggml.model")
    if tokenizer_model != "gpt2":
        return (
            f"Unsupported tokenizer type '{tokenizer_model}': only byte-level BPE "
            "('gpt2') GGUF tokenizers can be imported for now"
        )
    pre = header.metadata.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZER_KINDS:
        known = ", ".join(sorted(PRE_TOKENIZER_KINDS))
        return f"Unsupported GGUF pre-tokenizer '{pre}' (supported: {known})"
    if "rope_freqs.weight" in header.tensors:
        return "Llama 3.1-style RoPE frequency scaling is not supported yet"
    return None
