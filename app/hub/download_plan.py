"""Which files of a repo make a model, and the pinned list (commit, sizes, hashes) to fetch.

The plan is resolved once per download and stored with it: every file then comes
from the same commit even if the repo changes mid-download or across restarts.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from huggingface_hub import HfApi
from huggingface_hub.hf_api import ModelInfo

from app.hub.download_paths import check_file_path
from app.hub.errors import NotFoundError, RepoFormatError

# What an MLX model folder needs; `*.py` stays off: Minerva never runs a repo's code.
ALLOW_PATTERNS = ("*.safetensors", "*.json", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja")

_GGUF_SHARD = re.compile(r"^(?P<stem>.*)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


def is_model_file(path: str) -> bool:
    """A top-level file an MLX model needs (subfolders hold originals, ONNX, and so on)."""
    return "/" not in path and any(fnmatch.fnmatch(path, p) for p in ALLOW_PATTERNS)


def is_gguf(path: str) -> bool:
    return path.lower().endswith(".gguf")


def gguf_group(path: str, all_paths: Iterable[str]) -> list[str]:
    """A GGUF file with its sibling shards (`x-00001-of-00003.gguf` needs all three)."""
    match = _GGUF_SHARD.match(path)
    if match is None:
        return [path]
    stem, count = match["stem"], match["count"]
    shards = sorted(p for p in all_paths if (m := _GGUF_SHARD.match(p)) and m["stem"] == stem
                    and m["count"] == count)
    return shards or [path]


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int | None
    sha256: str | None = None  # LFS files: the LFS oid, which is the content's sha256
    blob_id: str | None = None  # other files: the git blob sha1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileEntry:
        return cls(check_file_path(str(data["path"])), data.get("size"), data.get("sha256"),
                   data.get("blob_id"))


@dataclass(frozen=True)
class DownloadPlan:
    commit: str
    files: tuple[FileEntry, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)


def entries_from_info(info: ModelInfo) -> list[FileEntry]:
    entries = []
    for sib in info.siblings or []:
        lfs = sib.lfs
        sha = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
        entries.append(FileEntry(sib.rfilename, sib.size, sha, None if lfs else sib.blob_id))
    return entries


def select_files(entries: list[FileEntry], files: list[str] | None, repo_id: str) -> list[FileEntry]:
    """The entries to download: `files` (plus GGUF shards) or, by default, the MLX model files."""
    by_path = {e.path: e for e in entries}
    if files:
        wanted: list[str] = []
        for name in files:
            if name not in by_path:
                raise NotFoundError(f"{repo_id} has no file '{name}'.", "file")
            group = gguf_group(name, by_path) if is_gguf(name) else [name]
            wanted += [p for p in group if p not in wanted]
        chosen = [by_path[p] for p in wanted]
    else:
        chosen = [e for e in entries if is_model_file(e.path)]
        if not any(e.path.endswith(".safetensors") for e in chosen):
            if any(is_gguf(e.path) for e in entries):
                raise RepoFormatError(f"{repo_id} holds GGUF files: choose which one to download.")
            raise RepoFormatError(f"{repo_id} has no safetensors weights: it is not an MLX model.")
    for entry in chosen:
        check_file_path(entry.path)
    return chosen


def fetch_plan(api: HfApi, repo_id: str, revision: str, files: list[str] | None,
               token: str | None) -> DownloadPlan:
    """Ask the hub for the repo's files at `revision` and pin them to its commit."""
    info = api.model_info(repo_id, revision=revision, files_metadata=True, token=token)
    chosen = select_files(entries_from_info(info), files, repo_id)
    return DownloadPlan(info.sha or revision, tuple(chosen))
