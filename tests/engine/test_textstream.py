"""Streamed text with the real byte-level tokenizer: whole characters, no stop-string leaks."""

from __future__ import annotations

import pytest
from mlx_lm.utils import load_tokenizer

from app.engine.textstream import StopTextStream
from tests.conftest import TINY_ID

TEXT = "Émoji 🙂 and accents: café, naïve, 日本語 漢字. Numbers: 100 1000."


@pytest.fixture(scope="module")
def tokenizer(models_dir):
    return load_tokenizer(models_dir / TINY_ID)


def pieces(tokenizer, text: str, stop: tuple[str, ...] = ()) -> tuple[list[str], bool]:
    stream = StopTextStream(tokenizer.detokenizer, stop)
    out = []
    for token in tokenizer.encode(text):
        out.append(stream.add(token).text)
        if stream.stopped:
            return out, True
    out.append(stream.finish().text)
    return out, stream.stopped


def test_multibyte_characters_are_never_split(tokenizer):
    tokens = tokenizer.encode("🙂漢字")
    assert len(tokens) > 3  # unseen characters really are split into byte tokens
    out, _ = pieces(tokenizer, TEXT)
    assert "".join(out) == TEXT
    assert not any("\ufffd" in p for p in out)


@pytest.mark.parametrize("stop", ["café", "é, n", "100 1", ". Num"])
def test_stop_string_cuts_text_and_never_leaks(tokenizer, stop):
    out, stopped = pieces(tokenizer, TEXT, (stop,))
    assert stopped
    assert "".join(out) == TEXT[: TEXT.index(stop)]
    # No piece ever ended with the beginning of the stop string before it was ruled out.
    shown = ""
    for piece in out:
        shown += piece
        assert stop not in shown


def test_partial_stop_prefix_is_released_when_it_turns_out_not_to_be_one(tokenizer):
    out, stopped = pieces(tokenizer, TEXT, ("café!",))
    assert not stopped
    assert "".join(out) == TEXT


def test_earliest_of_several_stops_wins(tokenizer):
    out, stopped = pieces(tokenizer, TEXT, ("Numbers", "naïve"))
    assert stopped and "".join(out) == TEXT[: TEXT.index("naïve")]


def test_the_matched_stop_string_is_reported(tokenizer):
    stream = StopTextStream(tokenizer.detokenizer, ("naïve", "café"))
    for token in tokenizer.encode(TEXT):
        stream.add(token)
    assert stream.matched == "café"
