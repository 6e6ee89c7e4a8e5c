"""ServerThread: ports, URLs, start and stop."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from fake_engine import FakeEngine

from app.core.settings import ServerSettings
from app.server import ServerThread
from app.server.runner import server_url


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def test_port_zero_picks_a_free_port(server: ServerThread) -> None:
    assert server.port and server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert _get_json(f"{server.url}/health")["status"] == "ok"


def test_stop_is_idempotent_and_stops_listening(engine: FakeEngine) -> None:
    thread = ServerThread(ServerSettings(port=0), engine)
    thread.start()
    port = thread.port
    thread.stop()
    thread.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_restart_after_stop(engine: FakeEngine) -> None:
    thread = ServerThread(ServerSettings(port=0), engine)
    for _ in range(2):
        thread.start()
        assert _get_json(f"{thread.url}/health")["status"] == "ok"
        thread.stop()


def test_serve_stops_gracefully_on_sigterm(tmp_path) -> None:
    """The CLI entry point: logs its URL, serves, and exits 0 on SIGTERM."""
    script = tmp_path / "serve.py"
    script.write_text(
        "import logging, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from fake_engine import FakeEngine\n"
        "from app.core.settings import ServerSettings\n"
        "from app.server import serve\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout, force=True)\n"
        "serve(ServerSettings(port=0), FakeEngine())\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"listening on (http://\S+)", line).group(1)
        assert _get_json(f"{url}/health")["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        proc.kill()


def test_port_in_use_raises_from_start(server: ServerThread, engine: FakeEngine) -> None:
    with pytest.raises(OSError):
        ServerThread(ServerSettings(port=server.port), engine).start()


def test_url_before_start_raises(engine: FakeEngine) -> None:
    with pytest.raises(RuntimeError):
        _ = ServerThread(ServerSettings(port=0), engine).url


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://127.0.0.1:8080"),
        ("::", "http://[::1]:8080"),
        ("localhost", "http://localhost:8080"),
    ],
)
def test_server_url(host: str, url: str) -> None:
    assert server_url(host, 8080) == url
