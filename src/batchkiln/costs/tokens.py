"""Counting tokens before anything is sent: `tiktoken` for OpenAI models when its
encoding is available, a documented approximation otherwise.

tiktoken downloads its BPE files from OpenAI's blob store on first use and
caches them (`TIKTOKEN_CACHE_DIR`, else a `data-gym-cache` folder in the temp
dir). An estimate must not reach the network by surprise, so `KILN_TOKENIZER`
chooses:

- `auto` (default): tiktoken if its encoding loads from the local cache, without
  downloading; the approximation otherwise.
- `tiktoken`: tiktoken, downloading its encoding if needed (needs the network once).
- `approx`: always the approximation.

The approximation: one token per 4 bytes of UTF-8 text (OpenAI's rule of thumb
for English, and stricter than per-character counting for other scripts), at
least one per non-empty text. Anthropic's tokenizer is not public, so Claude
requests always use it. Every estimate says which counter it used.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

TokenizerMode = Literal["auto", "tiktoken", "approx"]
MODES: tuple[TokenizerMode, ...] = ("auto", "tiktoken", "approx")
DEFAULT_ENCODING = "o200k_base"  # OpenAI models tiktoken does not know yet are newer ones
APPROXIMATION = "approximation (4 bytes of UTF-8 a token)"


class Tokenizer(Protocol):
    name: str

    def count(self, text: str) -> int: ...


class Approximate:
    name = APPROXIMATION

    def count(self, text: str) -> int:
        # an ASCII str's length is its UTF-8 length (isascii is O(1) in CPython): no copy
        return ((len(text) if text.isascii() else len(text.encode())) + 3) // 4


class Tiktoken:
    """A tiktoken encoding; special-token text in a prompt is counted as ordinary text."""

    def __init__(self, encoding: Any) -> None:
        self._encoding = encoding
        self.name = f"tiktoken {encoding.name}"

    def count(self, text: str) -> int:
        return len(self._encoding.encode_ordinary(text))


@dataclass(frozen=True)
class Choice:
    tokenizer: Tokenizer
    note: str  # why this counter, when it is not the exact one


class _Offline(Exception):
    pass


_configured: list[TokenizerMode] = ["auto"]


def configure(mode: TokenizerMode) -> None:
    """Set the process's tokenizer mode (the App does, from KILN_TOKENIZER)."""
    if mode not in MODES:
        raise ValueError(f"KILN_TOKENIZER must be one of {', '.join(MODES)}, got {mode!r}")
    _configured[0] = mode


def configured_mode() -> TokenizerMode:
    return _configured[0]


def encoding_name(model: str) -> str:
    try:
        import tiktoken
    except ImportError:
        return DEFAULT_ENCODING
    try:
        return tiktoken.encoding_name_for_model(model)
    except KeyError:
        return DEFAULT_ENCODING


@functools.cache
def load_encoding(name: str, *, download: bool) -> Any | None:
    """The tiktoken encoding `name`, or None when tiktoken is missing or, without
    `download`, when its file is not in the local cache."""
    try:
        import tiktoken
        import tiktoken.load
    except ImportError:
        return None
    if download:
        try:
            return tiktoken.get_encoding(name)
        except Exception:  # network, hash mismatch, unknown name: all mean "not available"
            return None
    reader: Callable[[str], bytes] = tiktoken.load.read_file

    def local_only(blobpath: str) -> bytes:
        if "://" in blobpath:
            raise _Offline(blobpath)
        return reader(blobpath)

    # tiktoken reads through this module function only on a cache miss; refusing
    # remote paths there turns "download" into "not available" without a request.
    tiktoken.load.read_file = local_only
    try:
        return tiktoken.get_encoding(name)
    except Exception:
        return None
    finally:
        tiktoken.load.read_file = reader  # type: ignore[assignment]


def choose(provider: str, model: str, mode: TokenizerMode | None = None) -> Choice:
    """The counter for a job's requests, and a note when it is approximate."""
    mode = mode or configured_mode()
    if provider == "gemini":
        # Google's documented rule of thumb: a token is about 4 characters.
        return Choice(
            Approximate(),
            "Google's documented approximation: about 4 characters per Gemini token",
        )
    if provider != "openai":
        return Choice(Approximate(), f"{provider} publishes no offline tokenizer")
    if mode == "approx":
        return Choice(Approximate(), "KILN_TOKENIZER=approx")
    name = encoding_name(model)
    encoding = load_encoding(name, download=mode == "tiktoken")
    if encoding is not None:
        return Choice(Tiktoken(encoding), "")
    if mode == "tiktoken":
        return Choice(Approximate(), f"tiktoken could not load {name} (network or install)")
    return Choice(
        Approximate(),
        f"tiktoken's {name} file is not cached; KILN_TOKENIZER=tiktoken downloads it once",
    )
