"""DownloadManager against the fake hub: real bytes, real huggingface_hub client, injected faults."""

from __future__ import annotations

import filecmp
import inspect
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path

import pytest
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.file_download import http_get

from app.core.models import read_local_model
from app.hub.download_paths import check_file_path, folder_name, safe_join
from app.hub.downloads import DownloadManager, DownloadStatus, EventKind, RetryPolicy
from app.hub.errors import UnsafePathError
from tests.hub.hub_repos import (
    BUNDLED,
    FP16,
    GGUF,
    GGUF_FILES,
    PRIVATE,
    SMALL,
    SMALL_2,
    SMALL_3,
    TOKEN,
)

FAST = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2)
WEIGHTS = "model.safetensors"
ROOT = Path(__file__).resolve().parents[2]


class Events:
    """A thread-safe subscriber that keeps every event."""

    def __init__(self) -> None:
        self.items = []
        self._lock = threading.Lock()

    def __call__(self, event) -> None:
        with self._lock:
            self.items.append(event)

    def kinds(self) -> list[EventKind]:
        with self._lock:
            return [e.kind for e in self.items]

    def of(self, kind: EventKind) -> list:
        with self._lock:
            return [e for e in self.items if e.kind == kind]


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(interval)


def part_size(models: Path, name: str = WEIGHTS) -> int:
    return sum(p.stat().st_size for p in (models / ".downloads").glob(f"*/{name}.part"))


def assert_same_files(folder: Path, source: dict[str, Path | bytes]) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(source)
    for name, content in source.items():
        if isinstance(content, Path):
            assert filecmp.cmp(folder / name, content, shallow=False), name
        else:
            assert (folder / name).read_bytes() == content, name


def repo_bytes(hub, repo_id: str, names) -> dict[str, bytes]:
    return {n: hub.repos[repo_id].files[n].data for n in names}


SMALL_NEEDED = ["config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", WEIGHTS]


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "downloads.json"


@pytest.fixture
def managers(hub, dl_dir, state_path):
    """make(**kwargs) -> a DownloadManager on dl_dir and state_path; all closed after the test."""
    made: list[DownloadManager] = []

    def make(**kwargs) -> DownloadManager:
        kwargs.setdefault("endpoint", hub.url)
        kwargs.setdefault("retry", FAST)
        manager = DownloadManager(dl_dir, state_path, **kwargs)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.close()


# -- the private-ish huggingface_hub API we rely on ---------------------------------------


def test_http_get_resumes_into_our_file(hub):
    """Pins http_get(url, f, resume_size=, expected_size=, headers=) and get_hf_file_metadata."""
    params = inspect.signature(http_get).parameters
    assert {"resume_size", "expected_size", "headers", "tqdm_class"} <= set(params)
    assert isinstance(constants.DOWNLOAD_CHUNK_SIZE, int)
    repo = hub.repos[SMALL]
    data = repo.files[WEIGHTS].data
    url = hf_hub_url(SMALL, WEIGHTS, revision=repo.sha, endpoint=hub.url)
    meta = get_hf_file_metadata(url, endpoint=hub.url)
    assert (meta.size, meta.etag, meta.commit_hash) == (len(data), repo.files[WEIGHTS].sha256, repo.sha)
    f = io.BytesIO(data[:1000])
    f.seek(0, os.SEEK_END)
    http_get(meta.location, f, resume_size=1000, expected_size=len(data))
    assert f.getvalue() == data
    assert hub.requests[-1] == ("GET", f"/{SMALL}/resolve/{repo.sha}/{WEIGHTS}", "bytes=1000-")
    assert hub.served_bytes(SMALL, WEIGHTS) == len(data) - 1000


# -- a whole download ---------------------------------------------------------------------


