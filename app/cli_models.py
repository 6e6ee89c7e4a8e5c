"""`minerva models ...`: search, pull, list, remove, import and inspect models from a terminal."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from app.core.paths import data_dir, models_dir
from app.core.settings import BUNDLED_MODEL_ID
from app.hub.errors import HubError


def add_parser(commands) -> None:
    models = commands.add_parser("models", help="find, download and manage models")
    sub = models.add_subparsers(dest="models_command")
    search = sub.add_parser("search", help="search the Hugging Face hub")
    search.add_argument("query", nargs="?", default="")
    search.add_argument("--gguf", action="store_true", help="GGUF repos instead of MLX ones")
    search.add_argument("--sort", choices=["downloads", "likes", "recent", "trending"], default="downloads")
    search.add_argument("--limit", type=int, default=20)
    pull = sub.add_parser("pull", help="download a model (resumes an interrupted download)")
    pull.add_argument("repo")
    pull.add_argument("--revision", default="main")
    pull.add_argument("--file", action="append", help="only this file (e.g. one .gguf); repeatable")
    sub.add_parser("ls", help="list installed models")
    rm = sub.add_parser("rm", help="delete an installed model")
    rm.add_argument("name")
    imp = sub.add_parser("import", help="convert a .gguf file into an MLX model")
    imp.add_argument("file", type=Path)
    imp.add_argument("--name")
    info = sub.add_parser("info", help="details of an installed model or a hub repo")
    info.add_argument("name")


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _registry():
    from app.hub.registry import ModelRegistry

    return ModelRegistry(models_dir())


def run(args: argparse.Namespace) -> int:
    handlers = {"search": _search, "pull": _pull, "ls": _ls, "rm": _rm, "import": _import, "info": _info}
    handler = handlers.get(args.models_command or "ls")
    try:
        return handler(args)
    except HubError as exc:
        print(f"minerva: {exc}", file=sys.stderr)
        return 1


def _search(args) -> int:
    from app.hub.search import search_models

    results = search_models(args.query, fmt="gguf" if args.gguf else "mlx", sort=args.sort, limit=args.limit)
    if not results:
        print("No models found.")
    for m in results:
        print(f"{m.repo_id:60} {m.downloads:>10,} downloads {m.likes:>6,} likes")
    return 0


def _pull(args) -> int:
    from app.hub.downloads import DownloadManager

    manager = DownloadManager(models_dir(), data_dir() / "downloads.json", max_parallel=1)
    done = threading.Event()
    bar = ProgressBar(sys.stderr)
    download_id = manager.enqueue(args.repo, args.revision, args.file)

    def on_event(event) -> None:
        if event.info.id != download_id:
            return
        bar.show(event.info)
        if event.info.status in ("completed", "failed", "cancelled", "paused"):
            done.set()

    manager.subscribe(on_event)
    try:
        info = manager.wait(download_id)
    except KeyboardInterrupt:
        manager.pause(download_id)
        print("\nPaused; run the same command again to resume.", file=sys.stderr)
        return 130
    finally:
        manager.close()
    bar.finish()
    if info.status != "completed":
        print(f"minerva: download {info.status}: {info.error or ''}", file=sys.stderr)
        return 1
    print(f"Downloaded {args.repo} to {info.folder}")
    return 0


class ProgressBar:
    """One line redrawn in place: percent, bytes, speed, ETA."""

    WIDTH = 30

    def __init__(self, stream) -> None:
        self.stream = stream

    def show(self, info) -> None:
        filled = int(self.WIDTH * info.fraction)
        eta = f"{info.eta_s:.0f}s" if info.eta_s is not None else "--"
        line = (f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {info.fraction:6.1%} "
                f"{_size(info.bytes_done)}/{_size(info.bytes_total)} {_size(int(info.speed_bps))}/s ETA {eta} ")
        self.stream.write(line)
        self.stream.flush()

    def finish(self) -> None:
        self.stream.write("\n")


def _ls(args) -> int:
    registry = _registry()
    models = registry.models()
    if not any(m.id == BUNDLED_MODEL_ID for m in models):
        print(f"{BUNDLED_MODEL_ID:50} {'~100 MB':>9} bundled (converted on first use)")
    for m in models:
        quant = f"{m.quantization.bits}-bit" if m.quantization and m.quantization.bits else "-"
        state = "" if m.supported else f"  (not loadable: {m.reason})"
        print(f"{m.id:50} {_size(m.size_bytes):>9} {m.format:5} {quant:7} {m.model_type or '?':12}{state}")
    print(f"Total on disk: {_size(registry.disk_usage().total)}")
    return 0


def _rm(args) -> int:
    from app.hub.registry import RegistryError

    try:
        freed = _registry().delete(args.name)
    except RegistryError as exc:
        print(f"minerva: {exc}", file=sys.stderr)
        return 1
    print(f"Deleted {args.name}, freed {_size(freed)}.")
    return 0


def _import(args) -> int:
    from app.engine.gguf_import import import_gguf
    from app.engine.types import ModelLoadError

    try:
        folder = import_gguf(args.file, models_dir(), name=args.name)
    except ModelLoadError as exc:
        print(f"minerva: {exc.message}", file=sys.stderr)
        return 1
    print(f"Imported {args.file.name} as {folder.name} ({folder})")
    return 0


def _info(args) -> int:
    local = _registry().get(args.name)
    if local is not None:
        for key in ("id", "path", "format", "source", "model_type", "quantization", "context_length", "supported", "reason"):
            print(f"{key:15} {getattr(local, key)}")
        print(f"{'size':15} {_size(local.size_bytes)}")
        return 0
    from app.hub.fit import estimate_fit
    from app.hub.search import repo_details

    d = repo_details(args.name)
    print(f"{'repo':15} {d.repo_id} ({d.format}, {d.license or 'license unknown'}{', gated' if d.gated else ''})")
    print(f"{'architecture':15} {d.model_type}  params {d.param_count or '?'}  context {d.context_length}")
    print(f"{'quantization':15} {d.quantization}")
    print(f"{'download':15} {_size(d.download_bytes)} in {len(d.needed_files)} files")
    if d.config:
        context = min(d.context_length or 8192, 8192)
        print(f"{'fit':15} {estimate_fit(d.config, d.weights_bytes, context).message}")
    return 0
