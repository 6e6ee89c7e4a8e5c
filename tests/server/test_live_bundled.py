"""The real thing: a live server on loopback, the real bundled model, the real openai SDK."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest

from app.core.settings import BUNDLED_MODEL_ID, EngineSettings, ServerSettings
from app.engine.engine import Engine
from app.server import ServerThread

pytestmark = pytest.mark.real_model

CONTEXT = 1024
PARIS = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def live_engine(tmp_path_factory):
    engine = Engine(
        EngineSettings(model=BUNDLED_MODEL_ID, context_length=CONTEXT, max_concurrency=8),
        tmp_path_factory.mktemp("live-models"),
    )
    engine.start()
    assert engine.wait_ready(timeout=300).state == "ready"
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def live(live_engine):
    with ServerThread(ServerSettings(port=0, max_body_bytes=1 << 20), live_engine) as server:
        yield server


@pytest.fixture(scope="module")
def api(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)


def raw(live, path: str, body: bytes | None = None, method: str | None = None):
    """A plain HTTP call: (status, headers, parsed JSON or text)."""
    request = urllib.request.Request(f"{live.url}{path}", data=body, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, headers, text = response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        status, headers, text = error.code, error.headers, error.read().decode()
    try:
        return status, headers, json.loads(text)
    except ValueError:
        return status, headers, text


def assert_openai_error(body: dict, code: str | None = None, param: str | None = None) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    if param is not None:
        assert body["error"]["param"] == param


def test_models_lists_the_bundled_model_first(api):
    models = api.models.list().data
    assert models[0].id == BUNDLED_MODEL_ID
    assert api.models.retrieve(BUNDLED_MODEL_ID).id == BUNDLED_MODEL_ID


def test_health(live):
    status, _, body = raw(live, "/health")
    assert status == 200 and body["status"] == "ok" and body["model"] == BUNDLED_MODEL_ID


def test_chat_answers_paris(api):
    reply = api.chat.completions.create(model=BUNDLED_MODEL_ID, messages=PARIS, temperature=0, max_tokens=30)
    answer = reply.choices[0].message.content
    assert "Paris" in answer and len(answer.split()) >= 3, answer
    assert reply.choices[0].finish_reason == "stop"
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    usage = reply.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens >= 0


def test_stream_with_usage(api):
    chunks = list(
        api.chat.completions.create(
            model=BUNDLED_MODEL_ID,
            messages=PARIS,
            temperature=0,
            max_tokens=30,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert all(c.choices[0].index == 0 for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens > 0


def test_stream_ends_with_done(live):
    body = json.dumps({"messages": PARIS, "max_tokens": 3, "stream": True}).encode()
    status, headers, text = raw(live, "/v1/chat/completions", body)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert text.endswith("data: [DONE]\n\n")


def test_stream_helper(api):
    with api.chat.completions.stream(model=BUNDLED_MODEL_ID, messages=PARIS, temperature=0, max_tokens=30) as stream:
        final = stream.get_final_completion()
    assert "Paris" in final.choices[0].message.content


def test_completions(api):
    reply = api.completions.create(
        model=BUNDLED_MODEL_ID, prompt="The capital of France is", temperature=0, max_tokens=8
    )
    assert reply.object == "text_completion" and reply.choices[0].text
    assert reply.usage.completion_tokens <= 8


def test_stop_string_that_tokenizes_differently(api):
    reply = api.chat.completions.create(
        model=BUNDLED_MODEL_ID, messages=PARIS, temperature=0, max_tokens=30, stop=["Paris"]
    )
    text = reply.choices[0].message.content
    assert "Paris" not in text and "capital" in text
    assert reply.choices[0].finish_reason == "stop"


def test_logprobs(api):
    reply = api.chat.completions.create(
        model=BUNDLED_MODEL_ID, messages=PARIS, temperature=0, max_tokens=6, logprobs=True, top_logprobs=2
    )
    entries = reply.choices[0].logprobs.content
    assert len(entries) == reply.usage.completion_tokens
    for entry in entries:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
    assert "".join(e.token for e in entries).startswith(reply.choices[0].message.content[:3])


def test_seed_reproduces_sampled_text(api):
    def sample(seed: int) -> str:
        reply = api.chat.completions.create(
            model=BUNDLED_MODEL_ID, messages=PARIS, temperature=1.0, seed=seed, max_tokens=12
        )
        return reply.choices[0].message.content

    assert sample(42) == sample(42)


def test_eight_concurrent_streams_all_finish(api):
    results: list[tuple[str, int]] = []

    def one(i: int) -> None:
        stream = api.chat.completions.create(
            model=BUNDLED_MODEL_ID,
            messages=[{"role": "user", "content": f"Say a word about the number {i}."}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
        reasons, usage = [], None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].finish_reason:
                reasons.append(chunk.choices[0].finish_reason)
            usage = chunk.usage or usage
        results.append((reasons[0], usage.completion_tokens))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 8
    assert all(reason in ("stop", "length") and 0 < n <= 8 for reason, n in results)


def test_disconnect_frees_its_slot(api, live_engine):
    stream = api.chat.completions.create(
        model=BUNDLED_MODEL_ID, messages=PARIS, max_tokens=400, stream=True, extra_body={"ignore_eos": True}
    )
    for _, _ in zip(stream, range(3)):
        pass
    assert live_engine.active_requests == 1
    stream.close()
    deadline = time.monotonic() + 5
    while live_engine.active_requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_engine.active_requests == 0


def test_consecutive_users_null_and_part_content_and_developer_role(api):
    reply = api.chat.completions.create(
        model=BUNDLED_MODEL_ID,
        max_tokens=4,
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hello."}]},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": None},
            {"role": "user", "content": ""},
        ],
    )
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_unknown_fields_are_ignored(api):
    reply = api.chat.completions.create(
        model=BUNDLED_MODEL_ID,
        messages=PARIS,
        max_tokens=3,
        extra_body={"prompt_cache_key": "x", "parallel_tool_calls": False, "store": False, "whatever": {"a": 1}},
    )
    assert reply.choices


def test_max_tokens_beyond_context_is_clamped_and_said(api):
    response = api.chat.completions.with_raw_response.create(
        model=BUNDLED_MODEL_ID, messages=PARIS, max_tokens=32000, temperature=0
    )
    assert int(response.headers["x-minerva-max-tokens-clamped"]) < CONTEXT
    assert "Paris" in response.parse().choices[0].message.content


# --- errors ---------------------------------------------------------------------


def test_n_other_than_one(api):
    with pytest.raises(openai.BadRequestError) as info:
        api.chat.completions.create(model=BUNDLED_MODEL_ID, messages=PARIS, n=2)
    assert info.value.status_code == 400
    assert_openai_error({"error": info.value.body}, param="n")


def test_negative_max_tokens(api):
    with pytest.raises(openai.BadRequestError) as info:
        api.chat.completions.create(model=BUNDLED_MODEL_ID, messages=PARIS, max_tokens=-5)
    assert info.value.body["param"] == "max_tokens"


def test_unknown_model(api):
    with pytest.raises(openai.NotFoundError) as info:
        api.chat.completions.create(model="gpt-4o", messages=PARIS)
    assert info.value.body["code"] == "model_not_found" and "gpt-4o" in info.value.body["message"]


def test_context_overflow_uses_openai_wording(api):
    with pytest.raises(openai.BadRequestError) as info:
        api.chat.completions.create(
            model=BUNDLED_MODEL_ID, messages=[{"role": "user", "content": "hello " * 2000}]
        )
    assert info.value.body["code"] == "context_length_exceeded"
    assert f"This model's maximum context length is {CONTEXT} tokens" in info.value.body["message"]


def test_unknown_route(live):
    status, _, body = raw(live, "/v1/nothing-here")
    assert status == 404
    assert_openai_error(body)


def test_invalid_json(live):
    status, _, body = raw(live, "/v1/chat/completions", b"{not json")
    assert status == 400
    assert_openai_error(body)
    assert body["error"]["type"] == "invalid_request_error"


def test_wrong_types(live):
    payload = {"messages": "hello", "temperature": "hot"}
    status, _, body = raw(live, "/v1/chat/completions", json.dumps(payload).encode())
    assert status == 400
    assert_openai_error(body)


def test_oversized_body(live):
    payload = json.dumps({"messages": [{"role": "user", "content": "x" * (2 << 20)}]}).encode()
    status, _, body = raw(live, "/v1/chat/completions", payload)
    assert status == 413
    assert_openai_error(body)


def test_503_while_a_model_loads(live, live_engine):
    done = live_engine.load_model(BUNDLED_MODEL_ID)
    deadline = time.monotonic() + 10
    while live_engine.model_status().state != "loading" and time.monotonic() < deadline:
        time.sleep(0.005)
    status, headers, body = raw(live, "/v1/chat/completions", json.dumps({"messages": PARIS}).encode())
    assert status == 503 and headers["Retry-After"]
    assert_openai_error(body)
    assert done.result(timeout=120).state == "ready"
    status, _, _ = raw(live, "/v1/chat/completions", json.dumps({"messages": PARIS, "max_tokens": 2}).encode())
    assert status == 200
