"""Import a GGUF file as a new model folder under the models directory.

`convert_gguf` writes to a folder it is given and replaces what is there;
importing picks a fresh, safe folder name instead, so an import never
overwrites an installed model, and the folder name becomes the model's id.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from app.core.settings import BUNDLED_MODEL_ID
from app.engine.gguf import Progress, check_supported, convert_gguf, read_gguf_header
from app.engine.types import ModelLoadError

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Names the app uses itself, never given to an import.
_RESERVED = {BUNDLED_MODEL_ID}


def safe_folder_name(name: str) -> str:
    """A folder name (and model id) made of letters, digits, '.', '_' and '-'.

    `Qwen2.5 0.5B (Q8_0).gguf` -> `Qwen2.5-0.5B-Q8_0`. Never empty, never
    starts with '.' (hidden, and the converter's temp folders), never '..'.
    """
    stem = name[: -len(".gguf")] if name.lower().endswith(".gguf") else name
    cleaned = _UNSAFE.sub("-", stem).strip("-._")[:MAX_NAME_LENGTH].strip("-._")
    return cleaned or "gguf-model"


def _reserve_folder(models_dir: Path, base: str) -> Path:
    """Create and return `models_dir/base`, or `base-2`, `base-3`, ... if taken.

    `mkdir` fails if the folder exists, so two imports of the same file at
    once still get two folders.
    """
    models_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        candidate = base if n == 1 else f"{base}-{n}"
        if candidate in _RESERVED:
            continue
        try:
            (models_dir / candidate).mkdir()
        except FileExistsError:
            continue
        return models_dir / candidate
    raise ModelLoadError(f"Too many models named {base} in {models_dir}")


def import_gguf(
    path: Path,
    models_dir: Path,
    name: str | None = None,
    progress: Progress | None = None,
) -> Path:
    """Convert the GGUF at `path` into a new MLX folder under `models_dir`; return it.

    The folder is named after `name` (or the file), made safe and unique;
    its name is the imported model's id. Unsupported files are refused,
    naming what is supported, before anything is written.
    """
    path = Path(path)
    check_supported(read_gguf_header(path))
    folder = _reserve_folder(Path(models_dir), safe_folder_name(name or path.name))
    log.info("Importing %s as %s", path.name, folder.name)
    try:
        return convert_gguf(path, folder, progress)
    except BaseException:
        _remove_if_empty(folder)
        raise


def _remove_if_empty(folder: Path) -> None:
    try:
        os.rmdir(folder)
    except OSError:
        pass  # not empty (or already gone): never delete a model here
