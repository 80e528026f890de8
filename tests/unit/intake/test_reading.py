"""Request files: every bad line reported with file, line and reason, before anything else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from batchkiln.errors import FileChanged
from batchkiln.intake import (
    MAX_CUSTOM_ID,
    InputError,
    Limits,
    iter_requests,
    validate_file,
)

from .helpers import CHAT, ant, oai, write_lines


def errors_of(path: Path, **kwargs: Any) -> list[str]:
    with pytest.raises(InputError) as info:
        validate_file(path, **{"provider": "openai", **kwargs})
    return [str(e) for e in info.value.errors]


def only_error(path: Path, **kwargs: Any) -> str:
    errors = errors_of(path, **kwargs)
    assert len(errors) == 1, errors
    return errors[0]


# --- the formats ---------------------------------------------------------------


def test_a_valid_openai_file_is_summarised(tmp_path: Path) -> None:
    """Model, endpoint, count, wire bytes and a 64-hex fingerprint come out of one pass."""
    path = write_lines(tmp_path / "in.jsonl", [oai("a"), oai("b")])
    summary = validate_file(path, provider="openai")
    assert (summary.path, summary.provider, summary.model, summary.endpoint, summary.count) == (
        str(path),
        "openai",
        "gpt-4o-mini",
        "/v1/chat/completions",
        2,
    )
    assert len(summary.fingerprint) == 64 and int(summary.fingerprint, 16) >= 0
    requests = list(iter_requests(path, provider="openai"))
    assert summary.wire_bytes == sum(r.wire_bytes for r in requests)
    assert [(s.start, s.stop) for s in summary.shards] == [(0, 2)]


def test_openai_lines_yield_the_endpoint_body(tmp_path: Path) -> None:
    """For OpenAI lines the vendor body is `body`, unchanged when it names the model."""
    path = write_lines(tmp_path / "in.jsonl", [oai("a", url="/v1/embeddings", input="x")])
    (request,) = iter_requests(path, provider="openai")
    assert request.body == {"model": "gpt-4o-mini", **CHAT, "input": "x"}
    assert validate_file(path, provider="openai").endpoint == "/v1/embeddings"


def test_anthropic_lines_yield_the_params(tmp_path: Path) -> None:
    """For Anthropic lines the vendor body is `params` and the endpoint /v1/messages."""
    path = write_lines(tmp_path / "in.jsonl", [ant("a"), ant("b")])
    summary = validate_file(path, provider="anthropic")
    assert (summary.model, summary.endpoint, summary.count) == ("claude-m", "/v1/messages", 2)
    first = next(iter_requests(path, provider="anthropic"))
    assert first.body == {"model": "claude-m", "max_tokens": 16, **CHAT}


def test_plain_lines_take_the_model_from_the_command(tmp_path: Path) -> None:
    """The plain form {custom_id, body} works for both vendors, the model set from --model."""
    path = write_lines(
        tmp_path / "in.jsonl", [{"custom_id": "a", "body": {**CHAT, "max_tokens": 9}}]
    )
    summary = validate_file(path, provider="anthropic", model="claude-haiku-4-5")
    assert summary.endpoint == "/v1/messages" and summary.model == "claude-haiku-4-5"
    (request,) = iter_requests(path, provider="anthropic", model="claude-haiku-4-5")
    assert request.body == {**CHAT, "max_tokens": 9, "model": "claude-haiku-4-5"}
    openai = validate_file(path, provider="openai", model="gpt-4o-mini")
    assert openai.endpoint == "/v1/chat/completions"


def test_plain_lines_take_the_openai_endpoint_from_the_argument(tmp_path: Path) -> None:
    """For openai, plain lines go to `endpoint` (default /v1/chat/completions)."""
    path = write_lines(tmp_path / "in.jsonl", [{"custom_id": "a", "body": {"input": "x"}}])
    summary = validate_file(path, provider="openai", model="m", endpoint="/v1/embeddings")
    assert summary.endpoint == "/v1/embeddings"


def test_requests_come_out_in_input_order_with_seq_and_line(tmp_path: Path) -> None:
    """iter_requests yields 0-based seq and 1-based line (blank lines counted) in order."""
    path = write_lines(tmp_path / "in.jsonl", ["", oai("a"), "  ", "", oai("b"), oai("c")])
    got = [(r.seq, r.line, r.custom_id) for r in iter_requests(path, provider="openai")]
    assert got == [(0, 2, "a"), (1, 5, "b"), (2, 6, "c")]


def test_user_ids_anthropic_cannot_take_are_kept_intact(tmp_path: Path) -> None:
    """Ids with spaces, dots or accents are fine: only wire ids go to the vendor."""
    path = write_lines(tmp_path / "in.jsonl", [ant("doc 1.txt/äö"), ant("x" * MAX_CUSTOM_ID)])
    validate_file(path, provider="anthropic")
    assert next(iter_requests(path, provider="anthropic")).custom_id == "doc 1.txt/äö"


def test_a_utf8_byte_order_mark_and_crlf_line_ends_are_accepted(tmp_path: Path) -> None:
    """Files saved by Windows editors (BOM, CRLF) validate like any other."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + orjson.dumps(oai("a")) + b"\r\n" + orjson.dumps(oai("b")))
    assert validate_file(path, provider="openai").count == 2


