"""Fixtures: one fake hub per session serving the real bundled model, reset before each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hub.hub_repos import populate
from tests.hub.hub_server import FakeHub


@pytest.fixture(scope="session")
def bundled_model(tmp_path_factory) -> Path:
    """The bundled SmolLM2 converted to MLX (imports mlx: fine in tests, never in app/hub)."""
    from app.engine.bundled import ensure_bundled_model

    return ensure_bundled_model(tmp_path_factory.mktemp("bundled"))


@pytest.fixture(scope="session")
def hub_session(bundled_model: Path) -> Iterator[FakeHub]:
    hub = FakeHub().start()
    populate(hub, bundled_model)
    yield hub
    hub.close()


@pytest.fixture
def hub(hub_session: FakeHub, monkeypatch) -> FakeHub:
    """The fake hub, healthy again, and HF_ENDPOINT pointing at it; no token from the user."""
    hub_session.reset()
    monkeypatch.setenv("HF_ENDPOINT", hub_session.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return hub_session


@pytest.fixture
def dl_dir(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path
