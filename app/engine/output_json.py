"""Incremental JSON for streamed tool calls: a syntax scanner and JSON call objects.

The scanner reads one JSON value a chunk at a time and says where it ends, so
a call's arguments can be streamed as they arrive and the wrapper around them
(`{"name": ..., "arguments": {...}}`) is never sent. Raw control characters
inside strings (models write real newlines in code) are escaped on the way
out, so what a client concatenates is strict JSON (JavaScript's JSON.parse
rejects them).
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.engine.output import OutputParser

log = logging.getLogger(__name__)

# Scanner modes.
_VALUE, _ARRAY_FIRST, _KEY_FIRST, _KEY, _COLON, _AFTER = range(6)
_STRING, _ESCAPE, _UNICODE, _LITERAL, _DONE, _ERROR = range(6, 12)

_WS = frozenset(" \t\r\n")
_LITERAL_START = frozenset("-0123456789tfn")
_LITERAL_CHARS = frozenset("-+.0123456789eEtruefalsn")
_LITERAL_RE = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null")
_STRING_STOP = re.compile(r'["\\\x00-\x1f]')
_HEX = frozenset("0123456789abcdefABCDEF")
_CONTROL_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _escape_control(ch: str) -> str:
    return _CONTROL_ESCAPES.get(ch) or f"\\u{ord(ch):04x}"


class JsonScanner:
    """Checks the syntax of one JSON value fed in pieces and finds its end."""

    __slots__ = ("_stack", "_mode", "_in_key", "_lit", "_hex")

    def __init__(self) -> None:
        self._stack: list[str] = []
        self._mode = _VALUE
        self._in_key = False
        self._lit = ""
        self._hex = 0

    @property
    def done(self) -> bool:
        return self._mode == _DONE

    @property
    def error(self) -> bool:
        return self._mode == _ERROR

    @property
    def started(self) -> bool:
        return self._mode != _VALUE or bool(self._stack)

    def end(self) -> bool:
        """The input ended: a pending top-level literal (`null`, `12`) completes here."""
        if self._mode == _LITERAL and not self._stack:
            self._mode = _DONE if _LITERAL_RE.fullmatch(self._lit) else _ERROR
        return self.done

    def feed(self, text: str) -> tuple[int, str]:
        """Scan `text`; return (end, out).

        `end` is len(text), or the index just after the value completed, or the
        index of the first character that breaks the syntax. `out` is
        text[:end] with raw control characters in strings escaped.
        """
        mode = self._mode
        if mode == _DONE or mode == _ERROR:
            return 0, ""
        stack = self._stack
        n = len(text)
        i = 0
        fixes: list[tuple[int, str]] | None = None
        while i < n:
            if mode == _STRING:
                m = _STRING_STOP.search(text, i)
                if m is None:
                    i = n
                    break
                i = m.start()
                c = text[i]
                i += 1
                if c == '"':
                    if self._in_key:
                        mode = _COLON
                    elif stack:
                        mode = _AFTER
                    else:
                        mode = _DONE
                        break
                elif c == "\\":
                    mode = _ESCAPE
                else:  # a raw control character: valid only when escaped
                    fixes = fixes or []
                    fixes.append((i - 1, _escape_control(c)))
                continue
            c = text[i]
            if mode == _ESCAPE:
                if c in '"\\/bfnrt':
                    mode = _STRING
                elif c == "u":
                    mode, self._hex = _UNICODE, 4
                else:
                    mode = _ERROR
                    break
                i += 1
                continue
            if mode == _UNICODE:
                if c not in _HEX:
                    mode = _ERROR
                    break
                self._hex -= 1
                if self._hex == 0:
                    mode = _STRING
                i += 1
                continue
            if mode == _LITERAL:
                if c in _LITERAL_CHARS:
                    self._lit += c
                    i += 1
                    continue
                if not _LITERAL_RE.fullmatch(self._lit):
                    mode = _ERROR
                    break
                self._lit = ""
                if not stack:
                    mode = _DONE
                    break
                mode = _AFTER  # and read c again in that mode
                continue
            if c in _WS:
                i += 1
                continue
            if mode == _VALUE or mode == _ARRAY_FIRST:
                if c == "{":
                    stack.append("}")
                    mode = _KEY_FIRST
                elif c == "[":
                    stack.append("]")
                    mode = _ARRAY_FIRST
                elif c == '"':
                    mode, self._in_key = _STRING, False
                elif c in _LITERAL_START:
                    mode, self._lit = _LITERAL, c
                elif c == "]" and mode == _ARRAY_FIRST:
                    stack.pop()
                    mode = _AFTER if stack else _DONE
                else:
                    mode = _ERROR
                    break
            elif mode == _KEY_FIRST or mode == _KEY:
                if c == '"':
                    mode, self._in_key = _STRING, True
                elif c == "}" and mode == _KEY_FIRST:
                    stack.pop()
                    mode = _AFTER if stack else _DONE
                else:
                    mode = _ERROR
                    break
            elif mode == _COLON:
                if c != ":":
                    mode = _ERROR
                    break
                mode = _VALUE
            else:  # _AFTER a value inside a container
                if c == ",":
                    mode = _KEY if stack[-1] == "}" else _VALUE
                elif c == stack[-1]:
                    stack.pop()
                    mode = _AFTER if stack else _DONE
                else:
                    mode = _ERROR
                    break
            i += 1
            if mode == _DONE:
                break
        self._mode = mode
        if fixes is None:
            return i, text[:i]
        out, last = [], 0
        for at, rep in fixes:
            out.append(text[last:at])
            out.append(rep)
            last = at + 1
        out.append(text[last:i])
        return i, "".join(out)


def loads(text: str) -> Any:
    """json.loads that also accepts raw control characters inside strings."""
    return json.loads(text, strict=False)


def extract_call(obj: Any) -> tuple[str, dict] | None:
    """(name, arguments) from the call shapes models write, or None."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None
    if "arguments" in obj:
        args = obj["arguments"]
    else:
        args = obj.get("parameters", {})
    args = decode_arguments(args)
    return None if args is None else (name, args)