# --- line numbers and the error cap --------------------------------------------


def test_a_malformed_line_is_reported_with_its_own_line_number(tmp_path: Path) -> None:
    """Blank lines still count, so the number is the line an editor shows."""
    path = write_lines(tmp_path / "in.jsonl", [oai("a"), "", '{"custom_id": "b", ', oai("c")])
    assert only_error(path).startswith(f"{path}:3: not valid JSON (")


def test_every_error_is_reported_not_just_the_first(tmp_path: Path) -> None:
    """Three different bad lines give three errors, each with its line."""
    path = write_lines(
        tmp_path / "in.jsonl",
        [
            oai("a"),
            {"method": "POST", "url": "/v1/chat/completions", "body": CHAT},
            oai("a"),
            oai("b"),
            {**oai("d"), "method": "GET"},
        ],
    )
    assert errors_of(path) == [
        f"{path}:2: missing custom_id",
        f"{path}:3: duplicate custom_id 'a' (first seen on line 1)",
        f"{path}:5: method must be \"POST\", got 'GET'",
    ]


def test_errors_are_capped_with_a_count_of_the_rest(tmp_path: Path) -> None:
    """Eighty bad lines report fifty and say how many more there were."""
    path = write_lines(tmp_path / "in.jsonl", ["nope"] * 80)
    with pytest.raises(InputError) as info:
        validate_file(path, provider="openai", model="gpt-4o-mini")
    assert len(info.value.errors) == 50 and info.value.truncated == 30
    assert [e.line for e in info.value.errors] == list(range(1, 51))
    message = str(info.value).splitlines()
    assert len(message) == 51 and message[-1] == "... and 30 more"


def test_the_cap_can_be_changed(tmp_path: Path) -> None:
    """max_errors sets the cap."""
    path = write_lines(tmp_path / "in.jsonl", ["nope"] * 5)
    with pytest.raises(InputError) as info:
        validate_file(path, provider="openai", max_errors=2)
    assert (len(info.value.errors), info.value.truncated) == (2, 3)


def test_a_line_error_reads_file_line_reason(tmp_path: Path) -> None:
    """str(LineError) is `file:line: reason`, the form editors and CI logs link."""
    path = write_lines(tmp_path / "requests.jsonl", [oai("a"), oai("b"), oai("a")])
    with pytest.raises(InputError) as info:
        validate_file(path, provider="openai")
    (error,) = info.value.errors
    assert (error.file, error.line) == (str(path), 3)
    assert str(error) == f"{path}:3: duplicate custom_id 'a' (first seen on line 1)"


