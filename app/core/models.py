"""What a model folder or GGUF file on disk holds, read without MLX.

`LocalModel` is the one description of a loadable (or not) model that the
registry, the engine and the server share. Reading it only parses
config.json or a GGUF header: listing models must stay cheap.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.gguf_header import GGUFError, import_problem, read_gguf_header
from app.core.mlx_support import mlx_lm_problem

log = logging.getLogger(__name__)

FORMAT_MLX = "mlx"
FORMAT_GGUF = "gguf"


@dataclass(frozen=True)
class Quantization:
    """How the weights are stored: MLX's `quantization` entry, or a GGUF tensor type."""

    bits: int | None
    group_size: int | None = None
    mode: str = "affine"  # MLX: affine, mxfp4, ...; GGUF: the tensor type, e.g. Q4_0

    @property
    def label(self) -> str:
        if self.mode not in ("affine", ""):
            return self.mode.upper() if self.mode.islower() else self.mode
        return f"{self.bits}-bit" if self.bits else "unquantized"


@dataclass(frozen=True)
class LocalModel:
    """One model on disk.

    `source` says where it was found: "models" (the app's models folder),
    "hf-cache" (the Hugging Face cache), "folder" (a folder the user added)
    or "bundled". `supported` is whether mlx-lm can load it (for a GGUF file:
    whether Minerva can import it); `reason` says why not.
    """

    id: str
    path: Path
    size_bytes: int
    model_type: str | None = None
    name: str = ""
    format: str = FORMAT_MLX
    source: str = "models"
    quantization: Quantization | None = None
    context_length: int | None = None
    supported: bool = True
    reason: str | None = None
    repo_id: str | None = None

    @property
    def loadable(self) -> bool:
        """True if the engine can load it by id (the bundled GGUF converts itself)."""
        return self.supported and (self.format == FORMAT_MLX or self.source == "bundled")


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's settings; multimodal configs nest them in `text_config`."""
    nested = config.get("text_config")
    return {**config, **nested} if isinstance(nested, dict) else config


def _context_length(config: dict[str, Any]) -> int | None:
    for key in ("max_position_embeddings", "max_seq_len", "seq_length", "n_positions"):
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _quantization(config: dict[str, Any]) -> Quantization | None:
    quant = config.get("quantization") or config.get("quantization_config")
    if not isinstance(quant, dict) or "bits" not in quant:
        return None
    group = quant.get("group_size")
    return Quantization(
        int(quant["bits"]), int(group) if group else None, quant.get("mode", "affine")
    )


def _missing_shards(path: Path) -> list[str]:
    """Weight files a sharded model's index names but the folder lacks."""
    index = path / "model.safetensors.index.json"
    if not index.is_file():
        return []
    try:
        files = set(json.loads(index.read_text()).get("weight_map", {}).values())
    except (OSError, ValueError, AttributeError):
        return []
    return sorted(f for f in files if not (path / f).is_file())


def read_local_model(path: Path, model_id: str | None = None) -> LocalModel | None:
    """A LocalModel for an MLX model folder, or None if it is not one."""
    config_path = path / "config.json"
    if not config_path.is_file() or not any(path.glob("*.safetensors")):
        return None
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("Skipping %s: unreadable config.json (%s)", path, exc)
        return None
    if not isinstance(config, dict):
        log.warning("Skipping %s: config.json is not an object", path)
        return None
    inner = text_config(config)
    reason = mlx_lm_problem(config)
    if reason is None and (missing := _missing_shards(path)):
        reason = f"Incomplete download: {len(missing)} weight file(s) missing ({missing[0]}, ...)"
    return LocalModel(
        id=model_id or path.name,
        path=path,
        size_bytes=_folder_size(path),
        model_type=config.get("model_type"),
        name=path.name,
        quantization=_quantization(config),
        context_length=_context_length(inner),
        supported=reason is None,
        reason=reason,
    )


@dataclass(frozen=True)
class _GGUFFacts:
    architecture: str
    main_type: str | None
    context_length: int | None
    problem: str | None


@functools.lru_cache(maxsize=512)
def _gguf_facts(path: str, size: int, mtime_ns: int) -> _GGUFFacts:
    """What the registry shows of a GGUF, cached per file version.

    Reading a header skips a token list of up to ~250k strings: tens of
    milliseconds a file, paid again on every listing without this cache.
    `size` and `mtime_ns` are part of the key so a changed file is re-read.
    """
    header = read_gguf_header(Path(path))
    context = header.arch_value("context_length")
    return _GGUFFacts(
        header.architecture,
        header.main_tensor_type(),
        int(context) if isinstance(context, int) else None,
        import_problem(header),
    )


def read_gguf_model(path: Path, model_id: str | None = None) -> LocalModel | None:
    """A LocalModel for a GGUF file (loadable after importing), or None if unreadable."""
    try:
        st = path.stat()
        facts = _gguf_facts(str(path), st.st_size, st.st_mtime_ns)
    except (GGUFError, OSError) as exc:
        log.warning("Skipping %s: %s", path, exc)
        return None
    main_type = facts.main_type
    return LocalModel(
        id=model_id or path.name,
        path=path,
        size_bytes=st.st_size,
        model_type=facts.architecture,
        name=path.name[: -len(".gguf")] if path.name.endswith(".gguf") else path.name,
        format=FORMAT_GGUF,
        quantization=Quantization(_gguf_bits(main_type), None, main_type) if main_type else None,
        context_length=facts.context_length,
        supported=facts.problem is None,
        reason=facts.problem or "A GGUF file: import it to convert it to MLX before loading it",
    )


def _gguf_bits(type_name: str) -> int | None:
    digits = "".join(c for c in type_name.split("_")[0] if c.isdigit())
    return int(digits) if digits else None


def scan_models(models_dir: Path) -> list[LocalModel]:
    """Every MLX model folder directly under `models_dir`, sorted by id."""
    if not models_dir.is_dir():
        return []
    found = (
        read_local_model(p)
        for p in sorted(models_dir.iterdir())
        if p.is_dir() and not p.name.startswith(".")
    )
    return [m for m in found if m is not None]
