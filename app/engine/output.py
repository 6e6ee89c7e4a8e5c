"""Split a model's generated text into answer, reasoning and tool calls, as it streams.

One `OutputParser` per request. The engine feeds it safe text (whole
characters, stop strings and EOS removed, special-token strings such as
`<tool_call>` or `<|channel|>` still in) and gets back `TextDelta`,
`ReasoningDelta` and `ToolCallDelta` events in output order.

Markers are matched on text with mlx-lm's `TextStateMachine`, which holds back
a possible partial marker until it is decided, so markup never leaks into the
answer whatever the chunking. Families (`tool_style`):

- "hermes": `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`
  (Qwen2.5/Qwen3, Hermes, SmolLM3...), several in a row for parallel calls;
  "fallback" is the same for templates that know nothing of tools (the tools
  are described in a system message by `render_tools_fallback`).
- "llama3": the whole message is `{"name": ..., "parameters": {...}}`
  (calls separated by `;`), or follows `<|python_tag|>`.
- "mistral": `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]` or
  `[TOOL_CALLS]name[CALL_ID]id[ARGS]{...}` (repeated per call).
- "harmony" (gpt-oss): `<|channel|>analysis<|message|>...<|end|>` is
  reasoning, `final` (and `commentary` preambles) the answer, a message
  `to=functions.NAME` a call; other recipients (built-in browser/python
  tools, or any call when no tools were declared) go to reasoning.
- "mlx:<module>": any other format mlx-lm has a parser for (Qwen3-Coder's XML,
  GLM, Kimi, MiniMax, Gemma...); each call is parsed whole when it closes.

Reasoning between the tokenizer's think markers (`<think>`, or Mistral's
`[THINK]`) is split for every family but harmony (which uses channels);
when the prompt itself opened the reasoning (its tail ends inside `<think>`)
the parser starts in it.

A call's header (index, id, name) goes out as soon as its name is known; JSON
object arguments then stream as the model writes them (Mistral, harmony and
JSON-call families; mlx-parsed formats send header and arguments together).
A call whose JSON breaks is shown as text (and logged); if its header had
already gone out it still counts in `tool_calls`. Whitespace next to markup is
dropped (`<think>\\n` ... `\\n</think>\\n\\n`), and answer text split by markup is
joined with a blank line; text away from markup passes through unchanged.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import re
import secrets
import string
from typing import Any, Callable, Union

from mlx_lm.generate import TextStateMachine

from app.engine.output_json import ArgsStream, JsonCallSeq
from app.engine.types import ReasoningDelta, TextDelta, ToolCallDelta

log = logging.getLogger(__name__)

OutputEvent = Union[TextDelta, ReasoningDelta, ToolCallDelta]

_ID_CHARS = string.ascii_letters + string.digits


def _call_id(length: int = 24) -> str:
    return "call_" + "".join(secrets.choice(_ID_CHARS) for _ in range(length))


class _Block:
    """Text of one kind (answer or reasoning) between pieces of markup.

    Whitespace next to markup is dropped: at the start of a block after
    markup, and trailing whitespace (held back) when markup follows. Blocks
    of the same kind are joined with a blank line.
    """

    __slots__ = ("_emit", "_ws", "_fresh", "_any")

    def __init__(self, emit: Callable[[str], None], fresh: bool = False) -> None:
        self._emit = emit
        self._ws = ""
        self._fresh = fresh
        self._any = False

    def add(self, text: str) -> None:
        if self._fresh:
            text = text.lstrip()
            if not text:
                return
            self._fresh = False
            if self._any:
                text = "\n\n" + text
        body = text.rstrip()
        if not body:
            self._ws += text
            return
        self._emit(self._ws + body if self._ws else body)
        self._any = True
        self._ws = text[len(body) :]

    def cut(self) -> None:
        """Markup comes here: drop held whitespace; the next text starts a new block."""
        self._ws = ""
        self._fresh = True

    def flush(self) -> None:
        """The output ended: held whitespace is real text after all."""
        if self._ws:
            self._emit(self._ws)
            self._any = True
            self._ws = ""


class OutputParser:
    """Splits one request's output; `feed` per piece of text, `finish` once at the end."""

    def __init__(self, *, id_length: int = 24) -> None:
        self._events: list[OutputEvent] = []
        self._calls = 0
        self._id_length = id_length
        self._content = _Block(self._text)
        self._thought = _Block(self._reasoning)

    def feed(self, text: str) -> list[OutputEvent]:
        raise NotImplementedError

    def finish(self) -> list[OutputEvent]:
        """Flush held-back text; finish or give back (as text) an unterminated call."""
        raise NotImplementedError

    @property
    def tool_calls(self) -> int:
        """How many calls the client has been sent (headers emitted)."""
        return self._calls

    # Event helpers: consecutive events of one kind are merged.

    def _take(self) -> list[OutputEvent]:
        events, self._events = self._events, []
        return events

    def _append(self, kind: type[TextDelta] | type[ReasoningDelta], text: str) -> None:
        if not text:
            return
        events = self._events
        if events and type(events[-1]) is kind:
            events[-1] = kind(events[-1].text + text)
        else:
            events.append(kind(text))

    def _text(self, text: str) -> None:
        self._append(TextDelta, text)

    def _reasoning(self, text: str) -> None:
        self._append(ReasoningDelta, text)

    def _call_header(self, name: str) -> int:
        index = self._calls
        self._calls += 1
        self._events.append(ToolCallDelta(index, _call_id(self._id_length), name, ""))
        return index

    def _call_args(self, index: int, fragment: str) -> None:
        if not fragment:
            return
        events = self._events
        last = events[-1] if events else None
        if type(last) is ToolCallDelta and last.index == index:
            events[-1] = ToolCallDelta(index, last.id, last.name, last.arguments + fragment)
        else:
            events.append(ToolCallDelta(index, arguments=fragment))

    def _raw(self, text: str, why: str) -> None:
        """Model text that looked like a call but is not one: show it as answer text."""
        if text.strip():
            log.warning("%s; returned as text: %r", why, text[:300])
            self._content.add(text)