def test_full_download_of_the_bundled_model(hub, managers, dl_dir, bundled_model):
    hub.rate = 250e6  # a fast link, but slow enough to see progress on the way
    manager = managers()
    events = Events()
    manager.subscribe(events)
    download_id = manager.enqueue(BUNDLED)
    info = manager.wait(download_id, 60)
    assert info.status == DownloadStatus.COMPLETED, info.error

    folder = dl_dir / "mlx-community--SmolLM2-135M-Instruct-4bit"
    assert info.folder == folder
    assert_same_files(folder, {p.name: p for p in bundled_model.iterdir()})  # README, model.py left out
    assert read_local_model(folder) is not None  # a loadable model folder
    assert list((dl_dir / ".downloads").iterdir()) == []
    # Every file came from the pinned commit, each byte once.
    sha = hub.repos[BUNDLED].sha
    assert all(f"/resolve/{sha}/" in p for m, p, _ in hub.requests if "/resolve/" in p)
    assert hub.served_bytes(BUNDLED, WEIGHTS) == (bundled_model / WEIGHTS).stat().st_size

    kinds = events.kinds()
    assert kinds[:2] == [EventKind.QUEUED, EventKind.STARTED] and kinds[-1] == EventKind.COMPLETED
    assert {e.path for e in events.of(EventKind.FILE_DONE)} == {p.name for p in bundled_model.iterdir()}
    infos = [e.info for e in events.items if e.info.files]
    totals = [i.bytes_done for i in infos]
    assert totals == sorted(totals) and totals[-1] == info.bytes_total == info.bytes_done
    for name in (WEIGHTS, "tokenizer.json"):
        done = [next(f.done for f in i.files if f.path == name) for i in infos]
        assert done == sorted(done)
    moving = [e.info for e in events.of(EventKind.PROGRESS) if e.info.speed_bps > 0]
    assert moving and all(i.eta_s is not None and i.current_file for i in moving)
    assert len(events.of(EventKind.PROGRESS)) >= 3


def test_gguf_download_takes_only_the_chosen_file(hub, managers, dl_dir):
    manager = managers()
    first = manager.enqueue(GGUF, files=[GGUF_FILES[0]])
    assert manager.wait(first, 30).status == DownloadStatus.COMPLETED
    folder = dl_dir / folder_name(GGUF)
    assert_same_files(folder, repo_bytes(hub, GGUF, [GGUF_FILES[0]]))
    second = manager.enqueue(GGUF, files=[GGUF_FILES[1]])  # joins the same folder
    assert manager.wait(second, 30).status == DownloadStatus.COMPLETED
    assert_same_files(folder, repo_bytes(hub, GGUF, GGUF_FILES))


def test_default_download_of_a_gguf_repo_asks_for_a_file(hub, managers):
    manager = managers()
    info = manager.wait(manager.enqueue(GGUF), 30)
    assert info.status == DownloadStatus.FAILED
    assert info.error_kind == "RepoFormatError" and "choose which one" in info.error


def test_endpoint_from_hf_endpoint(hub, managers, dl_dir):
    manager = managers(endpoint=None)  # HF_ENDPOINT is set by the fixture
    info = manager.wait(manager.enqueue(SMALL), 30)
    assert info.status == DownloadStatus.COMPLETED, info.error
    assert_same_files(dl_dir / "acme--small-mlx", repo_bytes(hub, SMALL, SMALL_NEEDED))


# -- cancel, pause, resume ----------------------------------------------------------------


def test_cancel_deletes_the_partial_download(hub, managers, dl_dir, state_path):
    hub.rate = 4e6
    manager = managers()
    events = Events()
    manager.subscribe(events)
    download_id = manager.enqueue(SMALL)
    wait_until(lambda: part_size(dl_dir) > 1_000_000)
    assert manager.cancel(download_id)
    info = manager.wait(download_id, 10)
    assert info.status == DownloadStatus.CANCELLED
    wait_until(lambda: EventKind.CANCELLED in events.kinds(), 5)
    assert not (dl_dir / ".downloads" / download_id).exists()
    assert not (dl_dir / folder_name(SMALL)).exists()
    assert json.loads(state_path.read_text())["downloads"] == []
    assert not manager.resume(download_id)  # cancelled for good


def test_pause_keeps_the_partial_and_resume_continues(hub, managers, dl_dir, bundled_model):
    hub.rate = 60e6
    manager = managers()
    events = Events()
    manager.subscribe(events)
    download_id = manager.enqueue(BUNDLED)
    wait_until(lambda: part_size(dl_dir) > 20_000_000)
    assert manager.pause(download_id)
    wait_until(lambda: EventKind.PAUSED in events.kinds(), 10)
    kept = part_size(dl_dir)
    time.sleep(0.2)  # the server notices the closed connection
    served = hub.served_bytes(BUNDLED, WEIGHTS)
    time.sleep(0.3)
    assert manager.get(download_id).status == DownloadStatus.PAUSED
    assert hub.served_bytes(BUNDLED, WEIGHTS) == served and part_size(dl_dir) == kept >= 20_000_000
    assert manager.get(download_id).bytes_done >= kept

    hub.rate = None
    assert manager.resume(download_id)
    info = manager.wait(download_id, 60)
    assert info.status == DownloadStatus.COMPLETED, info.error
    size = (bundled_model / WEIGHTS).stat().st_size
    assert hub.served_bytes(BUNDLED, WEIGHTS) - size < size // 10
    assert filecmp.cmp(info.folder / WEIGHTS, bundled_model / WEIGHTS, shallow=False)
    assert EventKind.QUEUED in events.kinds()[events.kinds().index(EventKind.PAUSED):]


