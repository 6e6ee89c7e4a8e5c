"""The Responses API over the engine: input items to chat messages, output to items and events.

Input items become the chat messages the engine's templates know: messages
(`developer` -> `system`), `function_call` items -> an assistant message's
`tool_calls` (consecutive calls share one assistant turn), and
`function_call_output` items -> `tool` messages. Reasoning items ride along
as the next assistant turn's `reasoning_content`.

Output parts become items in order (`reasoning`, `message`, `function_call`).
Streams follow OpenAI's event order, which Codex relies on: `response.created`,
`response.in_progress`, then per item `output_item.added`, its content events
and `output_item.done` (for every item), and last `response.completed` (or
`.incomplete` at the token limit, `.failed` when the engine failed) carrying
the whole response.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable, Sequence
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
from app.server.errors import APIError
from app.server.output import Added, Output, Part, ReasoningPart, TextPart, ToolCallPart, new_id
from app.server.responses_protocol import (
    ArgumentsDeltaEvent,
    ArgumentsDoneEvent,
    ContentPartEvent,
    FunctionCallInput,
    FunctionCallItem,
    FunctionCallOutputInput,
    IncompleteDetails,
    InputItem,
    InputMessage,
    InputTokensDetails,
    ItemStatus,
    MessageItem,
    OutputItem,
    OutputItemEvent,
    OutputText,
    ReasoningDeltaEvent,
    ReasoningDoneEvent,
    ReasoningInput,
    ReasoningItem,
    ReasoningText,
    ResponseError,
    ResponseEvent,
    ResponseObject,
    ResponsesRequest,
    ResponseStatus,
    ResponsesUsage,
    TextDeltaEvent,
    TextDoneEvent,
    function_tools,
)

# Called with a finished response's id and output, to remember the conversation.
Remember = Callable[[str, Output], None]

# --- requests -----------------------------------------------------------------


def input_messages(items: Sequence[InputItem]) -> list[dict[str, Any]]:
    """Input items as chat messages, in order."""
    messages: list[dict[str, Any]] = []
    reasoning = ""  # waits for the assistant turn it belongs to
    for item in items:
        if isinstance(item, ReasoningInput):
            reasoning += item.text
            continue
        if isinstance(item, InputMessage):
            role = "system" if item.role == "developer" else item.role
            message: dict[str, Any] = {"role": role, "content": item.content}
        elif isinstance(item, FunctionCallInput):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                continue
            message = {"role": "assistant", "content": "", "tool_calls": [call]}
        elif isinstance(item, FunctionCallOutputInput):
            message = {"role": "tool", "tool_call_id": item.call_id, "content": item.output}
        else:
            continue  # an item type we have no use for
        if message["role"] == "assistant" and reasoning:
            message["reasoning_content"] = reasoning
            reasoning = ""
        messages.append(message)
    return messages


def conversation(body: ResponsesRequest, history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Earlier turns (from `previous_response_id`) and this input; instructions are not kept."""
    messages = [*history, *input_messages(body.input)]
    if not messages:
        raise APIError(400, "input must contain at least one message", param="input")
    return messages


def responses_generation_request(
    body: ResponsesRequest, messages: Sequence[dict[str, Any]]
) -> GenerationRequest:
    """`instructions` come first, as a system message."""
    system = [{"role": "system", "content": body.instructions}] if body.instructions else []
    default = SamplingParams()
    return GenerationRequest(
        # A copy: the stored conversation must not see what the engine does to its messages.
        messages=copy.deepcopy([*system, *messages]),
        model=body.model or None,  # "" from a client means "whatever is loaded"
        sampling=SamplingParams(
            temperature=default.temperature if body.temperature is None else body.temperature,
            top_p=default.top_p if body.top_p is None else body.top_p,
        ),
        max_tokens=body.max_output_tokens,
        tools=function_tools(body.tools),
        tool_choice=body.tool_choice,
        response_format=body.response_format,
        reasoning_effort=body.reasoning_effort,
    )


# --- responses ----------------------------------------------------------------


def responses_usage(usage: Usage) -> ResponsesUsage:
    return ResponsesUsage(
        input_tokens=usage.prompt_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=usage.cached_tokens),
        output_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


