"""Request files: every bad line reported with file, line and reason, before anything else."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from batchkiln.intake import InputError, iter_requests, validate_file

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def _write(path: Path, lines: list[object | str]) -> Path:
    with path.open("wb") as out:
        for line in lines:
            out.write((line if isinstance(line, str) else orjson.dumps(line).decode()).encode())
            out.write(b"\n")
    return path


def _oai(cid: str, **body: object) -> dict[str, object]:
    return {
        "custom_id": cid,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", **CHAT, **body},
    }


def _errors(path: Path, **kwargs: object) -> list[str]:
    with pytest.raises(InputError) as info:
        validate_file(path, **{"provider": "openai", **kwargs})  # type: ignore[arg-type]
    return [str(e) for e in info.value.errors]


def test_a_valid_openai_file_is_summarised(tmp_path: Path) -> None:
    """Model, endpoint, count and a 64-hex fingerprint come out of one pass."""
    path = _write(tmp_path / "in.jsonl", [_oai("a"), _oai("b")])
    summary = validate_file(path, provider="openai")
    assert (summary.model, summary.endpoint, summary.count) == (
        "gpt-4o-mini",
        "/v1/chat/completions",
        2,
    )
    assert len(summary.fingerprint) == 64 and summary.wire_bytes > 0


def test_a_malformed_line_is_reported_with_its_own_line_number(tmp_path: Path) -> None:
    """Blank lines still count, so the number is the line an editor shows."""
    path = _write(tmp_path / "in.jsonl", [_oai("a"), "", '{"custom_id": "b", ', _oai("c")])
    (error,) = _errors(path)
    assert error.startswith(f"{path}:3: not valid JSON")


def test_every_error_is_reported_not_just_the_first(tmp_path: Path) -> None:
    """Three different bad lines give three errors, each with its line."""
    path = _write(
        tmp_path / "in.jsonl",
        [
            _oai("a"),
            {"method": "POST", "url": "/v1/chat/completions", "body": CHAT},
            _oai("a"),
            {**_oai("d"), "method": "GET"},
        ],
    )
    errors = _errors(path)
    assert [e.split(": ", 1)[0] for e in errors] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert "missing or empty custom_id" in errors[0]
    assert "duplicate custom_id 'a' (first seen on line 1)" in errors[1]
    assert 'method must be "POST"' in errors[2]


def test_errors_are_capped_with_a_count_of_the_rest(tmp_path: Path) -> None:
    """Eighty bad lines report fifty and say how many more there were."""
    path = _write(tmp_path / "in.jsonl", ["nope"] * 80)
    with pytest.raises(InputError) as info:
        validate_file(path, provider="openai", model="gpt-4o-mini")
    assert len(info.value.errors) == 50 and info.value.truncated == 30
    assert str(info.value).endswith("... and 30 more")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ({**_oai("a"), "url": "/v1/files"}, "is not a batch endpoint"),
        ({"custom_id": "a", "body": ["x"]}, "must be a JSON object"),
        ({"custom_id": "", "body": CHAT}, "missing or empty custom_id"),
        ({"custom_id": "a", "params": {"max_tokens": 5, **CHAT}}, "use --provider anthropic"),
        ({"custom_id": "a"}, "a line needs body"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_each_kind_of_bad_line_has_a_clear_reason(
    tmp_path: Path, line: object, reason: str
) -> None:
    """The reason names what is wrong with the line."""
    path = _write(tmp_path / "in.jsonl", [line])
    (error,) = _errors(path, model="gpt-4o-mini")
    assert error.startswith(f"{path}:1: ") and reason in error


def test_mixed_models_in_one_file_are_rejected(tmp_path: Path) -> None:
    """One job has one model; the second model is reported against the first line."""
    path = _write(tmp_path / "in.jsonl", [_oai("a"), _oai("b", model="gpt-4o")])
    (error,) = _errors(path)
    assert "model 'gpt-4o' differs from 'gpt-4o-mini' (line 1)" in error


def test_mixed_endpoints_in_one_file_are_rejected(tmp_path: Path) -> None:
    """One OpenAI batch has one endpoint."""
    path = _write(tmp_path / "in.jsonl", [_oai("a"), {**_oai("b"), "url": "/v1/responses"}])
    (error,) = _errors(path)
    assert f"{path}:2" in error and "endpoint" in error


def test_a_model_that_disagrees_with_the_command_is_rejected(tmp_path: Path) -> None:
    """--model and the line's model must agree."""
    path = _write(tmp_path / "in.jsonl", [_oai("a")])
    (error,) = _errors(path, model="gpt-4o")
    assert "differs from 'gpt-4o' (--model)" in error


