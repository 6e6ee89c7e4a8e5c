"""The Anthropic Messages API wire format (`POST /v1/messages`) as pydantic models.

Claude Code and Anthropic's SDKs speak it. Requests accept unknown fields
(`metadata`, `thinking`, `cache_control` on blocks, ...). Content blocks are
a union told apart by `type` (tags written `[like this]`, so error params
read `messages[0].content[1].input`); images and documents are refused with
a clear message, as chat completions refuse image parts, except inside a
tool result, where a placeholder keeps a conversation going that a tool
answered with a picture. Server tools (`web_search_...`, `bash_...`) are
ignored: only custom tools reach the model.
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
)
from pydantic_core import PydanticCustomError

from app.server.protocol import StopStrings, check_tool_choice, normalize_response_format

# --- requests -----------------------------------------------------------------

_BLOCK_TYPES = ("text", "tool_use", "tool_result", "thinking", "redacted_thinking")


def _blocks(value: Any) -> Any:
    """A bare string is one text block."""
    if isinstance(value, str):
        return [{"type": "text", "text": value}]
    if not isinstance(value, list):
        raise PydanticCustomError(
            "content_type", "content must be a string or an array of content blocks"
        )
    return value


def _checked_block(value: Any) -> Any:
    if not isinstance(value, dict):
        raise PydanticCustomError("content_block", "Each content block must be an object")
    kind = value.get("type")
    if kind not in _BLOCK_TYPES:
        raise PydanticCustomError(
            "unsupported_content",
            "Content blocks of type '{kind}' are not supported: this server only accepts "
            "text, tool_use, tool_result and thinking blocks",
            {"kind": kind},
        )
    return value


def _block_tag(value: Any) -> str:
    return f"[{value.get('type')}]" if isinstance(value, dict) else ""


def _result_text(value: Any) -> Any:
    """A tool result's content as text; blocks other than text become a placeholder."""
    if value is None or isinstance(value, str):
        return value or ""
    if not isinstance(value, list):
        raise PydanticCustomError(
            "content_type", "tool_result content must be a string or an array of content blocks"
        )
    texts = []
    for block in value:
        if not isinstance(block, dict):
            raise PydanticCustomError("content_block", "Each content block must be an object")
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        else:
            texts.append(f"[{block.get('type')} content omitted: this model only reads text]")
    return "\n".join(texts)


def _system_text(value: Any) -> Any:
    """`system` as one string; text blocks are joined by newlines."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        for b in value
    ):
        return "\n".join(b["text"] for b in value)
    raise PydanticCustomError("system_type", "system must be a string or an array of text blocks")


class TextBlockParam(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text"]
    text: str


class ToolUseBlockParam(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlockParam(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["tool_result"]
    tool_use_id: str
    content: Annotated[str, BeforeValidator(_result_text)] = ""
    is_error: bool | None = None


class ThinkingBlockParam(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlockParam(BaseModel):
    """Encrypted thinking from Anthropic's models: nothing we can read."""

    model_config = ConfigDict(extra="allow")

    type: Literal["redacted_thinking"]


ContentBlockParam = Annotated[
    Union[
        Annotated[TextBlockParam, Tag("[text]")],
        Annotated[ToolUseBlockParam, Tag("[tool_use]")],
        Annotated[ToolResultBlockParam, Tag("[tool_result]")],
        Annotated[ThinkingBlockParam, Tag("[thinking]")],
        Annotated[RedactedThinkingBlockParam, Tag("[redacted_thinking]")],
    ],
    Discriminator(_block_tag),
    BeforeValidator(_checked_block),
]


class MessageParam(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant"]
    content: Annotated[list[ContentBlockParam], BeforeValidator(_blocks)]


class AnthropicTool(BaseModel):
    """A custom tool (no `type`, or `custom`); typed server tools are ignored."""

    model_config = ConfigDict(extra="allow")

    type: str | None = None
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any] | None = None

    @property
    def custom(self) -> bool:
        return self.type in (None, "custom")


def function_tools(tools: list[AnthropicTool] | None) -> list[dict[str, Any]] | None:
    """Custom tools as the engine's function tools; None when there are none."""
    found = []
    for tool in tools or []:
        if tool.custom:
            function: dict[str, Any] = {"name": tool.name}
            if tool.description is not None:
                function["description"] = tool.description
            function["parameters"] = tool.input_schema or {"type": "object", "properties": {}}
            found.append({"type": "function", "function": function})
    return found or None