_ITEM_PREFIX = {ReasoningPart: "rs_", TextPart: "msg_", ToolCallPart: "fc_"}
_DELTA_EVENTS: dict[type, type[BaseModel]] = {
    ReasoningPart: ReasoningDeltaEvent,
    TextPart: TextDeltaEvent,
    ToolCallPart: ArgumentsDeltaEvent,
}


def output_item(part: Part, item_id: str, status: ItemStatus) -> OutputItem:
    if isinstance(part, ToolCallPart):
        return FunctionCallItem(
            id=item_id, status=status, call_id=part.id, name=part.name, arguments=part.arguments
        )
    if isinstance(part, ReasoningPart):
        return ReasoningItem(id=item_id, status=status, content=[ReasoningText(text=part.text)])
    return MessageItem(id=item_id, status=status, content=[OutputText(text=part.text)])


def empty_item(part: Part, item_id: str) -> OutputItem:
    """What `output_item.added` announces: the item before any of its content."""
    if isinstance(part, ToolCallPart):
        return FunctionCallItem(
            id=item_id, status="in_progress", call_id=part.id, name=part.name, arguments=""
        )
    if isinstance(part, ReasoningPart):
        return ReasoningItem(id=item_id, status="in_progress", content=[])
    return MessageItem(id=item_id, status="in_progress", content=[])


