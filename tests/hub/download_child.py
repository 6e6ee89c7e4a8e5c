"""Run one download in its own process, so a test can kill -9 it mid-file.

Usage: python download_child.py MODELS_DIR STATE_PATH REPO_ID (endpoint from HF_ENDPOINT).
"""

from __future__ import annotations

import sys
from pathlib import Path

from app.hub.downloads import DownloadManager


def main() -> None:
    models_dir, state_path, repo_id = sys.argv[1:4]
    manager = DownloadManager(Path(models_dir), Path(state_path), max_parallel=1)
    download_id = manager.enqueue(repo_id)
    print("enqueued", download_id, flush=True)
    info = manager.wait(download_id)
    print("finished", info.status, flush=True)
    manager.close()


if __name__ == "__main__":
    main()
