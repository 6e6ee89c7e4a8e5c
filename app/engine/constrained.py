"""Grammar-constrained decoding: structured output and forced tool calls.

A `GrammarProcessor` is an mlx-lm logits processor over an llguidance
`LLMatcher`: before each sampling step it feeds the matcher the token sampled
at the previous step, asks it which tokens may come next, and sets every other
logit (padded vocabulary entries included) to -inf. Once the grammar is
complete only the tokenizer's EOS ids stay allowed, so generation stops there.

llguidance computes a mask in tens of microseconds (an Earley parser over a
token trie, with lazily built lexer automata), supports full JSON Schema plus
Lark grammars with embedded `%json` and special-token references, and builds a
grammar in about a millisecond, so no per-schema precompilation is needed.

Nothing here knows about the server: schemas and tools come in as plain dicts,
bad ones go out as `InvalidRequest`.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from typing import Any, Literal

import mlx.core as mx
import numpy as np
from llguidance import LLMatcher, LLParserLimits, LLTokenizer
from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

from app.engine.types import InvalidRequest

log = logging.getLogger(__name__)

ToolStyle = Literal["hermes", "llama3", "mistral"]
TOOL_STYLES: tuple[str, ...] = ("hermes", "llama3", "mistral")

# json.dumps' default layout: what models see in training and in chat templates.
# Fixed whitespace also stops weak models from looping on newlines and spaces.
JSON_OPTIONS: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}

# Short errors: no parser state or grammar dump in logs and client messages.
_LIMITS = LLParserLimits(verbose_errors=False)

# Tool-call markup per style: (opening marker, closing marker, arguments key).
_MARKUP: dict[str, tuple[str, str, str]] = {
    "hermes": ("<tool_call>", "</tool_call>", "arguments"),
    "llama3": ("", "", "parameters"),
    "mistral": ("[TOOL_CALLS]", "", "arguments"),
}

# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------

_ll_cache: weakref.WeakKeyDictionary[Any, tuple[tuple[int, ...], LLTokenizer]] = (
    weakref.WeakKeyDictionary()
)
_ll_lock = threading.Lock()


def _hf_tokenizer(tokenizer: Any) -> Any:
    """The Hugging Face tokenizer inside mlx-lm's TokenizerWrapper (or itself)."""
    return getattr(tokenizer, "_tokenizer", tokenizer)


def eos_token_ids(tokenizer: Any) -> tuple[int, ...]:
    """Every id the engine stops on: the grammar allows all of them at its end."""
    ids = getattr(tokenizer, "eos_token_ids", None)
    if not ids:
        eos = _hf_tokenizer(tokenizer).eos_token_id
        ids = [] if eos is None else [eos]
    return tuple(sorted(int(i) for i in ids))


def ll_tokenizer(tokenizer: Any) -> LLTokenizer:
    """The llguidance view of `tokenizer`, built once per tokenizer object.

    Building it walks the whole vocabulary (~0.3 s for 49k tokens), so it is
    cached by identity; a changed EOS set (the engine may add EOS ids after
    loading) rebuilds it.
    """
    eos = eos_token_ids(tokenizer)
    with _ll_lock:
        cached = _ll_cache.get(tokenizer)
        if cached is not None and cached[0] == eos:
            return cached[1]
        built = _build_ll_tokenizer(tokenizer, eos)
        _ll_cache[tokenizer] = (eos, built)
        return built


def _build_ll_tokenizer(tokenizer: Any, eos: tuple[int, ...]) -> LLTokenizer:
    import llguidance.hf

    hf = _hf_tokenizer(tokenizer)
    try:
        return llguidance.hf.from_tokenizer(hf, eos_token=list(eos) or None)
    except Exception as e:  # unsupported tokenizer kinds (slow, unusual decoders)
        raise InvalidRequest(
            f"Constrained output is not supported for this model's tokenizer: {e}"
        ) from e


# --------------------------------------------------------------------------
# The logits processor
# --------------------------------------------------------------------------


