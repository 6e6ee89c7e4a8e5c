"""A scripted stand-in for the MLX engine: real threads and events, no model.

Each request runs on its own thread and "generates" `pieces` (one token per
piece), honouring max_tokens, stop strings, cancellation and logprobs the way
the real engine promises to. Prompt tokens are counted as whitespace-separated
words, so a long enough message overflows `context_length`.

`script` replaces the pieces with any reasoning, text and tool-call deltas
(one token each); a script with a tool call finishes with "tool_calls".
`embed` answers with small vectors that float32 holds exactly.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from app.core.models import LocalModel
from app.engine.types import (
    ContextLengthExceeded,
    Embeddings,
    EngineError,
    Failed,
    Finished,
    GenerationRequest,
    ModelNotFound,
    ModelState,
    ModelStatus,
    ModelUnavailable,
    ReasoningDelta,
    Sink,
    Started,
    TextDelta,
    Timings,
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
    Usage,
)

DEFAULT_PIECES = ("Hello", ",", " world", "!")

ScriptDelta = Union[TextDelta, ReasoningDelta, ToolCallDelta]

# A typical tool-calling turn: think, say a word, call a function in three pieces.
TOOL_SCRIPT: tuple[ScriptDelta, ...] = (
    ReasoningDelta("The user wants "),
    ReasoningDelta("the weather."),
    TextDelta("Let me check.", (1,)),
    ToolCallDelta(0, id="call_abc", name="get_weather", arguments=""),
    ToolCallDelta(0, arguments='{"city": '),
    ToolCallDelta(0, arguments='"Paris"}'),
)


@dataclass
class FakeEngine:
    pieces: tuple[str, ...] = DEFAULT_PIECES
    model_id: str = "fake-model"
    state: ModelState = "ready"
    context_length: int = 64
    delay_s: float = 0.0
    cached_tokens: int = 0
    error: EngineError | None = None  # fail every request with this instead of starting
    fail_after: int | None = None  # fail after this many pieces (mid-generation)
    available: list[LocalModel] = field(default_factory=list)
    script: tuple[ScriptDelta, ...] | None = None  # emitted instead of `pieces`
    embed_error: EngineError | None = None

    requests: list[GenerationRequest] = field(default_factory=list)
    embedded: list[tuple[list[str], str | None]] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    saw_cancel: threading.Event = field(default_factory=threading.Event)

    # --- EngineLike -------------------------------------------------------

    def submit(self, request: GenerationRequest, sink: Sink) -> None:
        self.requests.append(request)
        threading.Thread(target=self._run, args=(request, sink), daemon=True).start()

    def model_status(self) -> ModelStatus:
        model_id = None if self.state == "empty" else self.model_id
        path = self.available[0].path if self.available else None
        return ModelStatus(
            state=self.state,
            model_id=model_id,
            path=str(path) if path else None,
            context_length=self.context_length,
            progress=1.0 if self.state == "ready" else 0.5,
            error="weights are broken" if self.state == "error" else None,
        )

    def available_models(self) -> list[LocalModel]:
        return list(self.available)

    def embed(self, texts: list[str], model: str | None = None) -> Future[Embeddings]:
        """Answers from another thread, like the engine; text k gets [len(text), k/4, ...]."""
        self.embedded.append((list(texts), model))
        future: Future[Embeddings] = Future()

        def run() -> None:
            error = self.embed_error
            if error is None and self.state != "ready":
                error = ModelUnavailable(f"The model is not ready (state: {self.state})")
            if error is None and model is not None and model != self.model_id:
                error = ModelNotFound(f"The model '{model}' does not exist")
            if error is not None:
                future.set_exception(error)
                return
            vectors = [[float(len(t)), i / 4, -0.5, 0.125] for i, t in enumerate(texts)]
            tokens = sum(len(t.split()) for t in texts)
            future.set_result(Embeddings(model or self.model_id, vectors, tokens))

        threading.Thread(target=run, daemon=True).start()
        return future

    # --- helpers for tests ---------------------------------------------------

    @property
    def last(self) -> GenerationRequest:
        return self.requests[-1]

    def add_model(self, model_id: str, path: Path = Path("/nonexistent")) -> None:
        self.available.append(LocalModel(model_id, path, 1234))

    # --- the scripted generation -------------------------------------------

    def _run(self, request: GenerationRequest, sink: Sink) -> None:
        error = self._admission_error(request)
        if error is not None:
            sink(Failed(error))
            return
        prompt_tokens = self._prompt_tokens(request)
        room = self.context_length - prompt_tokens
        max_tokens = request.max_tokens or room
        clamped = max_tokens > room
        max_tokens = min(max_tokens, room)
        model = request.model or self.model_id
        sink(Started(request.id, model, prompt_tokens, self.cached_tokens, max_tokens, clamped))
        reason, produced = self._generate(request, sink, max_tokens)
        if reason is None:
            sink(Failed(EngineError("The fake engine broke")))
            return
        self.finish_reasons.append(reason)
        usage = Usage(prompt_tokens, produced, self.cached_tokens)
        sink(Finished(reason, usage, Timings(completion_tokens=produced)))

    def _admission_error(self, request: GenerationRequest) -> EngineError | None:
        if self.error is not None:
            return self.error
        if self.state != "ready":
            return ModelUnavailable(f"The model is not ready (state: {self.state})")
        known = {self.model_id, *(m.id for m in self.available)}
        if request.model is not None and request.model not in known:
            return ModelNotFound(f"The model '{request.model}' does not exist")
        prompt_tokens = self._prompt_tokens(request)
        if prompt_tokens >= self.context_length:
            return ContextLengthExceeded(
                f"This model's maximum context length is {self.context_length} tokens. However, "
                f"your messages resulted in {prompt_tokens} tokens. "
                "Please reduce the length of the messages."
            )
        return None

    @staticmethod
    def _prompt_tokens(request: GenerationRequest) -> int:
        if request.prompt_tokens is not None:
            return len(request.prompt_tokens)
        if request.prompt_text is not None:
            return len(request.prompt_text.split())
        return sum(len(str(m.get("content") or "").split()) + 1 for m in request.messages or [])

    def _generate(
        self, request: GenerationRequest, sink: Sink, max_tokens: int
    ) -> tuple[str | None, int]:
        """Emit pieces; the finish reason (None for a failure) and how many were produced."""
        if self.script is not None:
            return self._play(request, sink, max_tokens)
        text = ""
        for produced, piece in enumerate(self.pieces):
            if request.cancel.cancelled:
                self.saw_cancel.set()
                return "cancelled", produced
            if produced >= max_tokens:
                return "length", produced
            if self.fail_after is not None and produced >= self.fail_after:
                return None, produced
            cut = _stop_cut(text + piece, request.stop)
            if cut is not None:
                if cut > len(text):
                    sink(
                        TextDelta(
                            (text + piece)[len(text) : cut],
                            (produced,),
                            _logprobs(request, piece, produced),
                        )
                    )
                return "stop", produced + 1
            sink(TextDelta(piece, (produced,), _logprobs(request, piece, produced)))
            text += piece
            if self.delay_s:
                time.sleep(self.delay_s)
        return "stop", len(self.pieces)

    def _play(
        self, request: GenerationRequest, sink: Sink, max_tokens: int
    ) -> tuple[str | None, int]:
        """Emit the scripted deltas, one token each."""
        assert self.script is not None
        for produced, delta in enumerate(self.script):
            if request.cancel.cancelled:
                self.saw_cancel.set()
                return "cancelled", produced
            if produced >= max_tokens:
                return "length", produced
            if self.fail_after is not None and produced >= self.fail_after:
                return None, produced
            sink(delta)
            if self.delay_s:
                time.sleep(self.delay_s)
        calls = any(isinstance(delta, ToolCallDelta) for delta in self.script)
        return ("tool_calls" if calls else "stop"), len(self.script)


def _stop_cut(text: str, stops: tuple[str, ...]) -> int | None:
    found = [text.find(stop) for stop in stops if stop in text]
    return min(found) if found else None


def _logprobs(request: GenerationRequest, piece: str, token_id: int) -> tuple[TokenLogprob, ...]:
    if not request.logprobs:
        return ()
    top = tuple(
        TopLogprob(token_id + k, f"{piece}#{k}", -0.5 * (k + 1))
        for k in range(request.top_logprobs)
    )
    return (TokenLogprob(token_id, piece, -0.25, top),)
