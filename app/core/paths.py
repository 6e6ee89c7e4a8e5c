"""Where Minerva keeps its files, from platformdirs (overridable for tests)."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import PlatformDirs

_DIRS = PlatformDirs("Minerva", "Minerva")


def data_dir() -> Path:
    """The app's data folder; `MINERVA_DATA_DIR` moves it (tests, portable installs)."""
    override = os.environ.get("MINERVA_DATA_DIR")
    path = Path(override) if override else Path(_DIRS.user_data_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    path = data_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_dir() -> Path:
    override = os.environ.get("MINERVA_DATA_DIR")
    path = Path(override) / "logs" if override else Path(_DIRS.user_log_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path
