"""A partial download on disk (`<file>.part`), hashed as it grows, verified before it is kept.

The hash is fed while writing, so a finished file is not read again; after a restart
the bytes already on disk are hashed once, then the download continues from there.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.hub.download_plan import FileEntry
from app.hub.errors import IntegrityError, format_bytes

log = logging.getLogger(__name__)

_READ = 4 << 20


class DownloadStopped(Exception):
    """Raised from inside a transfer when a pause, cancel or shutdown was asked for."""


def _new_hash(entry: FileEntry, size: int | None) -> Any:
    if entry.sha256:
        return hashlib.sha256()
    if entry.blob_id and size is not None:
        return hashlib.sha1(b"blob %d\0" % size)  # git's blob id: sha1 of header + content
    return None


class PartFile:
    """`<path>.part` for one FileEntry; keeps its running hash across retries of one run."""

    def __init__(self, path: Path, entry: FileEntry) -> None:
        self.path = path
        self.entry = entry
        self._hash: Any = None
        self._hashed = -1  # bytes fed to _hash; -1 = not started

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def prepare(self, size: int | None) -> int:
        """Bytes to resume from: a part longer than the file is started over; hash the rest."""
        have = self.size()
        if size is not None and have > size:
            log.warning("%s is larger than the file (%d > %d); starting it over", self.path, have, size)
            self.path.unlink(missing_ok=True)
            have = 0
        if self._hashed != have:
            self._rehash(have, size)
        return have

    def _rehash(self, upto: int, size: int | None) -> None:
        self._hash = _new_hash(self.entry, size)
        self._hashed = 0
        if self._hash is None or upto == 0:
            self._hashed = upto
            return
        with self.path.open("rb") as f:
            while self._hashed < upto:
                block = f.read(min(_READ, upto - self._hashed))
                if not block:
                    break
                self._hash.update(block)
                self._hashed += len(block)

    def open_writer(self, stop: threading.Event, on_size: Callable[[int], None]) -> PartWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        raw = self.path.open("r+b" if self.path.exists() else "w+b")
        raw.seek(0, os.SEEK_END)
        return PartWriter(raw, self, stop, on_size)

    def verify(self, size: int | None) -> None:
        """IntegrityError (and the part deleted) unless size and hash match the hub's."""
        actual = self.size()
        problem = None
        if size is not None and actual != size:
            problem = f"size {format_bytes(actual)} instead of {format_bytes(size)}"
        else:
            if self._hashed != actual:
                self._rehash(actual, size)
            expected = self.entry.sha256 or self.entry.blob_id
            if self._hash is not None and self._hash.hexdigest() != expected:
                problem = "its checksum does not match the hub's"
        if problem:
            self.path.unlink(missing_ok=True)
            self._hashed = -1
            raise IntegrityError(f"{self.entry.path} arrived damaged ({problem}); it was deleted.")

    def _fed(self, data: bytes) -> None:
        if self._hash is not None:
            self._hash.update(data)
        self._hashed += len(data)

    def _truncated(self, upto: int, raw_size: int | None) -> None:
        if upto < self._hashed:
            self._rehash(upto, raw_size)


class PartWriter:
    """The file object http_get writes to: writes, hashes, reports, and stops on request.

    http_get only calls write/tell/seek/truncate (seek+truncate when a server ignores
    Range and sends the whole file again).
    """

    def __init__(self, raw: Any, part: PartFile, stop: threading.Event,
                 on_size: Callable[[int], None]) -> None:
        self._raw = raw
        self._part = part
        self._stop = stop
        self._on_size = on_size

    def write(self, data: bytes) -> int:
        n = self._raw.write(data)
        self._part._fed(data)
        self._on_size(self._raw.tell())
        if self._stop.is_set():  # after the write: the chunk is kept for the resume
            raise DownloadStopped()
        return n

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        new = self._raw.truncate(size)
        self._raw.flush()
        self._part._truncated(new, self._part.entry.size)
        self._on_size(new)
        return new

    def flush(self) -> None:
        self._raw.flush()

    def close(self, sync: bool = False) -> None:
        self._raw.flush()
        if sync:
            os.fsync(self._raw.fileno())
        self._raw.close()
