"""The OpenAI wire format as pydantic models, in the style of vLLM's protocol module.

Requests ignore unknown fields (clients send many: `user`, `store`,
`parallel_tool_calls`, ...) but reject invalid ones; the validators normalise
the awkward unions (content parts, `stop`, `prompt`) so that the rest of the
server sees plain strings and tuples. Response models keep the field order
OpenAI uses, since a few clients parse loosely.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

# --- requests -----------------------------------------------------------------

_TEXT_PART_TYPES = ("text", "input_text")


def _part_text(part: Any) -> str:
    if not isinstance(part, dict):
        raise PydanticCustomError(
            "content_part",
            "Each content part must be an object like {'type': 'text', 'text': '...'}",
        )
    kind = part.get("type")
    if kind not in _TEXT_PART_TYPES:
        raise PydanticCustomError(
            "unsupported_content",
            "Content parts of type '{kind}' are not supported: this server only accepts text",
            {"kind": kind},
        )
    text = part.get("text")
    if not isinstance(text, str):
        raise PydanticCustomError("content_part", "A text content part needs a string 'text' field")
    return text


def _text_content(value: Any) -> Any:
    """A string, null, or text parts joined by newlines (as vLLM does)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_part_text(part) for part in value)
    raise PydanticCustomError(
        "content_type", "Content must be a string, null or an array of content parts"
    )


def _stop_strings(value: Any) -> Any:
    """`stop` as a tuple; empty strings would stop at once, so they are dropped."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(s for s in value if s)
    raise PydanticCustomError("stop_type", "stop must be a string or an array of strings")


def _is_token_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    )


def _single_prompt(value: Any) -> Any:
    """One prompt: a string or token ids, alone or as the only item of a list."""
    if isinstance(value, str) or (_is_token_list(value) and value):
        return value
    if (
        isinstance(value, list)
        and len(value) > 1
        and all(isinstance(p, (str, list)) for p in value)
    ):
        raise PydanticCustomError(
            "multiple_prompts",
            "Only one prompt per request is supported (got {count})",
            {"count": len(value)},
        )
    if (
        isinstance(value, list)
        and len(value) == 1
        and (isinstance(value[0], str) or _is_token_list(value[0]))
    ):
        return value[0]
    raise PydanticCustomError(
        "prompt_type", "prompt must be a string, an array of one string, or an array of token ids"
    )


def _arguments_string(value: Any) -> Any:
    """Tool-call arguments as the JSON string OpenAI specifies; a few clients send the object."""
    if value is None:
        return "{}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def _tool_choice(value: Any) -> Any:
    """OpenAI's `tool_choice` as the engine's: "auto", "none", "required" or a function name."""
    if value is None:
        return "auto"
    if value in ("auto", "none", "required"):
        return value
    if isinstance(value, dict) and value.get("type") == "function":
        name = (value.get("function") or {}).get("name")
        if isinstance(name, str) and name:
            return name
    raise PydanticCustomError(
        "tool_choice",
        "tool_choice must be 'auto', 'none', 'required' or "
        "{'type': 'function', 'function': {'name': '...'}}",
    )


def normalize_response_format(value: Any) -> Any:
    """`response_format` as the engine takes it: None (plain text) or a JSON mode."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            raise PydanticCustomError(
                "response_format", "A json_schema response_format needs a 'json_schema' object"
            )
        if not isinstance(spec.get("schema", {}), (dict, bool)):
            raise PydanticCustomError(
                "response_format", "'json_schema.schema' must be a JSON Schema object"
            )
        return {"type": "json_schema", "json_schema": spec}
    raise PydanticCustomError(
        "response_format", "response_format type must be 'text', 'json_object' or 'json_schema'"
    )


TextContent = Annotated[str | None, BeforeValidator(_text_content)]
StopStrings = Annotated[tuple[str, ...], BeforeValidator(_stop_strings)]
Prompt = Annotated[str | list[int], BeforeValidator(_single_prompt)]
Arguments = Annotated[str, BeforeValidator(_arguments_string)]
ToolChoice = Annotated[str, BeforeValidator(_tool_choice)]
ResponseFormat = Annotated[dict[str, Any] | None, BeforeValidator(normalize_response_format)]


class FunctionDefinition(BaseModel):
    """A function the model may call; `parameters` is a JSON Schema object."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(BaseModel):
    """A chat tool; only `function` tools reach the engine, other types are ignored."""

    model_config = ConfigDict(extra="allow")

    type: str = "function"
    function: FunctionDefinition | None = None

    @model_validator(mode="after")
    def _function_needs_definition(self) -> ChatTool:
        if self.type == "function" and self.function is None:
            raise PydanticCustomError(
                "function_tool", "A function tool needs a 'function' object with a 'name'"
            )
        return self


def function_tools(tools: list[ChatTool] | None) -> list[dict[str, Any]] | None:
    """The engine's tool list; None when there is no function tool (`tools: []` included)."""
    found = [
        {"type": "function", "function": tool.function.model_dump(exclude_none=True)}
        for tool in tools or []
        if tool.type == "function" and tool.function is not None
    ]
    return found or None


