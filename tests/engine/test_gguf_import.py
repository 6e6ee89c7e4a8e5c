"""Importing GGUF files into the models folder: llama, qwen2 and qwen3.

The real check of the tensor mapping: a tiny random model is written as a
Q8_0 GGUF laid out as llama.cpp's converter lays it out (Q/K rows permuted
for llama, not for Qwen), imported, loaded with mlx_lm.load, and its logits
are compared with an MLX model built directly from the same weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from app.core.settings import BUNDLED_MODEL_ID
from app.engine.bundled import bundled_gguf_path
from app.engine.gguf_import import import_gguf, safe_folder_name
from app.engine.types import ModelLoadError

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = ["The capital of France is Paris.", "Hello there! How are you today?", "1 22 333"] * 20

HIDDEN, HEADS, KV_HEADS, FFN, LAYERS = 64, 4, 2, 128, 2
# llama and qwen2 use hidden/heads; qwen3 sets its own head size (as Qwen3-0.6B does).
HEAD_DIMS = {"llama": 16, "qwen2": 16, "qwen3": 32}
PRE = {"llama": "llama-bpe", "qwen2": "qwen2", "qwen3": "qwen2"}


# --- a tiny byte-level BPE vocabulary, as GGUF stores it ------------------------------


def tiny_vocab() -> tuple[list[str], list[str]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, merges


# --- random weights, and the GGUF llama.cpp would write for them ------------------------


def q8_round_trip(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Q8_0 bytes, the float values they hold): the reference model uses the latter."""
    import gguf

    q = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)
    return q, gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).reshape(w.shape)


def llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: Q/K rows for interleaved RoPE."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def random_weights(arch: str, vocab: int, seed: int) -> dict[str, np.ndarray]:
    """Float weights by GGUF name (llama.cpp's names, HF's row order)."""
    rng = np.random.default_rng(seed)
    head_dim = HEAD_DIMS[arch]

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {"token_embd.weight": rand(vocab, HIDDEN), "output_norm.weight": norm(HIDDEN)}
    if arch == "llama":
        w["output.weight"] = rand(vocab, HIDDEN)  # untied; the Qwen ones tie
    for i in range(LAYERS):
        b = f"blk.{i}."
        w |= {
            b + "attn_norm.weight": norm(HIDDEN),
            b + "ffn_norm.weight": norm(HIDDEN),
            b + "attn_q.weight": rand(HEADS * head_dim, HIDDEN),
            b + "attn_k.weight": rand(KV_HEADS * head_dim, HIDDEN),
            b + "attn_v.weight": rand(KV_HEADS * head_dim, HIDDEN),
            b + "attn_output.weight": rand(HIDDEN, HEADS * head_dim),
            b + "ffn_gate.weight": rand(FFN, HIDDEN),
            b + "ffn_up.weight": rand(FFN, HIDDEN),
            b + "ffn_down.weight": rand(HIDDEN, FFN),
        }
        if arch == "qwen2":
            w |= {
                b + f"attn_{x}.bias": rand(n * head_dim)
                for x, n in (("q", HEADS), ("k", KV_HEADS), ("v", KV_HEADS))
            }
        if arch == "qwen3":
            w |= {
                b + "attn_q_norm.weight": norm(head_dim),
                b + "attn_k_norm.weight": norm(head_dim),
            }
    return w


