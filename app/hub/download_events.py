"""What the download manager tells its subscribers: plain, immutable snapshots."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import NewType

DownloadId = NewType("DownloadId", str)


class DownloadStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class EventKind(StrEnum):
    QUEUED = "queued"  # enqueued, or resumed and waiting for a slot
    STARTED = "started"  # a worker took it (plan known after the first progress event)
    PROGRESS = "progress"  # bytes moved (at most ~10 a second per download)
    FILE_DONE = "file_done"  # one file verified (`path` says which)
    RETRYING = "retrying"  # a transient error; `message` says what and when
    PAUSED = "paused"  # stopped, partial files kept
    COMPLETED = "completed"  # the model folder is in place
    FAILED = "failed"  # `info.error` says why; resume() retries from the partial files
    CANCELLED = "cancelled"  # stopped and its partial files deleted


@dataclass(frozen=True)
class FileProgress:
    path: str
    size: int | None
    done: int
    complete: bool


@dataclass(frozen=True)
class DownloadInfo:
    id: DownloadId
    repo_id: str
    revision: str
    status: DownloadStatus
    folder: Path  # where the model lands: models_dir/<org>--<name>
    files: tuple[FileProgress, ...]  # empty until the file list is known
    bytes_done: int
    bytes_total: int
    speed_bps: float  # over the last few seconds; 0 when not moving
    eta_s: float | None
    current_file: str | None
    error: str | None = None
    error_kind: str | None = None  # the HubError class name, e.g. "AccessDeniedError"

    @property
    def fraction(self) -> float:
        return self.bytes_done / self.bytes_total if self.bytes_total else 0.0


@dataclass(frozen=True)
class DownloadEvent:
    kind: EventKind
    info: DownloadInfo
    path: str | None = None  # FILE_DONE: the file
    message: str | None = None  # RETRYING: what failed and the wait


class SpeedMeter:
    """Bytes per second over a sliding window, and the time left at that speed."""

    def __init__(self, window_s: float = 5.0, clock=time.monotonic) -> None:
        self._window = window_s
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()

    def reset(self) -> None:
        self._samples.clear()

    def add(self, total_done: int) -> None:
        now = self._clock()
        self._samples.append((now, total_done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self._window:
            self._samples.popleft()

    def speed(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        if self._clock() - t1 > self._window:
            return 0.0  # stalled
        return max(0.0, (b1 - b0) / (t1 - t0)) if t1 > t0 else 0.0

    def eta(self, remaining: int) -> float | None:
        speed = self.speed()
        return remaining / speed if speed > 0 else None