class PassthroughParser(OutputParser):
    """Plain text: no tools, no reasoning markers."""

    def feed(self, text: str) -> list[OutputEvent]:
        return [TextDelta(text)] if text else []

    def finish(self) -> list[OutputEvent]:
        return []


@functools.lru_cache(maxsize=64)
def _machine(transitions: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]) -> TextStateMachine:
    return TextStateMachine({state: list(edges) for state, edges in transitions})


def _freeze(transitions: dict[str, list[tuple[str, str]]]) -> TextStateMachine:
    return _machine(tuple((s, tuple(e)) for s, e in transitions.items()))


class _MarkupParser(OutputParser):
    """Drives a TextStateMachine; subclasses handle text per state and each marker."""

    def __init__(self, transitions: dict[str, list[tuple[str, str]]], initial: str, **kw) -> None:
        super().__init__(**kw)
        self._sm = _freeze(transitions).make_state(initial)
        if initial == "reasoning":
            self._thought = _Block(self._reasoning, fresh=True)

    def feed(self, text: str) -> list[OutputEvent]:
        if text:
            self._sm, segments = TextStateMachine.split(self._sm, text)
            last = len(segments) - 1
            for i, (state, piece) in enumerate(segments):
                if piece:
                    self._on_text(state, piece)
                if i < last:
                    self._on_marker(state, segments[i + 1][0])
                    self._content.cut()  # whitespace next to markup is dropped
                    self._thought.cut()
        return self._take()

    def finish(self) -> list[OutputEvent]:
        self._sm, rest, state = TextStateMachine.flush(self._sm)
        if rest:
            self._on_text(state, rest)
        self._on_end(state)
        self._content.flush()
        self._thought.flush()
        return self._take()

    def _on_text(self, state: str, text: str) -> None:
        raise NotImplementedError

    def _on_marker(self, before: str, after: str) -> None:
        raise NotImplementedError

    def _on_end(self, state: str) -> None:
        pass

    def _think_text(self, state: str, text: str) -> None:
        if state == "reasoning":
            self._thought.add(text)


def _think_edges(think: tuple[str, str] | None, transitions: dict) -> None:
    if think:
        start, end = think
        # A repeated start (the prompt had opened it) and a stray end are dropped too.
        transitions.setdefault("normal", []).extend([(start, "reasoning"), (end, "normal")])
        transitions.setdefault("reasoning", []).extend([(end, "normal"), (start, "reasoning")])


