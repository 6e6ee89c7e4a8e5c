"""One generation, answered as a JSON body or as an SSE stream.

Headers wait for the engine's first event, so a request that cannot run
(unknown model, context overflow, no model loaded) becomes a proper HTTP
error. Once a stream has begun it always ends cleanly with a finish chunk and
`[DONE]`: an error chunk after text makes aider and Continue retry in a loop.
"""

from __future__ import annotations

import logging

from aiohttp import web
from pydantic import BaseModel

from app.engine.types import (
    Failed,
    Finished,
    FinishReason,
    GenerationRequest,
    Started,
    TextDelta,
    TokenLogprob,
    Usage,
)
from app.server.bridge import EngineEvents, generation
from app.server.convert import FormatFactory, ResponseFormat
from app.server.errors import from_engine_error
from app.server.sse import SSEWriter

log = logging.getLogger(__name__)

CLAMPED_HEADER = "x-minerva-max-tokens-clamped"


def json_model(body: BaseModel, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=body.model_dump_json(), content_type="application/json", headers=headers
    )


async def respond(
    request: web.Request,
    gen: GenerationRequest,
    make_format: FormatFactory,
    *,
    stream: bool,
    include_usage: bool,
) -> web.StreamResponse:
    """Run `gen` on the engine and answer the client in OpenAI's shape."""
    async with generation(request, gen) as events:
        started = await _started(events)
        fmt = make_format(started, gen.logprobs)
        headers = {CLAMPED_HEADER: str(started.max_tokens)} if started.max_tokens_clamped else {}
        if stream:
            return await _stream(request, events, fmt, headers, started, include_usage)
        return await _collect(events, fmt, headers)


async def _started(events: EngineEvents) -> Started:
    event = await events.next()
    if isinstance(event, Failed):
        raise from_engine_error(event.error)
    if not isinstance(event, Started):
        raise RuntimeError(f"The engine sent {type(event).__name__} before Started")
    return event


async def _collect(
    events: EngineEvents, fmt: ResponseFormat, headers: dict[str, str]
) -> web.Response:
    """Nothing is sent yet, so a failure at any point is still an HTTP error."""
    text: list[str] = []
    logprobs: list[TokenLogprob] = []
    async for event in events:
        if isinstance(event, TextDelta):
            text.append(event.text)
            logprobs.extend(event.logprobs)
        elif isinstance(event, Failed):
            raise from_engine_error(event.error)
        elif isinstance(event, Finished):
            _log_finished(event)
            body = fmt.response("".join(text), logprobs, event.finish_reason, event.usage)
            return json_model(body, headers)
    raise RuntimeError("The engine's events ended without Finished")


async def _stream(
    request: web.Request,
    events: EngineEvents,
    fmt: ResponseFormat,
    headers: dict[str, str],
    started: Started,
    include_usage: bool,
) -> web.StreamResponse:
    sse = await SSEWriter.open(request, headers)
    try:
        await _pump(sse, events, fmt, started, include_usage)
    except ConnectionResetError:
        log.info("Client disconnected mid-stream from %s", request.path)
    except Exception:
        # Headers are out: no error response is possible any more, only an end.
        log.exception("Streaming to %s failed", request.path)
    return sse.response


async def _pump(
    sse: SSEWriter, events: EngineEvents, fmt: ResponseFormat, started: Started, include_usage: bool
) -> None:
    for chunk in fmt.opening():
        await sse.send(chunk)
    reason: FinishReason = "stop"  # if the engine fails mid-stream
    usage: Usage | None = None
    tokens = 0
    async for event in events:
        if isinstance(event, TextDelta):
            tokens += len(event.token_ids)
            await sse.send(fmt.chunk(event))
        elif isinstance(event, Finished):
            _log_finished(event)
            reason, usage = event.finish_reason, event.usage
        elif isinstance(event, Failed):
            log.warning(
                "Generation failed after streaming began; ending the stream: %s", event.error
            )
    await sse.send(fmt.closing(reason))
    if include_usage:
        usage = usage or Usage(started.prompt_tokens, tokens, started.cached_tokens)
        await sse.send(fmt.usage_chunk(usage))
    await sse.done()


def _log_finished(event: Finished) -> None:
    log.info(
        "Generated %d tokens (%s) after %d prompt tokens (%d cached): %.1f tok/s",
        event.usage.completion_tokens,
        event.finish_reason,
        event.usage.prompt_tokens,
        event.usage.cached_tokens,
        event.timings.decode_tps,
    )
