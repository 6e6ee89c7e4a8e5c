"""The local model registry: the models folder, the hub cache, added folders."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from app.core.mlx_support import mlx_lm_problem
from app.core.models import Quantization, read_local_model
from app.hub.registry import (
    FOLDERS_FILE,
    ModelRegistry,
    RegistryError,
    _delete_in,
    default_hf_cache_dir,
    reveal_command,
)

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40
QUANT = {"group_size": 64, "bits": 4, "mode": "affine"}


# --- building model folders, GGUF files and a hub cache without MLX -----------------


def safetensors_bytes(nbytes: int) -> bytes:
    header = json.dumps({"w": {"dtype": "U8", "shape": [nbytes], "data_offsets": [0, nbytes]}})
    raw = header.encode() + b" " * (-len(header) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes(nbytes)


def model_files(model_type: str = "llama", nbytes: int = 1000, **config) -> dict[str, bytes]:
    cfg = {"model_type": model_type, "max_position_embeddings": 4096, **config}
    return {"config.json": json.dumps(cfg).encode(), "model.safetensors": safetensors_bytes(nbytes)}


def make_folder(path: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


def write_gguf(path: Path, arch: str = "llama", context: int = 2048) -> Path:
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(context)
    writer.add_tokenizer_model("gpt2")
    weights = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    q8 = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.attn_q.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("output_norm.weight", np.ones(64, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def cache_repo(
    cache: Path,
    repo_id: str,
    files: dict[str, bytes],
    commit: str = COMMIT_A,
    ref: str | None = "main",
) -> Path:
    """A repo in the hub cache's real layout: blobs, snapshot symlinks, refs."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "hf-cache"
    path.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(path))
    return path


@pytest.fixture
def registry(tmp_path, hf_cache) -> ModelRegistry:
    models = tmp_path / "models"
    models.mkdir()
    return ModelRegistry(models, tmp_path / "data" / FOLDERS_FILE, hf_cache)


def by_id(registry: ModelRegistry) -> dict:
    return {m.id: m for m in registry.models()}


# --- the models folder ------------------------------------------------------------


def test_models_folder_entries_describe_each_model(registry):
    make_folder(registry.models_dir / "qwen-small", model_files("qwen3", 2000, quantization=QUANT))
    make_folder(registry.models_dir / "plain", model_files("llama", 500))
    make_folder(
        registry.models_dir / ".plain.123.partial", model_files()
    )  # a conversion in progress
    (registry.models_dir / "not-a-model").mkdir()

    models = by_id(registry)
    assert sorted(models) == ["plain", "qwen-small"]
    qwen = models["qwen-small"]
    assert qwen.name == "qwen-small" and qwen.path == registry.models_dir / "qwen-small"
    assert qwen.format == "mlx" and qwen.source == "models" and qwen.model_type == "qwen3"
    assert qwen.quantization == Quantization(4, 64, "affine") and qwen.quantization.label == "4-bit"
    assert qwen.context_length == 4096
    assert qwen.supported and qwen.reason is None and qwen.loadable
    assert qwen.size_bytes == sum(
        (qwen.path / n).stat().st_size for n in ("config.json", "model.safetensors")
    )
    assert models["plain"].quantization is None


def test_mlx_lm_support_is_detected_without_importing_it(registry):
    make_folder(registry.models_dir / "llama", model_files("llama"))
    make_folder(registry.models_dir / "mistral", model_files("mistral"))  # remapped to llama
    make_folder(registry.models_dir / "gpt-oss", model_files("gpt_oss"))
    make_folder(registry.models_dir / "madeup", model_files("made_up_arch"))

    models = by_id(registry)
    assert models["llama"].supported and models["mistral"].supported and models["gpt-oss"].supported
    madeup = models["madeup"]
    assert not madeup.supported and not madeup.loadable
    assert "does not support the 'made_up_arch' architecture" in madeup.reason
    assert "mlx-lm 0.32" in madeup.reason
    assert mlx_lm_problem({}) is not None and "model_type" in mlx_lm_problem({})


def test_multimodal_config_reads_the_text_config(tmp_path):
    config = {
        "model_type": "gemma3",
        "text_config": {"max_position_embeddings": 131072},
        "quantization": {"group_size": 32, "bits": 4, "mode": "mxfp4"},
    }
    folder = make_folder(
        tmp_path / "g", {"config.json": json.dumps(config).encode(), "m.safetensors": b"x"}
    )
    model = read_local_model(folder)
    assert model.context_length == 131072
    assert model.quantization.mode == "mxfp4" and model.quantization.label == "MXFP4"


