"""The CLI boundary's mapping from what was raised to the contract's exit code and line."""

from __future__ import annotations

import orjson
import pytest

from batchkiln.cli.contract import (
    EXIT_CODES,
    CommandError,
    ExitCode,
    code_for,
    handle,
    job_exit_code,
)
from batchkiln.errors import (
    ConfigError,
    DatabaseURLError,
    InputError,
    InvalidKey,
    KeyConflict,
    LineError,
    NotFound,
    StoreError,
    VendorError,
)


def test_every_code_of_the_contract_has_one_row() -> None:
    """The table names each exit code once, in order."""
    codes = [int(code) for code, _ in EXIT_CODES]
    assert codes == sorted(set(codes)) == [int(c) for c in ExitCode]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("KILN_X: bad", name="KILN_X"), 2),
        (DatabaseURLError("the database URL 'x' is not a URL"), 2),
        (InputError([LineError("in.jsonl", 3, "bad")]), 2),
        (InvalidKey("idempotency key is empty"), 2),
        (KeyConflict("k"), 2),
        (NotFound("no job"), 2),
        (StoreError("cannot reach the database at h:5432"), 4),
        (VendorError("down", retryable=True), 4),
        (CommandError("--webhook-port 1: in use"), 2),
    ],
)
def test_each_error_kind_has_its_exit_code(error: Exception, code: int) -> None:
    """ConfigError (even about the store) is 2; the store or a vendor failing is 4."""
    assert isinstance(error, Exception)
    assert code_for(error) == code  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "counts", "code"),
    [
        ("done", {"succeeded": 300}, 0),
        ("done", {"succeeded": 1, "cancelled": 299}, 1),
        ("done", {"succeeded": 2, "failed": 1}, 1),
        ("done", {"exhausted": 1}, 1),
        ("awaiting_retry", {"succeeded": 1, "pending": 1}, 1),
        ("in_progress", {"pending": 3}, 0),
    ],
)
def test_a_job_that_did_not_fully_succeed_exits_1(
    state: str, counts: dict[str, int], code: int
) -> None:
    """Cancelled, failed, exhausted or waiting requests make a finished job exit 1."""
    assert job_exit_code(state, counts) == code


def test_a_genuine_bug_prints_its_traceback_and_asks_for_a_report(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Anything that is not a known error is a bug: exit 70, traceback, report line."""
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError as exc:
        code = handle(exc, ["status", "--json"])
    out, err = capsys.readouterr()
    assert code == ExitCode.BUG
    assert "Traceback" in err and "please report it" in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: internal error: ZeroDivisionError: division by zero"
    ]
    assert orjson.loads(out)["error"]["type"] == "bug"


def test_an_input_error_lists_its_lines_in_the_json_envelope(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One `error:` line, the other bad lines after it, and every line in the JSON."""
    exc = InputError([LineError("in.jsonl", 2, "not valid JSON"), LineError("in.jsonl", 5, "x")])
    assert handle(exc, ["validate", "in.jsonl", "--json"]) == ExitCode.BAD_INPUT
    out, err = capsys.readouterr()
    assert err.splitlines() == ["error: in.jsonl:2: not valid JSON", "in.jsonl:5: x"]
    envelope = orjson.loads(out)["error"]
    assert envelope["type"] == "input" and envelope["exit_code"] == 2
    assert envelope["errors"][1] == {"file": "in.jsonl", "line": 5, "reason": "x"}