class ResponsesFormat:
    """One `response` object, whole or as the Responses API's stream of events."""

    named_events = True

    def __init__(
        self, started: Started, body: ResponsesRequest, remember: Remember | None = None
    ) -> None:
        self.id = new_id("resp_", 32)
        self.created_at = int(time.time())
        self.model = started.model
        self.body = body
        self.remember = remember
        self._sequence = itertools.count()
        self._item_ids: dict[int, str] = {}  # output index -> item id
        self._open: int | None = None  # the output index of the item being streamed

    # --- building blocks ------------------------------------------------------

    def _next(self) -> int:
        return next(self._sequence)

    def _item_id(self, index: int, part: Part) -> str:
        if index not in self._item_ids:
            self._item_ids[index] = new_id(_ITEM_PREFIX[type(part)])
        return self._item_ids[index]

    def _items(self, output: Output, last_status: ItemStatus = "completed") -> list[OutputItem]:
        items = []
        for index, part in enumerate(output.parts):
            last = index == len(output.parts) - 1
            status = last_status if last else "completed"
            items.append(output_item(part, self._item_id(index, part), status))
        return items

    def _response(
        self,
        status: ResponseStatus,
        output: list[OutputItem],
        usage: Usage | None = None,
        error: ResponseError | None = None,
        incomplete: str | None = None,
    ) -> ResponseObject:
        body = self.body
        return ResponseObject(
            id=self.id,
            created_at=self.created_at,
            status=status,
            error=error,
            incomplete_details=IncompleteDetails(reason=incomplete) if incomplete else None,
            instructions=body.instructions,
            max_output_tokens=body.max_output_tokens,
            model=self.model,
            output=output,
            parallel_tool_calls=body.parallel_tool_calls is not False,
            previous_response_id=body.previous_response_id,
            reasoning={"effort": body.reasoning_effort, "summary": None},
            store=body.store is not False,
            temperature=1.0 if body.temperature is None else body.temperature,
            text={"format": _echo_format(body.response_format)},
            tool_choice=_echo_tool_choice(body.tool_choice),
            tools=[tool.model_dump(exclude_none=True) for tool in body.tools or []],
            top_p=1.0 if body.top_p is None else body.top_p,
            truncation=body.truncation or "disabled",
            usage=responses_usage(usage) if usage is not None else None,
            user=body.user,
            metadata=body.metadata or {},
        )

    def _finished(self, output: Output, finished: Finished) -> ResponseObject:
        """Completed, or incomplete at the token limit (or when cancelled)."""
        if self.remember is not None:
            self.remember(self.id, output)
        reason, usage = finished.finish_reason, finished.usage
        if reason in ("stop", "tool_calls"):
            return self._response("completed", self._items(output), usage)
        limit = "max_output_tokens" if reason == "length" else None
        return self._response(
            "incomplete", self._items(output, "incomplete"), usage, incomplete=limit
        )

    # --- APIFormat ------------------------------------------------------------

    def opening(self) -> list[BaseModel]:
        response = self._response("in_progress", [])
        return [
            ResponseEvent(type="response.created", sequence_number=self._next(), response=response),
            ResponseEvent(
                type="response.in_progress", sequence_number=self._next(), response=response
            ),
        ]

    def delta(self, added: Added, output: Output) -> list[BaseModel]:
        part, index, events = added.part, added.index, []
        item_id = self._item_id(index, part)
        if added.new:
            events += self._close_open(output)
            events += self._open_item(index, part, item_id)
        if not added.text:
            return events
        event = _DELTA_EVENTS[type(part)](
            sequence_number=self._next(), item_id=item_id, output_index=index, delta=added.text
        )
        events.append(event)
        return events

    def closing(self, output: Output, finished: Finished) -> list[BaseModel]:
        done = finished.finish_reason in ("stop", "tool_calls")
        events = self._close_open(output, "completed" if done else "incomplete")
        response = self._finished(output, finished)
        kind = "response.completed" if response.status == "completed" else "response.incomplete"
        events.append(ResponseEvent(type=kind, sequence_number=self._next(), response=response))
        return events

    def failure(self, output: Output, error: EngineError, usage: Usage) -> list[BaseModel]:
        events = self._close_open(output, "incomplete")
        response = self._response(
            "failed",
            self._items(output, "incomplete"),
            usage,
            error=ResponseError(code="server_error", message=error.message),
        )
        events.append(
            ResponseEvent(type="response.failed", sequence_number=self._next(), response=response)
        )
        return events

    def response(self, output: Output, finished: Finished) -> BaseModel:
        return self._finished(output, finished)

    # --- item lifecycles ------------------------------------------------------

    def _open_item(self, index: int, part: Part, item_id: str) -> list[BaseModel]:
        self._open = index
        events: list[BaseModel] = [
            OutputItemEvent(
                type="response.output_item.added",
                sequence_number=self._next(),
                output_index=index,
                item=empty_item(part, item_id),
            )
        ]
        if not isinstance(part, ToolCallPart):
            blank = OutputText(text="") if isinstance(part, TextPart) else ReasoningText(text="")
            events.append(
                ContentPartEvent(
                    type="response.content_part.added",
                    sequence_number=self._next(),
                    item_id=item_id,
                    output_index=index,
                    part=blank,
                )
            )
        return events

    def _close_open(self, output: Output, status: ItemStatus = "completed") -> list[BaseModel]:
        """The `.done` events of the item being streamed, if any."""
        if self._open is None:
            return []
        index, self._open = self._open, None
        part = output.parts[index]
        item_id = self._item_id(index, part)
        events: list[BaseModel] = []
        where = {"item_id": item_id, "output_index": index}
        if isinstance(part, ToolCallPart):
            events.append(
                ArgumentsDoneEvent(
                    sequence_number=self._next(), name=part.name, arguments=part.arguments, **where
                )
            )
        else:
            if isinstance(part, TextPart):
                events.append(TextDoneEvent(sequence_number=self._next(), text=part.text, **where))
                whole: OutputText | ReasoningText = OutputText(text=part.text)
            else:
                events.append(
                    ReasoningDoneEvent(sequence_number=self._next(), text=part.text, **where)
                )
                whole = ReasoningText(text=part.text)
            events.append(
                ContentPartEvent(
                    type="response.content_part.done",
                    sequence_number=self._next(),
                    part=whole,
                    **where,
                )
            )
        events.append(
            OutputItemEvent(
                type="response.output_item.done",
                sequence_number=self._next(),
                output_index=index,
                item=output_item(part, item_id, status),
            )
        )
        return events


def _echo_format(response_format: dict[str, Any] | None) -> dict[str, Any]:
    """The engine's response_format back in Responses' flat `text.format` shape."""
    if response_format is None:
        return {"type": "text"}
    if response_format["type"] == "json_schema":
        return {"type": "json_schema", **response_format["json_schema"]}
    return dict(response_format)


def _echo_tool_choice(choice: str) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "name": choice}
