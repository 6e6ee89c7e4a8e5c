"""`POST /v1/embeddings`: OpenAI's embeddings request and response, and the mapping between.

The openai SDK asks for `base64` unless told otherwise and decodes it itself:
little-endian float32s, base64-encoded, one string per input.
"""

from __future__ import annotations

import base64
import struct
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from app.engine.types import Embeddings

MAX_INPUTS = 2048  # OpenAI's limit per request


def _texts(value: Any) -> Any:
    """One string or a list of strings; token-id inputs are refused."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise PydanticCustomError(
            "input_type", "input must be a string or a non-empty array of strings"
        )
    if not all(isinstance(text, str) for text in value):
        raise PydanticCustomError(
            "input_tokens", "input must be text: token-id inputs are not supported by this server"
        )
    if any(not text for text in value):
        raise PydanticCustomError("input_empty", "input strings must not be empty")
    if len(value) > MAX_INPUTS:
        raise PydanticCustomError(
            "input_count", "input may hold at most {limit} strings", {"limit": MAX_INPUTS}
        )
    return value


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: Annotated[list[str], BeforeValidator(_texts)]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


def base64_floats(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def wrong_dimensions(body: EmbeddingRequest, result: Embeddings) -> str | None:
    """Why `dimensions` cannot be honoured (vectors are never shortened), or None."""
    size = len(result.vectors[0]) if result.vectors else 0
    if body.dimensions is None or body.dimensions == size:
        return None
    return (
        f"This model's embeddings have {size} dimensions; "
        f"dimensions={body.dimensions} is not supported"
    )


def embedding_response(body: EmbeddingRequest, result: Embeddings) -> EmbeddingResponse:
    encode = base64_floats if body.encoding_format == "base64" else list
    data = [
        EmbeddingData(index=i, embedding=encode(vector)) for i, vector in enumerate(result.vectors)
    ]
    usage = EmbeddingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens)
    return EmbeddingResponse(data=data, model=result.model, usage=usage)
