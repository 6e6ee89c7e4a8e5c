"""Server-sent events in the two framings clients expect.

Chat and text completions stream `data: {json}\\n\\n` and end with
`data: [DONE]`. The Responses and Anthropic APIs name every event after its
JSON `type` (`event: response.completed\\ndata: {...}`) and simply end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiohttp import web
from pydantic import BaseModel

_SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # reverse proxies must not hold chunks back
}


class SSEWriter:
    """Writes one stream; a gone client surfaces as ConnectionResetError from `send`."""

    def __init__(self, response: web.StreamResponse, named: bool = False) -> None:
        self.response = response
        self.named = named

    @classmethod
    async def open(
        cls, request: web.Request, headers: Mapping[str, str], named: bool = False
    ) -> SSEWriter:
        response = web.StreamResponse(headers={**_SSE_HEADERS, **headers})
        await response.prepare(request)
        return cls(response, named)

    async def send(self, data: BaseModel) -> None:
        payload = b"data: " + data.model_dump_json().encode() + b"\n\n"
        if self.named:  # every event model of those APIs has its name in `type`
            payload = f"event: {getattr(data, 'type', 'message')}\n".encode() + payload
        await self.response.write(payload)

    async def send_all(self, events: Iterable[BaseModel]) -> None:
        for event in events:
            await self.send(event)

    async def end(self) -> None:
        """`[DONE]` closes OpenAI's chat streams; named-event streams end with their last event."""
        if not self.named:
            await self.response.write(b"data: [DONE]\n\n")
        await self.response.write_eof()
