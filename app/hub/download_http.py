"""One file over HTTP with huggingface_hub's own client: HEAD for metadata, then `http_get`.

`http_get` is not a top-level export of huggingface_hub; it is used because it is the
one entry point that resumes into a file we own (`resume_size=`), which is what makes
a download survive a killed process. tests/hub pins its behaviour.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import urlsplit

from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import build_hf_headers

from app.hub.download_part import PartFile

log = logging.getLogger(__name__)

# http_get reads the body in DOWNLOAD_CHUNK_SIZE pieces (10 MiB) before writing each:
# progress, pause and cancel would move in 10 MiB steps and a killed process would
# lose up to 10 MiB. 1 MiB costs nothing measurable and only affects http_get.
CHUNK_SIZE = 1 << 20

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _NoBar:
    """http_get's progress bar, silenced: progress goes to the manager's events instead."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, n: float | None = 1) -> None:
        pass


def tune_chunk_size() -> None:
    if constants.DOWNLOAD_CHUNK_SIZE > CHUNK_SIZE:
        constants.DOWNLOAD_CHUNK_SIZE = CHUNK_SIZE


def resolve_endpoint(endpoint: str | None) -> str:
    """`endpoint`, else HF_ENDPOINT as it is now (huggingface_hub reads it only at import)."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def fetch_file(part: PartFile, *, repo_id: str, commit: str, endpoint: str, token: str | None,
               stop: threading.Event, on_size: Callable[[int], None]) -> int | None:
    """Download `part.entry` into `part` from where it stopped; returns the expected size.

    Raises huggingface_hub/httpx errors as they come (the caller retries), and
    DownloadStopped when `stop` is set.
    """
    entry = part.entry
    url = hf_hub_url(repo_id, entry.path, revision=commit, endpoint=endpoint)
    meta = get_hf_file_metadata(url, token=token, endpoint=endpoint, retry_on_errors=False)
    size = entry.size if entry.size is not None else meta.size
    if not entry.sha256 and not entry.blob_id and meta.etag and _SHA256.match(meta.etag):
        part.entry = replace(entry, sha256=meta.etag)  # no blobs metadata: the LFS ETag is the sha256
    headers = build_hf_headers(token=token)
    headers["Accept-Encoding"] = "identity"  # byte ranges of the file itself, never of a gzip stream
    if _origin(meta.location) != _origin(url):
        headers.pop("authorization", None)  # a signed CDN URL: the token stays on the hub
    resume = part.prepare(size)
    on_size(resume)
    if resume:
        log.info("Resuming %s/%s at %d of %s bytes", repo_id, entry.path, resume, size)
    writer = part.open_writer(stop, on_size)
    ok = False
    try:
        http_get(meta.location, writer, resume_size=resume, expected_size=size, headers=headers,
                 displayed_filename=entry.path, tqdm_class=_NoBar)  # type: ignore[arg-type]
        ok = True
    finally:
        writer.close(sync=ok)
    return size
