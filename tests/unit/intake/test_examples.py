"""The example request files are valid and reproducible from their script."""

from __future__ import annotations

import runpy
from pathlib import Path

from batchkiln.intake import validate_file

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_the_openai_example_is_a_valid_300_request_job() -> None:
    """examples/requests-openai.jsonl: 300 chat completions for gpt-4o-mini, one shard."""
    summary = validate_file(EXAMPLES / "requests-openai.jsonl", provider="openai")
    assert (summary.count, summary.model, summary.endpoint, len(summary.shards)) == (
        300,
        "gpt-4o-mini",
        "/v1/chat/completions",
        1,
    )


def test_the_plain_example_works_for_both_vendors_with_a_model() -> None:
    """examples/requests-plain.jsonl validates for openai and anthropic given --model."""
    path = EXAMPLES / "requests-plain.jsonl"
    assert validate_file(path, provider="anthropic", model="claude-haiku-4-5").count == 40
    assert validate_file(path, provider="openai", model="gpt-4o-mini").count == 40


def test_the_examples_are_regenerated_byte_for_byte(tmp_path: Path) -> None:
    """make_examples.py is deterministic and the committed files are its output."""
    main = runpy.run_path(str(EXAMPLES / "make_examples.py"))["main"]
    main(["make_examples.py", str(tmp_path)])
    for name in ("requests-openai.jsonl", "requests-plain.jsonl"):
        assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes(), name
