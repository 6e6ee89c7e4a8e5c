"""One download from start to verified files: plan, disk check, each file with retries.

Runs in a worker thread; reports through callbacks and never touches manager state.
Files go to the staging folder (`<file>.part`, renamed to `<file>` once verified);
putting the finished folder in place is the manager's job.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from huggingface_hub import HfApi

from app.hub.download_http import fetch_file
from app.hub.download_part import DownloadStopped, PartFile
from app.hub.download_paths import part_path, safe_join
from app.hub.download_plan import DownloadPlan, FileEntry, fetch_plan
from app.hub.errors import (
    DiskFullError,
    HubError,
    NetworkError,
    format_bytes,
    is_transient,
    retry_after,
    translate,
)

log = logging.getLogger(__name__)

DISK_HEADROOM = 64 << 20  # never plan to fill the disk to the last byte

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Transient failures (network, 429, 5xx) are retried with exponential backoff.

    `attempts` failures in a row end the download (FAILED, partial files kept);
    any progress on a file starts the count again.
    """

    attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 30.0
    max_retry_after: float = 600.0

    def delay(self, attempt: int, hint: float | None = None) -> float:
        if hint is not None:
            return min(hint, self.max_retry_after)
        return min(self.max_delay, self.base_delay * 2**attempt)


@dataclass(frozen=True)
class JobHooks:
    on_plan: Callable[[DownloadPlan], None]
    on_size: Callable[[str, int], None]  # (file, bytes on disk)
    on_file_done: Callable[[str], None]
    on_retry: Callable[[str], None]  # a message for the user


@dataclass(frozen=True)
class JobSpec:
    repo_id: str
    revision: str
    files: list[str] | None
    plan: DownloadPlan | None


class JobRunner:
    def __init__(self, spec: JobSpec, staging: Path, *, endpoint: str, token: str | None,
                 policy: RetryPolicy, stop: threading.Event, hooks: JobHooks) -> None:
        self._spec = spec
        self._staging = staging
        self._endpoint = endpoint
        self._token = token
        self._policy = policy
        self._stop = stop
        self._hooks = hooks

    def run(self) -> DownloadPlan:
        """Every file of the plan verified in the staging folder; raises HubError or DownloadStopped."""
        spec = self._spec
        plan = spec.plan
        if plan is None:
            api = HfApi(endpoint=self._endpoint, token=self._token)
            plan = self._retrying(lambda: fetch_plan(api, spec.repo_id, spec.revision, spec.files,
                                                     self._token), None)
        self._hooks.on_plan(plan)
        self._staging.mkdir(parents=True, exist_ok=True)
        have = {f.path: self._on_disk(f) for f in plan.files}
        for path, size in have.items():
            self._hooks.on_size(path, size)
        self._check_disk(plan, have)
        for entry in plan.files:
            if self._stop.is_set():
                raise DownloadStopped()
            final = safe_join(self._staging, entry.path)
            if not final.exists():
                self._fetch(PartFile(part_path(final), entry), plan.commit)
                os.replace(part_path(final), final)
            self._hooks.on_file_done(entry.path)
        return plan

    def _on_disk(self, entry: FileEntry) -> int:
        final = safe_join(self._staging, entry.path)
        if final.exists():
            return final.stat().st_size
        return PartFile(part_path(final), entry).size()

    def _check_disk(self, plan: DownloadPlan, have: dict[str, int]) -> None:
        needed = sum(max(0, (f.size or 0) - have[f.path]) for f in plan.files)
        free = shutil.disk_usage(self._staging).free
        if needed + DISK_HEADROOM > free:
            raise DiskFullError(
                f"Not enough disk space for {self._spec.repo_id}: it needs {format_bytes(needed)} "
                f"more, and only {format_bytes(free)} is free on {self._staging.parent.parent}.",
                needed, free,
            )

    def _fetch(self, part: PartFile, commit: str) -> None:
        """One file to a verified `.part`: retried while it keeps failing in transient ways."""
        path = part.entry.path

        def attempt() -> None:
            size = fetch_file(part, repo_id=self._spec.repo_id, commit=commit,
                              endpoint=self._endpoint, token=self._token, stop=self._stop,
                              on_size=lambda n: self._hooks.on_size(path, n))
            part.verify(size)

        self._retrying(attempt, part)

    def _retrying(self, fn: Callable[[], T], part: PartFile | None) -> T:
        what = part.entry.path if part is not None else None
        failures = 0
        while True:
            before = part.size() if part is not None else 0
            try:
                return fn()
            except (DownloadStopped, HubError):
                raise
            except Exception as exc:  # noqa: BLE001 - sorted into transient or not just below
                if not is_transient(exc):
                    raise translate(exc, self._spec.repo_id, self._spec.revision, what) from exc
                if part is not None and part.size() > before:
                    failures = 0  # it moved: only failures in a row count
                if failures >= self._policy.attempts:
                    raise NetworkError(
                        f"Downloading {what or self._spec.repo_id} kept failing ({_short(exc)}); "
                        "the partial download is kept: resume to try again."
                    ) from exc
                wait = self._policy.delay(failures, retry_after(exc))
                failures += 1
                log.warning("%s %s: %s; retry %d in %.1f s", self._spec.repo_id, what or "",
                            _short(exc), failures, wait)
                self._hooks.on_retry(f"{_short(exc)}; retrying in {wait:.0f} s")
                if self._stop.wait(wait):
                    raise DownloadStopped() from exc


def _short(exc: BaseException) -> str:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"HTTP {status}" if status else text[:200]


def install(staging: Path, target: Path) -> None:
    """Move a finished staging folder into place: a rename, or file by file into an existing one."""
    if not target.exists():
        os.replace(staging, target)
        return
    for src in sorted(p for p in staging.rglob("*") if p.is_file()):
        dest = target / src.relative_to(staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
    shutil.rmtree(staging, ignore_errors=True)