def _starts_in_reasoning(think: tuple[str, str] | None, tail: str) -> bool:
    return bool(think) and tail.rfind(think[0]) > tail.rfind(think[1])


class HermesParser(_MarkupParser):
    """`<tool_call>` JSON blocks (and reasoning); also the thinking-only parser."""

    def __init__(
        self,
        *,
        tools: bool,
        think: tuple[str, str] | None,
        prompt_text_tail: str = "",
        markers: tuple[str, str] = ("<tool_call>", "</tool_call>"),
    ) -> None:
        transitions: dict[str, list[tuple[str, str]]] = {"normal": []}
        _think_edges(think, transitions)
        if tools:
            transitions["normal"].append((markers[0], "tool"))
            if think:
                transitions["reasoning"].append((markers[0], "tool"))
            transitions["tool"] = [(markers[1], "normal")]
        initial = "reasoning" if _starts_in_reasoning(think, prompt_text_tail) else "normal"
        super().__init__(transitions, initial)
        self._markers = markers
        self._seq: JsonCallSeq | None = None
        self._block: list[str] = []  # all text of the open <tool_call> block
        self._junk: list[str] = []  # its text that is not a call

    def _on_text(self, state: str, text: str) -> None:
        if state == "normal":
            self._content.add(text)
        elif state == "tool":
            self._block.append(text)
            seq = self._seq
            k = seq.feed(text) if not seq.stopped else 0
            if k < len(text):
                self._junk.append(text[k:])
        else:
            self._think_text(state, text)

    def _on_marker(self, before: str, after: str) -> None:
        if before == "tool":
            self._close_block(ended=True)
        if after == "tool":
            self._seq = JsonCallSeq(self)
            self._block, self._junk = [], []

    def _on_end(self, state: str) -> None:
        if state == "tool":
            self._close_block(ended=False)

    def _close_block(self, ended: bool) -> None:
        seq = self._seq
        assert seq is not None
        failed = seq.close()
        self._seq = None
        block = "".join(self._block)
        if seq.headers == 0:
            if block.strip():
                end = self._markers[1] if ended else ""
                self._raw(self._markers[0] + block + end, "Tool call block holds no valid call")
            return
        for text in failed + ["".join(self._junk)]:
            self._raw(text, "Part of a tool call block is not a valid call")


class Llama3Parser(_MarkupParser):
    """A message that is JSON calls (`{"name": ..., "parameters": ...}`), or `<|python_tag|>` calls.

    Without markup a JSON answer is only taken for a call when its name is a
    declared tool; until that is decided the message's opening JSON is held.
    """

    def __init__(
        self, *, tools: list[dict] | None, think: tuple[str, str] | None, prompt_text_tail: str = ""
    ) -> None:
        transitions: dict[str, list[tuple[str, str]]] = {"normal": []}
        _think_edges(think, transitions)
        if tools:
            transitions["normal"].append(("<|python_tag|>", "python"))
            transitions["python"] = []
        initial = "reasoning" if _starts_in_reasoning(think, prompt_text_tail) else "normal"
        super().__init__(transitions, initial)
        self._names = frozenset(_tool_names(tools))
        self._mode = "start" if tools else "text"  # message start: "start", then "json" or "text"
        self._held = ""  # whitespace at the message start
        self._seq: JsonCallSeq | None = None
        self._python: JsonCallSeq | None = None

    def _on_text(self, state: str, text: str) -> None:
        if state == "normal":
            self._message_text(text)
        elif state == "python":
            self._python_text(text)
        else:
            self._think_text(state, text)

    def _message_text(self, text: str) -> None:
        if self._mode == "start":
            stripped = text.lstrip()
            self._held += text[: len(text) - len(stripped)]
            if not stripped:
                return
            text = stripped
            if text[0] == "{":
                self._mode = "json"
                self._seq = JsonCallSeq(self, self._names)
            else:
                self._mode = "text"
                text, self._held = self._held + text, ""
        if self._mode == "json":
            seq = self._seq
            k = seq.feed(text)
            if not seq.stopped:
                return
            text = text[k:]
            self._end_json()
        self._content.add(text)

    def _end_json(self) -> None:
        seq = self._seq
        failed = seq.close()
        self._seq = None
        self._mode = "text"
        if seq.headers == 0:  # it was an answer in JSON after all
            self._content.add(self._held + seq.raw)
        else:
            self._content.cut()
            for text in failed:
                self._raw(text, "Llama tool call JSON is invalid")
        self._held = ""

    def _python_text(self, text: str) -> None:
        seq = self._python
        if seq is not None:
            k = seq.feed(text)
            if not seq.stopped:
                return
            text = text[k:]
            self._end_python()
        self._content.add(text)

    def _end_python(self) -> None:
        seq = self._python
        if seq is None:
            return
        self._python = None
        failed = seq.close()
        if seq.headers == 0:
            self._content.add(seq.raw)  # not JSON: a built-in tool call or code; shown as is
        else:
            self._content.cut()
            for text in failed:
                self._raw(text, "Llama tool call JSON is invalid")

    def _on_marker(self, before: str, after: str) -> None:
        if before == "normal":
            if self._mode == "json":
                self._end_json()
            self._held = ""
        if after == "python":
            if self._mode == "start":
                self._mode = "text"
            self._python = JsonCallSeq(self)
        elif (
            after == "normal"
            and self._names
            and self._mode == "text"
            and not self._calls
            and not self._content._any
        ):
            self._mode = "start"  # the answer after the reasoning may be a call

    def _on_end(self, state: str) -> None:
        if self._mode == "json":
            self._end_json()
        elif self._mode == "start" and self._held:
            self._content.add(self._held)
        self._end_python()


