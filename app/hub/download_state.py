"""A download's record, and the JSON file that carries the queue across restarts.

Progress is not stored: it is the size of the `.part` files on disk, which is what a
resume needs anyway and cannot disagree with the state file after a crash.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.hub.download_events import DownloadId, DownloadStatus, SpeedMeter
from app.hub.download_paths import check_repo_id
from app.hub.download_plan import DownloadPlan, FileEntry

log = logging.getLogger(__name__)

STATE_VERSION = 1
# Kept in the state file; finished downloads live only in memory for the session.
PERSISTED = {DownloadStatus.QUEUED, DownloadStatus.RUNNING, DownloadStatus.PAUSED, DownloadStatus.FAILED}


@dataclass
class Job:
    id: DownloadId
    repo_id: str
    revision: str
    files: list[str] | None  # as asked; None = the default model files
    status: DownloadStatus
    seq: int  # queue order
    plan: DownloadPlan | None = None
    error: str | None = None
    error_kind: str | None = None
    # Runtime only.
    done: dict[str, int] = field(default_factory=dict)  # bytes on disk per file
    completed: set[str] = field(default_factory=set)  # files verified
    current: str | None = None
    busy: bool = False  # a worker runs for it (perhaps already asked to stop)
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    meter: SpeedMeter = field(default_factory=SpeedMeter)
    last_progress: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        status = DownloadStatus.QUEUED if self.status == DownloadStatus.RUNNING else self.status
        data: dict[str, Any] = {
            "id": self.id, "repo_id": self.repo_id, "revision": self.revision, "files": self.files,
            "status": str(status), "seq": self.seq, "error": self.error, "error_kind": self.error_kind,
        }
        if self.plan is not None:
            data["commit"] = self.plan.commit
            data["plan"] = [f.to_dict() for f in self.plan.files]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        plan = None
        if "plan" in data:
            plan = DownloadPlan(str(data["commit"]), tuple(FileEntry.from_dict(f) for f in data["plan"]))
        status = DownloadStatus(data["status"])
        if status == DownloadStatus.RUNNING:
            status = DownloadStatus.QUEUED
        files = data.get("files")
        return cls(
            id=DownloadId(str(data["id"])), repo_id=check_repo_id(str(data["repo_id"])),
            revision=str(data["revision"]), files=list(files) if files is not None else None,
            status=status, seq=int(data["seq"]), plan=plan, error=data.get("error"),
            error_kind=data.get("error_kind"),
        )


def load_jobs(path: Path) -> list[Job]:
    """The saved queue; an unreadable file is set aside (`.bad`) rather than crash the app."""
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        jobs = [Job.from_dict(d) for d in data.get("downloads", [])]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("Download state %s is unreadable (%s); starting with an empty queue", path, exc)
        path.replace(path.with_name(path.name + ".bad"))
        return []
    return [j for j in jobs if j.status in PERSISTED]


def save_jobs(path: Path, jobs: list[Job]) -> None:
    """Write atomically: a crash mid-write leaves the previous file, never half of one."""
    data = {"version": STATE_VERSION,
            "downloads": [j.to_dict() for j in jobs if j.status in PERSISTED]}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
