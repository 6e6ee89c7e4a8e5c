"""Faults and overload: one request fails, the engine goes on."""

from __future__ import annotations

import threading
import time

import pytest

from app.engine.types import InvalidRequest, Overloaded, Started
from tests.engine.helpers import generate, submit
from tests.engine.test_engine import make_engine


@pytest.fixture
def engine(models_dir):
    engine = make_engine(models_dir)
    yield engine
    engine.stop()


def test_an_exception_inside_generation_fails_only_that_step(engine):
    original = engine._generator.next
    calls = {"n": 0}

    def explode():
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected fault")
        return original()

    engine._generator.next = explode
    run = generate(engine, prompt_text="Hello", max_tokens=50, ignore_eos=True)
    assert "Generation failed" in run.failed.error.message
    assert "injected" not in run.failed.error.message  # no internals to the client
    after = generate(engine, prompt_text="Hello", max_tokens=5)
    assert after.finished.usage.completion_tokens == 5 or after.finished.finish_reason == "stop"


def test_a_crash_in_the_engine_loop_is_survived(engine, monkeypatch):
    original = engine._reap_cancelled
    state = {"armed": True}

    def crash_once():
        if state["armed"]:
            state["armed"] = False
            raise ValueError("loop bug")
        original()

    monkeypatch.setattr(engine, "_reap_cancelled", crash_once)
    engine._wake()
    time.sleep(0.2)
    assert generate(engine, prompt_text="Hi", max_tokens=3).finished


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_engine_thread_restarts_after_it_dies(engine):
    def die():
        raise SystemExit  # ends the thread, like an uncatchable fault would

    engine._commands.put(die)
    engine._thread.join(5)
    assert not engine._thread.is_alive()
    run = generate(engine, prompt_text="Hello", max_tokens=4)
    assert run.finished.usage.completion_tokens > 0
    assert engine._thread.is_alive()


def test_excess_load_is_refused_with_a_retryable_error(models_dir):
    engine = make_engine(models_dir, max_concurrency=1, max_queued=1)
    try:
        runs = [submit(engine, prompt_text="Hello", max_tokens=200, ignore_eos=True) for _ in range(3)]
        first = [run.next() for run in runs]
        assert sum(isinstance(e, Started) for e in first) == 2
        refused = [run for run, event in zip(runs, first) if not isinstance(event, Started)]
        assert isinstance(refused[0].seen[-1].error, Overloaded)
        for run in runs:
            run.request.cancel.cancel()
    finally:
        engine.stop()


def test_kv_budget_bounds_concurrent_memory(models_dir):
    probe = make_engine(models_dir)
    per_token = probe._admission.kv_per_token
    probe.stop()
    engine = make_engine(models_dir, kv_budget_bytes=per_token * 300)
    try:
        big = generate(engine, prompt_text="Hello", max_tokens=400)
        assert isinstance(big.failed.error, InvalidRequest) and "KV cache" in big.failed.error.message
        first = submit(engine, prompt_text="Hello", max_tokens=200, ignore_eos=True)
        assert isinstance(first.next(), Started)
        second = generate(engine, prompt_text="Hello", max_tokens=200)
        assert isinstance(second.failed.error, Overloaded)
        first.wait()
        assert generate(engine, prompt_text="Hello", max_tokens=200).finished  # memory was released
    finally:
        engine.stop()


def test_concurrent_submitters_from_many_threads(engine):
    results = []

    def worker(i):
        results.append(generate(engine, prompt_text=f"Thread {i}", max_tokens=6).finished)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 16 and engine.active_requests == 0


def test_model_folder_deleted_while_loaded(models_dir, tmp_path):
    import shutil

    from app.core.settings import EngineSettings
    from app.engine.engine import Engine
    from tests.conftest import TINY_ID

    shutil.copytree(models_dir / TINY_ID, tmp_path / "doomed")
    engine = Engine(EngineSettings(model="doomed", context_length=256), tmp_path)
    engine.start()
    try:
        assert engine.wait_ready(60).state == "ready"
        shutil.rmtree(tmp_path / "doomed")
        assert generate(engine, prompt_text="Hi", max_tokens=4).finished  # weights are in memory
        status = engine.load_model("doomed").result(60)
        assert status.state == "error" and "doomed" in status.error
        assert isinstance(generate(engine, model="doomed", prompt_text="Hi", max_tokens=2).failed.error, Exception)
    finally:
        engine.stop()