def test_an_empty_file_is_rejected(tmp_path: Path) -> None:
    """A file with no requests cannot become a job."""
    path = _write(tmp_path / "in.jsonl", ["", "   "])
    assert _errors(path, model="m") == [f"{path}: the file has no requests"]


def test_plain_lines_take_the_model_from_the_command(tmp_path: Path) -> None:
    """The plain form {custom_id, body} works for both vendors with --model."""
    path = _write(tmp_path / "in.jsonl", [{"custom_id": "a", "body": {**CHAT, "max_tokens": 9}}])
    summary = validate_file(path, provider="anthropic", model="claude-haiku-4-5")
    assert summary.endpoint == "/v1/messages"
    (request,) = iter_requests(path, provider="anthropic", model="claude-haiku-4-5")
    assert request.body["model"] == "claude-haiku-4-5" and request.custom_id == "a"


def test_anthropic_params_need_max_tokens_and_messages(tmp_path: Path) -> None:
    """Anthropic requests without max_tokens >= 1 or messages are rejected."""
    path = _write(
        tmp_path / "in.jsonl",
        [
            {"custom_id": "a", "params": {"model": "m", "messages": [{"role": "user"}]}},
            {"custom_id": "b", "params": {"model": "m", "max_tokens": 4, "messages": []}},
        ],
    )
    with pytest.raises(InputError) as info:
        validate_file(path, provider="anthropic")
    reasons = [e.reason for e in info.value.errors]
    assert "max_tokens" in reasons[0] and "messages" in reasons[1]


def test_user_ids_anthropic_cannot_take_are_kept_intact(tmp_path: Path) -> None:
    """Ids with spaces or dots are fine: only wire ids go to the vendor."""
    path = _write(
        tmp_path / "in.jsonl",
        [{"custom_id": "doc 1.txt/äö", "params": {"model": "m", "max_tokens": 4, **CHAT}}],
    )
    (request,) = iter_requests(path, provider="anthropic")
    assert request.custom_id == "doc 1.txt/äö"


def test_requests_come_out_in_input_order_with_line_numbers(tmp_path: Path) -> None:
    """iter_requests yields seq and line for every request."""
    path = _write(tmp_path / "in.jsonl", [_oai("a"), "", _oai("b")])
    assert [(r.seq, r.line, r.custom_id) for r in iter_requests(path, provider="openai")] == [
        (0, 1, "a"),
        (1, 3, "b"),
    ]


def test_the_same_content_has_the_same_fingerprint_and_one_byte_changes_it(
    tmp_path: Path,
) -> None:
    """Whitespace and key order do not matter; content does."""
    first = _write(tmp_path / "a.jsonl", [_oai("a"), _oai("b")])
    second = tmp_path / "b.jsonl"
    second.write_text(
        "\n".join(orjson.dumps(_oai(c), option=orjson.OPT_SORT_KEYS).decode() for c in "ab")
        + "\n\n"
    )
    changed = _write(tmp_path / "c.jsonl", [_oai("a"), _oai("c")])
    fp = [validate_file(p, provider="openai").fingerprint for p in (first, second, changed)]
    assert fp[0] == fp[1] != fp[2]


def test_memory_does_not_grow_with_request_size(tmp_path: Path) -> None:
    """Four times larger requests need no more memory: lines are never held."""
    import tracemalloc

    def peak(name: str, n: int, pad: int) -> int:
        path = tmp_path / f"{name}.jsonl"
        with path.open("wb") as out:
            for i in range(n):
                out.write(orjson.dumps(_oai(f"r{i}", extra="x" * pad)) + b"\n")
        tracemalloc.start()
        validate_file(path, provider="openai")
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small = peak("small", 4_000, 500)  # ~2.4 MB of input
    large = peak("large", 4_000, 2_000)  # ~8.4 MB of input
    assert large < small * 1.3, (small, large)
    # What does grow is one duplicate-detection entry per request (~100 bytes).
    assert large < 4_000 * 200, large
