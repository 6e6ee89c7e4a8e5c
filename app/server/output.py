"""What one generation produced, gathered in order, and the shape every API format takes.

The engine streams three kinds of output (reasoning, answer text, tool calls)
and each API lays them out differently: chat deltas, Responses items,
Anthropic content blocks. `Output` gathers them once, as ordered parts, so a
format only decides how a part looks, never how deltas join up.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Union

from pydantic import BaseModel

from app.engine.types import (
    EngineError,
    Finished,
    ReasoningDelta,
    Started,
    TextDelta,
    TokenLogprob,
    ToolCallDelta,
    Usage,
)

OutputDelta = Union[TextDelta, ReasoningDelta, ToolCallDelta]


def new_id(prefix: str, length: int = 24) -> str:
    """OpenAI-style ids: `call_...`, `msg_...`; the length only has to look familiar."""
    return f"{prefix}{uuid.uuid4().hex[:length]}"


@dataclass
class ReasoningPart:
    text: str = ""


@dataclass
class TextPart:
    text: str = ""


@dataclass
class ToolCallPart:
    """One function call; `position` counts the calls before it (OpenAI's `index`)."""

    position: int
    id: str
    name: str
    arguments: str = ""


Part = Union[ReasoningPart, TextPart, ToolCallPart]


@dataclass(frozen=True)
class Added:
    """What one delta changed: the part it went to (at `index`), and whether it opened it."""

    part: Part
    index: int
    new: bool
    delta: OutputDelta

    @property
    def text(self) -> str:
        """The new text (or new argument fragment)."""
        return self.delta.arguments if isinstance(self.delta, ToolCallDelta) else self.delta.text


@dataclass
class Output:
    """Everything generated so far, as parts in the order they began."""

    parts: list[Part] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    text_tokens: int = 0  # token ids seen in text deltas, for usage when the engine fails
    # engine call index -> (the call, its index in `parts`)
    _calls: dict[int, tuple[ToolCallPart, int]] = field(default_factory=dict)

    def add(self, delta: OutputDelta) -> Added | None:
        """Record `delta`; None when it adds nothing visible (empty text)."""
        if isinstance(delta, ToolCallDelta):
            return self._add_call(delta)
        if isinstance(delta, TextDelta):
            self.logprobs.extend(delta.logprobs)
            self.text_tokens += len(delta.token_ids)
        if not delta.text:
            return None
        kind = TextPart if isinstance(delta, TextDelta) else ReasoningPart
        last = self.parts[-1] if self.parts else None
        if isinstance(last, kind):
            last.text += delta.text
            return Added(last, len(self.parts) - 1, False, delta)
        return self._open(kind(delta.text), delta)

    def _add_call(self, delta: ToolCallDelta) -> Added:
        """A delta with a new `id` (or an unseen index) opens a call; the rest extend it."""
        found = self._calls.get(delta.index)
        if found is None or (delta.id is not None and delta.id != found[0].id):
            call = ToolCallPart(
                position=len(self.tool_calls),
                id=delta.id or new_id("call_"),
                name=delta.name or "",
                arguments=delta.arguments,
            )
            added = self._open(call, delta)
            self._calls[delta.index] = (call, added.index)
            return added
        call, index = found
        call.arguments += delta.arguments
        if delta.name and not call.name:
            call.name = delta.name
        return Added(call, index, False, delta)

    def _open(self, part: Part, delta: OutputDelta) -> Added:
        self.parts.append(part)
        return Added(part, len(self.parts) - 1, True, delta)

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def reasoning(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, ReasoningPart))

    @property
    def tool_calls(self) -> list[ToolCallPart]:
        return [p for p in self.parts if isinstance(p, ToolCallPart)]

    def usage(self, started: Started) -> Usage:
        """A best guess for when the engine failed before reporting usage."""
        return Usage(started.prompt_tokens, self.text_tokens, started.cached_tokens)

    def assistant_message(self) -> dict[str, Any]:
        """This output as a chat-history message, for continuing the conversation later."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.reasoning:
            message["reasoning_content"] = self.reasoning
        if self.tool_calls:
            message["tool_calls"] = [chat_tool_call(call) for call in self.tool_calls]
        return message


def chat_tool_call(call: ToolCallPart) -> dict[str, Any]:
    """OpenAI's history shape: `arguments` stays a JSON string, as clients send it."""
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


class APIFormat(Protocol):
    """One response in one API's shape: whole, or as the events of a stream.

    `named_events` picks the SSE framing: Responses and Anthropic name each
    event (`event: <type>`) and just end; chat completions send bare `data:`
    lines and a final `data: [DONE]`.
    """

    named_events: ClassVar[bool]

    def opening(self) -> Sequence[BaseModel]: ...

    def delta(self, added: Added, output: Output) -> Sequence[BaseModel]: ...

    def closing(self, output: Output, finished: Finished) -> Sequence[BaseModel]:
        """The last events of a stream that finished."""
        ...

    def failure(self, output: Output, error: EngineError, usage: Usage) -> Sequence[BaseModel]:
        """The last events of a stream whose generation failed after it began."""
        ...

    def response(self, output: Output, finished: Finished) -> BaseModel:
        """The whole response, when not streaming."""
        ...