def write_tiny_gguf(path: Path, arch: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a Q8_0 GGUF of a random `arch` model; returns the float weights it holds."""
    import gguf

    tokens, merges = tiny_vocab()
    weights = random_weights(arch, len(tokens), seed)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny-{arch}")
    writer.add_context_length(2048)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_key_length(HEAD_DIMS[arch])
    writer.add_value_length(HEAD_DIMS[arch])
    writer.add_rope_freq_base(10000.0 if arch == "llama" else 1000000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(PRE[arch])
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)

    stored = {}
    for name, w in weights.items():
        if w.ndim == 1:
            writer.add_tensor(name, w)  # norms and biases stay F32, as llama.cpp writes them
            stored[name] = w
            continue
        if arch == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = HEADS if "attn_q" in name else KV_HEADS
            q, _ = q8_round_trip(llama_cpp_permute(w, heads))
            _, stored[name] = q8_round_trip(w)  # rows are quantized alone: same values, HF order
        else:
            q, stored[name] = q8_round_trip(w)
        writer.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return stored


# --- the same model built directly in MLX ------------------------------------------------

HF_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
HF_BLOCK = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}  # fmt: skip


def hf_name(gguf_name: str) -> str:
    if gguf_name in HF_NAMES:
        return HF_NAMES[gguf_name]
    _, layer, part, suffix = gguf_name.split(".")
    return f"model.layers.{layer}.{HF_BLOCK[part]}.{suffix}"


def reference_model(arch: str, weights: dict[str, np.ndarray], vocab: int):
    """An mlx-lm model of `arch` with HF's conventions (non-traditional RoPE) and these weights."""
    import importlib

    module = importlib.import_module(f"mlx_lm.models.{arch}")
    config = {
        "model_type": arch,
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "intermediate_size": FFN,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIMS[arch],
        "rms_norm_eps": 1e-6,
        "vocab_size": vocab,
        "rope_theta": 10000.0 if arch == "llama" else 1000000.0,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": arch != "llama",
    }
    model = module.Model(module.ModelArgs.from_dict(config))
    model.load_weights([(hf_name(k), mx.array(v)) for k, v in weights.items()], strict=True)
    mx.eval(model.parameters())
    return model


# --- tests: tiny random models ---------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_imported_q8_model_computes_what_the_weights_say(arch: str, tmp_path: Path) -> None:
    from mlx_lm import generate, load

    source = tmp_path / f"Tiny {arch} (Q8_0).gguf"
    weights = write_tiny_gguf(source, arch)
    models_dir = tmp_path / "models"
    folder = import_gguf(source, models_dir)
    assert folder == models_dir / f"Tiny-{arch}-Q8_0"

    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == arch
    assert config["rope_traditional"] is (arch == "llama")
    assert config["head_dim"] == HEAD_DIMS[arch]
    assert config["quantization"]["bits"] == 8 and config["quantization"]["group_size"] == 32
    assert config["tie_word_embeddings"] is (arch != "llama")

    model, tokenizer = load(str(folder))
    if config["minerva_gguf"]["dtype"] != "float32":
        pytest.skip("logits are compared in float32 (CPU); this machine converts to bfloat16")
    reference = reference_model(arch, weights, config["vocab_size"])
    ids = mx.array([[1, 40, 41, 90, 120, 7, 200, 3, 150, 60]])
    got, want = model(ids), reference(ids)
    assert got.shape == want.shape == (1, 10, config["vocab_size"])
    assert mx.allclose(got, want, atol=2e-3, rtol=1e-3).item(), float(mx.abs(got - want).max())
    # A wrong RoPE convention would still agree on the first position only.
    assert mx.abs(got[0, 1:] - want[0, 1:]).max().item() < 2e-3

    text = "The capital of France is Paris."
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    prompt = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert tokenizer.encode("<|im_start|>", add_special_tokens=False) == [1]
    assert generate(model, tokenizer, prompt, max_tokens=5) is not None
    assert tokenizer.eos_token_ids == {2}


def test_qwen2_pre_tokenizer_splits_digits_and_normalizes(tmp_path: Path) -> None:
    from mlx_lm import load

    source = tmp_path / "q.gguf"
    write_tiny_gguf(source, "qwen2")
    _, tokenizer = load(str(import_gguf(source, tmp_path / "models")))
    assert len(tokenizer.encode("333", add_special_tokens=False)) == 3  # one digit per token
    decomposed = "cafe\u0301"  # NFC makes it "café"
    assert tokenizer.decode(tokenizer.encode(decomposed, add_special_tokens=False)) == "café"


def test_import_names_are_safe_and_unique(tmp_path: Path) -> None:
    source = tmp_path / "tiny.gguf"
    write_tiny_gguf(source, "qwen3")
    models_dir = tmp_path / "models"
    first = import_gguf(source, models_dir, name="My Model")
    second = import_gguf(source, models_dir, name="My Model")
    assert (first.name, second.name) == ("My-Model", "My-Model-2")
    assert import_gguf(source, models_dir, name="../../escape").parent == models_dir
    reserved = import_gguf(source, models_dir, name=BUNDLED_MODEL_ID)
    assert reserved.name == f"{BUNDLED_MODEL_ID}-2"
    assert not list(models_dir.glob(".*")), "temp folders left behind"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Qwen2.5 0.5B (Q8_0).gguf", "Qwen2.5-0.5B-Q8_0"),
        ("../../etc/passwd", "etc-passwd"),
        ("..", "gguf-model"),
        (".hidden.gguf", "hidden"),
        ("日本語.gguf", "gguf-model"),
        ("a" * 200, "a" * 80),
    ],
)
def test_safe_folder_name(name: str, expected: str) -> None:
    assert safe_folder_name(name) == expected


