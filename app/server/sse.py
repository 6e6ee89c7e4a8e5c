"""Server-sent events the way OpenAI streams: `data: {json}\\n\\n`, then `data: [DONE]`."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from pydantic import BaseModel

_SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # reverse proxies must not hold chunks back
}


class SSEWriter:
    """Writes one stream; a gone client surfaces as ConnectionResetError from `send`."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response

    @classmethod
    async def open(cls, request: web.Request, headers: Mapping[str, str]) -> SSEWriter:
        response = web.StreamResponse(headers={**_SSE_HEADERS, **headers})
        await response.prepare(request)
        return cls(response)

    async def send(self, data: BaseModel) -> None:
        await self.response.write(b"data: " + data.model_dump_json().encode() + b"\n\n")

    async def done(self) -> None:
        await self.response.write(b"data: [DONE]\n\n")
        await self.response.write_eof()
