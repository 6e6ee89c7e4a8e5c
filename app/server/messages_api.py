"""The Anthropic Messages API over the engine: blocks to chat messages, output to blocks.

Assistant turns keep their text, their `thinking` (as `reasoning_content`)
and their `tool_use` blocks (as `tool_calls`, the input as a JSON string); a
user turn's `tool_result` blocks become `tool` messages, placed before its
text, which is where chat templates expect tool results.

Output parts become content blocks in order (`thinking`, `text`,
`tool_use`). A stream is `message_start`, `ping`, per block
`content_block_start`, its deltas and `content_block_stop`, then
`message_delta` (stop reason, usage) and `message_stop`; a generation that
fails after the stream began ends with an `error` event instead.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import BaseModel

from app.engine.types import (
    EngineError,
    Finished,
    GenerationRequest,
    SamplingParams,
    Started,
    Usage,
)
from app.server.messages_protocol import (
    AnthropicErrorDetail,
    AnthropicUsage,
    ContentBlock,
    ContentBlockDeltaEvent,
    ContentBlockParam,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    ErrorEvent,
    InputJsonDelta,
    MessageDeltaEvent,
    MessageResponse,
    MessagesRequest,
    MessageStartEvent,
    MessageStopEvent,
    PingEvent,
    StopInfo,
    TextBlock,
    TextBlockParam,
    TextDelta,
    ThinkingBlock,
    ThinkingBlockParam,
    ThinkingDelta,
    ToolResultBlockParam,
    ToolUseBlock,
    ToolUseBlockParam,
    function_tools,
)
from app.server.output import Added, Output, Part, ReasoningPart, ToolCallPart, new_id

log = logging.getLogger(__name__)

# --- requests -----------------------------------------------------------------


def _assistant(blocks: list[ContentBlockParam]) -> dict[str, Any]:
    texts = [b.text for b in blocks if isinstance(b, TextBlockParam)]
    thinking = [b.thinking for b in blocks if isinstance(b, ThinkingBlockParam)]
    calls = [
        {
            "id": b.id,
            "type": "function",
            "function": {"name": b.name, "arguments": json.dumps(b.input, ensure_ascii=False)},
        }
        for b in blocks
        if isinstance(b, ToolUseBlockParam)
    ]
    message: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts)}
    if thinking:
        message["reasoning_content"] = "\n".join(thinking)
    if calls:
        message["tool_calls"] = calls
    return message


def _user(blocks: list[ContentBlockParam]) -> list[dict[str, Any]]:
    """Tool results first (as `tool` messages), then the text, if any, as a user message."""
    results = [
        {"role": "tool", "tool_call_id": b.tool_use_id, "content": b.content}
        for b in blocks
        if isinstance(b, ToolResultBlockParam)
    ]
    texts = [b.text for b in blocks if isinstance(b, TextBlockParam)]
    if texts or not results:
        return [*results, {"role": "user", "content": "\n".join(texts)}]
    return results


def chat_messages(body: MessagesRequest) -> list[dict[str, Any]]:
    """`system` first, then each turn as the chat messages it amounts to."""
    messages = [{"role": "system", "content": body.system}] if body.system else []
    for turn in body.messages:
        messages.extend(_user(turn.content) if turn.role == "user" else [_assistant(turn.content)])
    return messages


def local_model_name(model: str | None) -> str | None:
    """Claude Code asks for `claude-*` models: answer with the loaded one."""
    if not model or model.startswith("claude-"):
        return None
    return model


def messages_generation_request(body: MessagesRequest) -> GenerationRequest:
    default = SamplingParams()
    return GenerationRequest(
        messages=chat_messages(body),
        model=local_model_name(body.model),
        sampling=SamplingParams(
            temperature=default.temperature if body.temperature is None else body.temperature,
            top_p=default.top_p if body.top_p is None else body.top_p,
            top_k=body.top_k or 0,
        ),
        max_tokens=body.max_tokens,
        stop=body.stop_sequences,
        tools=function_tools(body.tools),
        tool_choice=body.tool_choice,
        response_format=body.response_format,
        reasoning_effort=body.reasoning_effort,
    )


# --- responses ----------------------------------------------------------------


def anthropic_usage(usage: Usage) -> AnthropicUsage:
    return AnthropicUsage(
        input_tokens=usage.prompt_tokens - usage.cached_tokens,
        output_tokens=usage.completion_tokens,
        cache_read_input_tokens=usage.cached_tokens,
    )


def stop_info(finished: Finished) -> StopInfo:
    """Anthropic's stop reason; `stop_sequence` needs the engine to say which string matched."""
    reason = finished.finish_reason
    if reason == "tool_calls":
        return StopInfo(stop_reason="tool_use")
    if reason == "length":
        return StopInfo(stop_reason="max_tokens")
    matched = finished.stop_sequence
    if reason == "stop" and isinstance(matched, str) and matched:
        return StopInfo(stop_reason="stop_sequence", stop_sequence=matched)
    return StopInfo(stop_reason="end_turn")


