"""One generation, answered as a JSON body or as an SSE stream, in any API's shape.

Headers wait for the engine's first event, so a request that cannot run
(unknown model, context overflow, no model loaded) becomes a proper HTTP
error. Once a stream has begun it always ends with the format's terminal
events: for chat a finish chunk and `[DONE]` even after a failure (an error
chunk after text makes aider and Continue retry in a loop), for the Responses
and Anthropic APIs their own failure events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from pydantic import BaseModel

from app.engine.types import (
    Failed,
    Finished,
    GenerationRequest,
    ReasoningDelta,
    Started,
    TextDelta,
    ToolCallDelta,
)
from app.server.bridge import EngineEvents, generation
from app.server.errors import APIError, from_engine_error
from app.server.keys import SETTINGS
from app.server.output import APIFormat, Output
from app.server.sse import SSEWriter

log = logging.getLogger(__name__)

CLAMPED_HEADER = "x-minerva-max-tokens-clamped"

FormatFactory = Callable[[Started], APIFormat]

_DELTAS = (TextDelta, ReasoningDelta, ToolCallDelta)


def json_model(body: BaseModel, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=body.model_dump_json(), content_type="application/json", headers=headers
    )


async def respond(
    request: web.Request, gen: GenerationRequest, make_format: FormatFactory, *, stream: bool
) -> web.StreamResponse:
    """Run `gen` on the engine and answer in the shape `make_format` builds."""
    limit = request.app[SETTINGS].max_messages
    if gen.messages is not None and len(gen.messages) > limit:
        raise APIError(400, f"Too many messages: {len(gen.messages)} (the limit is {limit}).", param="messages")
    async with generation(request, gen) as events:
        started = await _started(events)
        fmt = make_format(started)
        headers = {CLAMPED_HEADER: str(started.max_tokens)} if started.max_tokens_clamped else {}
        if stream:
            return await _stream(request, events, fmt, headers, started)
        return await _collect(events, fmt, headers)


async def _started(events: EngineEvents) -> Started:
    event = await events.next()
    if isinstance(event, Failed):
        raise from_engine_error(event.error)
    if not isinstance(event, Started):
        raise RuntimeError(f"The engine sent {type(event).__name__} before Started")
    return event


async def _collect(events: EngineEvents, fmt: APIFormat, headers: dict[str, str]) -> web.Response:
    """Nothing is sent yet, so a failure at any point is still an HTTP error."""
    output = Output()
    async for event in events:
        if isinstance(event, _DELTAS):
            output.add(event)
        elif isinstance(event, Failed):
            raise from_engine_error(event.error)
        elif isinstance(event, Finished):
            _log_finished(event)
            return json_model(fmt.response(output, event), headers)
    raise RuntimeError("The engine's events ended without Finished")


async def _stream(
    request: web.Request,
    events: EngineEvents,
    fmt: APIFormat,
    headers: dict[str, str],
    started: Started,
) -> web.StreamResponse:
    sse = await SSEWriter.open(request, headers, named=fmt.named_events)
    try:
        await _pump(sse, events, fmt, started)
    except ConnectionResetError:
        log.info("Client disconnected mid-stream from %s", request.path)
    except Exception:
        # Headers are out: no error response is possible any more, only an end.
        log.exception("Streaming to %s failed", request.path)
    return sse.response


async def _pump(sse: SSEWriter, events: EngineEvents, fmt: APIFormat, started: Started) -> None:
    await sse.send_all(fmt.opening())
    output = Output()
    async for event in events:
        if isinstance(event, _DELTAS):
            added = output.add(event)
            if added is not None:
                await sse.send_all(fmt.delta(added, output))
        elif isinstance(event, Finished):
            _log_finished(event)
            await sse.send_all(fmt.closing(output, event))
        elif isinstance(event, Failed):
            log.warning(
                "Generation failed after streaming began; ending the stream: %s", event.error
            )
            await sse.send_all(fmt.failure(output, event.error, output.usage(started)))
    await sse.end()


def _log_finished(event: Finished) -> None:
    log.info(
        "Generated %d tokens (%s) after %d prompt tokens (%d cached): %.1f tok/s",
        event.usage.completion_tokens,
        event.finish_reason,
        event.usage.prompt_tokens,
        event.usage.cached_tokens,
        event.timings.decode_tps,
    )
