"""Kiln.submit's one pass agrees with validate_file and iter_requests: the same requests,
the same summary, and at a bad line the same reason that the report gives first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchkiln.intake import InputError, Limits, RequestPass, iter_requests, validate_file

from .helpers import CHAT, ant, oai, write_lines

BAD_LINES: list[Any] = [
    "{not json",
    "[1, 2]",
    {"body": CHAT},
    {"custom_id": "", "body": CHAT},
    {"custom_id": "   ", "body": CHAT},
    {"custom_id": "\t\n", "body": CHAT},
    {"custom_id": 7, "body": CHAT},
    {"custom_id": None, "body": CHAT},
    {"custom_id": "x" * 513, "body": CHAT},
    {"custom_id": "a\x00b", "body": CHAT},
    {**oai("z"), "method": "GET"},
    {**oai("z"), "url": "/v1/files"},
    {"custom_id": "z", "body": ["x"]},
    {"custom_id": "z"},
    {"custom_id": "z", "body": {**CHAT, "model": ""}},
    {"custom_id": "z", "body": {**CHAT, "model": "another-model"}},
    {**oai("z"), "url": "/v1/embeddings"},
    ant("z"),
    {"key": "z", "request": {"contents": []}},
]


def _first_report(path: Path, **kwargs: Any) -> str:
    with pytest.raises(InputError) as report:
        validate_file(path, **kwargs)
    return str(report.value.errors[0])


@pytest.mark.parametrize("bad", BAD_LINES)
def test_the_pass_stops_at_the_first_bad_line_with_the_reports_reason(
    tmp_path: Path, bad: Any
) -> None:
    """Two good lines, a bad one, a good one: the pass yields two, then names line 3
    exactly as validate_file's report does."""
    path = write_lines(tmp_path / "in.jsonl", [oai("a"), oai("b"), bad, oai("c")])
    reading = RequestPass(path, provider="openai")
    seen = []
    with pytest.raises(InputError) as stopped:
        for request in reading:
            seen.append(request.custom_id)
    assert seen == ["a", "b"]
    assert [str(e) for e in stopped.value.errors] == [_first_report(path, provider="openai")]
    assert stopped.value.errors[0].line == 3


def test_invalid_utf8_and_a_bom_are_handled_as_the_report_does(tmp_path: Path) -> None:
    """A BOM on line 1 is skipped; bytes that are not UTF-8 stop the pass with the offset."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"custom_id":"a","body":{"model":"m","x":1}}\n{"custom_id":"\xff"}\n'
    )
    reading = RequestPass(path, provider="openai")
    with pytest.raises(InputError) as stopped:
        assert [r.custom_id for r in reading] == ["a"]
    assert str(stopped.value.errors[0]) == _first_report(path, provider="openai")


def test_a_request_too_big_for_any_batch_stops_the_pass(tmp_path: Path) -> None:
    """The byte budget is checked per request, with the report's words."""
    path = write_lines(tmp_path / "in.jsonl", [oai("a"), oai("b", messages=[{"x": "y" * 500}])])
    limits = Limits(requests=10, bytes=400)
    with pytest.raises(InputError) as stopped:
        list(RequestPass(path, provider="openai", limits=limits))
    assert str(stopped.value.errors[0]) == _first_report(path, provider="openai", limits=limits)


@pytest.mark.parametrize(
    ("provider", "lines", "model"),
    [
        ("openai", [oai(f"r{i}", max_tokens=i + 1) for i in range(7)], None),
        ("openai", [{"custom_id": f"p{i}", "body": CHAT} for i in range(5)], "gpt-4o-mini"),
        ("anthropic", [ant(f"a{i}") for i in range(6)], None),
        (
            "gemini",
            [
                {"key": f"g{i}", "request": {"contents": [{"parts": [{"text": "hi"}]}]}}
                for i in range(4)
            ],
            "models/gemini-2.5-flash",
        ),
    ],
)
def test_a_valid_file_gives_the_requests_and_summary_of_the_two_older_passes(
    tmp_path: Path, provider: Any, lines: list[Any], model: str | None
) -> None:
    """Same seqs, lines, ids, bodies and wire sizes as iter_requests; the same count,
    bytes, fingerprint and shards as validate_file; each request in its planned shard."""
    path = write_lines(tmp_path / "in.jsonl", [lines[0], "", *lines[1:]])
    limits = Limits(requests=3, bytes=10**9)
    reading = RequestPass(path, provider=provider, model=model, limits=limits)
    got = list(reading)
    want = list(iter_requests(path, provider=provider, model=model))
    assert [r[:5] for r in got] == [r[:5] for r in want]
    assert [r.shard for r in got] == [r.seq // 3 for r in got]
    assert reading.summary() == validate_file(path, provider=provider, model=model, limits=limits)
