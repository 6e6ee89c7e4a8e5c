"""Find, check and load a model folder on the engine thread.

Loading happens on the engine thread with `lazy=False`: lazy MLX arrays cannot
cross threads. A model that does not fit in memory is refused before any
weights are read, with a message that says how much it needs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import load as mlx_load

from app.core.models import FORMAT_GGUF, LocalModel, read_local_model
from app.core.settings import BUNDLED_MODEL_ID, EngineSettings
from app.engine.kv_cache import make_quantized_prompt_cache
from app.engine.memory import available_memory_bytes, weights_bytes
from app.engine.types import ModelLoadError, ModelNotFound
from app.hub.registry import ModelRegistry

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
# Weights are not all there is: activations, the KV cache and the allocator's
# slack need room too.
MEMORY_HEADROOM = 1.2


@dataclass
class LoadedModel:
    id: str
    path: Path
    model: Any
    tokenizer: Any
    config: dict
    context_length: int
    weights_bytes: int
    kv_bits: int
    kv_group_size: int
    eos_token_ids: frozenset[int] = field(default_factory=frozenset)

    def new_cache(self) -> list:
        """An empty per-request KV cache of the configured precision."""
        if self.kv_bits:
            return make_quantized_prompt_cache(self.model, self.kv_bits, self.kv_group_size)
        return make_prompt_cache(self.model)


def model_registry(models_dir: Path) -> ModelRegistry:
    """The registry the engine loads from: the models folder, hub cache and added folders."""
    return ModelRegistry(models_dir)


def list_models(models_dir: Path) -> list[LocalModel]:
    """Loadable models: the bundled one (converted or not), then the registry's."""
    from app.engine.bundled import bundled_gguf_path

    found = [m for m in model_registry(models_dir).models() if m.loadable]
    if not any(m.id == BUNDLED_MODEL_ID for m in found):
        try:
            gguf = bundled_gguf_path()
            bundled = LocalModel(
                BUNDLED_MODEL_ID,
                gguf,
                gguf.stat().st_size,
                "llama",
                name="SmolLM2-135M-Instruct",
                format=FORMAT_GGUF,
                source="bundled",
                context_length=8192,
            )
            found.insert(0, bundled)
        except ModelLoadError:
            log.warning("The bundled model package is not installed")
    return found


def resolve_model_path(model_id: str, models_dir: Path, progress: Progress) -> Path:
    """The folder for a model id; converts the bundled model on first use.

    Ids are only ever looked up among what the registry found, never joined
    onto a path, so a request cannot name a folder outside those places.
    """
    if model_id == BUNDLED_MODEL_ID:
        from app.engine.bundled import ensure_bundled_model

        progress(0.05, "Preparing the bundled model")
        return ensure_bundled_model(models_dir)
    model = model_registry(models_dir).get(model_id)
    if model is None:
        raise ModelNotFound(f"The model '{model_id}' does not exist or is not installed.")
    if model.format == FORMAT_GGUF:
        if model.supported:
            raise ModelLoadError(f"'{model_id}' is a GGUF file: import it first to convert it")
        raise ModelLoadError(f"'{model_id}' is a GGUF file Minerva cannot import: {model.reason}")
    if not model.supported:
        raise ModelLoadError(f"Cannot load '{model_id}': {model.reason}")
    return model.path


def check_fits(path: Path) -> int:
    need = weights_bytes(path)
    have = available_memory_bytes()
    if need * MEMORY_HEADROOM > have:
        raise ModelLoadError(
            f"The model in {path.name} needs about {need * MEMORY_HEADROOM / 1e9:.1f} GB "
            f"of memory but only {have / 1e9:.1f} GB is available. Close other apps or "
            "choose a smaller (more quantized) model."
        )
    return need


def _context_length(config: dict, settings: EngineSettings) -> int:
    trained = config.get("max_position_embeddings") or config.get("max_seq_len")
    return min(settings.context_length, int(trained)) if trained else settings.context_length


def load_model(model_id: str, path: Path, settings: EngineSettings, progress: Progress) -> LoadedModel:
    """Load weights and tokenizer, check the KV cache setting, warm up once."""
    if read_local_model(path) is None:
        raise ModelLoadError(
            f"{path} is not a usable model folder: it needs config.json and *.safetensors files."
        )
    nbytes = check_fits(path)
    progress(0.2, "Loading weights")
    try:
        model, tokenizer = mlx_load(str(path), lazy=False)
    except Exception as exc:  # mlx-lm raises many kinds for a broken folder
        raise ModelLoadError(f"Could not load the model in {path}: {exc}") from exc
    config = json.loads((path / "config.json").read_text())
    loaded = LoadedModel(
        id=model_id,
        path=path,
        model=model,
        tokenizer=tokenizer,
        config=config,
        context_length=_context_length(config, settings),
        weights_bytes=nbytes,
        kv_bits=settings.kv_bits,
        kv_group_size=settings.kv_group_size,
        eos_token_ids=frozenset(tokenizer.eos_token_ids),
    )
    progress(0.9, "Warming up")
    try:
        _warm_up(loaded)
    except ValueError as exc:  # e.g. KV quantization unsupported by this architecture
        raise ModelLoadError(str(exc)) from exc
    progress(1.0, "Ready")
    return loaded


def _warm_up(loaded: LoadedModel) -> None:
    cache = loaded.new_cache()
    logits = loaded.model(mx.array([[0, 1]]), cache=cache)
    mx.eval(logits)