_MISTRAL_NAME = re.compile(r"[\w\-.]+")


class MistralParser(_MarkupParser):
    """`[TOOL_CALLS]` then a JSON array of calls, or `name[CALL_ID]id[ARGS]{...}` per call."""

    def __init__(
        self, *, tools: bool, think: tuple[str, str] | None, prompt_text_tail: str = ""
    ) -> None:
        transitions: dict[str, list[tuple[str, str]]] = {"normal": []}
        _think_edges(think, transitions)
        if tools:
            transitions["normal"].append(("[TOOL_CALLS]", "calls"))
            if think:
                transitions["reasoning"].append(("[TOOL_CALLS]", "calls"))
            transitions["calls"] = [
                ("[ARGS]", "args"),
                ("[CALL_ID]", "call_id"),
                ("[TOOL_CALLS]", "calls"),
            ]
            transitions["call_id"] = [("[ARGS]", "args"), ("[TOOL_CALLS]", "calls")]
            transitions["args"] = [("[TOOL_CALLS]", "calls")]
        initial = "reasoning" if _starts_in_reasoning(think, prompt_text_tail) else "normal"
        # Mistral templates refuse tool call ids that are not 9 characters long.
        super().__init__(transitions, initial, id_length=4)
        self._raw_call: list[str] = []  # the model's text of the open call, markup included
        self._name = ""
        self._seq: JsonCallSeq | None = None  # the JSON array form
        self._after = ""  # text after that array
        self._index: int | None = None
        self._args: ArgsStream | None = None
        self._failed = False

    def _on_text(self, state: str, text: str) -> None:
        if state == "normal":
            self._content.add(text)
        elif state == "calls":
            self._raw_call.append(text)
            if self._seq is None and not self._name.strip() and text.lstrip()[:1] in ("[", "{"):
                self._seq = JsonCallSeq(self)
            if self._seq is not None:
                seq = self._seq
                k = seq.feed(text) if not seq.stopped else 0
                self._after += text[k:]  # what follows the array: text
            else:
                self._name += text
        elif state == "call_id":
            self._raw_call.append(text)
        elif state == "args":
            self._raw_call.append(text)
            if self._args is not None:
                self._args.feed(text)
        else:
            self._think_text(state, text)

    def _on_marker(self, before: str, after: str) -> None:
        if before in ("calls", "call_id") and after in ("call_id", "args"):
            self._raw_call.append("[CALL_ID]" if after == "call_id" else "[ARGS]")
            if self._index is None and not self._failed:
                name = self._name.strip()
                if _MISTRAL_NAME.fullmatch(name):
                    self._index = self._call_header(name)
                else:
                    self._failed = True
            if after == "args" and self._index is not None:
                self._args = ArgsStream(self, self._index)
            return
        if before in ("calls", "call_id", "args"):
            self._close_call()
        if after == "calls":
            self._raw_call = ["[TOOL_CALLS]"]

    def _close_call(self) -> None:
        raw, seq, args, after = "".join(self._raw_call), self._seq, self._args, self._after
        self._raw_call, self._name, self._seq, self._args, self._after = [], "", None, None, ""
        self._index, failed, self._failed = None, self._failed, False
        if seq is not None:
            broken = seq.close()
            if seq.headers == 0:
                self._raw(raw, "Mistral tool calls are not valid JSON calls")
                return
            for text in broken:
                self._raw(text, "Mistral tool call JSON is invalid")
            self._content.cut()
            self._content.add(after)
            return
        if failed or args is None or not args.close():
            self._raw(raw, "Mistral tool call is incomplete or invalid")
            return
        if args.trailing.strip():
            self._content.cut()
            self._content.add(args.trailing)

    def _on_end(self, state: str) -> None:
        if state in ("calls", "call_id", "args"):
            self._close_call()