def test_pause_of_a_queued_download(hub, managers):
    hub.rate = 4e6
    manager = managers(max_parallel=1)
    first, second = manager.enqueue(SMALL), manager.enqueue(SMALL_2)
    assert manager.pause(second)
    assert manager.get(second).status == DownloadStatus.PAUSED
    hub.rate = None
    assert manager.wait(first, 30).status == DownloadStatus.COMPLETED
    time.sleep(0.1)
    assert manager.get(second).status == DownloadStatus.PAUSED  # not started by the free slot
    assert manager.resume(second)
    assert manager.wait(second, 30).status == DownloadStatus.COMPLETED


# -- interruptions ------------------------------------------------------------------------


@pytest.mark.parametrize("abort", [False, True], ids=["closed", "reset"])
def test_connection_cut_mid_file_resumes(hub, managers, bundled_model, abort):
    hub.cut(WEIGHTS, 40_000_000, abort=abort)
    manager = managers()
    info = manager.wait(manager.enqueue(BUNDLED), 60)
    assert info.status == DownloadStatus.COMPLETED, info.error
    size = (bundled_model / WEIGHTS).stat().st_size
    served = hub.served_bytes(BUNDLED, WEIGHTS)
    assert size < served < size + size // 10  # cut once, then continued from the partial file
    ranges = [r for m, p, r in hub.requests if m == "GET" and p.endswith(WEIGHTS)]
    assert ranges[0] is None and int(ranges[1][6:-1]) > 30_000_000  # resumed, not restarted
    assert filecmp.cmp(info.folder / WEIGHTS, bundled_model / WEIGHTS, shallow=False)


def test_server_ignoring_range_restarts_the_file_cleanly(hub, managers):
    hub.ignore_range = True
    hub.cut(WEIGHTS, 2_500_000)  # the retry asks for a range and gets the whole file again
    manager = managers()
    info = manager.wait(manager.enqueue(SMALL), 30)
    assert info.status == DownloadStatus.COMPLETED, info.error
    assert_same_files(info.folder, repo_bytes(hub, SMALL, SMALL_NEEDED))
    ranges = [r for m, p, r in hub.requests if m == "GET" and p.endswith(WEIGHTS)]
    assert ranges == [None, "bytes=2097152-"]


def test_killed_process_resumes_from_the_partial_file(hub, managers, dl_dir, state_path, bundled_model):
    hub.rate = 40e6
    env = os.environ | {"HF_ENDPOINT": hub.url, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, str(Path(__file__).with_name("download_child.py")),
                              str(dl_dir), str(state_path), BUNDLED],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: part_size(dl_dir) > 30_000_000 or child.poll() is not None, 60)
        assert child.poll() is None, child.stdout.read().decode()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    kept = part_size(dl_dir)
    assert kept > 30_000_000
    assert not (dl_dir / folder_name(BUNDLED)).exists()

    hub.rate = None
    manager = managers()  # the same state file: the download is queued again and continues
    (info,) = manager.list()
    info = manager.wait(info.id, 60)
    assert info.status == DownloadStatus.COMPLETED, info.error
    size = (bundled_model / WEIGHTS).stat().st_size
    assert hub.served_bytes(BUNDLED, WEIGHTS) - size < size // 10
    resumed = [r for m, p, r in hub.requests if m == "GET" and p.endswith(WEIGHTS)][-1]
    assert resumed == f"bytes={kept}-"
    assert_same_files(info.folder, {p.name: p for p in bundled_model.iterdir()})


