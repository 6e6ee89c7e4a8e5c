"""Recent Responses API conversations, so a client may continue one by `previous_response_id`.

Stateless clients (Codex sends `store: false` and the whole history) never
need it. Entries share their message dicts with each other, so a long
conversation costs one list of references per response, and the oldest
entries are forgotten first. Only the event loop's thread uses it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

DEFAULT_CAPACITY = 256


class ResponseStore:
    """A bounded map from response id to the chat messages up to and including its output."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()

    def get(self, response_id: str) -> list[dict[str, Any]] | None:
        messages = self._entries.get(response_id)
        if messages is None:
            return None
        self._entries.move_to_end(response_id)
        return list(messages)

    def put(self, response_id: str, messages: list[dict[str, Any]]) -> None:
        self._entries[response_id] = list(messages)
        self._entries.move_to_end(response_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
