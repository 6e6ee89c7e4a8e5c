"""The `minerva` command as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from app.cli import build_parser, main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_defaults():
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.model, args.kv_bits) == ("127.0.0.1", 8080, "smollm2-135m-instruct", 0)
    assert (args.context_length, args.max_concurrency) == (8192, 8)


def test_bad_kv_bits_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["serve", "--kv-bits", "3"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_models_lists_the_bundled_model(capsys):
    assert main(["models"]) == 0
    assert "smollm2-135m-instruct" in capsys.readouterr().out


@pytest.mark.real_model
def test_serve_answers_and_stops_cleanly_on_sigint(tmp_path):
    port = free_port()
    env = dict(os.environ, MINERVA_DATA_DIR=str(tmp_path))
    cmd = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--context-length", "1024"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                    if json.load(r)["status"] == "ok":
                        break
            except OSError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "server never became healthy"
            time.sleep(0.2)
        body = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}).encode()
        request = urllib.request.Request(f"{url}/v1/chat/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            assert json.load(r)["choices"][0]["message"]["role"] == "assistant"
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "terminate called" not in output


def test_serve_on_a_busy_port_says_so(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = dict(os.environ, MINERVA_DATA_DIR=str(tmp_path))
        cmd = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--model", "none-such"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "Choose another --port" in out.stderr


def test_lan_serving_without_a_key_refuses_to_start(capsys, monkeypatch):
    monkeypatch.delenv("MINERVA_API_KEY", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "set an API key" in capsys.readouterr().err
