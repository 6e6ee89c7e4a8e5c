"""Typed application keys: what every handler may take from `request.app`."""

from __future__ import annotations

from aiohttp import web

from app.core.settings import ServerSettings
from app.engine.types import CancelToken, EngineLike

ENGINE = web.AppKey("engine", EngineLike)
SETTINGS = web.AppKey("settings", ServerSettings)
# Cancel tokens of the generations now running, so shutdown can stop them.
IN_FLIGHT = web.AppKey("in_flight", set[CancelToken])
