"""From the engine thread to the event loop, and cancellation when nobody listens.

The engine calls a request's sink on its own thread, so each event hops onto
the loop with `call_soon_threadsafe` into a per-request queue. Our runner
cancels handlers whose client left, but aiohttp's default (>= 3.9) does not,
so a small watcher also notices a closed connection and cancels the
generation itself: the app behaves the same under any runner.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from app.engine.types import CancelToken, Event, Failed, Finished, GenerationRequest
from app.server.keys import ENGINE, IN_FLIGHT

log = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.1


class EngineEvents:
    """One request's events, in order, on the event loop; iteration ends after the last."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self.finished = False

    def sink(self, event: Event) -> None:
        """Called on the engine thread."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: the server has gone away
            log.debug("Dropping %s: event loop closed", type(event).__name__)

    async def next(self) -> Event:
        event = await self._queue.get()
        self.finished = isinstance(event, (Finished, Failed))
        return event

    def __aiter__(self) -> EngineEvents:
        return self

    async def __anext__(self) -> Event:
        if self.finished:
            raise StopAsyncIteration
        return await self.next()


@asynccontextmanager
async def generation(request: web.Request, gen: GenerationRequest) -> AsyncIterator[EngineEvents]:
    """Submit `gen`; cancel it if the client leaves or the handler stops listening early."""
    events = EngineEvents()
    in_flight = request.app[IN_FLIGHT]
    in_flight.add(gen.cancel)
    watcher = asyncio.create_task(_cancel_on_disconnect(request, gen.cancel))
    try:
        request.app[ENGINE].submit(gen, events.sink)
        yield events
    finally:
        watcher.cancel()
        in_flight.discard(gen.cancel)
        if not events.finished:
            log.info("Cancelling unfinished generation %d", gen.id)
            gen.cancel.cancel()


async def _cancel_on_disconnect(request: web.Request, token: CancelToken) -> None:
    while not token.cancelled:
        transport = request.transport
        if transport is None or transport.is_closing():
            log.info("Client left %s; cancelling its generation", request.path)
            token.cancel()
            return
        await asyncio.sleep(DISCONNECT_POLL_S)