class HarmonyParser(_MarkupParser):
    """gpt-oss harmony: `<|start|>role<|channel|>ch to=R <|constrain|>json<|message|>body<|end|>`.

    openai_harmony's StreamableParser reads token ids and needs its tiktoken
    vocabulary downloaded at run time, so the markers are read here as text.
    """

    _TRANSITIONS = {
        "idle": [("<|start|>", "role"), ("<|channel|>", "channel"), ("<|message|>", "message")],
        "role": [
            ("<|channel|>", "channel"),
            ("<|constrain|>", "constrain"),
            ("<|message|>", "message"),
            ("<|start|>", "role"),
        ],
        "channel": [
            ("<|constrain|>", "constrain"),
            ("<|message|>", "message"),
            ("<|start|>", "role"),
        ],
        "constrain": [
            ("<|message|>", "message"),
            ("<|channel|>", "channel"),
            ("<|start|>", "role"),
        ],
        "message": [
            ("<|end|>", "idle"),
            ("<|call|>", "idle"),
            ("<|return|>", "idle"),
            ("<|start|>", "role"),
            ("<|channel|>", "channel"),
        ],
    }
    _RECIPIENT = re.compile(r"\bto=([^\s<]+)")

    def __init__(self, *, tools: list[dict] | None, prompt_text_tail: str = "") -> None:
        super().__init__(self._TRANSITIONS, "idle")
        self._tools = frozenset(_tool_names(tools)) if tools else frozenset()
        self._role = ""
        self._channel: str | None = None
        self._kind = "content"  # of the open message: content, reasoning or call
        self._args: ArgsStream | None = None
        start = prompt_text_tail.rfind("<|start|>")
        if start >= 0:  # the prompt opened the assistant's message header
            self.feed(prompt_text_tail[start:])
            self._events, self._calls = [], 0
            self._content, self._thought = _Block(self._text), _Block(self._reasoning)
        self._primed_role = self._role

    def _on_text(self, state: str, text: str) -> None:
        if state == "message":
            if self._kind == "call":
                self._args.feed(text)
            elif self._kind == "reasoning":
                self._thought.add(text)
            else:
                self._content.add(text)
        elif state == "role":
            self._role += text
        elif state == "channel":
            self._channel = (self._channel or "") + text
        elif state == "idle":
            self._content.add(text)

    def _on_marker(self, before: str, after: str) -> None:
        if before == "message":
            self._end_message(ended=True)
        if after == "role":
            self._role, self._channel = "", None
        elif after == "channel":
            if before in ("idle", "message"):
                self._role = ""
            self._channel = ""
        elif after == "message":
            self._begin_message()

    def _begin_message(self) -> None:
        header = f"{self._role} {self._channel or ''}"
        channel = (self._channel or "").split()
        recipient = self._RECIPIENT.search(header)
        target = recipient.group(1) if recipient else ""
        name = target[len("functions.") :] if target.startswith("functions.") else target
        if name and self._tools and (target != name or name in self._tools):
            self._kind = "call"
            self._args = ArgsStream(self, self._call_header(name))
        elif target and target not in ("user", "assistant"):
            # A built-in tool (browser, python) or a call with no tools declared: not an answer.
            self._kind = "reasoning"
        elif channel and channel[0] == "analysis":
            self._kind = "reasoning"
        else:
            self._kind = "content"
        self._role, self._channel = "", None

    def _end_message(self, ended: bool) -> None:
        if self._kind == "call":
            args, self._args = self._args, None
            if not args.close():
                self._raw(args.text + args.trailing, "Harmony tool call arguments are not JSON")
            elif args.trailing.strip():
                log.warning("Text after harmony call arguments ignored: %r", args.trailing[:200])
        self._kind = "content"

    def _on_end(self, state: str) -> None:
        if state == "message":
            self._end_message(ended=False)  # <|call|> and <|return|> are EOS: removed
        elif state == "role" and self._channel is None:
            # No channel yet: not a header after all, but text the model wrote.
            written = self._role
            if written.startswith(self._primed_role):
                written = written[len(self._primed_role) :]
            self._content.add(written)
        elif state in ("role", "channel", "constrain"):
            log.debug("Output ended inside a harmony header: %r", (self._role, self._channel))


