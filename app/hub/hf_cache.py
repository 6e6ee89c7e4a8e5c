"""Models in the Hugging Face hub cache, through huggingface_hub's own scanner.

The cache layout (`models--org--name/{blobs,refs,snapshots}`) is
huggingface_hub's business, and so is deleting from it (blobs may be
shared between revisions and, in recent versions, between repos), so both
go through `scan_cache_dir` and its delete strategies.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app.core.models import FORMAT_GGUF, LocalModel, read_gguf_model, read_local_model

log = logging.getLogger(__name__)


class HubCacheError(Exception):
    """A cache entry that is gone, or not where a repo must be."""


@dataclass(frozen=True)
class Snapshot:
    """The revision of one cached model repo that the registry shows."""

    repo_id: str
    path: Path
    size_bytes: int
    gguf_files: tuple[Path, ...]

    def entries(self) -> Iterator[LocalModel]:
        name = self.repo_id.split("/")[-1]
        model = read_local_model(self.path, self.repo_id)
        if model is not None:
            yield replace(
                model,
                name=name,
                size_bytes=self.size_bytes,
                source="hf-cache",
                repo_id=self.repo_id,
            )
        for file in self.gguf_files:
            relative = file.relative_to(self.path).as_posix()
            gguf = read_gguf_model(file, f"{self.repo_id}/{relative}")
            if gguf is not None:
                yield replace(gguf, source="hf-cache", repo_id=self.repo_id)


def _scan(cache_dir: Path) -> Any | None:
    """huggingface_hub's HFCacheInfo for `cache_dir`, or None if there is no cache."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir)
    except (CacheNotFound, ValueError, OSError) as exc:
        log.debug("No usable hub cache at %s: %s", cache_dir, exc)
        return None
    for warning in info.warnings:
        log.warning("Hub cache: %s", warning)
    return info


def _shown_revision(repo: Any) -> Any | None:
    """The `main` revision, else the most recently modified one."""
    revisions = list(repo.revisions)
    main = [r for r in revisions if "main" in r.refs]
    if main:
        return main[0]
    return max(revisions, key=lambda r: r.last_modified, default=None)


def model_snapshots(cache_dir: Path) -> list[Snapshot]:
    """One Snapshot per cached model repo, sorted by repo id."""
    info = _scan(cache_dir)
    if info is None:
        return []
    found = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        revision = _shown_revision(repo) if repo.repo_type == "model" else None
        if revision is None:
            continue
        ggufs = sorted(f.file_path for f in revision.files if f.file_name.lower().endswith(".gguf"))
        found.append(
            Snapshot(repo.repo_id, revision.snapshot_path, revision.size_on_disk, tuple(ggufs))
        )
    return found


def _cached_repo(info: Any, cache_dir: Path, repo_id: str) -> Any:
    """The repo's cache entry, checked to be a repo folder directly in `cache_dir`."""
    repo = next((r for r in info.repos if r.repo_id == repo_id and r.repo_type == "model"), None)
    if repo is None:
        raise HubCacheError(f"{repo_id} is no longer in the hub cache")
    path = Path(os.path.realpath(repo.repo_path))
    if path.parent != Path(os.path.realpath(cache_dir)) or not path.name.startswith("models--"):
        raise HubCacheError(f"Refusing to delete {path}: it is not a repo in {cache_dir}")
    return repo


def delete(cache_dir: Path, model: LocalModel) -> int:
    """Delete a cached model: the whole repo, or just the one GGUF file; bytes freed."""
    info = _scan(cache_dir)
    if info is None or model.repo_id is None:
        raise HubCacheError(f"{model.id} is no longer in the hub cache")
    repo = _cached_repo(info, cache_dir, model.repo_id)
    # Plan against this repo alone: delete_revisions matches commit hashes in every repo.
    info = dataclasses.replace(info, repos=frozenset({repo}))
    if model.format == FORMAT_GGUF and hasattr(info, "delete_files"):
        relative = model.id[len(model.repo_id) + 1 :]
        files = [
            f
            for revision in repo.revisions
            for f in revision.files
            if f.file_path.relative_to(revision.snapshot_path).as_posix() == relative
        ]
        strategy = info.delete_files(*files)
    else:
        strategy = info.delete_revisions(*(r.commit_hash for r in repo.revisions))
    freed = int(strategy.expected_freed_size)
    strategy.execute()
    log.info("Deleted %s from the hub cache (%d bytes)", model.id, freed)
    return freed