def decode_arguments(args: Any) -> dict | None:
    """Arguments as a dict: given as an object, a JSON string of one, or null."""
    if args is None or args == "":
        return {}
    if isinstance(args, str):
        try:
            args = loads(args)
        except ValueError:
            return None
    return args if isinstance(args, dict) else None


# `{"name": "x", "arguments": ` (or "parameters", optionally after "type": "function"):
# once this prefix is in, the name is known and the arguments can stream.
_HEAD = re.compile(
    r'\s*\{\s*(?:"type"\s*:\s*"function"\s*,\s*)?"name"\s*:\s*"((?:[^"\\]|\\.)*)"'
    r'\s*,\s*"(?:arguments|parameters)"\s*:'
)
_FIRST_KEY = re.compile(r'\s*\{\s*"((?:[^"\\]|\\.)*)"\s*:')
_HEAD_LIMIT = 512  # a header is short; past this, wait for the whole object
_CALL_KEYS = ("name", "type", "function", "parameters", "arguments")  # keys a call may start with


class JsonCall:
    """One call written as a JSON object, fed until the object closes.

    Its header goes out once `"name": ..., "arguments":` has been read; an
    object arguments value then streams through its own scanner. Other shapes
    (arguments before the name, `{"function": {...}}`, arguments as a JSON
    string) are read whole when the object closes. With `known_names` (calls
    with no markup around them, Llama's) an object whose first key cannot
    start a call, or whose name is not a declared tool, is `rejected`.
    """

    def __init__(self, out: "OutputParser", known_names: frozenset[str] | None = None) -> None:
        self._out = out
        self._known = known_names
        self._raw: list[str] = []  # the model's text for this call, for the fallback
        self._head = ""  # its start, while the header is being looked for
        self._wrapper = JsonScanner()
        self.index: int | None = None  # set once the header went out
        self._args: ArgsStream | None = None
        self.rejected = False

    @property
    def raw(self) -> str:
        return "".join(self._raw)

    @property
    def complete(self) -> bool:
        return self._wrapper.done

    @property
    def broken(self) -> bool:
        return self._wrapper.error or self.rejected

    def feed(self, text: str) -> int:
        """Consume text up to the end of the object (or the error); return how much."""
        end, _ = self._wrapper.feed(text)
        piece = text[:end]
        self._raw.append(piece)
        if self.index is None:
            if not self.rejected and len(self._head) <= _HEAD_LIMIT:
                self._head += piece
                self._try_head()
        elif self._args is not None:
            self._args.feed(piece)
        return end

    def _try_head(self) -> None:
        raw = self._head
        if len(raw) > _HEAD_LIMIT:
            if self._known is not None:
                self.rejected = True
            return
        m = _HEAD.match(raw)
        if m is None:
            if self._known is not None:
                k = _FIRST_KEY.match(raw)
                if k is not None and k.group(1) not in _CALL_KEYS:
                    self.rejected = True
            return
        try:
            name = json.loads(f'"{m.group(1)}"')
        except ValueError:
            self.rejected = True
            return
        if not name or (self._known is not None and name not in self._known):
            self.rejected = True
            return
        self.index = self._out._call_header(name)
        self._args = ArgsStream(self._out, self.index)
        self._args.feed(raw[m.end() :])

    def close(self) -> bool:
        """The call ended (its object closed, or its block or the output ended).

        Returns whether it became a well-formed call; if not, the caller shows
        `raw` as text.
        """
        if self.rejected:
            return False
        if self._args is not None:
            ok = self._args.close(allow_empty=False)
            if ok and not self._wrapper.done:
                log.warning("Tool call JSON unclosed after its arguments; kept: %r", self.raw[-80:])
            return ok
        if not self._wrapper.done:
            return False
        try:
            call = extract_call(loads(self.raw))
        except ValueError:
            call = None
        if call is None or (self._known is not None and call[0] not in self._known):
            return False
        name, args = call
        index = self._out._call_header(name)
        self.index = index
        self._out._call_args(index, json.dumps(args, ensure_ascii=False))
        return True


