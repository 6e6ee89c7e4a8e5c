"""Typed application keys: what every handler may take from `request.app`."""

from __future__ import annotations

from aiohttp import web

from app.core.settings import ServerSettings
from app.engine.types import CancelToken, EngineLike
from app.server.store import ResponseStore

ENGINE = web.AppKey("engine", EngineLike)
SETTINGS = web.AppKey("settings", ServerSettings)
# Cancel tokens of the generations now running, so shutdown can stop them.
IN_FLIGHT = web.AppKey("in_flight", set[CancelToken])
# Recent Responses API conversations, for `previous_response_id`.
RESPONSES = web.AppKey("responses", ResponseStore)