class MlxParser(_MarkupParser):
    """A format mlx-lm has a parser for: each call's text is parsed whole at its end marker."""

    def __init__(
        self,
        *,
        module: Any,
        tools: list[dict] | None,
        think: tuple[str, str] | None,
        prompt_text_tail: str = "",
    ) -> None:
        start, end = module.tool_call_start, module.tool_call_end
        transitions: dict[str, list[tuple[str, str]]] = {"normal": []}
        _think_edges(think, transitions)
        if tools:
            transitions["normal"].append((start, "tool"))
            if think:
                transitions["reasoning"].append((start, "tool"))
            transitions["tool"] = [(end, "normal")] if end else [(start, "tool")]
        initial = "reasoning" if _starts_in_reasoning(think, prompt_text_tail) else "normal"
        super().__init__(transitions, initial)
        self._parse = module.parse_tool_call
        self._tools = tools
        self._markers = (start, end)
        self._block: list[str] = []

    def _on_text(self, state: str, text: str) -> None:
        if state == "normal":
            self._content.add(text)
        elif state == "tool":
            self._block.append(text)
        else:
            self._think_text(state, text)

    def _on_marker(self, before: str, after: str) -> None:
        if before == "tool":
            self._close_block(ended=True)
        if after == "tool":
            self._block = []

    def _on_end(self, state: str) -> None:
        if state == "tool":
            self._close_block(ended=False)

    def _close_block(self, ended: bool) -> None:
        text, self._block = "".join(self._block), []
        raw = self._markers[0] + text + (self._markers[1] if ended else "")
        try:
            parsed = self._parse(text, self._tools)
            calls = parsed if isinstance(parsed, list) else [parsed]
            out = []
            for call in calls:
                name, args = call["name"], call.get("arguments", {})
                if isinstance(args, str):
                    args = json.loads(args) if args.strip() else {}
                if not isinstance(name, str) or not isinstance(args, dict):
                    raise ValueError(f"not a call: {call!r}")
                out.append((name, json.dumps(args, ensure_ascii=False)))
        except Exception as exc:  # the parsers raise ValueError, KeyError, SyntaxError...
            self._raw(raw, f"Tool call could not be parsed ({type(exc).__name__}: {exc})")
            return
        for name, args in out:
            self._call_args(self._call_header(name), args)


# Detection and construction.


def _template_source(tokenizer) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str):
        return template
    if isinstance(template, dict):
        return "\n".join(str(v) for v in template.values())
    if isinstance(template, list):
        return "\n".join(str(t.get("template", "")) for t in template if isinstance(t, dict))
    return ""


def template_supports_tools(tokenizer) -> bool:
    """Whether the model's chat template renders a `tools` list."""
    if callable(getattr(tokenizer, "_chat_template", None)):
        return True  # mlx-lm's own renderers (DeepSeek V3.2...) take tools
    return "tools" in _template_source(tokenizer)