def _tool_choice(value: Any) -> Any:
    """Anthropic's choices as the engine's: auto, any -> required, tool -> its name, none."""
    if value is None:
        return "auto"
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("auto", "none"):
        return kind
    if kind == "any":
        return "required"
    if kind == "tool" and isinstance(value.get("name"), str) and value["name"]:
        return value["name"]
    raise PydanticCustomError(
        "tool_choice",
        "tool_choice must be {'type': 'auto'}, {'type': 'any'}, {'type': 'none'} "
        "or {'type': 'tool', 'name': '...'}",
    )


def _output_format(value: Any) -> Any:
    """Anthropic's `{"type": "json_schema", "schema": ...}` in the chat shape the engine takes."""
    if isinstance(value, dict) and value.get("type") == "json_schema":
        value = {"type": "json_schema", "json_schema": {"schema": value.get("schema")}}
    elif value is not None:
        raise PydanticCustomError(
            "output_format", "output_config.format must be {'type': 'json_schema', 'schema': ...}"
        )
    return normalize_response_format(value)


class OutputConfig(BaseModel):
    """`effort` is Anthropic's reasoning effort; `format` asks for JSON matching a schema."""

    model_config = ConfigDict(extra="allow")

    effort: str | None = None
    format: Annotated[dict[str, Any] | None, BeforeValidator(_output_format)] = None


class MessagesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int = Field(ge=1)
    messages: list[MessageParam] = Field(min_length=1)
    system: Annotated[str | None, BeforeValidator(_system_text)] = None
    tools: list[AnthropicTool] | None = None
    tool_choice: Annotated[str, BeforeValidator(_tool_choice)] = "auto"
    stop_sequences: StopStrings = ()
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stream: bool | None = False
    thinking: dict[str, Any] | None = None
    output_config: OutputConfig | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("tool_choice")
    @classmethod
    def _choice_among_tools(cls, choice: str, info: ValidationInfo) -> str:
        return check_tool_choice(choice, function_tools(info.data.get("tools")))

    @property
    def reasoning_effort(self) -> str | None:
        return self.output_config.effort if self.output_config else None

    @property
    def response_format(self) -> dict[str, Any] | None:
        return self.output_config.format if self.output_config else None


# --- responses ----------------------------------------------------------------


class TextBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ThinkingBlock(BaseModel):
    """Our reasoning is plain text: there is no signature to give."""

    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = ""


class ToolUseBlock(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


ContentBlock = Union[ThinkingBlock, TextBlock, ToolUseBlock]


class AnthropicUsage(BaseModel):
    """`input_tokens` leaves out the cached ones, which Anthropic counts apart."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class MessageResponse(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ContentBlock]
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: AnthropicUsage


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicErrorResponse(BaseModel):
    type: Literal["error"] = "error"
    error: AnthropicErrorDetail


# --- stream events ------------------------------------------------------------


class MessageStartEvent(BaseModel):
    type: Literal["message_start"] = "message_start"
    message: MessageResponse


class PingEvent(BaseModel):
    type: Literal["ping"] = "ping"


class ContentBlockStartEvent(BaseModel):
    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: ContentBlock


class TextDelta(BaseModel):
    type: Literal["text_delta"] = "text_delta"
    text: str


class ThinkingDelta(BaseModel):
    type: Literal["thinking_delta"] = "thinking_delta"
    thinking: str


class InputJsonDelta(BaseModel):
    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


class ContentBlockDeltaEvent(BaseModel):
    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: TextDelta | ThinkingDelta | InputJsonDelta


class ContentBlockStopEvent(BaseModel):
    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class StopInfo(BaseModel):
    stop_reason: StopReason
    stop_sequence: str | None = None


class MessageDeltaEvent(BaseModel):
    """Usage here is cumulative: the SDKs overwrite what `message_start` said."""

    type: Literal["message_delta"] = "message_delta"
    delta: StopInfo
    usage: AnthropicUsage


class MessageStopEvent(BaseModel):
    type: Literal["message_stop"] = "message_stop"


class ErrorEvent(BaseModel):
    """Ends a stream whose generation failed, as Anthropic's API does (`event: error`)."""

    type: Literal["error"] = "error"
    error: AnthropicErrorDetail