# --- each reason ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "a line must be a JSON object, got an array"),
        ('"just a string"', "a line must be a JSON object, got a string"),
        ({"body": CHAT}, "missing custom_id"),
        ({"custom_id": "", "body": CHAT}, "empty custom_id"),
        ({"custom_id": "   ", "body": CHAT}, "empty custom_id"),
        ({"custom_id": 7, "body": CHAT}, "custom_id must be a string, got a number"),
        ({"custom_id": None, "body": CHAT}, "custom_id must be a string, got null"),
        ({"custom_id": "x" * 513, "body": CHAT}, "custom_id is 513 characters, more than 512"),
        ({**oai("a"), "method": "GET"}, 'method must be "POST"'),
        ({**oai("a"), "method": None}, 'method must be "POST", got None'),
        ({**oai("a"), "url": "/v1/files"}, "url '/v1/files' is not a batch endpoint"),
        ({"custom_id": "a", "url": "/v1/chat/completions", "body": CHAT}, "method must be"),
        ({"custom_id": "a", "body": ["x"]}, "body must be a JSON object, got an array"),
        ({**oai("a"), "body": "hi"}, "body must be a JSON object, got a string"),
        ({"custom_id": "a"}, "a line needs body (plain or OpenAI form), params (Anthropic form)"),
        ({"custom_id": "a", "body": {**CHAT, "model": ""}}, "body.model must be a non-empty"),
        ({"custom_id": "a", "body": {**CHAT, "model": 4}}, "body.model must be a non-empty"),
        (ant("a"), "this is an Anthropic batch line (params); use --provider anthropic"),
    ],
)
def test_each_kind_of_bad_openai_line_has_a_clear_reason(
    tmp_path: Path, line: object, reason: str
) -> None:
    """The reason names what is wrong with the line."""
    path = write_lines(tmp_path / "in.jsonl", [line])
    error = only_error(path, model="gpt-4o-mini")
    assert error.startswith(f"{path}:1: ") and reason in error, error


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"max_tokens": None}, "params.max_tokens must be an integer >= 1, got None"),
        ({"max_tokens": 0}, "params.max_tokens must be an integer >= 1, got 0"),
        ({"max_tokens": True}, "params.max_tokens must be an integer >= 1, got True"),
        ({"max_tokens": 2.5}, "params.max_tokens must be an integer >= 1, got 2.5"),
        ({"messages": []}, "params.messages must be a non-empty array"),
        ({"messages": "hi"}, "params.messages must be a non-empty array"),
    ],
)
def test_anthropic_params_need_max_tokens_and_messages(
    tmp_path: Path, params: dict[str, Any], reason: str
) -> None:
    """Anthropic requests without max_tokens >= 1 or messages are rejected."""
    line = ant("a", **params)
    line["params"] = {k: v for k, v in line["params"].items() if v is not None}
    path = write_lines(tmp_path / "in.jsonl", [line])
    assert only_error(path, provider="anthropic") == f"{path}:1: {reason}"


def test_anthropic_plain_lines_need_max_tokens_too(tmp_path: Path) -> None:
    """The plain form for anthropic is checked like params (and says body.*)."""
    path = write_lines(tmp_path / "in.jsonl", [{"custom_id": "a", "body": CHAT}])
    error = only_error(path, provider="anthropic", model="claude-m")
    assert error == f"{path}:1: body.max_tokens must be an integer >= 1, got None"


def test_an_openai_file_given_for_anthropic_says_which_provider_to_use(tmp_path: Path) -> None:
    """An OpenAI batch line under provider anthropic names the fix."""
    path = write_lines(tmp_path / "in.jsonl", [oai("a")])
    assert only_error(path, provider="anthropic") == (
        f"{path}:1: this is an OpenAI batch line (method/url); use --provider openai"
        " or the plain form {custom_id, body}"
    )


def test_a_duplicate_custom_id_names_the_first_line(tmp_path: Path) -> None:
    """Every repeat of an id points back at its first occurrence."""
    path = write_lines(tmp_path / "in.jsonl", [oai("x"), oai("y"), "", oai("y"), oai("x")])
    assert errors_of(path) == [
        f"{path}:4: duplicate custom_id 'y' (first seen on line 2)",
        f"{path}:5: duplicate custom_id 'x' (first seen on line 1)",
    ]


def test_a_duplicate_of_a_bad_line_is_still_a_duplicate(tmp_path: Path) -> None:
    """The id of a line that fails later checks is still remembered."""
    path = write_lines(tmp_path / "in.jsonl", [{**oai("x"), "method": "GET"}, oai("x")])
    assert errors_of(path)[1] == f"{path}:2: duplicate custom_id 'x' (first seen on line 1)"


def test_mixed_models_in_one_file_are_rejected(tmp_path: Path) -> None:
    """One job has one model; the second model is reported against the first line."""
    path = write_lines(tmp_path / "in.jsonl", ["", oai("a"), oai("b", model="gpt-4o")])
    assert only_error(path) == (
        f"{path}:3: model 'gpt-4o' differs from 'gpt-4o-mini' (line 2); one job has one model"
    )


def test_mixed_endpoints_in_one_file_are_rejected(tmp_path: Path) -> None:
    """One OpenAI batch has one endpoint."""
    path = write_lines(tmp_path / "in.jsonl", [oai("a"), oai("b", url="/v1/responses")])
    assert only_error(path) == (
        f"{path}:2: endpoint '/v1/responses' differs from '/v1/chat/completions' (line 1);"
        " one job has one endpoint"
    )


def test_a_model_that_disagrees_with_the_command_is_rejected(tmp_path: Path) -> None:
    """--model and the line's model must agree."""
    path = write_lines(tmp_path / "in.jsonl", [oai("a")])
    error = only_error(path, model="gpt-4o")
    assert error.endswith(
        "model 'gpt-4o-mini' differs from 'gpt-4o' (--model); one job has one model"
    )


def test_an_endpoint_that_disagrees_with_the_command_is_rejected(tmp_path: Path) -> None:
    """--endpoint and the line's url must agree."""
    path = write_lines(tmp_path / "in.jsonl", [oai("a")])
    error = only_error(path, endpoint="/v1/responses")
    assert "differs from '/v1/responses' (--endpoint)" in error