def _mlx_parser_name(tokenizer) -> str | None:
    parser = getattr(tokenizer, "tool_parser", None)
    module = getattr(parser, "__module__", "") or ""
    if module.startswith("mlx_lm.tool_parsers."):
        return module.rsplit(".", 1)[1]
    kwargs = getattr(tokenizer, "init_kwargs", None)
    name = kwargs.get("tool_parser_type") if isinstance(kwargs, dict) else None
    return name if isinstance(name, str) else None


# Both below run for every request on the engine thread; reading a 150k-token
# vocabulary took ~100 ms, so results are kept per loaded tokenizer.
@functools.lru_cache(maxsize=16)
def tool_style(tokenizer, model_type: str | None) -> str:
    """How this model writes tool calls: the parser family to read them with."""
    source = _template_source(tokenizer)
    if model_type == "gpt_oss" or ("<|channel|>" in source and "<|message|>" in source):
        return "harmony"
    parser = _mlx_parser_name(tokenizer)
    if parser == "json_tools":
        return "hermes"
    if parser == "mistral":
        return "mistral"
    if parser is not None:
        return f"mlx:{parser}"
    if '"parameters": dictionary of argument name' in source or "<|python_tag|>" in source:
        return "llama3"
    if not template_supports_tools(tokenizer):
        return "fallback"
    if "[TOOL_CALLS]" in source:
        return "mistral"
    # A template with tools in a format nobody parses: <tool_call> is the common one.
    return "hermes"


@functools.lru_cache(maxsize=16)
def _think_markers(tokenizer, style: str) -> tuple[str, str] | None:
    if style == "harmony":
        return None
    if getattr(tokenizer, "has_thinking", False):
        return tokenizer.think_start, tokenizer.think_end
    try:
        vocab = tokenizer.get_vocab()
    except Exception:
        return None
    if "[THINK]" in vocab and "[/THINK]" in vocab:  # Magistral, Ministral 3 reasoning
        return "[THINK]", "[/THINK]"
    return None


def needs_output_parser(tokenizer, model_type: str | None, tools: list[dict] | None) -> bool:
    """Whether output may hold reasoning or tool calls; if not, plain text needs no parser."""
    style = tool_style(tokenizer, model_type)
    return bool(tools) or style == "harmony" or _think_markers(tokenizer, style) is not None


def _tool_names(tools: list[dict] | None) -> list[str]:
    names = []
    for tool in tools or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.append(function["name"])
    return names


def make_output_parser(
    tokenizer,
    *,
    model_type: str | None,
    tools: list[dict] | None,
    prompt_text_tail: str = "",
    style: str | None = None,
) -> OutputParser:
    """The parser for one request. No tools: calls are never parsed, reasoning still is."""
    style = style or tool_style(tokenizer, model_type)
    tools = tools or None
    think = _think_markers(tokenizer, style)
    tail = prompt_text_tail
    if style == "harmony":
        return HarmonyParser(tools=tools, prompt_text_tail=tail)
    if not tools and not think:
        return PassthroughParser()
    if style == "llama3":
        return Llama3Parser(tools=tools, think=think, prompt_text_tail=tail)
    if style == "mistral":
        return MistralParser(tools=bool(tools), think=think, prompt_text_tail=tail)
    if style.startswith("mlx:") and style != "mlx:json_tools":
        if style == "mlx:mistral":
            return MistralParser(tools=bool(tools), think=think, prompt_text_tail=tail)
        module = importlib.import_module(f"mlx_lm.tool_parsers.{style[4:]}")
        return MlxParser(module=module, tools=tools, think=think, prompt_text_tail=tail)
    return HermesParser(tools=bool(tools), think=think, prompt_text_tail=tail)


def render_tools_fallback(tools: list[dict]) -> str:
    """A system-prompt text describing the tools in the Hermes format (Qwen2.5's wording).

    For models whose chat template has no tool support; the "fallback" parser
    reads the `<tool_call>` blocks this asks for.
    """
    lines = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            continue  # Codex sends other kinds (web_search...): not callable here
        if isinstance(tool.get("function"), dict):
            spec = {"type": "function", "function": tool["function"]}
            lines.append(json.dumps(spec, ensure_ascii=False))
    return (
        "# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        "<tools>\n" + "\n".join(lines) + "\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments "
        "within <tool_call></tool_call> XML tags:\n"
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>\n\n'
        "If no function is needed, answer the user directly."
    )