def test_incomplete_sharded_download_is_not_loadable(registry):
    folder = make_folder(registry.models_dir / "sharded", model_files())
    index = {"weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    model = by_id(registry)["sharded"]
    assert not model.supported and "Incomplete download" in model.reason


def test_gguf_files_are_listed_as_gguf(registry):
    write_gguf(registry.models_dir / "tiny.Q8_0.gguf")
    write_gguf(registry.models_dir / "other.gguf", arch="gemma3")
    models = by_id(registry)
    tiny = models["tiny.Q8_0.gguf"]
    assert tiny.format == "gguf" and tiny.model_type == "llama" and tiny.name == "tiny.Q8_0"
    assert tiny.quantization.mode == "Q8_0" and tiny.quantization.bits == 8
    assert tiny.context_length == 2048
    assert tiny.supported and not tiny.loadable and "import" in tiny.reason
    other = models["other.gguf"]
    assert not other.supported and "architecture 'gemma3'" in other.reason
    assert "qwen2" in other.reason  # says what is supported


def test_downloaded_gguf_repo_folder_in_the_models_folder(registry):
    write_gguf(registry.models_dir / "org--Tiny-GGUF" / "tiny-Q8_0.gguf")
    model = by_id(registry)["org--Tiny-GGUF/tiny-Q8_0.gguf"]
    assert model.format == "gguf" and model.source == "models"
    size = model.size_bytes
    assert registry.delete("org--Tiny-GGUF/tiny-Q8_0.gguf") == size
    assert registry.models() == [] and (registry.models_dir / "org--Tiny-GGUF").is_dir()


# --- the hub cache -------------------------------------------------------------------


def test_hub_cache_models_are_found_by_repo_id(registry, hf_cache):
    files = model_files("llama", 3000, quantization=QUANT)
    snapshot = cache_repo(hf_cache, "mlx-community/Tiny-4bit", files)
    model = by_id(registry)["mlx-community/Tiny-4bit"]
    assert model.path == snapshot and model.source == "hf-cache"
    assert model.repo_id == "mlx-community/Tiny-4bit" and model.name == "Tiny-4bit"
    assert model.size_bytes == sum(len(d) for d in files.values())
    assert model.quantization.bits == 4 and model.loadable


def test_hub_cache_shows_the_main_revision(registry, hf_cache):
    cache_repo(
        hf_cache, "org/model", model_files(max_position_embeddings=111), commit=COMMIT_A, ref=None
    )
    main = cache_repo(
        hf_cache, "org/model", model_files(max_position_embeddings=222), commit=COMMIT_B
    )
    model = by_id(registry)["org/model"]
    assert model.path == main and model.context_length == 222


def test_hub_cache_without_refs_uses_the_newest_revision(registry, hf_cache):
    old = cache_repo(hf_cache, "org/model", model_files(nbytes=10), commit=COMMIT_A, ref=None)
    new = cache_repo(hf_cache, "org/model", model_files(nbytes=20), commit=COMMIT_B, ref=None)
    os.utime(old / "model.safetensors", (1_000_000, 1_000_000), follow_symlinks=True)
    assert by_id(registry)["org/model"].path == new


def test_hub_cache_gguf_and_non_models(registry, hf_cache, tmp_path):
    gguf_bytes = write_gguf(tmp_path / "x.gguf").read_bytes()
    cache_repo(hf_cache, "someone/Tiny-GGUF", {"README.md": b"hi", "q8/tiny-Q8_0.gguf": gguf_bytes})
    dataset = cache_repo(hf_cache, "org/data", model_files())
    dataset.parent.parent.rename(hf_cache / "datasets--org--data")
    cache_repo(hf_cache, "org/readme-only", {"README.md": b"nothing to load"})

    models = by_id(registry)
    assert list(models) == ["someone/Tiny-GGUF/q8/tiny-Q8_0.gguf"]
    assert models["someone/Tiny-GGUF/q8/tiny-Q8_0.gguf"].format == "gguf"


def test_default_hub_cache_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert default_hf_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert default_hf_cache_dir() == tmp_path / "c"
    assert ModelRegistry(tmp_path / "m", tmp_path / "f.json").hf_cache_dir == tmp_path / "c"


def test_missing_hub_cache_is_just_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "nowhere"))
    assert ModelRegistry(tmp_path / "no-models", tmp_path / "f.json").models() == []


# --- added folders ---------------------------------------------------------------------


