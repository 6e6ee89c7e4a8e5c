"""Names on disk for repos and their files: safe on every OS, never outside the models folder.

A repo id or file name comes from the network; one like `../x` or `C:\\x` must not
write outside `models_dir`, so every name is checked here before it becomes a path.
"""

from __future__ import annotations

import re
from pathlib import Path

from app.hub.errors import UnsafePathError

DOWNLOADS_DIR = ".downloads"  # staging area inside models_dir (skipped by scan_models)
PART_SUFFIX = ".part"

_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")
_BAD_CHARS = re.compile(r'[\\:<>"|?*\x00-\x1f]')
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)


def check_repo_id(repo_id: str) -> str:
    """`repo_id` if it is `name` or `org/name` in the hub's alphabet; else UnsafePathError."""
    parts = repo_id.split("/")
    ok = (
        1 <= len(parts) <= 2
        and all(_REPO_PART.match(p) for p in parts)
        and ".." not in repo_id
        and "--" not in repo_id
        and not any(p.endswith(".") for p in parts)
    )
    if not ok:
        raise UnsafePathError(f"'{repo_id}' is not a valid Hugging Face repo id (expected org/name).")
    return repo_id


def folder_name(repo_id: str) -> str:
    """`org/name` -> `org--name`, the model folder's name under models_dir."""
    name = check_repo_id(repo_id).replace("/", "--")
    if _WINDOWS_RESERVED.match(name):
        raise UnsafePathError(f"'{repo_id}' cannot be a folder name on Windows.")
    return name


def check_file_path(path: str) -> str:
    """A relative repo path whose every part is a plain, portable name; else UnsafePathError."""
    parts = path.split("/")
    for part in parts:
        if (
            part in ("", ".", "..")
            or _BAD_CHARS.search(part)
            or part.endswith((".", " "))
            or _WINDOWS_RESERVED.match(part)
        ):
            raise UnsafePathError(f"Refusing the file name '{path}': it is not a safe relative path.")
    return path


def safe_join(base: Path, rel: str) -> Path:
    """`base / rel`, checked to stay inside `base` even after resolving links."""
    target = base.joinpath(*check_file_path(rel).split("/"))
    if not target.resolve().is_relative_to(base.resolve()):
        raise UnsafePathError(f"Refusing '{rel}': it leads outside {base}.")
    return target


def part_path(path: Path) -> Path:
    return path.with_name(path.name + PART_SUFFIX)
