"""The OpenAI Responses API wire format (`POST /v1/responses`) as pydantic models.

Codex CLI speaks only this API. Requests accept unknown fields (`store`,
`include`, `client_metadata`, ...) and input items of types we have no use
for (they are dropped); function tools are flat here
(`{"type": "function", "name", "parameters"}`) and other tool types (hosted
ones, `namespace`, `custom`, `local_shell`) are ignored. Input items are a
union told apart by `type`; its tags are written `[like this]` so that error
params read `input[2].call_id`, not `input[2].function_call.call_id`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from app.server.protocol import Arguments, check_tool_choice, normalize_response_format

# --- requests -----------------------------------------------------------------

_TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "reasoning_text")
_ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning")


def _part_text(part: Any) -> str:
    if isinstance(part, str):
        return part
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return part["refusal"]
    if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
        return part["text"]
    if kind in _TEXT_PARTS:
        raise PydanticCustomError("content_part", "A text content part needs a string 'text' field")
    raise PydanticCustomError(
        "unsupported_content",
        "Content parts of type '{kind}' are not supported: this server only accepts text",
        {"kind": kind},
    )


def _text(value: Any) -> Any:
    """A string, or text parts joined by newlines (as chat content is)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_part_text(part) for part in value)
    raise PydanticCustomError(
        "content_type", "Content must be a string or an array of content parts"
    )


Text = Annotated[str, BeforeValidator(_text)]


class InputMessage(BaseModel):
    """A message item; `type` may be left out (the "easy" input message)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Text


class FunctionCallInput(BaseModel):
    """A call the model made earlier; `arguments` is the JSON string it produced."""

    model_config = ConfigDict(extra="allow")

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: Arguments = "{}"


class FunctionCallOutputInput(BaseModel):
    """The client's result for a call; `output` is a string or content parts."""

    model_config = ConfigDict(extra="allow")

    type: Literal["function_call_output"]
    call_id: str
    output: Text


class ReasoningInput(BaseModel):
    """Earlier reasoning; its text rides along with the next assistant turn."""

    model_config = ConfigDict(extra="allow")

    type: Literal["reasoning"]
    summary: list[Any] = Field(default_factory=list)
    content: list[Any] | None = None

    @property
    def text(self) -> str:
        parts = self.content or self.summary
        return "\n".join(p["text"] for p in parts if isinstance(p, dict) and "text" in p)


class IgnoredInput(BaseModel):
    """Items of other types (hosted-tool calls, item references...): accepted, not used."""

    model_config = ConfigDict(extra="allow")

    type: str


def _item_tag(value: Any) -> str:
    kind = (value.get("type") or "message") if isinstance(value, dict) else None
    return f"[{kind}]" if kind in _ITEM_TYPES else "[ignored]"


def _checked_item(value: Any) -> Any:
    if not isinstance(value, dict):
        raise PydanticCustomError("input_item", "Each input item must be an object")
    return value


InputItem = Annotated[
    Union[
        Annotated[InputMessage, Tag("[message]")],
        Annotated[FunctionCallInput, Tag("[function_call]")],
        Annotated[FunctionCallOutputInput, Tag("[function_call_output]")],
        Annotated[ReasoningInput, Tag("[reasoning]")],
        Annotated[IgnoredInput, Tag("[ignored]")],
    ],
    Discriminator(_item_tag),
    BeforeValidator(_checked_item),
]


def _input_items(value: Any) -> Any:
    """A bare string is one user message."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if value is None:
        return []
    if not isinstance(value, list):
        raise PydanticCustomError("input_type", "input must be a string or an array of input items")
    return value


class ResponsesTool(BaseModel):
    """A flat function tool; other types are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _function_needs_name(self) -> ResponsesTool:
        if self.type == "function" and not self.name:
            raise PydanticCustomError("function_tool", "A function tool needs a 'name'")
        return self


def function_tools(tools: list[ResponsesTool] | None) -> list[dict[str, Any]] | None:
    """The engine's (chat-shaped) tools; None when there is no function tool."""
    found = []
    for tool in tools or []:
        if tool.type == "function":
            function = tool.model_dump(include={"name", "description", "parameters", "strict"})
            found.append(
                {
                    "type": "function",
                    "function": {k: v for k, v in function.items() if v is not None},
                }
            )
    return found or None


def _tool_choice(value: Any) -> Any:
    if value is None:
        return "auto"
    if value in ("auto", "none", "required"):
        return value
    if isinstance(value, dict) and value.get("type") == "function":
        name = value.get("name")
        if isinstance(name, str) and name:
            return name
    raise PydanticCustomError(
        "tool_choice",
        "tool_choice must be 'auto', 'none', 'required' or {'type': 'function', 'name': '...'}",
    )


