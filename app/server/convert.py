"""Between the wire and the engine: validated requests in, OpenAI objects out.

The engine speaks `GenerationRequest` and events; clients speak OpenAI JSON.
Nothing here does I/O, so every mapping can be tested on its own.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from app.core.models import LocalModel
from app.engine.types import (
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
    GenerationParams,
    ModelCard,
    ModelList,
    PromptTokensDetails,
    TokenLogprobInfo,
    TopLogprobInfo,
    UsageInfo,
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
    return "length" if reason == "length" else "stop"


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


class ResponseFormat(Protocol):
    """Builds one response's objects, whole or as stream chunks."""

    def opening(self) -> list[BaseModel]: ...

    def chunk(self, delta: TextDelta) -> BaseModel: ...

    def closing(self, reason: FinishReason) -> BaseModel: ...

    def usage_chunk(self, usage: Usage) -> BaseModel: ...

    def response(
        self, text: str, logprobs: Sequence[TokenLogprob], reason: FinishReason, usage: Usage
    ) -> BaseModel: ...


FormatFactory = Callable[[Started, bool], ResponseFormat]


class _Ids:
    def __init__(self, prefix: str, started: Started) -> None:
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = started.model

    def header(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "model": self.model}


class ChatFormat(_Ids):
    """`chat.completion` and `chat.completion.chunk` objects for one request."""

    def __init__(self, started: Started, logprobs: bool) -> None:
        super().__init__("chatcmpl", started)
        self.logprobs = logprobs

    def _chunk(
        self, delta: DeltaMessage, reason: str | None = None, lps: ChatLogprobs | None = None
    ) -> BaseModel:
        choice = ChatChunkChoice(delta=delta, logprobs=lps, finish_reason=reason)
        return ChatCompletionChunk(**self.header(), choices=[choice])

    def opening(self) -> list[BaseModel]:
        return [self._chunk(DeltaMessage(role="assistant", content=""))]

    def chunk(self, delta: TextDelta) -> BaseModel:
        lps = chat_logprobs(delta.logprobs) if self.logprobs else None
        return self._chunk(DeltaMessage(content=delta.text), lps=lps)

    def closing(self, reason: FinishReason) -> BaseModel:
        return self._chunk(DeltaMessage(), finish_reason(reason))

    def usage_chunk(self, usage: Usage) -> BaseModel:
        return ChatCompletionChunk(**self.header(), choices=[], usage=usage_info(usage))

    def response(
        self, text: str, logprobs: Sequence[TokenLogprob], reason: FinishReason, usage: Usage
    ) -> BaseModel:
        choice = ChatChoice(
            message=AssistantMessage(content=text),
            logprobs=chat_logprobs(logprobs) if self.logprobs else None,
            finish_reason=finish_reason(reason),
        )
        return ChatCompletionResponse(**self.header(), choices=[choice], usage=usage_info(usage))


class CompletionFormat(_Ids):
    """`text_completion` objects; chunks share the response's shape."""

    def __init__(self, started: Started, logprobs: bool) -> None:
        super().__init__("cmpl", started)
        self.logprobs = logprobs
        self._offset = 0  # characters streamed so far, for text_offset

    def _object(self, choice: CompletionChoice, usage: UsageInfo | None = None) -> BaseModel:
        return CompletionResponse(**self.header(), choices=[choice], usage=usage)

    def opening(self) -> list[BaseModel]:
        return []

    def chunk(self, delta: TextDelta) -> BaseModel:
        lps = completion_logprobs(delta.logprobs, self._offset) if self.logprobs else None
        self._offset += len(delta.text)
        return self._object(CompletionChoice(text=delta.text, logprobs=lps))

    def closing(self, reason: FinishReason) -> BaseModel:
        return self._object(CompletionChoice(text="", finish_reason=finish_reason(reason)))

    def usage_chunk(self, usage: Usage) -> BaseModel:
        return CompletionResponse(**self.header(), choices=[], usage=usage_info(usage))

    def response(
        self, text: str, logprobs: Sequence[TokenLogprob], reason: FinishReason, usage: Usage
    ) -> BaseModel:
        lps = completion_logprobs(logprobs) if self.logprobs else None
        choice = CompletionChoice(text=text, logprobs=lps, finish_reason=finish_reason(reason))
        return self._object(choice, usage_info(usage))


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
