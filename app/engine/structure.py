"""Per-request structure: grammar constraints in, output parsing out.

Forced tool calls (`tool_choice` "required" or a name) and `response_format`
become grammar-constrained logits processors; tools and thinking models get an
output parser that splits text into answer, reasoning and tool calls.
"""

from __future__ import annotations

import logging

from app.engine.chat import active_tools
from app.engine.constrained import json_processor, tool_call_processor
from app.engine.output import OutputParser, make_output_parser, needs_output_parser, tool_style
from app.engine.types import GenerationRequest, InvalidRequest

log = logging.getLogger(__name__)

# Tool-call markup styles the grammar can force, by the parser style that reads them.
_GRAMMAR_STYLES = {
    "hermes": "hermes",
    "fallback": "hermes",
    "mlx:json_tools": "hermes",
    "llama3": "llama3",
    "mistral": "mistral",
    "mlx:mistral": "mistral",
}


def constraint_processors(tokenizer, model_type: str | None, request: GenerationRequest) -> list:
    """Logits processors that make the output follow the requested structure."""
    tools = active_tools(request)
    if tools and request.tool_choice != "auto":
        name = None if request.tool_choice == "required" else request.tool_choice
        style = tool_style(tokenizer, model_type)
        grammar_style = _GRAMMAR_STYLES.get(style)
        if grammar_style is None:
            log.warning("Cannot force tool calls in the %s format; the model decides", style)
            return []
        return [tool_call_processor(tokenizer, tools, name, grammar_style)]
    return _response_format_processors(tokenizer, request.response_format)


def _response_format_processors(tokenizer, response_format: dict | None) -> list:
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return []
    if kind == "json_object":
        return [json_processor(tokenizer, None)]
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        return [json_processor(tokenizer, spec.get("schema") or None)]
    raise InvalidRequest(f"Unknown response_format type '{kind}'.", param="response_format")


def output_parser(
    tokenizer, model_type: str | None, request: GenerationRequest, prompt_tail: str
) -> OutputParser | None:
    """A parser when the output may hold reasoning or tool calls; None for plain text."""
    tools = active_tools(request)
    if not needs_output_parser(tokenizer, model_type, tools):
        return None
    return make_output_parser(
        tokenizer, model_type=model_type, tools=tools, prompt_text_tail=prompt_tail
    )
