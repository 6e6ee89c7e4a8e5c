"""Hub errors with messages fit for the user, and how huggingface_hub's errors map to them.

The GUI shows `str(error)` as is, so every message says what went wrong and what to do.
"""

from __future__ import annotations

import errno

import httpx2
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class HubError(Exception):
    """Base of every error app.hub raises on purpose."""


class AccessDeniedError(HubError):
    """401/403: a gated or private repo and no (good enough) token."""


class NotFoundError(HubError):
    """404: the repo, the revision or a file does not exist."""

    def __init__(self, message: str, what: str) -> None:
        super().__init__(message)
        self.what = what  # "repo" | "revision" | "file"


class DiskFullError(HubError):
    def __init__(self, message: str, needed: int, free: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.free = free


class IntegrityError(HubError):
    """A downloaded file's size or hash differs from what the hub announced."""


class NetworkError(HubError):
    """The hub could not be reached, or kept failing after every retry."""


class UnsafePathError(HubError, ValueError):
    """A repo id or file name that could escape the models folder."""


class RepoFormatError(HubError):
    """The repo holds nothing Minerva can download as a model (or needs a file chosen)."""


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def status_of(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def retry_after(exc: BaseException) -> float | None:
    """Seconds from a Retry-After header (delay form only), if the error carries one."""
    response = getattr(exc, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: connection trouble, timeouts, 429, 5xx, a body cut short."""
    if isinstance(exc, OfflineModeIsEnabled):
        return False
    if isinstance(exc, httpx2.TransportError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, HfHubHTTPError):
        return status_of(exc) in TRANSIENT_STATUS
    # http_get's "Consistency check failed": the body ended early without an error.
    return isinstance(exc, OSError) and "Consistency check failed" in str(exc)


def translate(exc: BaseException, repo_id: str, revision: str | None = None,
              filename: str | None = None) -> HubError:
    """The HubError for a huggingface_hub/httpx error (GatedRepoError checked before its base)."""
    if isinstance(exc, HubError):
        return exc
    page = f"https://huggingface.co/{repo_id}"
    if isinstance(exc, GatedRepoError):
        if status_of(exc) == 403:
            return AccessDeniedError(
                f"{repo_id} is a gated model and your token has no access yet: accept its license "
                f"on {page} with the account the token belongs to."
            )
        return AccessDeniedError(
            f"{repo_id} is a gated model: accept its license on {page}, or set a Hugging Face "
            "token (HF_TOKEN) of an account that has accepted it."
        )
    if isinstance(exc, RepositoryNotFoundError):
        if status_of(exc) in (401, 403):
            return AccessDeniedError(
                f"{repo_id} was not found or is private: check the name, or set a Hugging Face "
                "token (HF_TOKEN) with access to it."
            )
        return NotFoundError(f"Model {repo_id} does not exist on the Hugging Face Hub.", "repo")
    if isinstance(exc, RevisionNotFoundError):
        return NotFoundError(f"{repo_id} has no revision '{revision}'.", "revision")
    if isinstance(exc, RemoteEntryNotFoundError):
        at = f" at revision '{revision}'" if revision else ""
        return NotFoundError(f"{repo_id} has no file '{filename}'{at}.", "file")
    if isinstance(exc, OfflineModeIsEnabled):
        return NetworkError("Hugging Face Hub access is off (HF_HUB_OFFLINE is set).")
    status = status_of(exc)
    if status in (401, 403):
        return AccessDeniedError(
            f"Access to {repo_id} was refused ({status}): set a Hugging Face token (HF_TOKEN) "
            f"with access to it, and accept its license on {page} if it asks for that."
        )
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return DiskFullError(f"The disk filled up while downloading {repo_id}.", 0, 0)
    what = f"{filename} from {repo_id}" if filename else repo_id
    if status is not None:
        return NetworkError(f"The Hugging Face Hub answered {status} for {what}: {_first_line(exc)}")
    return NetworkError(f"Could not reach the Hugging Face Hub for {what}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
