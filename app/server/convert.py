"""Between the wire and the engine: validated requests in, OpenAI objects out.

The engine speaks `GenerationRequest` and events; clients speak OpenAI JSON.
Nothing here does I/O, so every mapping can be tested on its own.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from app.core.models import LocalModel
from app.engine.types import (
    EngineError,
    Finished,
    FinishReason,
    GenerationRequest,
    ModelStatus,
    SamplingParams,
    Started,
    TextDelta,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from app.server.output import Added, Output, ReasoningPart, ToolCallPart
from app.server.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatLogprobs,
    ChatMessage,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    DeltaMessage,
    FunctionCallChunk,
    FunctionCallInfo,
    GenerationParams,
    ModelCard,
    ModelList,
    PromptTokensDetails,
    TokenLogprobInfo,
    ToolCallChunk,
    ToolCallInfo,
    TopLogprobInfo,
    UsageInfo,
    function_tools,
)

# OpenAI reports impossible tokens as -9999.0; JSON has no -Infinity.
_MIN_LOGPROB = -9999.0

# --- requests -----------------------------------------------------------------


def _given(value: Any, default: Any) -> Any:
    return default if value is None else value


def sampling_params(body: GenerationParams) -> SamplingParams:
    """OpenAI's sampling fields; a null means the engine's default."""
    default = SamplingParams()
    return SamplingParams(
        temperature=_given(body.temperature, default.temperature),
        top_p=_given(body.top_p, default.top_p),
        top_k=max(_given(body.top_k, default.top_k), 0),  # vLLM uses -1 for "off"
        min_p=_given(body.min_p, default.min_p),
        seed=body.seed,
        repetition_penalty=body.repetition_penalty,
        presence_penalty=_given(body.presence_penalty, default.presence_penalty),
        frequency_penalty=_given(body.frequency_penalty, default.frequency_penalty),
        logit_bias=tuple(sorted((body.logit_bias or {}).items())),
    )


def engine_message(message: ChatMessage) -> dict[str, Any]:
    """A plain dict with string content; chat templates know `system`, not `developer`."""
    data = message.model_dump(exclude_none=True)
    data["role"] = "system" if message.role == "developer" else message.role
    data["content"] = message.content or ""
    return data


def chat_generation_request(body: ChatCompletionRequest) -> GenerationRequest:
    """`top_logprobs` counts only with `logprobs: true`, as in OpenAI's API."""
    return GenerationRequest(
        messages=[engine_message(m) for m in body.messages],
        model=body.model or None,  # "" from a client means "whatever is loaded"
        sampling=sampling_params(body),
        max_tokens=body.requested_max_tokens,
        stop=body.stop,
        logprobs=bool(body.logprobs),
        top_logprobs=(body.top_logprobs or 0) if body.logprobs else 0,
        ignore_eos=bool(body.ignore_eos),
        chat_template_kwargs=body.chat_template_kwargs or {},
        tools=function_tools(body.tools),
        tool_choice=body.tool_choice,
        response_format=body.response_format,
        reasoning_effort=body.reasoning_effort,
    )


def completion_generation_request(body: CompletionRequest) -> GenerationRequest:
    """`logprobs: 0` still asks for the chosen tokens' logprobs, just no alternatives."""
    text = body.prompt if isinstance(body.prompt, str) else None
    tokens = body.prompt if isinstance(body.prompt, list) else None
    return GenerationRequest(
        prompt_text=text,
        prompt_tokens=tokens,
        model=body.model or None,  # "" from a client means "whatever is loaded"
        sampling=sampling_params(body),
        max_tokens=body.max_tokens,
        stop=body.stop,
        logprobs=body.logprobs is not None,
        top_logprobs=body.logprobs or 0,
        ignore_eos=bool(body.ignore_eos),
    )


# --- responses ----------------------------------------------------------------


def finish_reason(reason: FinishReason) -> str:
    """OpenAI has no "cancelled": such a request just ends."""
    return reason if reason in ("length", "tool_calls") else "stop"


def usage_info(usage: Usage) -> UsageInfo:
    return UsageInfo(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens),
    )


def _logprob(value: float) -> float:
    return value if math.isfinite(value) else _MIN_LOGPROB


def _top_info(top: TopLogprob) -> TopLogprobInfo:
    return TopLogprobInfo(
        token=top.token, logprob=_logprob(top.logprob), bytes=list(top.token.encode())
    )


def chat_logprobs(logprobs: Sequence[TokenLogprob]) -> ChatLogprobs:
    content = [
        TokenLogprobInfo(
            token=lp.token,
            logprob=_logprob(lp.logprob),
            bytes=list(lp.token.encode()),
            top_logprobs=[_top_info(top) for top in lp.top],
        )
        for lp in logprobs
    ]
    return ChatLogprobs(content=content)


def completion_logprobs(logprobs: Sequence[TokenLogprob], offset: int = 0) -> CompletionLogprobs:
    """Legacy shape; `text_offset` counts characters from `offset` by token text."""
    result = CompletionLogprobs()
    for lp in logprobs:
        result.tokens.append(lp.token)
        result.token_logprobs.append(_logprob(lp.logprob))
        result.top_logprobs.append({t.token: _logprob(t.logprob) for t in lp.top})
        result.text_offset.append(offset)
        offset += len(lp.token)
    return result


def chat_delta(added: Added) -> DeltaMessage:
    """Reasoning in `reasoning_content` (Zed reads only that); a call's first chunk names it."""
    part = added.part
    if isinstance(part, ReasoningPart):
        return DeltaMessage(reasoning_content=added.text)
    if isinstance(part, ToolCallPart):
        if added.new:
            chunk = ToolCallChunk(
                index=part.position,
                id=part.id,
                type="function",
                function=FunctionCallChunk(name=part.name, arguments=added.text),
            )
        else:
            chunk = ToolCallChunk(
                index=part.position, function=FunctionCallChunk(arguments=added.text)
            )
        return DeltaMessage(tool_calls=[chunk])
    return DeltaMessage(content=added.text)


