"""A minimal window until the desktop-app issue: it says what works today."""

from __future__ import annotations

import sys

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QLabel, QMainWindow

MESSAGE = (
    "<h2>Minerva</h2><p>The chat window is on its way.</p>"
    "<p>Run <code>minerva serve</code> for the local OpenAI-compatible API "
    "on http://127.0.0.1:8080/v1.</p>"
)


def build_window() -> QMainWindow:
    window = QMainWindow()
    window.setWindowTitle("Minerva")
    label = QLabel(MESSAGE)
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    label.setMargin(32)
    window.setCentralWidget(label)
    window.resize(520, 300)
    return window


def run() -> int:
    app = QApplication.instance() or QApplication(sys.argv)
    app.setApplicationName("Minerva")
    window = build_window()
    window.show()
    return app.exec()
