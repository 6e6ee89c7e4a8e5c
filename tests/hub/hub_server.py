"""A fake Hugging Face Hub: the HTTP API huggingface_hub's client really uses, on 127.0.0.1.

Serves real bytes from memory, with per-test fault injection (status codes, cut
connections, corrupted bodies, a rate limit) and per-file byte counters, so tests
can assert that a resumed download fetched only what was missing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

CHUNK = 256 * 1024
LFS_SUFFIXES = (".safetensors", ".gguf", ".bin")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "U32": 4, "I64": 8, "U8": 1}


def make_safetensors(tensors: dict[str, tuple[str, list[int]]]) -> bytes:
    """A valid safetensors file of zeros: {name: (dtype, shape)}."""
    header: dict[str, Any] = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = DTYPE_BYTES[dtype]
        for dim in shape:
            n *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


def safetensors_parameters(data: bytes) -> dict[str, int]:
    """Element counts per dtype from a safetensors header, as the hub's `safetensors` field."""
    (length,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + length])
    except ValueError:
        return {}
    counts: Counter[str] = Counter()
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        n = 1
        for dim in tensor["shape"]:
            n *= dim
        counts[tensor["dtype"]] += n
    return dict(counts)


@dataclass
class FakeFile:
    path: str
    data: bytes
    lfs: bool

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        pointer = lfs_pointer(self.sha256, len(self.data))
        self.blob_id = git_blob_sha1(pointer if self.lfs else self.data)
        self.pointer_size = len(pointer)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, FakeFile]
    sha: str
    gated: str | bool = False
    private: bool = False
    tags: list[str] = field(default_factory=list)
    card_data: dict[str, Any] | None = None
    downloads: int = 0
    likes: int = 0
    last_modified: str = "2024-01-01T00:00:00.000Z"
    created_at: str = "2023-01-01T00:00:00.000Z"
    library_name: str | None = None
    gguf: dict[str, Any] | None = None
    _safetensors: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def author(self) -> str | None:
        return self.repo_id.split("/")[0] if "/" in self.repo_id else None

    def safetensors(self) -> dict[str, Any] | None:
        if self._safetensors is not None:
            return self._safetensors or None
        counts: Counter[str] = Counter()
        for f in self.files.values():
            if f.path.endswith(".safetensors"):
                counts.update(safetensors_parameters(f.data))
        self._safetensors = {"parameters": dict(counts), "total": sum(counts.values())} if counts else {}
        return self._safetensors or None

    def summary(self) -> dict[str, Any]:
        return {
            "_id": self.sha[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": self.author,
            "downloads": self.downloads,
            "likes": self.likes,
            "lastModified": self.last_modified,
            "createdAt": self.created_at,
            "private": self.private,
            "gated": self.gated,
            "tags": self.tags,
            "pipeline_tag": "text-generation",
            "library_name": self.library_name,
            "sha": self.sha,
        }

    def info(self, blobs: bool) -> dict[str, Any]:
        siblings = []
        for f in self.files.values():
            sib: dict[str, Any] = {"rfilename": f.path}
            if blobs:
                sib["size"] = len(f.data)
                sib["blobId"] = f.blob_id
                if f.lfs:
                    sib["lfs"] = {"sha256": f.sha256, "size": len(f.data), "pointerSize": f.pointer_size}
            siblings.append(sib)
        info = self.summary() | {"siblings": siblings, "disabled": False}
        if self.card_data is not None:
            info["cardData"] = self.card_data
        if (st := self.safetensors()) is not None:
            info["safetensors"] = st
        if self.gguf is not None:
            info["gguf"] = self.gguf
        return info


@dataclass
class Fault:
    """One injected fault; `times` < 0 means forever."""

    kind: str  # "status" | "cut" | "corrupt"
    path: str | None = None  # file path in the repo; None matches every request
    method: str | None = None
    times: int = 1
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    after: int = 0  # "cut": bytes of body sent before the connection is closed
    abort: bool = False  # "cut": reset instead of a clean close

    def matches(self, method: str, path: str | None) -> bool:
        if self.times == 0:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.path is None or self.path == path


class FakeHub:
    """The hub in a background thread; `url` is its endpoint."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.faults: list[Fault] = []
        self.tokens: set[str] = set()
        self.served: Counter[str] = Counter()  # "repo/path" -> body bytes sent
        self.requests: list[tuple[str, str, str | None]] = []  # (method, url path, Range)
        self.rate: float | None = None  # body bytes per second, None = unlimited
        self.page_size = 1000
        self.ignore_range = False  # answer 200 with the whole file, as some proxies do
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.url = ""

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeHub:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/models", self._list_models)
        app.router.add_get("/api/models/{rest:.+}", self._model_api)
        app.router.add_route("HEAD", "/{rest:.+}", self._resolve)
        app.router.add_get("/{rest:.+}", self._resolve, allow_head=False)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def close(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- setup ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to a healthy hub between tests (repos stay)."""
        with self._lock:
            self.faults.clear()
            self.served.clear()
            self.requests.clear()
            self.tokens.clear()
        self.rate = None
        self.page_size = 1000
        self.ignore_range = False

    def add_repo(self, repo_id: str, files: dict[str, bytes | Path], **meta: Any) -> FakeRepo:
        loaded = {}
        for path, content in files.items():
            data = content.read_bytes() if isinstance(content, Path) else content
            loaded[path] = FakeFile(path, data, path.endswith(LFS_SUFFIXES))
        sha = hashlib.sha1(repo_id.encode() + b"".join(f.blob_id.encode() for f in loaded.values()))
        repo = FakeRepo(repo_id, loaded, sha.hexdigest(), **meta)
        self.repos[repo_id] = repo
        return repo

    def fail(self, status: int, *, path: str | None = None, method: str | None = None,
             times: int = 1, error_code: str | None = None,
             headers: dict[str, str] | None = None) -> Fault:
        hdrs = dict(headers or {})
        if error_code:
            hdrs["X-Error-Code"] = error_code
        return self._add(Fault("status", path, method, times, status, hdrs))

    def cut(self, path: str, after: int, *, times: int = 1, abort: bool = False) -> Fault:
        return self._add(Fault("cut", path, "GET", times, after=after, abort=abort))

    def corrupt(self, path: str, *, times: int = -1) -> Fault:
        return self._add(Fault("corrupt", path, "GET", times))

    def _add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def served_bytes(self, repo_id: str, path: str) -> int:
        with self._lock:
            return self.served[f"{repo_id}/{path}"]

    def _take_fault(self, kind: str, method: str, path: str | None) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.kind == kind and fault.matches(method, path):
                    if fault.times > 0:
                        fault.times -= 1
                    return fault
        return None

    # -- API --------------------------------------------------------------------------------

    async def _list_models(self, request: web.Request) -> web.Response:
        self._log(request)
        if (fault := self._take_fault("status", "GET", None)) is not None:
            return self._error(fault.status, fault.headers.get("X-Error-Code"), "injected", fault.headers)
        q = request.query
        found = [r for r in self.repos.values() if not r.private]
        if search := q.get("search"):
            found = [r for r in found if search.lower() in r.repo_id.lower()]
        if author := q.get("author"):
            found = [r for r in found if r.author == author]
        for tag in q.getall("filter", []):
            found = [r for r in found if tag in r.tags or tag == r.library_name]
        renames = {"lastModified": "last_modified", "createdAt": "created_at"}
        key = renames.get(q.get("sort", ""), q.get("sort"))
        if key in ("downloads", "likes", "last_modified", "created_at"):
            reverse = q.get("direction", "-1") == "-1"
            found.sort(key=lambda r: getattr(r, key), reverse=reverse)
        limit = int(q.get("limit", "1000"))
        page, size = int(q.get("p", "0")), min(limit, self.page_size)
        body = [r.summary() for r in found[page * size : (page + 1) * size]]
        headers = {}
        if (page + 1) * size < min(len(found), limit):
            nxt = request.url.update_query(p=str(page + 1))
            headers["Link"] = f'<{nxt}>; rel="next"'
        return web.json_response(body, headers=headers)

    async def _model_api(self, request: web.Request) -> web.Response:
        self._log(request)
        rest = request.match_info["rest"]
        tree_path = ""
        if "/tree/" in rest:
            repo_id, _, tail = rest.partition("/tree/")
            revision, _, tree_path = tail.partition("/")
        elif "/revision/" in rest:
            repo_id, _, revision = rest.partition("/revision/")
        else:
            repo_id, revision = rest, "main"
        if (err := self._check(request, "GET", repo_id, revision, None, files=False)) is not None:
            return err
        repo = self.repos[repo_id]
        if "/tree/" in rest:
            return web.json_response(self._tree(repo, tree_path))
        return web.json_response(repo.info(blobs=request.query.get("blobs") == "true"))

    @staticmethod
    def _tree(repo: FakeRepo, prefix: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        dirs: set[str] = set()
        for f in repo.files.values():
            if prefix and not f.path.startswith(prefix.rstrip("/") + "/"):
                continue
            parts = f.path.split("/")
            for i in range(1, len(parts)):
                dirs.add("/".join(parts[:i]))
            entry: dict[str, Any] = {"type": "file", "oid": f.blob_id, "size": len(f.data), "path": f.path}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": f.pointer_size}
            entries.append(entry)
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in sorted(dirs)]
        return entries

    # -- files ------------------------------------------------------------------------------

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        self._log(request)
        rest = request.match_info["rest"]
        if "/resolve/" not in rest:
            return web.Response(status=404)
        repo_id, _, tail = rest.partition("/resolve/")
        revision, _, path = tail.partition("/")
        if (err := self._check(request, request.method, repo_id, revision, path, files=True)) is not None:
            return err
        repo = self.repos[repo_id]
        file = repo.files[path]
        size = len(file.data)
        headers = {
            "X-Repo-Commit": repo.sha,
            "ETag": f'"{file.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if file.lfs:
            headers["X-Linked-Size"] = str(size)
            headers["X-Linked-Etag"] = f'"{file.sha256}"'
        start, end = 0, size
        status = 200
        rng = None if self.ignore_range else request.headers.get("Range")
        if rng and rng.startswith("bytes="):
            first, _, last = rng[6:].partition("-")
            start = int(first or 0)
            end = min(int(last) + 1, size) if last else size
            if start >= size:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        if request.method == "HEAD":
            headers["Content-Length"] = str(size)
            return web.Response(status=200, headers=headers)
        return await self._stream(request, repo_id, file, start, end, status, headers)

    async def _stream(self, request: web.Request, repo_id: str, file: FakeFile, start: int,
                      end: int, status: int, headers: dict[str, str]) -> web.StreamResponse:
        cut = self._take_fault("cut", "GET", file.path)
        corrupt = self._take_fault("corrupt", "GET", file.path)
        body = memoryview(file.data)[start:end]
        if corrupt is not None and len(body):
            damaged = bytearray(body)
            damaged[len(damaged) // 2] ^= 0xFF
            body = memoryview(bytes(damaged))
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(body)
        await resp.prepare(request)
        key = f"{repo_id}/{file.path}"
        sent = 0
        while sent < len(body):
            n = min(CHUNK, len(body) - sent)
            if cut is not None and sent + n >= cut.after:
                n = cut.after - sent
            if n > 0:
                await resp.write(body[sent : sent + n])
                sent += n
                with self._lock:
                    self.served[key] += n
            if cut is not None and sent >= cut.after:
                await asyncio.sleep(0.05)  # let the bytes leave before the connection goes
                transport = request.transport
                if transport is not None:
                    transport.abort() if cut.abort else transport.close()
                return resp
            if self.rate:
                await asyncio.sleep(n / self.rate)
        await resp.write_eof()
        return resp

    # -- checks -----------------------------------------------------------------------------

    def _check(self, request: web.Request, method: str, repo_id: str, revision: str,
               path: str | None, *, files: bool) -> web.Response | None:
        """The hub's errors, in its order: injected faults, repo, revision, access, file."""
        fault = self._take_fault("status", method, path)
        if fault is not None:
            return self._error(fault.status, fault.headers.get("X-Error-Code"), "injected", fault.headers)
        repo = self.repos.get(repo_id)
        authorized = request.headers.get("Authorization", "").removeprefix("Bearer ") in self.tokens
        if repo is None or (repo.private and not authorized):
            return self._error(401 if repo is not None else 404, "RepoNotFound", "Repository not found")
        if revision not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if files and repo.gated and not authorized:
            has_token = "Authorization" in request.headers
            return self._error(403 if has_token else 401, "GatedRepo",
                               "Access to model is restricted. You must be authenticated.")
        if files and path not in repo.files:
            return self._error(404, "EntryNotFound", "Entry not found",
                               {"X-Repo-Commit": repo.sha})
        return None

    @staticmethod
    def _error(status: int, code: str | None, message: str,
               headers: dict[str, str] | None = None) -> web.Response:
        hdrs = dict(headers or {})
        if code:
            hdrs["X-Error-Code"] = code
        hdrs["X-Error-Message"] = message
        return web.json_response({"error": message}, status=status, headers=hdrs)

    def _log(self, request: web.Request) -> None:
        with self._lock:
            self.requests.append((request.method, request.path, request.headers.get("Range")))
