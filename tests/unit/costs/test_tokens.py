"""Token counters: tiktoken when its encoding is local, the approximation otherwise, and
never a download unless asked for. No test here reaches the network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken.load

from batchkiln import ConfigError, Settings
from batchkiln.costs import tokens
from batchkiln.costs.tokens import APPROXIMATION, Approximate, Tiktoken, choose, load_encoding


def byte_encoding() -> tiktoken.Encoding:
    """A real tiktoken Encoding built here: one token per byte, no files needed."""
    return tiktoken.Encoding(
        name="bytes_test",
        pat_str=r"(?s).",
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={},
    )


def test_the_approximation_is_four_bytes_of_utf8_a_token() -> None:
    """'abcdefgh' is 2 tokens, 'abc' 1, and each 3-byte character counts its bytes."""
    count = Approximate().count
    assert (count("abcdefgh"), count("abc"), count(""), count("日本語")) == (2, 1, 0, 3)


def test_a_tiktoken_encoding_counts_with_tiktoken_and_names_itself() -> None:
    """The adapter calls tiktoken's own encoder (special tokens as plain text)."""
    counter = Tiktoken(byte_encoding())
    assert counter.name == "tiktoken bytes_test"
    assert counter.count("héllo <|endoftext|>") == len("héllo <|endoftext|>".encode())


def test_auto_mode_never_downloads_an_encoding(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With an empty cache, loading without download returns None and fetches nothing."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    fetched: list[str] = []

    def no_network(blobpath: str) -> bytes:
        fetched.append(blobpath)
        raise AssertionError(f"tried to download {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    assert load_encoding.__wrapped__("o200k_base", download=False) is None
    assert fetched == []
    assert tiktoken.load.read_file is no_network  # the guard is removed afterwards


def test_openai_models_use_tiktoken_when_the_encoding_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A loadable encoding is used, with no note; the model picks the encoding name."""
    asked: list[tuple[str, bool]] = []

    def fake_load(name: str, *, download: bool) -> Any:
        asked.append((name, download))
        return byte_encoding()

    monkeypatch.setattr(tokens, "load_encoding", fake_load)
    choice = choose("openai", "gpt-4o-mini", "auto")
    assert choice.tokenizer.name == "tiktoken bytes_test"
    assert choice.note == ""
    assert asked == [("o200k_base", False)]
    choose("openai", "gpt-4o-mini", "tiktoken")
    assert asked[-1] == ("o200k_base", True)


def test_without_a_local_encoding_openai_falls_back_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No encoding: the approximation, with a note on how to get exact counts."""
    monkeypatch.setattr(tokens, "load_encoding", lambda name, *, download: None)
    choice = choose("openai", "gpt-4o-mini", "auto")
    assert choice.tokenizer.name == APPROXIMATION
    assert "KILN_TOKENIZER=tiktoken" in choice.note


def test_anthropic_and_approx_mode_always_use_the_approximation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Claude's tokenizer is not public; KILN_TOKENIZER=approx forces the approximation."""
    monkeypatch.setattr(tokens, "load_encoding", lambda name, *, download: byte_encoding())
    assert choose("anthropic", "claude-haiku-4-5", "tiktoken").tokenizer.name == APPROXIMATION
    monkeypatch.setattr(tokens, "_configured", ["approx"])  # what the App sets
    assert choose("openai", "gpt-4o-mini").tokenizer.name == APPROXIMATION


def test_an_unknown_tokenizer_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """KILN_TOKENIZER=exact is not a mode: refused when the settings are read."""
    monkeypatch.setenv("KILN_TOKENIZER", "exact")
    with pytest.raises(ConfigError, match="KILN_TOKENIZER"):
        Settings.load()
