"""The engine thread with a tiny random-weight model: batching, cancel, prefix cache, stops."""

from __future__ import annotations

import time

import pytest

from app.core.settings import EngineSettings
from app.engine.engine import Engine
from app.engine.types import (
    ContextLengthExceeded,
    Finished,
    ModelNotFound,
    SamplingParams,
    Started,
    TextDelta,
)
from tests.conftest import TINY_ID
from tests.engine.helpers import chat, generate, submit


def make_engine(models_dir, **settings) -> Engine:
    settings.setdefault("context_length", 512)
    engine = Engine(EngineSettings(model=TINY_ID, **settings), models_dir)
    engine.start()
    status = engine.wait_ready(timeout=120)
    assert status.state == "ready", status
    return engine


@pytest.fixture(scope="module")
def engine(models_dir):
    engine = make_engine(models_dir)
    yield engine
    engine.stop()


def test_generates_text_and_reports_usage(engine):
    run = generate(engine, messages=chat("Hello there"), max_tokens=12)
    assert isinstance(run.seen[0], Started)
    assert run.started.model == TINY_ID
    assert run.finished.finish_reason in ("length", "stop")
    usage = run.finished.usage
    assert usage.prompt_tokens == run.started.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= 12
    assert run.finished.timings.ttft_s > 0
    assert run.text


def test_new_request_joins_while_another_decodes(engine):
    long = submit(engine, prompt_text="The capital of France", max_tokens=150)
    while sum(isinstance(e, TextDelta) for e in long.seen) < 5:
        long.next()
    short = generate(engine, prompt_text="Hello", max_tokens=5)
    assert isinstance(short.finished, Finished)
    # The long request was still running when the short one finished: they shared the batch.
    assert not isinstance(long.seen[-1], Finished)
    long.wait()
    assert long.finished.usage.completion_tokens > 5


def test_cancel_frees_the_slot_at_once(engine):
    run = submit(engine, prompt_text="Numbers:", max_tokens=2000)
    while sum(isinstance(e, TextDelta) for e in run.seen) < 3:
        run.next()
    cancelled_at = time.perf_counter()
    run.request.cancel.cancel()
    run.wait(timeout=10)
    assert run.finished.finish_reason == "cancelled"
    assert time.perf_counter() - cancelled_at < 2.0
    assert run.finished.usage.completion_tokens < 2000
    assert not engine._active
    assert generate(engine, prompt_text="Hello", max_tokens=3).finished


def test_cancel_before_start(engine):
    run = submit(engine, prompt_text="Hello", max_tokens=50)
    run.request.cancel.cancel()
    run.wait()
    assert run.finished.finish_reason == "cancelled"


def test_second_chat_turn_prefills_only_new_tokens(engine):
    first = [{"role": "user", "content": "Tell me about Paris and Rome, please."}]
    turn1 = generate(engine, messages=first, max_tokens=16)
    history = first + [
        {"role": "assistant", "content": turn1.text},
        {"role": "user", "content": "And Minerva?"},
    ]
    turn2 = generate(engine, messages=history, max_tokens=8)
    started = turn2.started
    assert started.cached_tokens >= turn1.started.prompt_tokens
    timings = turn2.finished.timings
    assert timings.prefill_tokens == started.prompt_tokens - started.cached_tokens
    assert turn2.finished.usage.cached_tokens == started.cached_tokens


def test_identical_prompt_hits_the_cache_and_gives_the_same_text(engine):
    a = generate(engine, prompt_text="Large language models predict", max_tokens=10)
    b = generate(engine, prompt_text="Large language models predict", max_tokens=10)
    assert b.started.cached_tokens == b.started.prompt_tokens - 1
    assert a.text == b.text


def _two_token_stop(run) -> str:
    """A stop string made of the end of one token's text and the start of the next."""
    texts = [d.text for d in run.deltas]
    for left, right in zip(texts, texts[1:]):
        if len(left) >= 2 and len(right) >= 2 and "\ufffd" not in left + right:
            return left[-2:] + right[:2]
    pytest.skip("no two printable neighbouring tokens in this output")


def test_stop_string_across_token_boundary(engine):
    free = generate(engine, prompt_text="Hello there! How are", max_tokens=40)
    stop = _two_token_stop(free)
    stopped = generate(engine, prompt_text="Hello there! How are", max_tokens=40, stop=(stop,))
    assert stopped.finished.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.index(stop)]
    assert stop not in stopped.text


