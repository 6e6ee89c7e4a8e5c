"""Searching the (fake) hub and reading one repo's details through huggingface_hub's HfApi."""

from __future__ import annotations

import pytest

from app.core.models import Quantization
from app.hub.errors import NetworkError, NotFoundError, UnsafePathError
from app.hub.search import MLX_COMMUNITY, repo_details, search_models
from app.hub.search_meta import (
    context_length,
    gguf_quant_label,
    params_from_config,
    params_from_safetensors,
    parse_quantization,
)
from tests.hub.hub_repos import (
    BUNDLED,
    FP16,
    GGUF,
    GGUF_FILES,
    OTHER_MLX,
    QWEN_MLX,
    SMALL,
    TOKEN,
)

SMOLLM2_135M_PARAMS = 134_515_008  # the published count for SmolLM2-135M


def ids(results):
    return [r.repo_id for r in results]


# -- search -------------------------------------------------------------------------------


def test_mlx_search_puts_mlx_community_first_then_by_downloads(hub):
    results = search_models(endpoint=hub.url)
    found = ids(results)
    community = [i for i in found if i.startswith(MLX_COMMUNITY + "/")]
    assert found[: len(community)] == community == [BUNDLED, QWEN_MLX]  # 500 > 100 downloads
    assert found[len(community)] == OTHER_MLX  # 10,000 downloads, but not mlx-community
    assert GGUF not in found and FP16 not in found
    assert all(r.format == "mlx" for r in results)
    # Both queries asked the hub for MLX models, the first for mlx-community's only.
    queries = [p for m, p, _ in hub.requests if p == "/api/models"]
    assert len(queries) == 2


@pytest.mark.parametrize(("sort", "first_other"), [("likes", SMALL), ("recent", OTHER_MLX)])
def test_sort_orders(hub, sort, first_other):
    results = search_models(sort=sort, endpoint=hub.url)
    found = ids(results)
    if sort == "likes":
        assert found[:2] == [QWEN_MLX, BUNDLED]  # 50 likes > 10
        others = [r for r in results if not r.repo_id.startswith(MLX_COMMUNITY)]
        assert [r.likes for r in others] == sorted((r.likes for r in others), reverse=True)
    else:
        assert found[:2] == [QWEN_MLX, BUNDLED]  # 2025 before 2024
        assert results[0].last_modified.year == 2025
        assert found[2] == first_other


def test_gguf_toggle_and_query(hub):
    results = search_models("tiny", fmt="gguf", endpoint=hub.url)
    assert ids(results) == [GGUF]
    assert results[0].format == "gguf" and results[0].downloads == 7_000
    assert ids(search_models("qwen", endpoint=hub.url)) == [QWEN_MLX, OTHER_MLX]
    assert search_models("no-such-model", endpoint=hub.url) == []


def test_search_uses_hf_endpoint_and_follows_pages(hub):
    hub.page_size = 1  # every result on its own page, linked by the Link header
    results = search_models(limit=10)  # no endpoint=: HF_ENDPOINT (set by the fixture) is used
    assert ids(results)[:3] == [BUNDLED, QWEN_MLX, OTHER_MLX]
    assert len(results) == len(set(ids(results))) >= 6


def test_search_limit_and_arguments(hub):
    assert len(search_models(limit=1, endpoint=hub.url)) == 1
    with pytest.raises(ValueError):
        search_models(fmt="onnx", endpoint=hub.url)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        search_models(sort="stars", endpoint=hub.url)  # type: ignore[arg-type]


def test_search_errors_are_hub_errors(hub):
    hub.fail(400, method="GET", times=-1)  # not 5xx: list_models would retry for ~20 s
    with pytest.raises(NetworkError, match="answered 400"):
        search_models(endpoint=hub.url)


def test_search_unreachable_hub(monkeypatch):
    # list_models retries a refused connection 5 times with backoff (~23 s): skip the waits.
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda s: None)
    with pytest.raises(NetworkError, match="could not be reached"):
        search_models(endpoint="http://127.0.0.1:9")


# -- repo details -------------------------------------------------------------------------


def test_details_of_the_bundled_model(hub, bundled_model):
    d = repo_details(BUNDLED, endpoint=hub.url)
    assert d.format == "mlx" and d.model_type == "llama"
    assert d.quantization == Quantization(4, 32, "affine")
    assert d.context_length == 8192
    assert d.license == "apache-2.0" and not d.gated and not d.private
    assert d.param_count == SMOLLM2_135M_PARAMS and not d.params_exact
    sizes = {p.name: p.stat().st_size for p in bundled_model.iterdir()}
    assert set(d.needed_files) == set(sizes)  # README.md and model.py left out
    assert d.download_bytes == sum(sizes.values())
    assert d.weights_bytes == sizes["model.safetensors"]
    files = {f.path: f for f in d.files}
    assert files["model.safetensors"].sha256 and files["model.safetensors"].needed
    assert not files["README.md"].needed and not files["model.py"].needed
    assert d.config["hidden_size"] == 576  # for app.hub.fit
    assert d.sha and d.downloads == 500 and d.likes == 10