class ArgsStream:
    """A call's arguments, streamed to the client as the model writes them.

    An object streams piece by piece (control characters escaped); any other
    value (a JSON string holding the object, `null`) is read whole at the end.
    Text after the value is kept in `trailing`.
    """

    __slots__ = ("_out", "index", "_scan", "_stream", "_text", "trailing")

    @property
    def text(self) -> str:
        return "".join(self._text)

    def __init__(self, out: "OutputParser", index: int) -> None:
        self._out = out
        self.index = index
        self._scan = JsonScanner()
        self._stream: bool | None = None
        self._text: list[str] = []
        self.trailing = ""

    @property
    def done(self) -> bool:
        return self._scan.done

    def feed(self, piece: str) -> None:
        scan = self._scan
        if scan.done or scan.error:
            self.trailing += piece
            return
        end, out = scan.feed(piece)
        if end < len(piece):
            self.trailing += piece[end:]
        if self._stream is None:
            out = out.lstrip()
            if not out:
                return
            self._stream = out[0] == "{"
        self._text.append(out)
        if self._stream:
            self._out._call_args(self.index, out)

    def close(self, allow_empty: bool = True) -> bool:
        """Whether the arguments came out whole and valid (sending them if not yet sent)."""
        if self._stream is None and not self._scan.error and allow_empty:
            self._out._call_args(self.index, "{}")  # no arguments at all
            return True
        if not self._scan.end():
            log.warning("Tool call arguments are incomplete or invalid: %r", self.text[-200:])
            return False
        try:
            value = loads(self.text)
        except ValueError:
            value = None
        if not self._stream:
            value = decode_arguments(value)
            if value is not None:
                self._out._call_args(self.index, json.dumps(value, ensure_ascii=False))
        if not isinstance(value, dict):
            log.warning("Tool call arguments are not a JSON object: %r", self.text[:200])
            return False
        return True


class JsonCallSeq:
    """A run of JSON call objects: `{...}`, `{...}; {...}`, `[{...}, {...}]`.

    `feed` consumes call objects and the separators between them and stops
    (for good) at anything else, or at an object that breaks; the caller
    decides what the rest is. `failed` collects the raw text of calls that
    did not parse, in order, to be shown as text.
    """

    def __init__(self, out: "OutputParser", known_names: frozenset[str] | None = None) -> None:
        self._out = out
        self._known = known_names
        self._call: JsonCall | None = None
        self._ended_headers = 0
        self.stopped = False
        self.failed: list[str] = []
        self._raw: list[str] = []  # all text consumed

    @property
    def raw(self) -> str:
        return "".join(self._raw)

    @property
    def headers(self) -> int:
        """Calls of this run whose header went out (the client has seen them)."""
        call = self._call
        return self._ended_headers + (call is not None and call.index is not None)

    def feed(self, text: str) -> int:
        i, n = 0, len(text)
        while i < n and not self.stopped:
            call = self._call
            if call is None:
                c = text[i]
                if c in " \t\r\n,;[]":
                    i += 1
                    continue
                if c != "{":
                    self.stopped = True
                    break
                call = self._call = JsonCall(self._out, self._known)
            i += call.feed(text[i:])
            if call.broken:
                if call.index is not None:
                    log.warning("Tool call JSON is invalid: %r", call.raw[-200:])
                self._end_call(ok=False)
                self.stopped = True
            elif call.complete:
                self._end_call(call.close())
        self._raw.append(text[:i])
        return i

    def _end_call(self, ok: bool) -> None:
        call = self._call
        assert call is not None
        if call.index is not None:
            self._ended_headers += 1
        if not ok:
            self.failed.append(call.raw)
        self._call = None

    def close(self) -> list[str]:
        """End of the run: finish an open call; return the raw texts that did not parse."""
        if self._call is not None:
            self._end_call(self._call.close())
        return self.failed