def _text_format(value: Any) -> Any:
    """Responses' flat `json_schema` format in the chat shape the engine takes."""
    if isinstance(value, dict) and value.get("type") == "json_schema":
        spec = {k: v for k, v in value.items() if k != "type"}
        value = {"type": "json_schema", "json_schema": spec}
    return normalize_response_format(value)


class ResponsesText(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: Annotated[dict[str, Any] | None, BeforeValidator(_text_format)] = None


class ResponsesReasoning(BaseModel):
    model_config = ConfigDict(extra="allow")

    effort: str | None = None
    summary: str | None = None


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    input: Annotated[list[InputItem], BeforeValidator(_input_items)] = Field(default_factory=list)
    instructions: str | None = None
    tools: list[ResponsesTool] | None = None
    tool_choice: Annotated[str, BeforeValidator(_tool_choice)] = "auto"
    parallel_tool_calls: bool | None = None
    text: ResponsesText | None = None
    reasoning: ResponsesReasoning | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool | None = False
    store: bool | None = True
    previous_response_id: str | None = None
    metadata: dict[str, Any] | None = None
    user: str | None = None
    truncation: str | None = None

    @field_validator("tool_choice")
    @classmethod
    def _choice_among_tools(cls, choice: str, info: ValidationInfo) -> str:
        return check_tool_choice(choice, function_tools(info.data.get("tools")))

    @property
    def response_format(self) -> dict[str, Any] | None:
        return self.text.format if self.text else None

    @property
    def reasoning_effort(self) -> str | None:
        return self.reasoning.effort if self.reasoning else None


# --- responses ----------------------------------------------------------------


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class ReasoningText(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class MessageItem(BaseModel):
    id: str
    type: Literal["message"] = "message"
    status: ItemStatus
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class ReasoningItem(BaseModel):
    """Raw reasoning goes in `content` (as vLLM and Ollama send it); there is no summary."""

    id: str
    type: Literal["reasoning"] = "reasoning"
    summary: list[Any] = Field(default_factory=list)
    content: list[ReasoningText]
    status: ItemStatus


class FunctionCallItem(BaseModel):
    id: str
    type: Literal["function_call"] = "function_call"
    status: ItemStatus
    call_id: str
    name: str
    arguments: str


OutputItem = Union[MessageItem, ReasoningItem, FunctionCallItem]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponsesUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class ResponseError(BaseModel):
    code: str
    message: str


class IncompleteDetails(BaseModel):
    reason: str


ResponseStatus = Literal["in_progress", "completed", "incomplete", "failed"]


class ResponseObject(BaseModel):
    """A response; the request's settings are echoed back as OpenAI does."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: ResponseStatus
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: dict[str, Any] = Field(default_factory=dict)
    store: bool = True
    temperature: float | None = None
    text: dict[str, Any] = Field(default_factory=dict)
    tool_choice: Any = "auto"
    tools: list[Any] = Field(default_factory=list)
    top_p: float | None = None
    truncation: str = "disabled"
    usage: ResponsesUsage | None = None
    user: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


# --- stream events ------------------------------------------------------------
# Every event names its `type` (also the SSE `event:` line) and counts up `sequence_number`.


class ResponseEvent(BaseModel):
    """`response.created`, `.in_progress`, `.completed`, `.incomplete` and `.failed`."""

    type: str
    sequence_number: int
    response: ResponseObject


class OutputItemEvent(BaseModel):
    """`response.output_item.added` and `.done`."""

    type: str
    sequence_number: int
    output_index: int
    item: OutputItem


class ContentPartEvent(BaseModel):
    """`response.content_part.added` and `.done`."""

    type: str
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int = 0
    part: OutputText | ReasoningText


class TextDeltaEvent(BaseModel):
    """`response.output_text.delta`."""

    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int = 0
    delta: str
    logprobs: list[Any] = Field(default_factory=list)


class TextDoneEvent(BaseModel):
    """`response.output_text.done`."""

    type: Literal["response.output_text.done"] = "response.output_text.done"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int = 0
    text: str
    logprobs: list[Any] = Field(default_factory=list)


class ReasoningDeltaEvent(BaseModel):
    """`response.reasoning_text.delta`."""

    type: Literal["response.reasoning_text.delta"] = "response.reasoning_text.delta"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int = 0
    delta: str


class ReasoningDoneEvent(BaseModel):
    """`response.reasoning_text.done`."""

    type: Literal["response.reasoning_text.done"] = "response.reasoning_text.done"
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int = 0
    text: str


class ArgumentsDeltaEvent(BaseModel):
    """`response.function_call_arguments.delta`."""

    type: Literal["response.function_call_arguments.delta"] = (
        "response.function_call_arguments.delta"
    )
    sequence_number: int
    item_id: str
    output_index: int
    delta: str


class ArgumentsDoneEvent(BaseModel):
    """`response.function_call_arguments.done`."""

    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    sequence_number: int
    item_id: str
    output_index: int
    name: str
    arguments: str
