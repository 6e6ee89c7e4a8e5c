"""One registry of the models Minerva can load, wherever they are on disk.

Three places are searched:

* the app's models folder: MLX model folders (and `.gguf` files) directly
  inside it. Id: the folder (or file) name, e.g. `smollm2-135m-instruct`; a
  `.gguf` file in a folder of its own (a downloaded GGUF repo) is
  `<folder>/<file>`, e.g. `org--name/model-Q4_0.gguf` (hub repo ids never
  hold `--`, so this cannot clash with the next kind).
* the Hugging Face hub cache (`HF_HUB_CACHE`, or `HF_HOME/hub`, or
  `~/.cache/huggingface/hub`), so models fetched by mlx-lm, `hf download` or
  other tools are found: the snapshot of each model repo's `main` revision
  (else its newest one). Id: the repo id, e.g. `mlx-community/Qwen3-4B-4bit`
  (what mlx_lm.server calls it too); a GGUF file in a repo is
  `<repo id>/<path in repo>`.
* folders the user adds (kept in `model_folders.json` in the data folder):
  the folder itself if it is a model, else model folders and `.gguf` files
  up to three levels down (LM Studio's `org/name/` layout). Id:
  `folder:<name>`, with `-<6 hex digits of the path's hash>` added to every
  entry whose name more than one added folder uses.

The id forms cannot collide: folder names hold no `/` or `:`, repo ids hold
one `/` and no `--`, added-folder ids start with `folder:`. Ids are only ever
looked up in what was found, never joined onto a path, so no id can name a
file outside these places.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app.core.models import LocalModel, read_gguf_model, read_local_model
from app.hub import hf_cache

log = logging.getLogger(__name__)

FOLDERS_FILE = "model_folders.json"
FOLDER_PREFIX = "folder:"
_SEARCH_DEPTH = 3


class RegistryError(Exception):
    """A registry request that cannot be done; the message says why, for the user."""


@dataclass(frozen=True)
class DiskUsage:
    """Bytes the listed models take, by where they are."""

    models_dir: int
    hf_cache: int
    folders: int

    @property
    def total(self) -> int:
        return self.models_dir + self.hf_cache + self.folders


def default_hf_cache_dir() -> Path:
    """The hub cache huggingface_hub would use, read from the environment now.

    huggingface_hub reads these variables once, at import; reading them here
    lets a changed environment (and tests) take effect.
    """
    env = os.environ
    if path := env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(path).expanduser()
    if home := env.get("HF_HOME"):
        return Path(home).expanduser() / "hub"
    cache = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "huggingface" / "hub"


def reveal_command(path: Path, platform: str = sys.platform) -> list[str]:
    """The command that shows `path` in the system file manager (not run here)."""
    path = Path(path)
    if platform == "darwin":
        return ["open", "-R", str(path)]
    if platform.startswith("win"):
        return ["explorer", f"/select,{path}"]
    return ["xdg-open", str(path if path.is_dir() else path.parent)]


def reveal(path: Path) -> None:
    """Show `path` in the file manager, without waiting for it."""
    subprocess.Popen(reveal_command(path), start_new_session=True)  # noqa: S603


class ModelRegistry:
    """The models on disk: list, look up by id, add folders, delete, measure.

    Every call looks at the disk again (no cache to go stale): the models
    folder, hub cache and added folders can change under the app.
    """

    def __init__(
        self,
        models_dir: Path,
        folders_file: Path | None = None,
        hf_cache_dir: Path | None = None,
    ) -> None:
        self.models_dir = Path(models_dir)
        if folders_file is None:
            from app.core.paths import data_dir

            folders_file = data_dir() / FOLDERS_FILE
        self.folders_file = Path(folders_file)
        self._hf_cache_dir = Path(hf_cache_dir) if hf_cache_dir is not None else None

    @property
    def hf_cache_dir(self) -> Path:
        return self._hf_cache_dir or default_hf_cache_dir()

    # ----- listing ---------------------------------------------------------

    def models(self) -> list[LocalModel]:
        """Every model found: models folder, then hub cache, then added folders.

        A model reachable twice (an added folder inside the models folder)
        is listed once, under its first id.
        """
        found: list[LocalModel] = []
        ids: set[str] = set()
        paths: set[str] = set()
        for model in self._all_entries():
            where = os.path.realpath(model.path)
            if model.id in ids or where in paths:
                continue
            ids.add(model.id)
            paths.add(where)
            found.append(model)
        return found

    def get(self, model_id: str) -> LocalModel | None:
        """The model with this id, or None."""
        if not isinstance(model_id, str) or not model_id:
            return None
        return next((m for m in self.models() if m.id == model_id), None)

    def disk_usage(self) -> DiskUsage:
        sizes: Counter[str] = Counter()
        for model in self.models():
            sizes[model.source] += model.size_bytes
        return DiskUsage(sizes["models"], sizes["hf-cache"], sizes["folder"])

    def _all_entries(self) -> Iterator[LocalModel]:
        yield from self._models_dir_entries()
        yield from self._hf_cache_entries()
        yield from self._folder_entries()

    def _models_dir_entries(self) -> Iterator[LocalModel]:
        for path in _children(self.models_dir):
            model = _read_any(path, path.name)
            if model is not None:
                yield replace(model, source="models")
            elif path.is_dir():  # a downloaded GGUF repo: models/org--name/x.gguf
                for file in filter(_is_gguf, _children(path)):
                    gguf = read_gguf_model(file, f"{path.name}/{file.name}")
                    if gguf is not None:
                        yield replace(gguf, source="models")

    def _hf_cache_entries(self) -> Iterator[LocalModel]:
        for snapshot in hf_cache.model_snapshots(self.hf_cache_dir):
            yield from snapshot.entries()

    def _folder_entries(self) -> Iterator[LocalModel]:
        found = [
            model
            for folder in self.folders()
            for path in _model_paths(folder, _SEARCH_DEPTH)
            if (model := _read_any(path, path.name)) is not None
        ]
        names = Counter(m.id for m in found)
        for model in found:
            suffix = f"-{_path_hash(model.path)}" if names[model.id] > 1 else ""
            yield replace(model, id=f"{FOLDER_PREFIX}{model.id}{suffix}", source="folder")

    # ----- added folders ---------------------------------------------------

    def folders(self) -> list[Path]:
        """The folders the user added, in the order added."""
        try:
            data = json.loads(self.folders_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("Ignoring unreadable %s: %s", self.folders_file, exc)
            return []
        entries = data.get("folders", []) if isinstance(data, dict) else []
        return [Path(p) for p in entries if isinstance(p, str) and p]

    def add_folder(self, path: Path) -> list[LocalModel]:
        """Remember a folder to search; returns the models found in it."""
        folder = Path(path).expanduser().resolve()
        if not folder.is_dir():
            raise RegistryError(f"{folder} is not a folder")
        folders = self.folders()
        if folder not in folders:
            self._save_folders([*folders, folder])
            log.info("Added model folder %s", folder)
        return [m for m in self.models() if _is_within(m.path, folder)]

    def remove_folder(self, path_or_id: Path | str) -> bool:
        """Forget an added folder (given by path, or by the id of a model in it).

        Nothing on disk is deleted. Returns False if it was not in the list.
        """
        target = self._added_folder_for(path_or_id)
        folders = self.folders()
        if target is None or target not in folders:
            return False
        self._save_folders([f for f in folders if f != target])
        log.info("Removed model folder %s from the list", target)
        return True

    def _added_folder_for(self, path_or_id: Path | str) -> Path | None:
        if isinstance(path_or_id, str) and path_or_id.startswith(FOLDER_PREFIX):
            model = self.get(path_or_id)
            if model is None:
                return None
            holders = [f for f in self.folders() if _is_within(model.path, f)]
            return max(holders, key=lambda f: len(f.parts)) if holders else None
        return Path(path_or_id).expanduser().resolve()

    def _save_folders(self, folders: list[Path]) -> None:
        _write_json_atomic(self.folders_file, {"folders": [str(f) for f in folders]})

    # ----- deleting --------------------------------------------------------

    def delete(self, model_id: str) -> int:
        """Delete a model's files; returns the bytes freed.

        Only what the app owns is deleted: a folder or file directly in the
        models folder, or a repo (or one GGUF file) in the hub cache. Models
        in added folders are the user's: remove the folder from the list
        instead. The caller unloads the model first if it is loaded.
        """
        model = self.get(model_id)
        if model is None:
            raise RegistryError(f"The model '{model_id}' does not exist or is not installed.")
        if model.source == "models":
            return _delete_in(self.models_dir, model.path)
        if model.source == "hf-cache":
            try:
                return hf_cache.delete(self.hf_cache_dir, model)
            except hf_cache.HubCacheError as exc:
                raise RegistryError(str(exc)) from exc
        raise RegistryError(
            f"{model.id} is in a folder you added ({model.path.parent}); Minerva does not "
            "delete files there. Remove the folder from the list, or delete it yourself."
        )


# ----- helpers ---------------------------------------------------------------


def _children(folder: Path) -> list[Path]:
    """Visible entries of a folder, sorted; none if it cannot be read."""
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return []


def _is_gguf(path: Path) -> bool:
    return path.suffix.lower() == ".gguf" and path.is_file()


def _read_any(path: Path, model_id: str) -> LocalModel | None:
    if path.is_dir():
        return read_local_model(path, model_id)
    if _is_gguf(path):
        return read_gguf_model(path, model_id)
    return None


def _model_paths(folder: Path, depth: int) -> Iterator[Path]:
    """Model folders and GGUF files in `folder` (itself included), `depth` levels down."""
    if read_local_model(folder) is not None:
        yield folder
        return
    if depth <= 0:
        return
    for child in _children(folder):
        if child.is_dir():
            yield from _model_paths(child, depth - 1)
        elif _is_gguf(child):
            yield child


def _path_hash(path: Path) -> str:
    return hashlib.sha256(str(path).encode()).hexdigest()[:6]


def _is_within(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under `path`, each inode once, no symlink followed."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def _owned_by(root: Path, target: Path) -> bool:
    """True for an entry of `root` itself, or a GGUF file in a folder of `root`."""
    root = Path(os.path.abspath(root))
    if target.name in ("", ".", ".."):
        return False
    if target.parent == root:
        return True
    return target.parent.parent == root and _is_gguf(target) and not target.parent.is_symlink()


def _delete_in(root: Path, target: Path) -> int:
    """Delete `target`, an entry of `root` (or a GGUF one level down); returns bytes freed.

    A symlink is unlinked, never followed: what it points to is not ours.
    """
    target = Path(os.path.abspath(target))
    if not _owned_by(root, target):
        raise RegistryError(f"Refusing to delete {target}: it is not in {root}")
    if target.is_symlink():
        target.unlink()
        return 0
    if target.is_dir():
        freed = tree_bytes(target)
        shutil.rmtree(target)
    else:
        freed = target.stat().st_size
        target.unlink()
    log.info("Deleted %s (%d bytes)", target, freed)
    return freed