class GrammarProcessor:
    """A stateful mlx-lm logits processor that keeps the output in a grammar.

    mlx-lm calls it once per generated token with the whole token context;
    the first call's context ends with the last prompt token, each later one
    with the token sampled at the previous step. The processor remembers how
    much context it has seen and feeds only the new tokens to its matcher.

    One instance serves one generation; call `reset()` to reuse it. It never
    raises while decoding: if the matcher errors it logs and stops
    constraining.
    """

    def __init__(self, tokenizer: Any, grammar: str, *, param: str | None = None) -> None:
        self._ll = ll_tokenizer(tokenizer)
        self.grammar = grammar
        self._matcher = _new_matcher(self._ll, grammar, param)
        self._vocab = self._ll.vocab_size
        self._bitmask = allocate_token_bitmask(1, self._vocab)
        self._seen: int | None = None
        self._active = True

    @property
    def active(self) -> bool:
        """False once the processor gave up constraining after a matcher error."""
        return self._active

    @property
    def finished(self) -> bool:
        """True when the grammar is complete: only EOS may follow."""
        return self._matcher.is_stopped() and not self._matcher.is_error()

    @property
    def accepting(self) -> bool:
        """True when the text so far is a complete match (EOS is allowed now)."""
        return self._matcher.is_accepting()

    def reset(self) -> None:
        """Start over for a new generation (same grammar)."""
        if self._matcher.is_error():
            self._matcher = LLMatcher(self._ll, self.grammar, log_level=0, limits=_LIMITS)
        else:
            self._matcher.reset()
        self._seen = None
        self._active = True

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        if not self._active:
            return logits
        if not self._advance(tokens):
            return logits
        fill_next_token_bitmask(self._matcher, self._bitmask)
        if self._matcher.is_error() or not self._bitmask.any():
            self._give_up("no token is allowed: " + (self._matcher.get_error() or "empty mask"))
            return logits
        return self._apply(logits)

    def _advance(self, tokens: mx.array) -> bool:
        """Feed the tokens sampled since the last call; False if constraining must stop."""
        size = tokens.size
        if self._seen is None:  # first call: the context is the prompt
            self._seen = size
            return True
        if size < self._seen:
            self._give_up(f"token context shrank from {self._seen} to {size}; call reset()")
            return False
        if size == self._seen:
            return True
        new = np.asarray(tokens).reshape(-1)[self._seen :].tolist()  # no MLX op per step
        self._seen = size
        for token in new:
            # One at a time: consume_tokens() rejects an EOS after a complete grammar.
            was_finished = self.finished
            if self._matcher.consume_token(token):
                continue
            if was_finished:
                # The caller went on past EOS (ignore_eos): nothing left to enforce.
                log.debug("Generation continued past the end of the grammar; not constraining")
                self._active = False
            else:
                self._give_up(f"sampled token {token} rejected: {self._matcher.get_error()}")
            return False
        return True

    def _apply(self, logits: mx.array) -> mx.array:
        """-inf for every token the mask disallows, and for padded vocab entries."""
        width = logits.shape[-1]
        n = min(width, self._vocab)
        allowed = np.zeros(width, dtype=np.bool_)
        bits = np.unpackbits(self._bitmask.view(np.uint8), count=n, bitorder="little")
        allowed[:n] = bits.view(np.bool_)
        return mx.where(mx.array(allowed), logits, float("-inf"))

    def _give_up(self, why: str) -> None:
        log.error("Grammar constraint failed, generating unconstrained from here: %s", why)
        self._active = False


def _new_matcher(ll: LLTokenizer, grammar: str, param: str | None) -> LLMatcher:
    """A matcher for `grammar`; InvalidRequest with llguidance's reason if it is invalid."""
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar, ll, limits=_LIMITS)
    if is_error:
        raise InvalidRequest(_grammar_error(messages, param), param=param)
    matcher = LLMatcher(ll, grammar, log_level=0, limits=_LIMITS)
    if matcher.is_error():
        raise InvalidRequest(_grammar_error([matcher.get_error()], param), param=param)
    for warning in matcher.get_grammar_warnings():
        log.debug("Grammar warning: %s", warning)
    return matcher


_ERROR_PREFIX = {"response_format": "Invalid JSON schema", "tools": "Invalid tool call grammar"}


def _grammar_error(messages: list[str], param: str | None) -> str:
    reason = "; ".join(m.strip() for m in messages if m.strip()) or "unknown error"
    return f"{_ERROR_PREFIX.get(param or '', 'Invalid grammar')}: {reason}"


# --------------------------------------------------------------------------
# JSON (response_format)
# --------------------------------------------------------------------------


def json_grammar(schema: dict[str, Any] | None, *, param: str = "response_format") -> str:
    """An llguidance grammar for `schema`; None means any JSON object."""
    if schema is None:
        schema = {"type": "object"}
    if not isinstance(schema, dict):
        raise InvalidRequest(
            f"Invalid JSON schema: expected an object, got {type(schema).__name__}", param=param
        )
    try:
        return LLMatcher.grammar_from_json_schema(schema, overrides=JSON_OPTIONS)
    except (ValueError, TypeError) as e:
        raise InvalidRequest(f"Invalid JSON schema: {e}", param=param) from e


def json_processor(tokenizer: Any, schema: dict[str, Any] | None) -> GrammarProcessor:
    """Constrain output to JSON: any object (`json_object`) or `schema` (`json_schema`).

    The schema is checked here, so a bad one fails the request before any
    token is generated.
    """
    return GrammarProcessor(tokenizer, json_grammar(schema), param="response_format")


# --------------------------------------------------------------------------
# Tool calls
# --------------------------------------------------------------------------


def tool_call_processor(
    tokenizer: Any,
    tools: list[dict[str, Any]],
    name: str | None,
    style: str,
    *,
    parallel: bool = False,
) -> GrammarProcessor:
    """Force a tool call in the model family's markup, arguments matching its schema.

    `name=None` allows any of `tools` (`tool_choice: "required"`); a name
    forces that function. `parallel=True` allows one or more calls
    (`parallel_tool_calls`) where the style has a way to write several.
    """
    grammar = tool_call_grammar(tokenizer, tools, name, style, parallel=parallel)
    return GrammarProcessor(tokenizer, grammar, param="tools")