def check_tool_choice(choice: str, tools: list[dict[str, Any]] | None) -> str:
    """A required or named choice needs tools, and a named one must be among them."""
    if choice in ("auto", "none"):
        return choice
    names = [tool["function"]["name"] for tool in tools or []]
    if not names:
        raise PydanticCustomError(
            "tool_choice",
            "tool_choice '{choice}' needs function tools in 'tools'",
            {"choice": choice},
        )
    if choice != "required" and choice not in names:
        raise PydanticCustomError(
            "tool_choice",
            "tool_choice names the function '{choice}', which is not among the tools",
            {"choice": choice},
        )
    return choice


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    arguments: Arguments = "{}"


class ToolCall(BaseModel):
    """A tool call in an assistant history message."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    """One message; extra fields (tool_call_id, name, ...) reach the template."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: TextContent = None
    tool_calls: list[ToolCall] | None = None
    reasoning_content: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool | None = False


class GenerationParams(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0)
    logit_bias: dict[int, Annotated[float, Field(ge=-100, le=100)]] | None = None
    max_tokens: int | None = Field(None, ge=1)
    stop: StopStrings = ()
    n: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool | None = False  # vLLM extension: benchmarks need equal lengths

    @field_validator("n")
    @classmethod
    def _only_one_choice(cls, n: int | None) -> int | None:
        if n not in (None, 1):
            raise PydanticCustomError(
                "unsupported_n", "Only n=1 is supported: ask for one completion per request"
            )
        return n

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(GenerationParams):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    chat_template_kwargs: dict[str, Any] | None = None  # vLLM extension
    tools: list[ChatTool] | None = None
    tool_choice: ToolChoice = "auto"  # validated after `tools`, which it refers to
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat = None
    reasoning_effort: str | None = None

    @field_validator("tool_choice")
    @classmethod
    def _choice_among_tools(cls, choice: str, info: ValidationInfo) -> str:
        return check_tool_choice(choice, function_tools(info.data.get("tools")))

    @property
    def requested_max_tokens(self) -> int | None:
        """`max_completion_tokens` replaced `max_tokens`; Zed sends only the new one."""
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(GenerationParams):
    """Legacy completions.

    `echo` and `suffix` change what the text means, so rather than silently
    ignore them, `echo: true` and a non-empty `suffix` are rejected (400);
    `best_of` other than 1 is rejected like `n`.
    """

    prompt: Prompt
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool | None = False
    suffix: str | None = None
    best_of: int | None = None

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, echo: bool | None) -> bool | None:
        if echo:
            raise PydanticCustomError("unsupported_echo", "echo is not supported by this server")
        return echo

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, suffix: str | None) -> str | None:
        if suffix:
            raise PydanticCustomError(
                "unsupported_suffix", "suffix (fill-in-the-middle) is not supported"
            )
        return suffix

    @field_validator("best_of")
    @classmethod
    def _no_best_of(cls, best_of: int | None) -> int | None:
        if best_of not in (None, 1):
            raise PydanticCustomError("unsupported_best_of", "Only best_of=1 is supported")
        return best_of


# --- responses ----------------------------------------------------------------


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class UsageInfo(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)


class TopLogprobInfo(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobInfo(TopLogprobInfo):
    top_logprobs: list[TopLogprobInfo] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    content: list[TokenLogprobInfo] = Field(default_factory=list)


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class _Sparse(BaseModel):
    """Lists only the fields it carries: stream deltas leave out what did not change."""

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: Any) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class FunctionCallInfo(BaseModel):
    name: str
    arguments: str


class ToolCallInfo(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallInfo


class AssistantMessage(BaseModel):
    """`content` is null for a bare tool call; reasoning and tool calls appear when present."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallInfo] | None = None

    @model_serializer(mode="wrap")
    def _without_absent_extras(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        for key in ("reasoning_content", "tool_calls"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo


class FunctionCallChunk(_Sparse):
    name: str | None = None
    arguments: str | None = None


class ToolCallChunk(_Sparse):
    """The first chunk of a call has `id`, `type` and `function.name`; later ones arguments."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallChunk


class DeltaMessage(_Sparse):
    """A delta lists only what it carries: `{}` on the final chunk."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallChunk] | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: UsageInfo | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    """Both the whole response and each streamed chunk (OpenAI uses one shape)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "minerva"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
