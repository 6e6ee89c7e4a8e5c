"""The local model registry: which model folders can be loaded, by id."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalModel:
    id: str
    path: Path
    size_bytes: int
    model_type: str | None = None


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def read_local_model(path: Path, model_id: str | None = None) -> LocalModel | None:
    """A LocalModel for an MLX model folder, or None if it is not one."""
    config_path = path / "config.json"
    if not config_path.is_file() or not any(path.glob("*.safetensors")):
        return None
    try:
        model_type = json.loads(config_path.read_text()).get("model_type")
    except (OSError, ValueError) as exc:
        log.warning("Skipping %s: unreadable config.json (%s)", path, exc)
        return None
    return LocalModel(model_id or path.name, path, _folder_size(path), model_type)


def scan_models(models_dir: Path) -> list[LocalModel]:
    """Every loadable model folder directly under `models_dir`, sorted by id."""
    if not models_dir.is_dir():
        return []
    found = (read_local_model(p) for p in sorted(models_dir.iterdir()) if p.is_dir())
    return [m for m in found if m is not None]