def test_details_exclude_code_and_subfolders(hub):
    d = repo_details(SMALL, endpoint=hub.url)
    assert set(d.needed_files) == {"config.json", "tokenizer.json", "tokenizer_config.json",
                                   "chat_template.jinja", "model.safetensors"}
    assert d.quantization == Quantization(8, 64, "affine")
    assert d.license is None


def test_details_unquantized_gated_repo(hub):
    d = repo_details(FP16, endpoint=hub.url)  # config.json is gated: details still come
    assert d.gated and d.license == "llama3"
    assert d.param_count == 1000 * 64 + 300 and d.params_exact  # the hub's safetensors field
    assert d.config == {} and d.quantization is None
    hub.tokens.add(TOKEN)
    d = repo_details(FP16, endpoint=hub.url, token=TOKEN)
    assert d.config["hidden_size"] == 64 and d.context_length == 4096


def test_details_of_a_gguf_repo(hub):
    d = repo_details(GGUF, endpoint=hub.url)
    assert d.format == "gguf" and d.needed_files == () and d.download_bytes == 0
    assert [(f.path, f.gguf_quant) for f in d.gguf_files] == [
        (GGUF_FILES[0], "Q4_K_M"), (GGUF_FILES[1], "Q8_0")]
    assert d.param_count == 494_032_768 and d.params_exact
    assert d.context_length == 32768 and d.model_type == "qwen2"


def test_details_not_found(hub):
    with pytest.raises(NotFoundError, match="does not exist") as err:
        repo_details("acme/nope", endpoint=hub.url)
    assert err.value.what == "repo"
    with pytest.raises(NotFoundError, match="no revision 'v9'") as err:
        repo_details(SMALL, revision="v9", endpoint=hub.url)
    assert err.value.what == "revision"
    with pytest.raises(UnsafePathError):
        repo_details("../../etc", endpoint=hub.url)


# -- metadata parsing ---------------------------------------------------------------------


def test_quantization_variants():
    assert parse_quantization({}) is None
    mlx = {"quantization": {"group_size": 32, "bits": 4, "model.embed_tokens": {"bits": 8}}}
    assert parse_quantization(mlx) == Quantization(4, 32, "affine")
    assert parse_quantization({"quantization": {"mode": "mxfp4", "group_size": 32}}) == \
        Quantization(4, 32, "mxfp4")
    gptq = {"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128}}
    assert parse_quantization(gptq) == Quantization(4, 128, "gptq")
    assert parse_quantization({"quantization_config": {"quant_method": "fp8"}}) == \
        Quantization(8, None, "fp8")


def test_context_length_sources():
    assert context_length({"max_position_embeddings": 32768}) == 32768
    assert context_length({"text_config": {"max_position_embeddings": 131072}}) == 131072
    assert context_length({"n_positions": 1024}) == 1024
    assert context_length({}) is None


def test_params_from_config_dense_and_moe():
    dense = {"hidden_size": 576, "num_hidden_layers": 30, "intermediate_size": 1536,
             "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
             "tie_word_embeddings": True}
    assert params_from_config(dense) == SMOLLM2_135M_PARAMS
    # Mixtral-8x7B: 46.7B parameters.
    mixtral = {"hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 14336,
               "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000,
               "num_local_experts": 8}
    assert params_from_config(mixtral) == pytest.approx(46.7e9, rel=0.01)
    assert params_from_config({"hidden_size": 8}) is None


def test_params_from_packed_safetensors():
    q = Quantization(4, 64, "affine")
    # 1M weights at 4 bits = 125k uint32; scales and biases: 2 per 64 weights; 1000 norms.
    parameters = {"U32": 125_000, "BF16": 2 * 1_000_000 // 64 + 1000}
    assert params_from_safetensors(parameters, q) == 1_001_000
    assert params_from_safetensors({"BF16": 5}, None) == 5


@pytest.mark.parametrize(("name", "label"), [
    ("Qwen2.5-7B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
    ("model-q8_0.gguf", "Q8_0"),
    ("Llama-3.2-1B-Instruct-IQ2_XS.gguf", "IQ2_XS"),
    ("sub/phi-4-F16.gguf", "F16"),
    ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
    ("plain.gguf", None),
])
def test_gguf_quant_labels(name, label):
    assert gguf_quant_label(name) == label
