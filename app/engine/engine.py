"""The engine: one long-lived thread that owns every MLX call.

Requests arrive through a command queue (`submit` never blocks), run together
in mlx-lm's `BatchGenerator` (continuous batching), and stream events back to
each request's sink. Errors are passed as `Failed` events, never raised across
threads. MLX streams and random state are per thread, which is why nothing
here runs MLX anywhere but on `_run`'s thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, StopSequences

from app.core.models import LocalModel
from app.core.settings import EngineSettings
from app.engine.loader import LoadedModel, list_models, load_model, resolve_model_path
from app.engine.admission import Admission, measure_kv_bytes_per_token
from app.engine.embeddings import embed_texts
from app.engine.logprobs import token_logprob
from app.engine.memory import available_memory_bytes
from app.engine.output import OutputParser
from app.engine.prefix_cache import PrefixCache
from app.engine.prompts import prompt_tokens, token_budget
from app.engine.sampling import Samplers, processors_for
from app.engine.structure import constraint_processors, output_parser
from app.engine.textstream import StopTextStream
from app.engine.types import (
    Embeddings,
    EngineError,
    Failed,
    Finished,
    FinishReason,
    GenerationRequest,
    ModelNotFound,
    ModelStatus,
    ModelUnavailable,
    Sink,
    Started,
    TextDelta,
    Timings,
    TokenLogprob,
    Usage,
)

log = logging.getLogger(__name__)

Command = Callable[[], None]


@dataclass
class _Active:
    """A request the generator is working on, and its bookkeeping."""

    request: GenerationRequest
    sink: Sink
    uid: int
    text: StopTextStream
    parser: OutputParser | None
    prompt_tokens: int
    cached_tokens: int
    admitted_at: float
    first_token_at: float | None = None
    last_token_at: float = 0.0
    completion_tokens: int = 0


class _Stop(Exception):
    """Raised inside the engine thread to leave its loop."""


class Engine:
    """Owns the model and the generator; talk to it only through its methods."""

    def __init__(self, settings: EngineSettings, models_dir: Path) -> None:
        self.settings = settings
        self.models_dir = models_dir
        self._commands: queue.Queue[Command] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._status = ModelStatus(state="empty")
        self._loaded: LoadedModel | None = None
        self._generator: BatchGenerator | None = None
        self._stream: mx.Stream | None = None
        self._active: dict[int, _Active] = {}
        # Commands that need an idle engine (a model switch), run in order once it is.
        self._later: list[Command] = []
        self._closing = False
        self._eos_stops = StopSequences()
        self._admission: Admission | None = None
        prefix_bytes = settings.prefix_cache_bytes
        if prefix_bytes is None:
            prefix_bytes = available_memory_bytes() // 4
        self._prefix = PrefixCache(settings.prefix_cache_entries, prefix_bytes)

    # ----- public, any thread -------------------------------------------------

    def start(self, load_default: bool = True) -> None:
        """Start the engine thread; optionally begin loading the default model."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="minerva-engine", daemon=True)
        self._thread.start()
        if load_default:
            self.load_model(self.settings.model)

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel what runs, free the model, and end the thread."""
        if self._thread is None:
            return
        self._commands.put(self._shutdown)
        self._thread.join(timeout)
        self._thread = None

    def submit(self, request: GenerationRequest, sink: Sink) -> None:
        self._ensure_thread()
        if self._status.state == "loading":
            sink(Failed(ModelUnavailable(self._loading_message())))
            return
        request.cancel.bind(self._wake)
        self._commands.put(lambda: self._admit(request, sink))

    def load_model(self, model_id: str) -> Future[ModelStatus]:
        """Load (or switch to) a model; the future resolves when it is ready or failed."""
        self._ensure_thread()
        done: Future[ModelStatus] = Future()
        self._commands.put(lambda: self._load_command(model_id, done))
        return done

    def unload_model(self) -> Future[ModelStatus]:
        done: Future[ModelStatus] = Future()
        self._commands.put(lambda: done.set_result(self._unload()))
        return done

    def embed(self, texts: list[str], model: str | None = None) -> Future[Embeddings]:
        """Embed texts on the engine thread, between decode steps."""
        self._ensure_thread()
        done: Future[Embeddings] = Future()
        self._commands.put(lambda: self._embed_command(texts, model, done))
        return done

    def model_status(self) -> ModelStatus:
        return self._status

    @property
    def active_requests(self) -> int:
        """How many requests hold a generator slot (prefilling or decoding)."""
        return len(self._active)

    def available_models(self) -> list[LocalModel]:
        return list_models(self.models_dir)

    def wait_ready(self, timeout: float | None = None) -> ModelStatus:
        """Block until the current load finishes (for the CLI and tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._status.state in ("empty", "loading"):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("The model did not finish loading in time")
            time.sleep(0.05)
        return self._status

    # ----- the engine thread ---------------------------------------------------

    def _wake(self) -> None:
        self._commands.put(lambda: None)

    def _run(self) -> None:
        self._stream = mx.new_stream(mx.default_device())
        try:
            with mx.stream(self._stream):
                self._adopt_state()
                self._loop_forever()
        except _Stop:
            log.info("Engine stopped")
        finally:
            # Without this, MLX's per-thread stream workers can abort the
            # process at exit ("terminate called without an active exception").
            mx.synchronize(self._stream)
            mx.clear_streams()

    def _adopt_state(self) -> None:
        """On a restarted thread: the old generator's stream died with the old thread."""
        if self._active:
            self._fail_all(RuntimeError("the engine thread stopped unexpectedly"))
        elif self._loaded is not None:
            self._generator = self._new_generator(self._loaded)

    def _loop_forever(self) -> None:
        """A bug in one step fails the requests it touched, never the engine."""
        while True:
            try:
                self._loop()
            except _Stop:
                raise
            except Exception as exc:
                self._fail_all(exc)

    def _ensure_thread(self) -> None:
        """Restart the engine thread if something killed it."""
        thread = self._thread
        if thread is not None and not thread.is_alive():
            log.error("The engine thread died; starting a new one")
            self._thread = threading.Thread(target=self._run, name="minerva-engine", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            self._run_commands(block=not self._active and not self._later)
            self._reap_cancelled()
            if self._active:
                self._step()
            elif self._later:
                self._run_later()

    def _run_commands(self, block: bool) -> None:
        try:
            command = self._commands.get(block=block)
        except queue.Empty:
            return
        while True:
            try:
                command()
            except _Stop:
                raise
            except Exception:  # a command must never kill the engine thread
                log.exception("Engine command failed")
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return

    def _run_later(self) -> None:
        waiting, self._later = self._later, []
        for command in waiting:
            command()

    def _shutdown(self) -> None:
        self._closing = True
        for active in list(self._active.values()):
            self._finish(active, "cancelled")
        self._run_later()
        self._unload()
        raise _Stop

    # ----- models --------------------------------------------------------------

    def _loading_message(self) -> str:
        status = self._status
        return f"The model '{status.model_id}' is loading ({status.progress:.0%}); retry shortly."

    def _set_progress(self, model_id: str, progress: float, stage: str) -> None:
        self._status = ModelStatus(state="loading", model_id=model_id, progress=progress)
        log.info("Loading %s: %s (%.0f%%)", model_id, stage, progress * 100)

    def _load_command(self, model_id: str, done: Future[ModelStatus]) -> None:
        if self._closing:
            done.set_result(self._status)
            return
        if self._active or self._later:  # running requests finish first
            self._later.append(lambda: self._load_command(model_id, done))
            return
        try:
            self._load(model_id)
        except EngineError:
            pass
        done.set_result(self._status)

    def _load(self, model_id: str) -> None:
        """Replace the loaded model; on failure the engine has no model and says why."""
        self._unload()
        progress = lambda p, stage: self._set_progress(model_id, p, stage)  # noqa: E731
        progress(0.0, "Starting")
        try:
            path = resolve_model_path(model_id, self.models_dir, progress)
            loaded = load_model(model_id, path, self.settings, progress)
        except EngineError as exc:
            log.error("Could not load %s: %s", model_id, exc.message)
            self._status = ModelStatus(state="error", model_id=model_id, error=exc.message)
            raise
        except Exception as exc:
            log.exception("Could not load %s", model_id)
            self._status = ModelStatus(state="error", model_id=model_id, error=str(exc))
            raise EngineError(f"Could not load {model_id}: {exc}") from exc
        self._loaded = loaded
        self._generator = self._new_generator(loaded)
        self._admission = Admission(
            self.settings.max_concurrency,
            self.settings.max_queued,
            measure_kv_bytes_per_token(loaded),
            self.settings.kv_budget_bytes,
        )
        self._status = ModelStatus(
            state="ready",
            model_id=loaded.id,
            path=str(loaded.path),
            context_length=loaded.context_length,
            kv_bits=loaded.kv_bits,
            progress=1.0,
            weights_bytes=loaded.weights_bytes,
        )
        log.info("Model %s ready (context %d, KV bits %d)", loaded.id, loaded.context_length, loaded.kv_bits)

    def _new_generator(self, loaded: LoadedModel) -> BatchGenerator:
        concurrency = self.settings.max_concurrency
        self._eos_stops = StopSequences([[t] for t in sorted(loaded.eos_token_ids)])
        self._samplers = Samplers()  # keys are arrays of this thread
        return BatchGenerator(
            loaded.model,
            completion_batch_size=concurrency,
            prefill_batch_size=min(8, concurrency),
            prefill_step_size=self.settings.prefill_step_size,
            stream=self._stream,
        )

    def _close_generator(self) -> None:
        try:
            if self._generator is not None:
                self._generator.close()
        except Exception:  # a generator from a dead thread cannot sync its stream
            log.debug("Could not close the old generator", exc_info=True)
        self._generator = None

    def _unload(self) -> ModelStatus:
        self._close_generator()
        self._loaded = None
        self._prefix.clear()
        mx.clear_cache()
        self._status = ModelStatus(state="empty")
        return self._status

    def _ensure_model(self, request: GenerationRequest) -> bool:
        """Make the requested model the loaded one; False if it must wait its turn."""
        wanted = request.model or (self._loaded.id if self._loaded else self.settings.model)
        if self._loaded is not None and wanted == self._loaded.id:
            return True
        if not any(m.id == wanted for m in self.available_models()):
            raise ModelNotFound(f"The model '{wanted}' does not exist or is not installed.")
        if self._active:
            return False
        self._load(wanted)
        return True

    # ----- embeddings ------------------------------------------------------------

    def _embed_command(self, texts: list[str], model: str | None, done: Future[Embeddings]) -> None:
        if self._closing:
            done.set_exception(ModelUnavailable("The engine is shutting down."))
            return
        try:
            if self._later or not self._ensure_model(GenerationRequest(model=model)):
                self._later.append(lambda: self._embed_command(texts, model, done))
                return
            done.set_result(embed_texts(self._loaded, texts))
        except EngineError as exc:
            done.set_exception(exc)
        except Exception as exc:
            log.exception("Embedding failed")
            done.set_exception(EngineError(f"Embedding failed: {exc}"))

    # ----- requests --------------------------------------------------------------

    def _admit(self, request: GenerationRequest, sink: Sink) -> None:
        if self._closing:
            sink(Failed(ModelUnavailable("The engine is shutting down.")))
            return
        try:
            if self._later or not self._ensure_model(request):
                self._later.append(lambda: self._admit(request, sink))
                return
            self._insert(request, sink)
        except EngineError as exc:
            sink(Failed(exc))
        except Exception as exc:
            log.exception("Could not start request %d", request.id)
            sink(Failed(EngineError("The request could not be started because of an internal error.")))

    def _insert(self, request: GenerationRequest, sink: Sink) -> None:
        loaded = self._loaded
        assert loaded is not None and self._generator is not None
        if request.cancel.cancelled:
            sink(Finished("cancelled", Usage(0, 0), Timings()))
            return
        tokens = prompt_tokens(loaded.tokenizer, request)
        max_tokens, clamped = token_budget(
            len(tokens), request, loaded.context_length, self.settings.clamp_max_tokens
        )
        model_type = loaded.config.get("model_type")
        processors = processors_for(request.sampling)
        processors += constraint_processors(loaded.tokenizer, model_type, request)
        parser = output_parser(
            loaded.tokenizer, model_type, request, loaded.tokenizer.decode(tokens[-16:])
        )
        self._admission.admit(request.id, len(tokens) + max_tokens)
        try:
            uid, cached = self._start(request, tokens, max_tokens, processors)
        except BaseException:
            self._admission.release(request.id)
            raise
        text = StopTextStream(loaded.tokenizer.detokenizer, request.stop)
        self._active[uid] = _Active(
            request, sink, uid, text, parser, len(tokens), cached, admitted_at=time.perf_counter()
        )
        sink(Started(request.id, loaded.id, len(tokens), cached, max_tokens, clamped))

    def _start(
        self, request: GenerationRequest, tokens: list[int], max_tokens: int, processors: list
    ) -> tuple[int, int]:
        """Hand the prompt to the generator, from the longest cached prefix; (uid, cached)."""
        cache, rest = self._prefix.fetch(self._cache_key(), tokens)
        if cache is None:
            cache = self._loaded.new_cache()
        cached = len(tokens) - len(rest)
        (uid,) = self._generator.insert(
            [rest],
            max_tokens=[max_tokens],
            caches=[cache],
            all_tokens=[tokens[:cached]],
            samplers=[self._samplers.for_request(request.sampling)],
            logits_processors=[processors],
            stop_sequences=[StopSequences() if request.ignore_eos else self._eos_stops],
        )
        return uid, cached

    def _cache_key(self) -> tuple:
        loaded = self._loaded
        assert loaded is not None
        return (loaded.id, loaded.kv_bits, loaded.kv_group_size)

    def _reap_cancelled(self) -> None:
        cancelled = [a for a in self._active.values() if a.request.cancel.cancelled]
        if not cancelled or self._generator is None:
            return
        caches = self._generator.remove([a.uid for a in cancelled], return_prompt_caches=True)
        for active in cancelled:
            self._keep_cache(caches.get(active.uid))
            self._finish(active, "cancelled")

    def _keep_cache(self, entry: tuple[list, list[int]] | None) -> None:
        if entry is None:
            return
        cache, tokens = entry
        try:
            self._prefix.store(self._cache_key(), tokens, cache)
        except Exception:  # the prefix cache is an optimisation; never fail a request on it
            log.exception("Could not keep a prompt cache")

    def _step(self) -> None:
        """One generator step: a decode token for every running request, maybe a prefill chunk."""
        assert self._generator is not None
        try:
            _, responses = self._generator.next()
        except Exception as exc:
            self._fail_all(exc)
            return
        now = time.perf_counter()
        for response in responses:
            active = self._active.get(response.uid)
            if active is not None:
                self._on_token(active, response, now)

    def _on_token(self, active: _Active, response, now: float) -> None:
        active.completion_tokens += 1
        active.first_token_at = active.first_token_at or now
        active.last_token_at = now
        reason = response.finish_reason
        is_eos = reason == "stop" and response.token in self._loaded.eos_token_ids
        piece = active.text.add(response.token) if not is_eos else None
        logprobs = self._logprobs(active, response)
        if piece is not None and piece.stopped and reason is None:
            caches = self._generator.remove([active.uid], return_prompt_caches=True)
            self._keep_cache(caches.get(active.uid))
            reason = "stop"
        elif reason is not None:
            self._keep_cache((response.prompt_cache, response.all_tokens))
        text = piece.text if piece is not None else ""
        if reason is not None and not active.text.stopped:
            text += active.text.finish().text
        if active.parser is None:
            if text or logprobs:
                active.sink(TextDelta(text, (response.token,), logprobs))
        else:
            self._emit_parsed(active, text, reason is not None)
            if logprobs:
                active.sink(TextDelta("", (response.token,), logprobs))
        if reason is not None:
            if reason == "stop" and active.parser is not None and active.parser.tool_calls:
                reason = "tool_calls"
            self._finish(active, reason)

    def _emit_parsed(self, active: _Active, text: str, last: bool) -> None:
        """Split text into answer, reasoning and tool-call events."""
        events = active.parser.feed(text) if text else []
        if last:
            events += active.parser.finish()
        for event in events:
            active.sink(event)

    def _logprobs(self, active: _Active, response) -> tuple[TokenLogprob, ...]:
        request = active.request
        if not request.logprobs:
            return ()
        tokenizer = self._loaded.tokenizer
        return (token_logprob(tokenizer, response.logprobs, response.token, request.top_logprobs),)

    def _finish(self, active: _Active, reason: FinishReason) -> None:
        self._active.pop(active.uid, None)
        self._admission.release(active.request.id)
        if not self._active:
            mx.clear_cache()  # idle: give freed KV buffers back to the system
        first = active.first_token_at
        timings = Timings(
            queued_s=active.admitted_at - active.request.submitted_at,
            ttft_s=(first - active.request.submitted_at) if first else 0.0,
            prefill_tokens=active.prompt_tokens - active.cached_tokens,
            decode_s=(active.last_token_at - first) if first else 0.0,
            completion_tokens=active.completion_tokens,
        )
        usage = Usage(active.prompt_tokens, active.completion_tokens, active.cached_tokens)
        active.sink(Finished(reason, usage, timings, active.text.matched))

    def _fail_all(self, exc: Exception) -> None:
        """A generator step failed: fail its requests, keep the engine alive."""
        log.error("Generation failed (%s); failing %d request(s)", exc, len(self._active), exc_info=exc)
        error = EngineError("Generation failed inside the engine; the request was stopped.")
        for active in list(self._active.values()):
            self._active.pop(active.uid, None)
            self._admission.release(active.request.id)
            active.sink(Failed(error))
        if self._loaded is not None:
            self._close_generator()
            self._generator = self._new_generator(self._loaded)
        mx.clear_cache()