def assistant_message(output: Output) -> AssistantMessage:
    """`content` is null when the model only called tools, as OpenAI answers."""
    calls = [
        ToolCallInfo(id=c.id, function=FunctionCallInfo(name=c.name, arguments=c.arguments))
        for c in output.tool_calls
    ]
    text = output.text
    return AssistantMessage(
        content=None if calls and not text else text,
        reasoning_content=output.reasoning or None,
        tool_calls=calls or None,
    )


class _Ids:
    def __init__(self, prefix: str, started: Started) -> None:
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = started.model

    def header(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "model": self.model}


class ChatFormat(_Ids):
    """`chat.completion` and `chat.completion.chunk` objects for one request."""

    named_events = False

    def __init__(self, started: Started, *, logprobs: bool = False, include_usage: bool = False):
        super().__init__("chatcmpl", started)
        self.logprobs = logprobs
        self.include_usage = include_usage

    def _chunk(
        self, delta: DeltaMessage, reason: str | None = None, lps: ChatLogprobs | None = None
    ) -> BaseModel:
        choice = ChatChunkChoice(delta=delta, logprobs=lps, finish_reason=reason)
        return ChatCompletionChunk(**self.header(), choices=[choice])

    def opening(self) -> list[BaseModel]:
        return [self._chunk(DeltaMessage(role="assistant", content=""))]

    def delta(self, added: Added, output: Output) -> list[BaseModel]:
        lps = None
        if self.logprobs and isinstance(added.delta, TextDelta):
            lps = chat_logprobs(added.delta.logprobs)
        return [self._chunk(chat_delta(added), lps=lps)]

    def closing(self, output: Output, finished: Finished) -> list[BaseModel]:
        return self._end(finished.finish_reason, finished.usage)

    def failure(self, output: Output, error: EngineError, usage: Usage) -> list[BaseModel]:
        """An ordinary end: clients retry in a loop on an error chunk after text."""
        return self._end("stop", usage)

    def _end(self, reason: FinishReason, usage: Usage) -> list[BaseModel]:
        chunks = [self._chunk(DeltaMessage(), finish_reason(reason))]
        if self.include_usage:
            chunks.append(self.usage_chunk(usage))
        return chunks

    def usage_chunk(self, usage: Usage) -> BaseModel:
        return ChatCompletionChunk(**self.header(), choices=[], usage=usage_info(usage))

    def response(self, output: Output, finished: Finished) -> BaseModel:
        choice = ChatChoice(
            message=assistant_message(output),
            logprobs=chat_logprobs(output.logprobs) if self.logprobs else None,
            finish_reason=finish_reason(finished.finish_reason),
        )
        usage = usage_info(finished.usage)
        return ChatCompletionResponse(**self.header(), choices=[choice], usage=usage)


class CompletionFormat(_Ids):
    """`text_completion` objects; chunks share the response's shape. Only text counts here."""

    named_events = False

    def __init__(self, started: Started, *, logprobs: bool = False, include_usage: bool = False):
        super().__init__("cmpl", started)
        self.logprobs = logprobs
        self.include_usage = include_usage
        self._offset = 0  # characters streamed so far, for text_offset

    def _object(self, choice: CompletionChoice, usage: UsageInfo | None = None) -> BaseModel:
        return CompletionResponse(**self.header(), choices=[choice], usage=usage)

    def opening(self) -> list[BaseModel]:
        return []

    def delta(self, added: Added, output: Output) -> list[BaseModel]:
        if not isinstance(added.delta, TextDelta):
            return []
        return [self.chunk(added.delta)]

    def chunk(self, delta: TextDelta) -> BaseModel:
        lps = completion_logprobs(delta.logprobs, self._offset) if self.logprobs else None
        self._offset += len(delta.text)
        return self._object(CompletionChoice(text=delta.text, logprobs=lps))

    def closing(self, output: Output, finished: Finished) -> list[BaseModel]:
        return self._end(finished.finish_reason, finished.usage)

    def failure(self, output: Output, error: EngineError, usage: Usage) -> list[BaseModel]:
        return self._end("stop", usage)

    def _end(self, reason: FinishReason, usage: Usage) -> list[BaseModel]:
        chunks = [self._object(CompletionChoice(text="", finish_reason=finish_reason(reason)))]
        if self.include_usage:
            chunks.append(CompletionResponse(**self.header(), choices=[], usage=usage_info(usage)))
        return chunks

    def response(self, output: Output, finished: Finished) -> BaseModel:
        lps = completion_logprobs(output.logprobs) if self.logprobs else None
        reason = finish_reason(finished.finish_reason)
        choice = CompletionChoice(text=output.text, logprobs=lps, finish_reason=reason)
        return self._object(choice, usage_info(finished.usage))


# --- models -------------------------------------------------------------------


def _created(path: str | Path | None) -> int:
    """A model folder's mtime: the closest thing to OpenAI's creation time."""
    try:
        return int(Path(path).stat().st_mtime) if path else 0
    except OSError:
        return 0


def model_list(status: ModelStatus, available: Sequence[LocalModel]) -> ModelList:
    """The loaded model first, then every other local model, each once."""
    cards: dict[str, ModelCard] = {}
    if status.model_id:
        cards[status.model_id] = ModelCard(id=status.model_id, created=_created(status.path))
    for model in available:
        cards.setdefault(model.id, ModelCard(id=model.id, created=_created(model.path)))
    return ModelList(data=list(cards.values()))
