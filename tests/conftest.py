"""Shared fixtures: an isolated data folder and a tiny random-weight model."""

from __future__ import annotations

import os

import pytest

# Qt widgets render offscreen in tests (no display in CI).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from tests.tiny_model import build_tiny_model

TINY_ID = "tiny-llama"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    """A models folder holding the tiny model (the bundled one converts into it on demand)."""
    path = tmp_path_factory.mktemp("models")
    build_tiny_model(path / TINY_ID)
    return path


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path, monkeypatch):
    """Never touch the user's real data folder."""
    monkeypatch.setenv("MINERVA_DATA_DIR", str(tmp_path / "data"))