def test_added_folders_persist_across_registries(registry, tmp_path):
    lib = tmp_path / "library"
    make_folder(lib / "org" / "Nested-4bit", model_files())  # LM Studio's org/name layout
    make_folder(lib / "Flat", model_files())
    write_gguf(lib / "org" / "Other" / "other.gguf")
    single = make_folder(tmp_path / "single-model", model_files())

    added = registry.add_folder(lib)
    assert sorted(m.id for m in added) == ["folder:Flat", "folder:Nested-4bit", "folder:other.gguf"]
    registry.add_folder(single)
    registry.add_folder(lib)  # twice: listed once

    again = ModelRegistry(registry.models_dir, registry.folders_file, registry.hf_cache_dir)
    assert again.folders() == [lib.resolve(), single.resolve()]
    models = by_id(again)
    assert models["folder:single-model"].source == "folder"
    assert models["folder:Nested-4bit"].path == lib / "org" / "Nested-4bit"
    assert not list(registry.folders_file.parent.glob(".*tmp")), "temp file left behind"

    assert again.remove_folder(lib)
    assert not again.remove_folder(lib)
    assert list(by_id(ModelRegistry(registry.models_dir, registry.folders_file))) == [
        "folder:single-model"
    ]
    assert (lib / "Flat" / "config.json").exists(), "removing from the list deletes nothing"


def test_remove_folder_by_model_id(registry, tmp_path):
    single = make_folder(tmp_path / "mine", model_files())
    registry.add_folder(single)
    assert registry.remove_folder("folder:mine")
    assert registry.folders() == []


def test_same_name_in_two_added_folders_gets_distinct_ids(registry, tmp_path):
    one = make_folder(tmp_path / "a" / "Model", model_files())
    two = make_folder(tmp_path / "b" / "Model", model_files())
    registry.add_folder(tmp_path / "a")
    registry.add_folder(tmp_path / "b")
    ids = [m.id for m in registry.models()]
    assert len(ids) == 2 and len(set(ids)) == 2
    assert all(i.startswith("folder:Model-") for i in ids)
    assert ids == [m.id for m in registry.models()], "ids are stable"
    assert {registry.get(i).path for i in ids} == {one, two}


def test_folder_already_listed_elsewhere_is_not_duplicated(registry):
    make_folder(registry.models_dir / "m", model_files())
    registry.add_folder(registry.models_dir)
    assert [m.id for m in registry.models()] == ["m"]


def test_add_folder_refuses_a_missing_folder(registry, tmp_path):
    with pytest.raises(RegistryError, match="not a folder"):
        registry.add_folder(tmp_path / "nope")


def test_corrupt_folders_file_is_ignored(registry):
    registry.folders_file.parent.mkdir(parents=True, exist_ok=True)
    registry.folders_file.write_text("{not json")
    assert registry.folders() == [] and registry.models() == []


