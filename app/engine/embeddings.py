"""Text embeddings from the loaded model's final hidden states (mean-pooled, L2-normalised).

A chat model is not an embedding model, but this gives IDE tools that insist
on /v1/embeddings something consistent from the model already in memory.
"""

from __future__ import annotations

import mlx.core as mx

from app.engine.types import Embeddings, InvalidRequest


def _hidden_states(model, tokens: list[int]) -> mx.array:
    inner = getattr(model, "model", None)
    if inner is None:
        raise InvalidRequest("This model cannot produce embeddings.", param="model")
    return inner(mx.array([tokens]))[0]


def embed_texts(loaded, texts: list[str]) -> Embeddings:
    vectors, total = [], 0
    for i, text in enumerate(texts):
        tokens = loaded.tokenizer.encode(text)
        if not tokens:
            raise InvalidRequest(f"Input {i} is empty.", param="input")
        if len(tokens) > loaded.context_length:
            raise InvalidRequest(
                f"Input {i} has {len(tokens)} tokens; this model's maximum context length "
                f"is {loaded.context_length} tokens.",
                param="input",
                code="context_length_exceeded",
            )
        pooled = _hidden_states(loaded.model, tokens).astype(mx.float32).mean(axis=0)
        vectors.append((pooled / mx.maximum(mx.linalg.norm(pooled), 1e-12)).tolist())
        total += len(tokens)
    return Embeddings(loaded.id, vectors, total)
