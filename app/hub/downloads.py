"""The download queue: model repos fetched by worker threads, a few at a time, resumable.

Threads, not asyncio: the GUI wraps this with qasync later. Subscribers get
DownloadEvents from whichever thread produced them, never while a lock is held.

On disk (all under `models_dir`):
  .downloads/<id>/<file>.part   a file being downloaded (kept on pause, failure, quit)
  .downloads/<id>/<file>        a file verified (size + sha256/git sha1)
  <org>--<name>/                the model, moved into place once every file is verified
The queue itself lives in `state_path` (JSON, written atomically).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from app.hub.download_events import (
    DownloadEvent,
    DownloadId,
    DownloadInfo,
    DownloadStatus,
    EventKind,
    FileProgress,
)
from app.hub.download_http import resolve_endpoint, tune_chunk_size
from app.hub.download_job import JobHooks, JobRunner, JobSpec, RetryPolicy, install
from app.hub.download_part import DownloadStopped
from app.hub.download_paths import DOWNLOADS_DIR, check_file_path, folder_name
from app.hub.download_plan import DownloadPlan
from app.hub.download_state import Job, load_jobs, save_jobs
from app.hub.errors import HubError

log = logging.getLogger(__name__)

Callback = Callable[[DownloadEvent], None]

PROGRESS_INTERVAL_S = 0.1
_UNFINISHED = {DownloadStatus.QUEUED, DownloadStatus.RUNNING, DownloadStatus.PAUSED,
               DownloadStatus.FAILED}

__all__ = [
    "DownloadEvent", "DownloadId", "DownloadInfo", "DownloadManager", "DownloadStatus",
    "EventKind", "FileProgress", "RetryPolicy",
]


class DownloadManager:
    """Queue, pause, resume and cancel model downloads into `models_dir`.

    `endpoint=None` uses HF_ENDPOINT (read when each download starts) or huggingface.co;
    `token=None` lets huggingface_hub find one (HF_TOKEN, or the saved login).
    """

    def __init__(self, models_dir: Path, state_path: Path, max_parallel: int = 2,
                 endpoint: str | None = None, token: str | None = None, *,
                 retry: RetryPolicy | None = None) -> None:
        if max_parallel < 1:
            raise ValueError(f"max_parallel must be at least 1, not {max_parallel}")
        self._models_dir = Path(models_dir)
        self._staging_root = self._models_dir / DOWNLOADS_DIR
        self._state_path = Path(state_path)
        self._max_parallel = max_parallel
        self._endpoint = endpoint
        self._token = token
        self._retry = retry or RetryPolicy()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[DownloadId, Job] = {}
        self._subscribers: list[Callback] = []
        self._closed = False
        tune_chunk_size()
        for job in load_jobs(self._state_path):
            self._jobs[job.id] = job
            self._read_done(job)
        self._seq = max((j.seq for j in self._jobs.values()), default=0)
        self._clean_orphans()
        with self._lock:
            self._schedule()

    # -- public API -----------------------------------------------------------------------

    def enqueue(self, repo_id: str, revision: str = "main", files: list[str] | None = None) -> DownloadId:
        """Queue a download; the same repo, revision and files again gives the unfinished one
        (resumed if it was paused or had failed)."""
        folder_name(repo_id)  # UnsafePathError for ids that cannot become a folder
        for name in files or []:
            check_file_path(name)
        if not revision or "\n" in revision:
            raise ValueError(f"Invalid revision {revision!r}")
        wanted = list(files) if files else None
        with self._lock:
            self._check_open()
            same = next((j for j in self._jobs.values() if j.status in _UNFINISHED
                         and (j.repo_id, j.revision, j.files) == (repo_id, revision, wanted)), None)
            if same is None:
                job = self._add_job(repo_id, revision, wanted)
                events = [self._event(EventKind.QUEUED, job)]
                self._schedule()
        if same is not None:
            self.resume(same.id)  # no-op unless it was paused or had failed
            return same.id
        self._dispatch(events)
        log.info("Queued download %s of %s@%s", job.id, repo_id, revision)
        return job.id

    def pause(self, download_id: DownloadId) -> bool:
        """Stop a queued or running download, keeping its partial files."""
        return self._stop(download_id, DownloadStatus.PAUSED, EventKind.PAUSED)

    def cancel(self, download_id: DownloadId) -> bool:
        """Stop a download for good and delete its partial files."""
        return self._stop(download_id, DownloadStatus.CANCELLED, EventKind.CANCELLED)

    def resume(self, download_id: DownloadId) -> bool:
        """Queue a paused or failed download again; it continues from its partial files."""
        with self._lock:
            self._check_open()
            job = self._job(download_id)
            if job.status not in (DownloadStatus.PAUSED, DownloadStatus.FAILED):
                return False
            job.status, job.error, job.error_kind = DownloadStatus.QUEUED, None, None
            self._save()
            events = [self._event(EventKind.QUEUED, job)]
            self._schedule()
        self._dispatch(events)
        return True

    def get(self, download_id: DownloadId) -> DownloadInfo:
        with self._lock:
            return self._info(self._job(download_id))

    def list(self) -> list[DownloadInfo]:
        """Every download of this session and the unfinished ones from before, in queue order."""
        with self._lock:
            return [self._info(j) for j in sorted(self._jobs.values(), key=lambda j: j.seq)]

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call `callback(event)` for every event, from worker threads; returns an unsubscribe."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    @property
    def max_parallel(self) -> int:
        return self._max_parallel

    def set_max_parallel(self, n: int) -> None:
        """Change how many run at once; running ones above the limit finish first."""
        if n < 1:
            raise ValueError(f"max_parallel must be at least 1, not {n}")
        with self._lock:
            self._max_parallel = n
            self._schedule()

    def wait(self, download_id: DownloadId, timeout: float | None = None) -> DownloadInfo:
        """Block until the download is neither queued nor running (or `timeout` passes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            job = self._job(download_id)
            while job.status in (DownloadStatus.QUEUED, DownloadStatus.RUNNING) or job.busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._changed.wait(left)
            return self._info(job)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers; running downloads are saved as queued and resume next time."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = [j.thread for j in self._jobs.values() if j.busy and j.thread is not None]
            for job in self._jobs.values():
                job.stop.set()
            self._save()
        for thread in threads:
            thread.join(timeout)

    def __enter__(self) -> DownloadManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scheduling -----------------------------------------------------------------------

    def _schedule(self) -> None:
        """Start queued downloads while slots are free (lock held)."""
        if self._closed:
            return
        running = sum(1 for j in self._jobs.values() if j.busy)
        queued = sorted((j for j in self._jobs.values()
                         if j.status == DownloadStatus.QUEUED and not j.busy), key=lambda j: j.seq)
        for job in queued[: max(0, self._max_parallel - running)]:
            job.status = DownloadStatus.RUNNING
            job.stop = threading.Event()
            job.meter.reset()
            job.busy = True
            job.thread = threading.Thread(target=self._work, args=(job,),
                                          name=f"download-{job.id}", daemon=True)
            job.thread.start()
        self._changed.notify_all()

    def _work(self, job: Job) -> None:
        with self._lock:
            spec = JobSpec(job.repo_id, job.revision, job.files, job.plan)
            stop = job.stop
            events = [self._event(EventKind.STARTED, job)]
        self._dispatch(events)
        runner = JobRunner(spec, self._staging_root / job.id, endpoint=resolve_endpoint(self._endpoint),
                           token=self._token, policy=self._retry, stop=stop, hooks=self._hooks(job))
        error: HubError | None = None
        try:
            runner.run()
        except DownloadStopped:
            pass
        except HubError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - a bug must fail one download, not the app
            log.exception("Download %s of %s crashed", job.id, job.repo_id)
            error = HubError(f"Unexpected error while downloading {job.repo_id}: {exc}")
        self._finish(job, stop, error)

    def _finish(self, job: Job, stop: threading.Event, error: HubError | None) -> None:
        """Settle a worker's outcome against what was asked meanwhile (pause, cancel, quit)."""
        with self._lock:
            events = []
            if job.status == DownloadStatus.CANCELLED:
                self._remove_staging(job)
                events.append(self._event(EventKind.CANCELLED, job))
            elif job.status == DownloadStatus.PAUSED:
                events.append(self._event(EventKind.PAUSED, job))
            elif stop.is_set():
                pass  # closing, or paused and resumed again before this worker noticed
            elif error is not None:
                job.status = DownloadStatus.FAILED
                job.error, job.error_kind = str(error), type(error).__name__
                log.warning("Download %s of %s failed: %s", job.id, job.repo_id, error)
                events.append(self._event(EventKind.FAILED, job))
            else:
                events += self._complete(job)
            job.busy = False
            job.current = None
            self._save()
            self._schedule()
        self._dispatch(events)

    def _complete(self, job: Job) -> list[DownloadEvent]:
        target = self._models_dir / folder_name(job.repo_id)
        try:
            install(self._staging_root / job.id, target)
        except OSError as exc:
            job.status = DownloadStatus.FAILED
            job.error, job.error_kind = f"Could not move the model into {target}: {exc}", "HubError"
            return [self._event(EventKind.FAILED, job)]
        job.status = DownloadStatus.COMPLETED
        log.info("Downloaded %s into %s", job.repo_id, target)
        return [self._event(EventKind.COMPLETED, job)]

    def _stop(self, download_id: DownloadId, status: DownloadStatus, kind: EventKind) -> bool:
        with self._lock:
            self._check_open()
            job = self._job(download_id)
            if job.status not in _UNFINISHED or (status == DownloadStatus.PAUSED
                                                 and job.status == DownloadStatus.FAILED):
                return False
            if job.status == status:
                return True
            job.status = status
            events = []
            if job.busy:
                job.stop.set()  # the worker reports once it has let go of the files
            else:
                if status == DownloadStatus.CANCELLED:
                    self._remove_staging(job)
                events.append(self._event(kind, job))
            self._save()
            self._changed.notify_all()
        self._dispatch(events)
        return True

    # -- progress -------------------------------------------------------------------------

    def _hooks(self, job: Job) -> JobHooks:
        def on_plan(plan: DownloadPlan) -> None:
            with self._lock:
                if job.plan is None:
                    job.plan = plan
                    self._save()

        def on_size(path: str, size: int) -> None:
            with self._lock:
                job.done[path] = size
                job.current = path
                job.meter.add(self._done(job))
                now = time.monotonic()
                if now - job.last_progress < PROGRESS_INTERVAL_S:
                    return
                job.last_progress = now
                events = [self._event(EventKind.PROGRESS, job)]
            self._dispatch(events)

        def on_file_done(path: str) -> None:
            with self._lock:
                job.completed.add(path)
                events = [self._event(EventKind.FILE_DONE, job, path=path)]
            self._dispatch(events)

        def on_retry(message: str) -> None:
            with self._lock:
                events = [self._event(EventKind.RETRYING, job, message=message)]
            self._dispatch(events)

        return JobHooks(on_plan, on_size, on_file_done, on_retry)

    @staticmethod
    def _done(job: Job) -> int:
        if job.plan is None:
            return 0
        return sum(min(job.done.get(f.path, 0), f.size if f.size is not None else 1 << 62)
                   for f in job.plan.files)

    def _info(self, job: Job) -> DownloadInfo:
        files: tuple[FileProgress, ...] = ()
        total = 0
        if job.plan is not None:
            files = tuple(FileProgress(f.path, f.size, job.done.get(f.path, 0), f.path in job.completed)
                          for f in job.plan.files)
            total = job.plan.total_bytes
        done = self._done(job)
        moving = job.status == DownloadStatus.RUNNING
        return DownloadInfo(
            id=job.id, repo_id=job.repo_id, revision=job.revision, status=job.status,
            folder=self._models_dir / folder_name(job.repo_id), files=files,
            bytes_done=done, bytes_total=total,
            speed_bps=job.meter.speed() if moving else 0.0,
            eta_s=job.meter.eta(total - done) if moving and total else None,
            current_file=job.current if moving else None, error=job.error, error_kind=job.error_kind,
        )

    def _event(self, kind: EventKind, job: Job, *, path: str | None = None,
               message: str | None = None) -> DownloadEvent:
        return DownloadEvent(kind, self._info(job), path=path, message=message)

    def _dispatch(self, events: list[DownloadEvent]) -> None:
        """Deliver outside the lock: a callback may call back into the manager."""
        with self._lock:
            subscribers = list(self._subscribers)
            self._changed.notify_all()
        for event in events:
            for callback in subscribers:
                try:
                    callback(event)
                except Exception:  # noqa: BLE001 - one bad subscriber must not stop downloads
                    log.exception("Download event subscriber %r failed", callback)

    # -- disk -----------------------------------------------------------------------------

    def _read_done(self, job: Job) -> None:
        """Sizes on disk of a download loaded from the state file (before any worker runs)."""
        if job.plan is None:
            return
        staging = self._staging_root / job.id
        for f in job.plan.files:
            final = staging.joinpath(*f.path.split("/"))
            part = final.with_name(final.name + ".part")
            if final.is_file():
                job.done[f.path] = final.stat().st_size
                job.completed.add(f.path)
            elif part.is_file():
                job.done[f.path] = part.stat().st_size

    def _clean_orphans(self) -> None:
        """Delete staging folders no download owns (cancelled while the app was closing, and so on)."""
        if self._staging_root.is_dir():
            for entry in self._staging_root.iterdir():
                if entry.name not in self._jobs:
                    log.info("Removing orphaned download files %s", entry)
                    shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
        for tmp in self._state_path.parent.glob(f"{self._state_path.name}*.tmp"):
            tmp.unlink(missing_ok=True)

    def _remove_staging(self, job: Job) -> None:
        shutil.rmtree(self._staging_root / job.id, ignore_errors=True)
        job.done.clear()
        job.completed.clear()

    # -- helpers --------------------------------------------------------------------------

    def _add_job(self, repo_id: str, revision: str, files: list[str] | None) -> Job:
        self._seq += 1
        job = Job(DownloadId(uuid.uuid4().hex[:12]), repo_id, revision, files,
                  DownloadStatus.QUEUED, self._seq)
        self._jobs[job.id] = job
        self._save()
        return job

    def _job(self, download_id: DownloadId) -> Job:
        try:
            return self._jobs[download_id]
        except KeyError:
            raise KeyError(f"No download with id {download_id!r}") from None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("The download manager is closed")

    def _save(self) -> None:
        try:
            save_jobs(self._state_path, list(self._jobs.values()))
        except OSError as exc:
            log.error("Could not save the download queue to %s: %s", self._state_path, exc)
