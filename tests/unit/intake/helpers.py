"""Helpers for writing request files in tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

CHAT: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}


def write_lines(path: Path, lines: list[Any]) -> Path:
    """One line per item: a str is written as is, anything else as JSON."""
    with path.open("wb") as out:
        for line in lines:
            out.write(line.encode() if isinstance(line, str) else orjson.dumps(line))
            out.write(b"\n")
    return path


def oai(cid: str, url: str = "/v1/chat/completions", **body: Any) -> dict[str, Any]:
    """An OpenAI batch line for gpt-4o-mini (body keys override)."""
    return {
        "custom_id": cid,
        "method": "POST",
        "url": url,
        "body": {"model": "gpt-4o-mini", **CHAT, **body},
    }


def ant(cid: str, **params: Any) -> dict[str, Any]:
    """An Anthropic batch line (params keys override)."""
    return {"custom_id": cid, "params": {"model": "claude-m", "max_tokens": 16, **CHAT, **params}}
