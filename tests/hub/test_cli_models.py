"""`minerva models ...` in a real terminal process, against the fake hub."""

from __future__ import annotations

import os
import subprocess
import sys

from hub_repos import BUNDLED, GGUF, SMALL


def minerva(tmp_path, hub, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MINERVA_DATA_DIR=str(tmp_path), HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(tmp_path / "hf"))
    env.pop("HF_TOKEN", None)
    # Bytes, not text=True: universal newlines would turn the bar's \r into \n.
    out = subprocess.run([sys.executable, "-m", "app.cli", "models", *args], env=env,
                         capture_output=True, timeout=300)
    return subprocess.CompletedProcess(out.args, out.returncode, out.stdout.decode(), out.stderr.decode())


def test_search_lists_mlx_repos(tmp_path, hub):
    out = minerva(tmp_path, hub, "search", "SmolLM2")
    assert out.returncode == 0, out.stderr
    assert BUNDLED in out.stdout
    gguf = minerva(tmp_path, hub, "search", "--gguf")
    assert GGUF in gguf.stdout


def test_pull_shows_progress_then_ls_info_rm(tmp_path, hub):
    out = minerva(tmp_path, hub, "pull", SMALL)
    assert out.returncode == 0, out.stderr
    assert "\r[" in out.stderr and "100.0%" in out.stderr  # the bar redrawn in place
    assert "INFO" not in out.stderr  # no log lines tearing the bar
    assert "Downloaded" in out.stdout
    name = SMALL.replace("/", "--")
    listed = minerva(tmp_path, hub, "ls")
    assert name in listed.stdout and "Total on disk" in listed.stdout
    info = minerva(tmp_path, hub, "info", name)
    assert "model_type" in info.stdout
    removed = minerva(tmp_path, hub, "rm", name)
    assert removed.returncode == 0 and "freed" in removed.stdout
    assert name not in minerva(tmp_path, hub, "ls").stdout


def test_info_of_a_hub_repo_includes_the_memory_fit(tmp_path, hub):
    out = minerva(tmp_path, hub, "info", BUNDLED)
    assert out.returncode == 0, out.stderr
    assert "fit" in out.stdout and "llama" in out.stdout


def test_pull_of_a_missing_repo_says_so(tmp_path, hub):
    out = minerva(tmp_path, hub, "pull", "nobody/nothing")
    assert out.returncode == 1
    assert "not" in out.stderr.lower()


def test_import_gguf(tmp_path, hub):
    from app.engine.bundled import bundled_gguf_path

    out = minerva(tmp_path, hub, "import", str(bundled_gguf_path()), "--name", "smol-imported")
    assert out.returncode == 0, out.stderr
    assert "smol-imported" in minerva(tmp_path, hub, "ls").stdout