def test_stop_string_absent_changes_nothing(engine):
    free = generate(engine, prompt_text="Numbers: 0 1", max_tokens=20)
    with_stop = generate(engine, prompt_text="Numbers: 0 1", max_tokens=20, stop=("\u2603never",))
    assert with_stop.text == free.text
    assert with_stop.finished.finish_reason == free.finished.finish_reason


def test_seed_makes_sampling_reproducible(engine):
    params = SamplingParams(temperature=1.0, seed=1234)
    a = generate(engine, prompt_text="Hello", max_tokens=20, sampling=params)
    b = generate(engine, prompt_text="Hello", max_tokens=20, sampling=params)
    c = generate(engine, prompt_text="Hello", max_tokens=20, sampling=SamplingParams(1.0, seed=99))
    assert a.text == b.text
    assert [d.token_ids for d in a.deltas] != [d.token_ids for d in c.deltas]


def test_seeded_requests_are_independent_of_batch_neighbours(engine):
    params = SamplingParams(temperature=1.0, seed=7)
    alone = generate(engine, prompt_text="Hello", max_tokens=15, sampling=params)
    noise = [submit(engine, prompt_text="Numbers", max_tokens=30, sampling=SamplingParams(1.0)) for _ in range(3)]
    together = generate(engine, prompt_text="Hello", max_tokens=15, sampling=params)
    for run in noise:
        run.wait()
    assert together.text == alone.text


def test_logprobs_match_greedy_choice(engine):
    run = generate(engine, prompt_text="The capital", max_tokens=5, logprobs=True, top_logprobs=3)
    for delta in run.deltas:
        (lp,) = delta.logprobs
        assert lp.token_id == delta.token_ids[0]
        assert len(lp.top) == 3
        assert [t.logprob for t in lp.top] == sorted((t.logprob for t in lp.top), reverse=True)
        assert lp.top[0].token_id == lp.token_id
        assert lp.logprob == pytest.approx(lp.top[0].logprob)
        assert lp.logprob <= 0


def test_prompt_over_context_fails_with_openai_wording(engine):
    run = generate(engine, prompt_tokens=[5] * 600, max_tokens=5)
    error = run.failed.error
    assert isinstance(error, ContextLengthExceeded)
    assert "maximum context length is 512 tokens" in error.message
    assert error.code == "context_length_exceeded"


def test_max_tokens_beyond_context_is_clamped(engine):
    run = generate(engine, prompt_tokens=[5] * 500, max_tokens=32000)
    assert run.started.max_tokens_clamped
    assert run.started.max_tokens == 12
    assert run.finished.usage.completion_tokens <= 12


def test_strict_context_refuses_max_tokens_beyond_context(models_dir):
    engine = make_engine(models_dir, clamp_max_tokens=False)
    try:
        run = generate(engine, prompt_tokens=[5] * 500, max_tokens=100)
        assert "you requested 600 tokens (500 in the prompt, 100 in the completion)" in run.failed.error.message
    finally:
        engine.stop()


def test_unknown_model_is_not_found(engine):
    run = generate(engine, model="no-such-model", prompt_text="Hi", max_tokens=3)
    assert isinstance(run.failed.error, ModelNotFound)


def test_bad_chat_messages_fail_cleanly(engine):
    run = generate(engine, messages=[], max_tokens=3)
    assert run.failed.error.kind == "invalid_request"
    assert generate(engine, prompt_text="Hi", max_tokens=2).finished


def test_many_concurrent_requests_all_finish(engine):
    runs = [submit(engine, prompt_text=f"Request {i}:", max_tokens=10 + i) for i in range(12)]
    for i, run in enumerate(runs):
        run.wait()
        assert run.finished.usage.completion_tokens <= 10 + i
    assert not engine._active


def test_ignore_eos_generates_exactly_max_tokens(engine):
    run = generate(engine, prompt_text="Hello", max_tokens=40, ignore_eos=True)
    assert run.finished.finish_reason == "length"
    assert run.finished.usage.completion_tokens == 40


def test_extreme_sampling_values_are_handled(engine):
    """Found by fuzzing: top_k beyond the vocabulary and seeds outside uint64."""
    for params in (SamplingParams(1.0, top_k=10_000), SamplingParams(1.0, seed=-5), SamplingParams(1.0, seed=2**80)):
        assert generate(engine, prompt_text="Hi", max_tokens=3, sampling=params).finished
