"""Turn a token stream into safe text deltas, honouring stop strings.

Stop strings are matched on text, not tokens (" Paris" and "Paris" are
different tokens). Text that could be the start of a stop string is held back
until it is clearly not one, so a client never sees part of a stop string.
The streaming detokenizer already holds back incomplete UTF-8 sequences.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Piece:
    text: str
    stopped: bool = False


class StopTextStream:
    def __init__(self, detokenizer, stop: tuple[str, ...] = ()) -> None:
        self._detok = detokenizer
        self._stops = tuple(s for s in stop if s)
        self._pending = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended the text

    def add(self, token: int) -> Piece:
        """Feed one token; return the text that is now safe to show."""
        self._detok.add_token(token)
        return self._release(self._detok.last_segment, final=False)

    def finish(self) -> Piece:
        """Flush what is left at the end of generation."""
        self._detok.finalize()
        return self._release(self._detok.last_segment, final=True)

    def _release(self, segment: str, *, final: bool) -> Piece:
        if self.stopped:
            return Piece("", True)
        text = self._pending + segment
        if not self._stops:
            self._pending = ""
            return Piece(text)
        hits = [(i, s) for s in self._stops if (i := text.find(s)) >= 0]
        if hits:
            cut, self.matched = min(hits, key=lambda hit: hit[0])
            self.stopped = True
            self._pending = ""
            return Piece(text[:cut], True)
        hold = 0 if final else self._held_suffix(text)
        self._pending = text[len(text) - hold :] if hold else ""
        return Piece(text[: len(text) - hold])

    def _held_suffix(self, text: str) -> int:
        """Length of the longest end of `text` that begins some stop string."""
        longest = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:n]):
                    longest = n
                    break
        return longest