def tool_use_id(call_id: str) -> str:
    """Anthropic's `toolu_` ids; the client sends them back as `tool_use_id`."""
    return call_id if call_id.startswith("toolu_") else f"toolu_{call_id.removeprefix('call_')}"


def tool_input(call: ToolCallPart) -> dict[str, Any]:
    """`input` must be an object: broken or non-object arguments become `{}` (and a warning)."""
    try:
        value = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        value = None
    if not isinstance(value, dict):
        log.warning("Tool call %s: arguments are not a JSON object: %r", call.name, call.arguments)
        return {}
    return value


def content_block(part: Part, empty: bool = False) -> ContentBlock:
    """`part` as a block; `empty` gives what `content_block_start` announces."""
    if isinstance(part, ToolCallPart):
        return ToolUseBlock(
            id=tool_use_id(part.id), name=part.name, input={} if empty else tool_input(part)
        )
    if isinstance(part, ReasoningPart):
        return ThinkingBlock(thinking="" if empty else part.text)
    return TextBlock(text="" if empty else part.text)


class MessagesFormat:
    """One Anthropic `message`, whole or as its stream of events."""

    named_events = True

    def __init__(self, started: Started) -> None:
        self.id = new_id("msg_")
        self.model = started.model
        self.started = started
        self._open: int | None = None  # the index of the block being streamed

    def _message(
        self, content: list[ContentBlock], usage: Usage, stop: StopInfo | None = None
    ) -> MessageResponse:
        return MessageResponse(
            id=self.id,
            model=self.model,
            content=content,
            stop_reason=stop.stop_reason if stop else None,
            stop_sequence=stop.stop_sequence if stop else None,
            usage=anthropic_usage(usage),
        )

    def _close_open(self) -> list[BaseModel]:
        if self._open is None:
            return []
        index, self._open = self._open, None
        return [ContentBlockStopEvent(index=index)]

    def opening(self) -> list[BaseModel]:
        started = self.started
        usage = Usage(started.prompt_tokens, 0, started.cached_tokens)
        return [MessageStartEvent(message=self._message([], usage)), PingEvent()]

    def delta(self, added: Added, output: Output) -> list[BaseModel]:
        events: list[BaseModel] = []
        if added.new:
            events += self._close_open()
            self._open = added.index
            block = content_block(added.part, empty=True)
            events.append(ContentBlockStartEvent(index=added.index, content_block=block))
        if added.text:
            part = added.part
            if isinstance(part, ToolCallPart):
                delta: BaseModel = InputJsonDelta(partial_json=added.text)
            elif isinstance(part, ReasoningPart):
                delta = ThinkingDelta(thinking=added.text)
            else:
                delta = TextDelta(text=added.text)
            events.append(ContentBlockDeltaEvent(index=added.index, delta=delta))
        return events

    def closing(self, output: Output, finished: Finished) -> list[BaseModel]:
        usage = anthropic_usage(finished.usage)
        return [
            *self._close_open(),
            MessageDeltaEvent(delta=stop_info(finished), usage=usage),
            MessageStopEvent(),
        ]

    def failure(self, output: Output, error: EngineError, usage: Usage) -> list[BaseModel]:
        detail = AnthropicErrorDetail(type="api_error", message=error.message)
        return [*self._close_open(), ErrorEvent(error=detail)]

    def response(self, output: Output, finished: Finished) -> BaseModel:
        content = [content_block(part) for part in output.parts]
        return self._message(content, finished.usage, stop_info(finished))