def test_no_model_anywhere_is_rejected(tmp_path: Path) -> None:
    """Plain lines without a model need --model."""
    path = write_lines(tmp_path / "in.jsonl", [{"custom_id": "a", "body": CHAT}])
    assert only_error(path) == f"{path}:1: no model: set body.model on the line or pass --model"


@pytest.mark.parametrize("content", [b"", b"\n\n   \n", b"\r\n"])
def test_an_empty_file_is_rejected(tmp_path: Path, content: bytes) -> None:
    """A file with no requests (blank lines only) cannot become a job."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    assert only_error(path, model="m") == (
        f"{path}: no requests (the file is empty or only blank lines)"
    )


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    """A path that cannot be read is reported like a bad file, not a traceback."""
    error = only_error(tmp_path / "nope.jsonl")
    assert error == f"{tmp_path / 'nope.jsonl'}: cannot read: No such file or directory"


@pytest.mark.parametrize(
    ("provider", "endpoint", "reason"),
    [
        ("openai", "/v1/files", "--endpoint '/v1/files' is not a batch endpoint"),
        ("anthropic", "/v1/chat/completions", "Anthropic batches take /v1/messages only"),
        ("vertex", None, "unknown provider 'vertex'"),
        ("gemini", "/v1/messages", "Gemini batches take generateContent only"),
    ],
)
def test_a_bad_command_is_rejected_before_reading(
    tmp_path: Path, provider: str, endpoint: str | None, reason: str
) -> None:
    """A wrong provider or endpoint argument is one error about the file, no line."""
    path = write_lines(tmp_path / "in.jsonl", [oai("a")])
    with pytest.raises(InputError) as info:
        validate_file(path, provider=provider, endpoint=endpoint)  # type: ignore[arg-type]
    (error,) = info.value.errors
    assert error.line is None and reason in error.reason


def test_an_empty_model_argument_is_rejected(tmp_path: Path) -> None:
    """--model "" is a mistake, not "no model"."""
    path = write_lines(tmp_path / "in.jsonl", [{"custom_id": "a", "body": CHAT}])
    assert only_error(path, model=" ") == f"{path}: --model is empty"


def test_a_request_larger_than_a_batch_is_rejected_with_its_line(tmp_path: Path) -> None:
    """One request over the byte budget can never be sent: reported on its line."""
    limits = Limits(requests=100, bytes=1000, headroom=0.9)
    path = write_lines(tmp_path / "in.jsonl", [oai("a"), oai("big", pad="x" * 900), oai("c")])
    with pytest.raises(InputError) as info:
        validate_file(path, provider="openai", limits=limits)
    (error,) = info.value.errors
    assert error.line == 2
    assert "bytes on the wire, more than one batch may hold (900 bytes)" in error.reason


def test_three_distinct_errors_in_a_larger_file_give_three(tmp_path: Path) -> None:
    """Valid lines around the bad ones add no errors."""
    lines: list[Any] = [oai(f"r{i}") for i in range(200)]
    lines[10] = "{"
    lines[99] = {**oai("r99"), "url": "/v1/nope"}
    lines[150] = oai("r3")
    path = write_lines(tmp_path / "in.jsonl", lines)
    assert [e.split(": ")[0] for e in errors_of(path)] == [
        f"{path}:11",
        f"{path}:100",
        f"{path}:151",
    ]


# --- the second pass -------------------------------------------------------------


def test_the_second_pass_notices_a_line_that_changed(tmp_path: Path) -> None:
    """If the file is edited between the passes, iter_requests fails on the line."""
    path = write_lines(tmp_path / "in.jsonl", [oai("a"), oai("b")])
    validate_file(path, provider="openai")
    write_lines(path, [oai("a"), "{"])
    with pytest.raises(InputError, match=r"in\.jsonl:2: the file changed .*not valid JSON"):
        list(iter_requests(path, provider="openai"))


def test_the_second_pass_checks_the_fingerprint_when_asked(tmp_path: Path) -> None:
    """With expect_fingerprint, valid but different content fails after the last request."""
    path = write_lines(tmp_path / "in.jsonl", [oai("a"), oai("b")])
    summary = validate_file(path, provider="openai")
    assert (
        len(list(iter_requests(path, provider="openai", expect_fingerprint=summary.fingerprint)))
        == 2
    )
    write_lines(path, [oai("a"), oai("c")])
    with pytest.raises(FileChanged, match="no longer matches what was validated"):
        list(iter_requests(path, provider="openai", expect_fingerprint=summary.fingerprint))
