"""The engine with a quantized KV cache: batching and the prefix cache stay on."""

from __future__ import annotations

import pytest

from tests.engine.helpers import chat, generate, submit
from tests.engine.test_engine import make_engine

PROMPT = "The capital of France is Paris. The capital of Italy is"


@pytest.fixture(scope="module")
def engines(models_dir):
    full, q8 = make_engine(models_dir), make_engine(models_dir, kv_bits=8)
    yield full, q8
    full.stop()
    q8.stop()


def test_8bit_kv_engine_reports_its_setting(engines):
    """Same-text-as-full-precision is checked on the real model (tests/engine/test_real_model.py):
    a random-weight model's near-tied logits flip under any rounding."""
    _, q8 = engines
    assert q8.model_status().kv_bits == 8
    assert generate(q8, prompt_text=PROMPT, max_tokens=16).finished.usage.completion_tokens > 0


def test_8bit_kv_batches_requests_together(engines):
    _, q8 = engines
    long = submit(q8, prompt_text="Numbers: 0 1 2", max_tokens=60)
    while len(long.deltas) < 3:
        long.next()
    others = [generate(q8, prompt_text=f"Hello {i}", max_tokens=4) for i in range(3)]
    assert all(o.finished.usage.completion_tokens == 4 or o.finished.finish_reason == "stop" for o in others)
    assert len(long.seen) < 60  # still decoding while the others came and went
    long.wait()


def test_8bit_kv_prefix_cache_reuse(engines):
    _, q8 = engines
    first = chat("Tell me about Paris and Rome, please.")
    turn1 = generate(q8, messages=first, max_tokens=10)
    history = first + [{"role": "assistant", "content": turn1.text}, {"role": "user", "content": "More?"}]
    turn2 = generate(q8, messages=history, max_tokens=5)
    assert turn2.started.cached_tokens >= turn1.started.prompt_tokens
