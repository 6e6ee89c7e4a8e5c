"""Model load, switch and refusal on the engine thread."""

from __future__ import annotations

import shutil

import pytest

from app.core.settings import EngineSettings
from app.engine import loader
from app.engine.engine import Engine
from app.engine.types import Finished, ModelNotFound, Started
from tests.conftest import TINY_ID
from tests.engine.helpers import generate, submit
from tests.tiny_model import build_tiny_model

OTHER_ID = "tiny-other"


@pytest.fixture(scope="module")
def two_models_dir(tmp_path_factory, models_dir):
    path = tmp_path_factory.mktemp("two-models")
    shutil.copytree(models_dir / TINY_ID, path / TINY_ID)
    build_tiny_model(path / OTHER_ID, layers=1, seed=1)
    broken = path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    return path


@pytest.fixture
def engine(two_models_dir):
    engine = Engine(EngineSettings(model=TINY_ID, context_length=256), two_models_dir)
    engine.start()
    assert engine.wait_ready(60).state == "ready"
    yield engine
    engine.stop()


def test_request_for_another_installed_model_switches_to_it(engine):
    run = generate(engine, model=OTHER_ID, prompt_text="Hello", max_tokens=3)
    assert run.started.model == OTHER_ID
    assert engine.model_status().model_id == OTHER_ID


def test_switch_waits_for_running_requests(engine):
    first = submit(engine, prompt_text="Hello", max_tokens=40, ignore_eos=True)
    while not any(isinstance(e, Started) for e in first.seen):
        first.next()
    second = submit(engine, model=OTHER_ID, prompt_text="Hello", max_tokens=3)
    first.wait()
    second.wait()
    assert first.finished.usage.completion_tokens == 40
    assert first.started.model == TINY_ID and second.started.model == OTHER_ID


def test_load_reports_progress_and_ready(engine):
    seen = []
    done = engine.load_model(OTHER_ID)
    while not done.done():
        seen.append(engine.model_status().state)
    status = done.result()
    assert status.state == "ready" and status.model_id == OTHER_ID and status.context_length == 256
    assert engine.available_models()


def test_broken_model_folder_gives_a_readable_error(engine):
    status = engine.load_model("broken-model").result(60)
    assert status.state == "error"
    assert "broken-model" in status.error
    run = generate(engine, prompt_text="Hi", max_tokens=2)  # the default model comes back on demand
    assert isinstance(run.seen[-1], Finished)


def test_missing_model_is_not_found(engine):
    status = engine.load_model("../../etc").result(60)
    assert status.state == "error" and "does not exist" in status.error
    run = generate(engine, model="../../etc", prompt_text="Hi", max_tokens=2)
    assert isinstance(run.failed.error, ModelNotFound)


def test_memory_guard_refuses_a_model_that_cannot_fit(engine, monkeypatch):
    monkeypatch.setattr(loader, "available_memory_bytes", lambda: 1_000)
    status = engine.load_model(OTHER_ID).result(60)
    assert status.state == "error"
    assert "needs about" in status.error and "available" in status.error


def test_unload_then_request_loads_the_default_again(engine):
    assert engine.unload_model().result(10).state == "empty"
    run = generate(engine, prompt_text="Hi", max_tokens=2)
    assert run.started.model == TINY_ID


def test_eos_tokens_from_generation_config_stop_generation(engine, two_models_dir):
    # logprobs=True makes one delta per token, even for tokens with no text yet.
    free = generate(engine, prompt_text="Hello there", max_tokens=6, ignore_eos=True, logprobs=True)
    third = free.deltas[2].token_ids[0]
    folder = two_models_dir / "tiny-gen-config"
    if not folder.exists():
        shutil.copytree(two_models_dir / TINY_ID, folder)
        (folder / "generation_config.json").write_text(f'{{"eos_token_id": [2, {third}]}}')
    run = generate(engine, model="tiny-gen-config", prompt_text="Hello there", max_tokens=6, logprobs=True)
    assert run.finished.finish_reason == "stop"
    assert run.finished.usage.completion_tokens == 3
    assert [d.token_ids for d in run.deltas] == [d.token_ids for d in free.deltas[:3]]