def tool_call_grammar(
    tokenizer: Any,
    tools: list[dict[str, Any]],
    name: str | None,
    style: str,
    *,
    parallel: bool = False,
) -> str:
    """The Lark grammar for forced tool calls (see `tool_call_processor`)."""
    if style not in _MARKUP:
        raise ValueError(f"Unknown tool-call style {style!r}; expected one of {TOOL_STYLES}")
    functions = _functions(ll_tokenizer(tokenizer), tools)
    if name is not None:
        if name not in functions:
            known = ", ".join(sorted(functions)) or "none"
            raise InvalidRequest(
                f"tool_choice names function '{name}', which is not among the tools ({known}).",
                param="tool_choice",
            )
        functions = {name: functions[name]}
    open_text, close_text, args_key = _MARKUP[style]
    calls = [_call_schema(fn, params, args_key, i) for i, (fn, params) in enumerate(functions.items())]
    body = _one_of(calls)
    if style == "mistral":
        defs = body.pop("$defs", None)
        body = {"type": "array", "items": body, "minItems": 1}
        if not parallel:
            body["maxItems"] = 1
        if defs:
            body["$defs"] = defs
    body["x-guidance"] = JSON_OPTIONS
    body_rule = "body: %json " + json.dumps(body, ensure_ascii=False)
    return "\n".join([_start_rule(tokenizer, style, open_text, close_text, parallel), body_rule])


def _start_rule(tokenizer: Any, style: str, open_text: str, close_text: str, parallel: bool) -> str:
    if style == "hermes":
        one = f'{_marker(tokenizer, open_text)} "\\n" body "\\n" {_marker(tokenizer, close_text)}'
        return f'start: call ("\\n" call)*\ncall: {one}' if parallel else f"start: {one}"
    if style == "mistral":
        # Sentencepiece Mistral vocabularies write the JSON as " [{...": allow that space.
        return f'start: {_marker(tokenizer, open_text)} " "? body'
    return "start: body"  # llama3: bare JSON, one call (the format has no separator)


def _marker(tokenizer: Any, text: str) -> str:
    """A Lark item for markup text: its special token where the vocabulary has one.

    llguidance treats added tokens as special, so Qwen's `<tool_call>` must be
    referenced by id; where the marker is plain text (SmolLM2) it is a string.
    """
    ll = ll_tokenizer(tokenizer)
    ids = _hf_tokenizer(tokenizer).encode(text, add_special_tokens=False)
    if len(ids) == 1 and ll.is_special_token(ids[0]):
        return f"<[{ids[0]}]>"
    return json.dumps(text, ensure_ascii=False)


def _functions(ll: LLTokenizer, tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Function name -> parameters schema, each schema checked on its own."""
    functions: dict[str, dict[str, Any]] = {}
    for tool in tools or []:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            continue
        fn = tool.get("function", tool)
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidRequest("Every function tool needs a name.", param="tools")
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}, "additionalProperties": False}
        try:
            _check_grammar(ll, json_grammar(params, param="tools"))
        except InvalidRequest as e:
            raise InvalidRequest(
                f"Parameters of function '{name}': {e.message}", param="tools"
            ) from e
        functions[name] = params
    if not functions:
        raise InvalidRequest(
            "A tool call was required but no function tools were given.", param="tools"
        )
    return functions


def _check_grammar(ll: LLTokenizer, grammar: str) -> None:
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar, ll, limits=_LIMITS)
    if is_error:
        raise InvalidRequest("Invalid JSON schema: " + "; ".join(m.strip() for m in messages))


def _call_schema(name: str, params: dict[str, Any], args_key: str, index: int) -> dict[str, Any]:
    """`{"name": <name>, <args_key>: <params>}`, with params' internal $refs re-rooted."""
    defs: dict[str, Any] = {}
    if _has_ref(params):
        key = f"fn{index}"
        defs[key] = _reroot_refs(params, f"#/$defs/{key}")
        params = {"$ref": f"#/$defs/{key}"}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"name": {"const": name}, args_key: params},
        "required": ["name", args_key],
        "additionalProperties": False,
    }
    if defs:
        schema["$defs"] = defs
    return schema


def _one_of(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """One schema for several calls; their $defs move to the root where refs resolve."""
    if len(calls) == 1:
        return calls[0]
    defs: dict[str, Any] = {}
    for call in calls:
        defs.update(call.pop("$defs", {}))
    schema: dict[str, Any] = {"anyOf": calls}
    if defs:
        schema["$defs"] = defs
    return schema


def _has_ref(node: Any) -> bool:
    if isinstance(node, dict):
        return "$ref" in node or any(_has_ref(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_ref(v) for v in node)
    return False


def _reroot_refs(node: Any, root: str) -> Any:
    """Copy of `node` whose local `#...` refs point inside `root` instead of `#`."""
    if isinstance(node, dict):
        out = {k: _reroot_refs(v, root) for k, v in node.items()}
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            out["$ref"] = root + ref[1:]
        return out
    if isinstance(node, list):
        return [_reroot_refs(v, root) for v in node]
    return node
