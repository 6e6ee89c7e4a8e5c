"""The placeholder window opens and says how to reach the API."""

from __future__ import annotations

from app.ui.placeholder import build_window


def test_placeholder_window_shows(qtbot, tmp_path):
    window = build_window()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    assert window.windowTitle() == "Minerva"
    assert "minerva serve" in window.centralWidget().text()
    assert window.grab().save(str(tmp_path / "placeholder.png"))
