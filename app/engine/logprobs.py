"""Log-probabilities of sampled tokens, only for the requests that ask."""

from __future__ import annotations

import mlx.core as mx

from app.engine.types import TokenLogprob, TopLogprob


def token_logprob(tokenizer, logprobs: mx.array, token: int, top_k: int) -> TokenLogprob:
    """The sampled token's logprob and the `top_k` most likely alternatives."""
    top: tuple[TopLogprob, ...] = ()
    if top_k > 0:
        ids = mx.argpartition(-logprobs, kth=top_k - 1)[:top_k]
        values = logprobs[ids]
        order = mx.argsort(-values)
        ids, values = ids[order].tolist(), values[order].tolist()
        top = tuple(TopLogprob(i, tokenizer.decode([i]), v) for i, v in zip(ids, values))
    return TokenLogprob(token, tokenizer.decode([token]), logprobs[token].item(), top)
