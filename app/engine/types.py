"""Typed requests in, typed events out: the engine's whole public vocabulary.

This module imports no MLX so the server and the GUI can use it freely.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Protocol, Union

if TYPE_CHECKING:
    from concurrent.futures import Future

    from app.core.models import LocalModel

FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]
ToolChoice = Union[Literal["auto", "none", "required"], str]  # or a function name

_request_ids = itertools.count(1)


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings; equal params share one sampler so rows batch together."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


class CancelToken:
    """Set from any thread; the engine notices on its next step and frees the slot."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._wake: Callable[[], None] | None = None

    def cancel(self) -> None:
        self._event.set()
        if self._wake is not None:
            self._wake()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def bind(self, wake: Callable[[], None]) -> None:
        """Let the engine be woken when this token is cancelled."""
        self._wake = wake


@dataclass
class GenerationRequest:
    """One generation. Give exactly one of `messages`, `prompt_text` or `prompt_tokens`."""

    messages: list[dict[str, Any]] | None = None
    prompt_text: str | None = None
    prompt_tokens: list[int] | None = None
    model: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0
    # Keep generating past end-of-sequence tokens (benchmarks: equal lengths).
    ignore_eos: bool = False
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    # OpenAI function tools: [{"type": "function", "function": {name, description, parameters}}].
    tools: list[dict[str, Any]] | None = None
    # "auto", "none", "required", or the name of the one function that must be called.
    tool_choice: ToolChoice = "auto"
    # None, {"type": "json_object"} or {"type": "json_schema", "json_schema": {"schema": ...}}.
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    cancel: CancelToken = field(default_factory=CancelToken)
    id: int = field(default_factory=lambda: next(_request_ids))
    submitted_at: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class TopLogprob:
    token_id: int
    token: str
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    """Seconds, measured on the engine thread with perf_counter."""

    queued_s: float = 0.0
    ttft_s: float = 0.0
    prefill_tokens: int = 0
    decode_s: float = 0.0
    completion_tokens: int = 0

    @property
    def prefill_tps(self) -> float:
        prefill_s = self.ttft_s - self.queued_s
        return self.prefill_tokens / prefill_s if prefill_s > 0 else 0.0

    @property
    def decode_tps(self) -> float:
        return (self.completion_tokens - 1) / self.decode_s if self.decode_s > 0 else 0.0


@dataclass(frozen=True)
class Started:
    """The request was admitted: its prompt fits and prefill begins."""

    request_id: int
    model: str
    prompt_tokens: int
    cached_tokens: int
    max_tokens: int
    max_tokens_clamped: bool = False


@dataclass(frozen=True)
class TextDelta:
    """New text (never a split character, never part of a stop string)."""

    text: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ReasoningDelta:
    """Thinking text (`<think>`, harmony's analysis channel), kept apart from the answer."""

    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """Part of a tool call. The first delta of a call has `id` and `name`;
    later ones add fragments of the JSON `arguments` string."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class Finished:
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    stop_sequence: str | None = None  # which stop string ended the text, if one did


@dataclass(frozen=True)
class Failed:
    """The request could not run; `error` says why. Always the last event."""

    error: "EngineError"


Event = Union[Started, TextDelta, ReasoningDelta, ToolCallDelta, Finished, Failed]
Sink = Callable[[Event], None]


class EngineError(Exception):
    """An error the client can understand. `kind` maps to an HTTP status."""

    kind: Literal["invalid_request", "not_found", "overloaded", "unavailable", "internal"] = "internal"
    code: str | None = None
    param: str | None = None

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if param is not None:
            self.param = param


class InvalidRequest(EngineError):
    kind = "invalid_request"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"
    param = "messages"


class ModelNotFound(EngineError):
    kind = "not_found"
    code = "model_not_found"
    param = "model"


class Overloaded(EngineError):
    """Too much work queued (or too little KV memory left): retry later."""

    kind = "overloaded"
    code = "server_overloaded"


class ModelUnavailable(EngineError):
    """No model is ready (loading, or failed to load)."""

    kind = "unavailable"
    code = "model_not_ready"


class ModelLoadError(EngineError):
    """A model folder is missing, broken, or too big for this machine."""

    kind = "invalid_request"
    code = "model_load_failed"


ModelState = Literal["empty", "loading", "ready", "error"]


@dataclass(frozen=True)
class ModelStatus:
    """What the engine has loaded, for /v1/models, /health and the GUI."""

    state: ModelState
    model_id: str | None = None
    path: str | None = None
    context_length: int = 0
    kv_bits: int = 0
    progress: float = 0.0
    error: str | None = None
    weights_bytes: int = 0


class EngineLike(Protocol):
    """What the server and the GUI need from the engine (a fake can stand in for tests).

    `submit` never blocks and never raises for a bad request: every outcome,
    errors included, arrives at `sink` as events, called from the engine
    thread. The first event is `Started` or `Failed`; the last is `Finished`
    or `Failed`.
    """

    def submit(self, request: GenerationRequest, sink: Sink) -> None: ...

    def model_status(self) -> ModelStatus: ...

    def available_models(self) -> list["LocalModel"]: ...

    def embed(self, texts: list[str], model: str | None = None) -> "Future[Embeddings]": ...


@dataclass(frozen=True)
class Embeddings:
    """Mean-pooled, L2-normalised hidden states, one vector per input text."""

    model: str
    vectors: list[list[float]]
    prompt_tokens: int
