"""Running the API: in a background thread (GUI, tests, benchmarks) or in the foreground (CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable

from aiohttp import web

from app.core.settings import ServerSettings
from app.engine.types import EngineLike
from app.server.app import create_app

log = logging.getLogger(__name__)

# Generations are cancelled first, so handlers normally end well within this.
SHUTDOWN_TIMEOUT_S = 5.0


def server_url(host: str, port: int) -> str:
    """A URL a local client can use, even when listening on every interface."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def run_server(
    settings: ServerSettings,
    engine: EngineLike,
    stop: asyncio.Event,
    on_ready: Callable[[int], None],
) -> None:
    """Serve until `stop` is set, then shut down gracefully; `on_ready` gets the bound port."""
    runner = web.AppRunner(
        create_app(settings, engine),
        handle_signals=False,
        handler_cancellation=True,  # a client that leaves stops its generation at once
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        port = runner.addresses[0][1]
        log.info("Minerva API listening on %s", server_url(settings.host, port))
        on_ready(port)
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("Minerva API stopped")


class ServerThread:
    """The server on its own event loop in a daemon thread; port 0 picks a free port."""

    def __init__(self, settings: ServerSettings, engine: EngineLike) -> None:
        self.settings = settings
        self.engine = engine
        self.port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("The server is not running")
        return server_url(self.settings.host, self.port)

    def start(self, timeout: float = 10.0) -> None:
        """Return once the server listens; raise what stopped it otherwise (e.g. port in use)."""
        if self._thread is not None:
            raise RuntimeError("The server is already running")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="minerva-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"The server did not start within {timeout} s")
        if self._error is not None:
            self._thread = None
            raise self._error

    def stop(self, timeout: float = SHUTDOWN_TIMEOUT_S + 5.0) -> None:
        """Stop listening, cancel running generations, and wait for the thread."""
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between: stopped
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        self._thread = None
        self.port = None

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start(), or logged if it came later
            self._error = exc
            if self._ready.is_set():
                log.exception("The API server stopped unexpectedly")
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await run_server(self.settings, self.engine, self._stop, self._on_ready)

    def _on_ready(self, port: int) -> None:
        self.port = port
        self._ready.set()


def serve(settings: ServerSettings, engine: EngineLike) -> None:
    """Serve in the foreground until SIGINT or SIGTERM (the CLI); OSError if the port is taken."""
    asyncio.run(_serve_until_signal(settings, engine))


async def _serve_until_signal(settings: ServerSettings, engine: EngineLike) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Windows, or not the main thread: Ctrl-C still ends asyncio.run.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    await run_server(settings, engine, stop, lambda port: None)
