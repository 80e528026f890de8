"""The wire size we shard by is the size the adapters actually send."""

from __future__ import annotations

import json
from pathlib import Path

from batchkiln.intake import batch_tag, iter_requests, validate_file, wire_line_bytes
from batchkiln.providers.base import CreateSpec, WireRequest
from batchkiln.providers.openai import build_input

from .helpers import ant, oai, write_lines

AWKWARD = 'héllo ✓ 😀 "quoted" \\ back\nslash\t\u0001 '


def test_openai_wire_sizes_add_up_to_the_uploaded_file(tmp_path: Path) -> None:
    """Sum of wire_bytes == len(the input file the OpenAI adapter builds), to the byte."""
    lines = [
        oai(f"id{i}", url="/v1/responses", input=AWKWARD * i, top_p=i / 7) for i in range(1, 150)
    ]
    path = write_lines(tmp_path / "in.jsonl", lines)
    summary = validate_file(path, provider="openai")
    tag = batch_tag("k:shard0:attempt1")
    requests = list(iter_requests(path, provider="openai"))
    spec = CreateSpec(
        batch_key="k:shard0:attempt1",
        tag=tag,
        model=summary.model,
        endpoint=summary.endpoint,
        requests=[WireRequest(f"{tag}-{r.seq}", r.body) for r in requests],
    )
    assert len(build_input(spec)) == summary.wire_bytes == sum(r.wire_bytes for r in requests)


def test_anthropic_wire_sizes_match_the_sdks_encoding(tmp_path: Path) -> None:
    """Sum of wire_bytes == the create body as the SDK encodes it, less its 14-byte wrapper."""
    lines = [ant(f"id{i}", system=AWKWARD * i, temperature=i / 7) for i in range(1, 150)]
    path = write_lines(tmp_path / "in.jsonl", lines)
    summary = validate_file(path, provider="anthropic")
    tag = batch_tag("k:shard0:attempt1")
    body = {
        "requests": [
            {"custom_id": f"{tag}-{r.seq}", "params": r.body}
            for r in iter_requests(path, provider="anthropic")
        ]
    }
    # anthropic._utils._json.openapi_dumps: compact separators, ensure_ascii=False.
    sent = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    wrapper = len('{"requests":[') + len("]}") - len(",")
    assert len(sent.encode()) - wrapper == summary.wire_bytes


def test_the_sequence_number_is_counted_in_the_wire_id() -> None:
    """Request 10 takes one byte more than request 9: its wire id has one more digit."""
    assert wire_line_bytes("openai", "/v1/embeddings", 50, 10) == (
        wire_line_bytes("openai", "/v1/embeddings", 50, 9) + 1
    )