def test_default_folders_file_is_in_the_data_folder(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    assert registry.folders_file == Path(os.environ["MINERVA_DATA_DIR"]) / FOLDERS_FILE


# --- delete, reveal, disk usage -------------------------------------------------------------


def test_delete_a_models_folder_entry_frees_its_bytes(registry):
    folder = make_folder(registry.models_dir / "doomed", model_files(nbytes=5000))
    keep = make_folder(registry.models_dir / "keep", model_files())
    size = by_id(registry)["doomed"].size_bytes
    assert registry.delete("doomed") == size > 5000
    assert not folder.exists() and keep.exists()
    with pytest.raises(RegistryError, match="does not exist"):
        registry.delete("doomed")


def test_delete_a_symlinked_model_removes_only_the_link(registry, tmp_path):
    outside = make_folder(tmp_path / "elsewhere", model_files())
    (registry.models_dir / "linked").symlink_to(outside)
    assert registry.delete("linked") == 0
    assert not (registry.models_dir / "linked").exists() and (outside / "config.json").exists()


def test_delete_from_the_hub_cache(registry, hf_cache, tmp_path):
    files = model_files(nbytes=4000)
    cache_repo(hf_cache, "org/gone", files)
    keep = cache_repo(hf_cache, "org/kept", model_files())
    assert registry.delete("org/gone") == sum(len(d) for d in files.values())
    assert not (hf_cache / "models--org--gone").exists() and keep.exists()
    assert [m.id for m in registry.models()] == ["org/kept"]


def test_delete_one_gguf_of_a_cached_repo(registry, hf_cache, tmp_path):
    one = write_gguf(tmp_path / "1.gguf", context=1024).read_bytes()
    two = write_gguf(tmp_path / "2.gguf", context=4096).read_bytes()
    cache_repo(hf_cache, "org/M-GGUF", {"m-Q8_0.gguf": one, "m-F16.gguf": two})
    assert registry.delete("org/M-GGUF/m-Q8_0.gguf") == len(one)
    assert [m.id for m in registry.models()] == ["org/M-GGUF/m-F16.gguf"]


def test_delete_refuses_added_folders_and_unknown_ids(registry, tmp_path):
    mine = make_folder(tmp_path / "mine", model_files())
    registry.add_folder(mine)
    with pytest.raises(RegistryError, match="folder you added"):
        registry.delete("folder:mine")
    assert (mine / "config.json").exists()
    for bad in ("../../etc/passwd", "", "/etc", "..", "org/../../x"):
        with pytest.raises(RegistryError, match="does not exist"):
            registry.delete(bad)


def test_delete_refuses_paths_outside_the_models_folder(registry, tmp_path):
    victim = make_folder(tmp_path / "victim", model_files())
    inner = make_folder(registry.models_dir / "m", model_files())
    for target in (
        victim,
        registry.models_dir / ".." / "victim",
        registry.models_dir,
        inner / "config.json",  # only a GGUF file may sit one folder down
        registry.models_dir / "m" / ".." / "..",
    ):
        with pytest.raises(RegistryError, match="Refusing"):
            _delete_in(registry.models_dir, target)
    assert (victim / "config.json").exists() and (inner / "config.json").exists()


def test_reveal_command_per_platform(tmp_path):
    folder = make_folder(tmp_path / "m", model_files())
    assert reveal_command(folder, "darwin") == ["open", "-R", str(folder)]
    assert reveal_command(folder, "linux") == ["xdg-open", str(folder)]
    assert reveal_command(folder / "config.json", "linux") == ["xdg-open", str(folder)]
    assert reveal_command(folder, "win32") == ["explorer", f"/select,{folder}"]


def test_disk_usage_by_place(registry, hf_cache, tmp_path):
    make_folder(registry.models_dir / "a", model_files(nbytes=100))
    cache_repo(hf_cache, "org/b", model_files(nbytes=200))
    registry.add_folder(make_folder(tmp_path / "c", model_files(nbytes=300)))
    usage = registry.disk_usage()
    models = by_id(registry)
    assert usage.models_dir == models["a"].size_bytes
    assert usage.hf_cache == models["org/b"].size_bytes
    assert usage.folders == models["folder:c"].size_bytes
    assert usage.total == sum(m.size_bytes for m in models.values())


# --- the engine loads through the registry -----------------------------------------------


@pytest.fixture
def tiny_in_cache(models_dir, hf_cache) -> str:
    tiny = models_dir / "tiny-llama"
    files = {p.name: p.read_bytes() for p in tiny.iterdir() if p.is_file()}
    cache_repo(hf_cache, "test-org/tiny-llama", files)
    return "test-org/tiny-llama"


def test_engine_lists_and_resolves_hub_cache_and_added_folder_models(
    tiny_in_cache, models_dir, tmp_path
):
    from app.engine import loader
    from app.engine.types import ModelLoadError, ModelNotFound

    empty = tmp_path / "empty-models"
    make_folder(empty / "madeup", model_files("made_up_arch"))
    mine = tmp_path / "mine"
    shutil.copytree(models_dir / "tiny-llama", mine / "my-tiny")
    ModelRegistry(empty).add_folder(mine)  # the default folders file, as the engine uses

    ids = [m.id for m in loader.list_models(empty)]
    assert ids[0] == "smollm2-135m-instruct"
    assert tiny_in_cache in ids and "folder:my-tiny" in ids and "madeup" not in ids

    progress = lambda f, m: None  # noqa: E731
    snapshot = loader.resolve_model_path(tiny_in_cache, empty, progress)
    assert snapshot.parent.parent.name == "models--test-org--tiny-llama"
    assert loader.resolve_model_path("folder:my-tiny", empty, progress) == mine / "my-tiny"
    with pytest.raises(ModelLoadError, match="made_up_arch"):
        loader.resolve_model_path("madeup", empty, progress)
    write_gguf(empty / "raw.gguf")
    assert "raw.gguf" not in [m.id for m in loader.list_models(empty)]
    with pytest.raises(ModelLoadError, match="import it first"):
        loader.resolve_model_path("raw.gguf", empty, progress)
    for bad in ("../../etc/passwd", "../models/tiny-llama", "test-org/../tiny-llama", "/etc"):
        with pytest.raises(ModelNotFound):
            loader.resolve_model_path(bad, empty, progress)


def test_engine_generates_with_a_model_from_the_hub_cache(tiny_in_cache, tmp_path):
    from app.core.settings import EngineSettings
    from app.engine.engine import Engine
    from tests.engine.helpers import generate

    engine = Engine(EngineSettings(model=tiny_in_cache, context_length=256), tmp_path / "models")
    engine.start()
    try:
        status = engine.wait_ready(60)
        assert status.state == "ready" and status.model_id == tiny_in_cache, status
        run = generate(engine, prompt_text="Hello", max_tokens=4)
        assert run.started.model == tiny_in_cache
        assert run.finished.usage.completion_tokens >= 1
    finally:
        engine.stop()
