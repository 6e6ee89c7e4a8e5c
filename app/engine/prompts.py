"""From a request to prompt token ids, and how many tokens it may generate."""

from __future__ import annotations

from app.engine.chat import render_chat
from app.engine.types import ContextLengthExceeded, GenerationRequest, InvalidRequest


def prompt_tokens(tokenizer, request: GenerationRequest) -> list[int]:
    """Render chat messages with the model's template, or encode plain text."""
    if request.prompt_tokens is not None:
        tokens = list(request.prompt_tokens)
        vocab = len(tokenizer)
        if any(not 0 <= t < vocab for t in tokens):
            raise InvalidRequest(f"Prompt token ids must be between 0 and {vocab - 1}.", param="prompt")
    elif request.messages is not None:
        if not request.messages:
            raise InvalidRequest("'messages' must contain at least one message.", param="messages")
        tokens = render_chat(tokenizer, request)
    elif request.prompt_text is not None:
        tokens = tokenizer.encode(request.prompt_text)
    else:
        raise InvalidRequest("The request has no prompt or messages.", param="messages")
    if not tokens:
        raise InvalidRequest("The prompt is empty.", param="prompt")
    return tokens


def token_budget(
    n_prompt: int, request: GenerationRequest, context_length: int, clamp: bool
) -> tuple[int, bool]:
    """The max tokens to generate, and whether the request's own value was clamped.

    Wording and code follow OpenAI so clients react as they do there (OpenCode
    compacts, LiteLLM raises ContextWindowExceededError).
    """
    where = "messages" if request.messages is not None else "prompt"
    if n_prompt >= context_length:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {context_length} tokens. However, your "
            f"{where} resulted in {n_prompt} tokens. Please reduce the length of the {where}.",
            param=where,
        )
    room = context_length - n_prompt
    wanted = request.max_tokens
    if wanted is None:
        return room, False
    if wanted <= room:
        return wanted, False
    if clamp:
        return room, True
    raise ContextLengthExceeded(
        f"This model's maximum context length is {context_length} tokens. However, you "
        f"requested {n_prompt + wanted} tokens ({n_prompt} in the {where}, {wanted} in the "
        f"completion). Please reduce the length of the {where} or completion.",
        param=where,
    )
