"""A minimal window until the desktop-app issue: it says what works today."""

from __future__ import annotations

import sys


def run() -> int:
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication, QLabel, QMainWindow

    app = QApplication.instance() or QApplication(sys.argv)
    app.setApplicationName("Minerva")
    window = QMainWindow()
    window.setWindowTitle("Minerva")
    label = QLabel(
        "<h2>Minerva</h2><p>The chat window is on its way.</p>"
        "<p>Run <code>minerva serve</code> for the local OpenAI-compatible API "
        "on http://127.0.0.1:8080/v1.</p>"
    )
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    label.setMargin(32)
    window.setCentralWidget(label)
    window.resize(520, 300)
    window.show()
    return app.exec()
