"""Render a chat (with tools) through the model's template.

Templates expect tool-call arguments as dicts while OpenAI clients send JSON
strings, so history is normalised first. A template that knows nothing of
tools (the bundled SmolLM2's) gets them described in a system message in the
Hermes format, and its history's calls and results are written as that text.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from app.engine.output import render_tools_fallback, template_supports_tools
from app.engine.types import GenerationRequest, InvalidRequest


def active_tools(request: GenerationRequest) -> list[dict[str, Any]] | None:
    """The tools the model may call: none when `tool_choice` is "none"."""
    if not request.tools or request.tool_choice == "none":
        return None
    return request.tools


def render_chat(tokenizer, request: GenerationRequest) -> list[int]:
    if not tokenizer.has_chat_template:
        raise InvalidRequest(
            "This model has no chat template; use /v1/completions with a plain prompt.",
            param="messages",
        )
    tools = active_tools(request)
    messages = [_with_dict_arguments(m) for m in request.messages]
    kwargs = dict(request.chat_template_kwargs)
    if request.reasoning_effort:
        kwargs.setdefault("reasoning_effort", request.reasoning_effort)
    if template_supports_tools(tokenizer):
        if tools:
            kwargs["tools"] = tools
    else:
        messages = _as_plain_text_history(messages, tools)
    try:
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, **kwargs))
    except Exception as exc:  # jinja raises TemplateError and plain exceptions alike
        raise InvalidRequest(
            f"The model's chat template could not render these messages: {exc}", param="messages"
        ) from exc


def _with_dict_arguments(message: dict[str, Any]) -> dict[str, Any]:
    calls = message.get("tool_calls")
    if not calls:
        return message
    message = copy.deepcopy(message)
    for call in message["tool_calls"]:
        function = call.get("function", {})
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                function["arguments"] = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                pass  # leave it as the client sent it; the template may still cope
    return message


def _as_plain_text_history(messages: list[dict], tools: list[dict] | None) -> list[dict]:
    """Hermes-style text for templates without tool support."""
    out = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role == "assistant" and message.get("tool_calls"):
            calls = "\n".join(_call_text(c) for c in message["tool_calls"])
            content = f"{content}\n{calls}".strip()
        elif role == "tool":
            role, content = "user", f"<tool_response>\n{content}\n</tool_response>"
        out.append({"role": role, "content": content})
    if tools:
        prompt = render_tools_fallback(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def _call_text(call: dict[str, Any]) -> str:
    function = call.get("function", {})
    body = {"name": function.get("name"), "arguments": function.get("arguments", {})}
    return f"<tool_call>\n{json.dumps(body, ensure_ascii=False)}\n</tool_call>"