def test_queue_restored_after_a_restart(hub, managers, dl_dir, state_path, bundled_model):
    hub.rate = 40e6
    manager = managers(max_parallel=1)
    big, small = manager.enqueue(BUNDLED), manager.enqueue(SMALL)
    wait_until(lambda: part_size(dl_dir) > 20_000_000)
    manager.close()
    saved = json.loads(state_path.read_text())["downloads"]
    assert [(d["id"], d["status"]) for d in saved] == [(big, "queued"), (small, "queued")]
    kept = part_size(dl_dir)

    hub.rate = None
    restarted = managers(max_parallel=1)
    assert [i.id for i in restarted.list()] == [big, small]
    assert restarted.get(big).bytes_done >= kept
    assert restarted.wait(big, 60).status == DownloadStatus.COMPLETED
    assert restarted.wait(small, 30).status == DownloadStatus.COMPLETED
    size = (bundled_model / WEIGHTS).stat().st_size
    assert hub.served_bytes(BUNDLED, WEIGHTS) - size < size // 10
    assert json.loads(state_path.read_text())["downloads"] == []


def test_max_parallel_is_respected(hub, managers):
    hub.rate = 10e6  # ~0.4 s per repo
    manager = managers(max_parallel=2)
    ids = [manager.enqueue(r) for r in (SMALL, SMALL_2, SMALL_3)]
    peak = 0
    while any(manager.get(i).status in (DownloadStatus.QUEUED, DownloadStatus.RUNNING) for i in ids):
        running = sum(i.status == DownloadStatus.RUNNING for i in manager.list())
        peak = max(peak, running)
        assert running <= 2
        time.sleep(0.01)
    assert peak == 2
    assert all(manager.get(i).status == DownloadStatus.COMPLETED for i in ids)


# -- retries and errors -------------------------------------------------------------------


def test_429_and_5xx_are_retried(hub, managers):
    hub.fail(429, path=WEIGHTS, method="HEAD", times=1, headers={"Retry-After": "1"})
    hub.fail(503, path=WEIGHTS, method="GET", times=2)
    hub.fail(500, path="config.json", method="HEAD", times=1)
    manager = managers()
    events = Events()
    manager.subscribe(events)
    start = time.monotonic()
    info = manager.wait(manager.enqueue(SMALL), 30)
    assert info.status == DownloadStatus.COMPLETED, info.error
    assert time.monotonic() - start >= 1.0  # Retry-After honoured
    messages = [e.message for e in events.of(EventKind.RETRYING)]
    assert any("HTTP 429" in m and "retrying in 1 s" in m for m in messages)
    assert sum("HTTP 503" in m for m in messages) == 2 and any("HTTP 500" in m for m in messages)


def test_persistent_server_errors_fail_then_resume_works(hub, managers):
    hub.fail(502, path=WEIGHTS, method="HEAD", times=-1)
    manager = managers()
    download_id = manager.enqueue(SMALL)
    info = manager.wait(download_id, 30)
    assert info.status == DownloadStatus.FAILED and info.error_kind == "NetworkError"
    assert "kept failing" in info.error and "HTTP 502" in info.error
    hub.reset()
    assert manager.resume(download_id)
    assert manager.wait(download_id, 30).status == DownloadStatus.COMPLETED


def test_gated_repo_without_and_with_a_token(hub, managers, monkeypatch):
    manager = managers()
    download_id = manager.enqueue(FP16)
    info = manager.wait(download_id, 30)
    assert info.status == DownloadStatus.FAILED and info.error_kind == "AccessDeniedError"
    assert "accept its license on https://huggingface.co/acme/tiny-fp16" in info.error
    assert "token" in info.error
    manager.close()

    hub.tokens.add(TOKEN)
    manager = managers(token="hf_not_accepted")
    assert manager.enqueue(FP16) == download_id  # the failed download, tried again
    info = manager.wait(download_id, 30)
    assert info.error_kind == "AccessDeniedError" and "your token has no access" in info.error
    manager.close()

    monkeypatch.setenv("HF_TOKEN", TOKEN)  # token=None: huggingface_hub reads HF_TOKEN
    manager = managers()
    info = manager.wait(manager.enqueue(FP16), 30)
    assert info.status == DownloadStatus.COMPLETED, info.error


def test_private_repo_needs_a_token(hub, managers):
    manager = managers()
    info = manager.wait(manager.enqueue(PRIVATE), 30)
    assert info.error_kind == "AccessDeniedError" and "private" in info.error