# --- refusals -----------------------------------------------------------------------------------


def write_header_only(path: Path, arch: str, tensor_type: int, shape: tuple[int, int]) -> Path:
    """A GGUF with one tensor of any GGML type (raw zero bytes) and a gpt2 tokenizer."""
    import gguf

    qtype = gguf.GGMLQuantizationType(tensor_type)
    block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_tokenizer_model("gpt2")
    raw = np.zeros((shape[0], shape[1] // block * block_bytes), dtype=np.uint8)
    writer.add_tensor("blk.0.ffn_down.weight", raw, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_k_quant_is_refused_naming_what_is_supported(tmp_path: Path) -> None:
    source = write_header_only(tmp_path / "k.gguf", "llama", 12, (4, 256))  # 12 = Q4_K
    with pytest.raises(ModelLoadError) as info:
        import_gguf(source, tmp_path / "models")
    assert "Q4_K (1 tensors)" in str(info.value)
    assert "Q4_0, Q4_1 or Q8_0" in str(info.value)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_unknown_architecture_is_refused_naming_what_is_supported(tmp_path: Path) -> None:
    source = write_header_only(tmp_path / "g.gguf", "gemma3", 0, (4, 32))
    with pytest.raises(ModelLoadError) as info:
        import_gguf(source, tmp_path / "models")
    message = str(info.value)
    assert "architecture 'gemma3'" in message
    assert "llama" in message and "qwen2" in message and "qwen3" in message


def test_unknown_pre_tokenizer_is_refused(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "p.gguf"
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("some-new-bpe")
    writer.add_tensor("output_norm.weight", np.ones(32, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match="pre-tokenizer 'some-new-bpe'.*qwen2"):
        import_gguf(path, tmp_path / "models")


# --- the bundled GGUF -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imported_bundled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return import_gguf(bundled_gguf_path(), tmp_path_factory.mktemp("models"))


def test_bundled_gguf_imports_as_a_named_model(imported_bundled: Path) -> None:
    from app.core.models import read_local_model

    assert imported_bundled.name == "SmolLM2-135M-Instruct.Q4_1"
    model = read_local_model(imported_bundled)
    assert model is not None and model.loadable and model.model_type == "llama"
    assert model.quantization.bits == 4 and model.context_length == 8192


@pytest.mark.real_model
def test_imported_bundled_model_answers_paris(imported_bundled: Path) -> None:
    from mlx_lm import load, stream_generate

    model, tokenizer = load(str(imported_bundled))
    prompt = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    text = "".join(r.text for r in stream_generate(model, tokenizer, prompt, max_tokens=30))
    assert "Paris" in text, text