@pytest.mark.parametrize(("repo", "revision", "files", "message"), [
    ("acme/does-not-exist", "main", None, "does not exist on the Hugging Face Hub"),
    (SMALL, "v2.0", None, "has no revision 'v2.0'"),
    (SMALL, "main", ["weights.gguf"], "has no file 'weights.gguf'"),
])
def test_not_found_errors(hub, managers, repo, revision, files, message):
    manager = managers()
    info = manager.wait(manager.enqueue(repo, revision, files), 30)
    assert info.status == DownloadStatus.FAILED and info.error_kind == "NotFoundError"
    assert message in info.error


def test_file_vanishing_from_the_hub(hub, managers):
    hub.fail(404, path="tokenizer.json", method="HEAD", error_code="EntryNotFound")
    manager = managers()
    info = manager.wait(manager.enqueue(SMALL), 30)
    assert info.error_kind == "NotFoundError" and "has no file 'tokenizer.json'" in info.error


def test_corrupted_file_is_rejected(hub, managers, dl_dir):
    hub.corrupt(WEIGHTS)
    manager = managers()
    download_id = manager.enqueue(SMALL)
    info = manager.wait(download_id, 30)
    assert info.status == DownloadStatus.FAILED and info.error_kind == "IntegrityError"
    assert "checksum" in info.error and "deleted" in info.error
    assert not (dl_dir / folder_name(SMALL)).exists()
    assert part_size(dl_dir) == 0 and not list((dl_dir / ".downloads").glob(f"*/{WEIGHTS}"))
    hub.reset()
    assert manager.resume(download_id)
    info = manager.wait(download_id, 30)
    assert info.status == DownloadStatus.COMPLETED
    assert_same_files(info.folder, repo_bytes(hub, SMALL, SMALL_NEEDED))


def test_disk_full_is_caught_before_downloading(hub, managers, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    manager = managers()
    info = manager.wait(manager.enqueue(SMALL), 30)
    assert info.status == DownloadStatus.FAILED and info.error_kind == "DiskFullError"
    assert "needs 4.0 MB more" in info.error and "1.0 MB is free" in info.error
    assert not [r for r in hub.requests if "/resolve/" in r[1]]


# -- the queue, names, leftovers ----------------------------------------------------------


def test_enqueue_twice_gives_the_same_download(hub, managers):
    hub.rate = 4e6
    manager = managers()
    assert manager.enqueue(SMALL) == manager.enqueue(SMALL)
    assert manager.enqueue(SMALL) != manager.enqueue(SMALL_2)


@pytest.mark.parametrize("repo", ["../evil", "a/b/c", "/abs", "org/..", "org/na--me", "con", ""])
def test_unsafe_repo_ids_are_refused(hub, managers, repo):
    with pytest.raises(UnsafePathError):
        managers().enqueue(repo)


@pytest.mark.parametrize("name", ["../x.json", "/etc/passwd", "a/../../x", "C:\\x", "x\\..\\y", "nul.json"])
def test_unsafe_file_names_are_refused(hub, managers, dl_dir, name):
    with pytest.raises(UnsafePathError):
        managers().enqueue(SMALL, files=[name])
    with pytest.raises(UnsafePathError):
        check_file_path(name)


def test_safe_join_stays_inside(tmp_path):
    assert safe_join(tmp_path, "sub/file.json") == tmp_path / "sub" / "file.json"
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path, "link/escaped.json")


def test_orphaned_temp_files_are_removed(hub, managers, dl_dir, state_path):
    orphan = dl_dir / ".downloads" / "0123456789ab" / f"{WEIGHTS}.part"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"x" * 100)
    state_path.parent.mkdir(parents=True)
    stale = state_path.parent / f"{state_path.name}abc.tmp"
    stale.write_text("{")
    managers()
    assert not orphan.parent.exists() and not stale.exists()


def test_unreadable_state_file_starts_empty(hub, managers, state_path):
    state_path.parent.mkdir(parents=True)
    state_path.write_text("{not json")
    assert managers().list() == []
    assert state_path.with_name(state_path.name + ".bad").exists()


def test_a_failing_subscriber_does_not_stop_downloads(hub, managers):
    manager = managers()

    def broken(event):
        raise RuntimeError("subscriber bug")

    manager.subscribe(broken)
    events = Events()
    unsubscribe = manager.subscribe(events)
    info = manager.wait(manager.enqueue(SMALL), 30)
    assert info.status == DownloadStatus.COMPLETED
    wait_until(lambda: EventKind.COMPLETED in events.kinds(), 5)  # may trail wait() a little
    unsubscribe()
    count = len(events.items)
    manager.wait(manager.enqueue(SMALL_2), 30)
    assert len(events.items) == count
