"""The `kiln` command end to end, on the in-process simulator and a temporary store."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from batchkiln.cli import app

from .conftest import write_requests

runner = CliRunner()


@pytest.fixture(autouse=True)
def _store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_DATABASE_URL", f"sqlite:///{tmp_path}/kiln.db")
    monkeypatch.chdir(tmp_path)


def _json(output: str) -> dict[str, object]:
    return orjson.loads(output[output.index("{") :])  # type: ignore[no-any-return]


def test_submit_on_the_simulator_runs_to_done_and_prints_json(tmp_path: Path) -> None:
    """`submit --provider simulator --json` ends done with job id, key and state."""
    path = write_requests(tmp_path / "in.jsonl", 20)
    result = runner.invoke(
        app,
        [
            "submit",
            str(path),
            "--provider",
            "simulator",
            "--model",
            "gpt-4o-mini",
            "--key",
            "cli-1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = _json(result.stdout)
    assert payload["key"] == "cli-1" and payload["state"] == "done"
    assert payload["outcomes"] == {"succeeded": 20}
    assert str(payload["job_id"]).startswith("job_")


def test_status_takes_the_job_id_or_the_key(tmp_path: Path) -> None:
    """Wherever a command takes JOB, the id and the idempotency key both work."""
    path = write_requests(tmp_path / "in.jsonl", 3)
    submitted = runner.invoke(
        app,
        ["submit", str(path), "-p", "simulator", "-m", "gpt-4o-mini", "--key", "cli-2", "--json"],
    )
    job_id = _json(submitted.stdout)["job_id"]
    by_key = runner.invoke(app, ["status", "cli-2", "--json"])
    by_id = runner.invoke(app, ["status", str(job_id), "--json"])
    assert by_key.exit_code == by_id.exit_code == 0
    assert _json(by_key.stdout)["job_id"] == _json(by_id.stdout)["job_id"] == job_id
    listed = runner.invoke(app, ["status"])
    assert "cli-2" in listed.stdout


def test_results_are_written_in_input_order_under_the_users_ids(tmp_path: Path) -> None:
    """`results -o` writes one line per request, in input order, with the user's custom_id."""
    path = write_requests(tmp_path / "in.jsonl", 7, prefix="doc-")
    runner.invoke(
        app, ["submit", str(path), "-p", "simulator", "-m", "gpt-4o-mini", "--key", "cli-3"]
    )
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["results", "cli-3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [line["custom_id"] for line in lines] == [f"doc-{i}" for i in range(7)]
    assert all(line["outcome"] == "succeeded" and line["response"] for line in lines)


def test_a_malformed_file_is_rejected_with_its_line_before_anything_is_stored(
    tmp_path: Path,
) -> None:
    """A bad line exits 2 naming file and line; no job is created."""
    path = write_requests(tmp_path / "in.jsonl", 3)
    with path.open("ab") as out:
        out.write(b'{"custom_id": "broken", "method": "POST"\n')
    result = runner.invoke(app, ["submit", str(path), "-p", "simulator", "-m", "gpt-4o-mini"])
    assert result.exit_code == 2
    assert f"{path}:4" in result.output and "not valid JSON" in result.output
    listed = runner.invoke(app, ["status", "--json"])
    assert orjson.loads(listed.stdout) == []


def test_validate_prints_the_plan(tmp_path: Path) -> None:
    """`validate` reports requests, shards and bytes and sends nothing."""
    path = write_requests(tmp_path / "in.jsonl", 5)
    result = runner.invoke(app, ["validate", str(path), "--model", "gpt-4o-mini", "--json"])
    assert result.exit_code == 0, result.output
    plan = _json(result.stdout)
    assert plan["requests"] == 5 and len(plan["shards"]) == 1  # type: ignore[arg-type]


def test_submit_exits_non_zero_when_requests_fail_for_good(tmp_path: Path) -> None:
    """A job that ends with permanent failures makes `submit` exit 1."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b'{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "x"}]}}\n'
    )
    result = runner.invoke(
        app,
        [
            "submit",
            str(path),
            "-p",
            "simulator",
            "-m",
            "gpt-4o-mini",
            "--max-attempts",
            "1",
            "--json",
        ],
        env={"KILN_SIMULATOR_FAULTS": "permanent=1"},
    )
    assert result.exit_code == 1, result.output
    assert _json(result.stdout)["outcomes"] == {"failed": 1}


def test_demo_runs_a_batch_from_submit_to_done() -> None:
    """`kiln demo` walks the lifecycle and says where the results are."""
    result = runner.invoke(app, ["demo", "--requests", "40"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "is done" in result.output and "partial -> downloading -> done" in result.output
    assert Path(".kiln/demo-results.jsonl").exists()


def test_demo_runs_on_gemini_with_no_keys() -> None:
    """`kiln demo --provider gemini` walks the lifecycle on the Gemini simulator."""
    result = runner.invoke(
        app,
        ["demo", "--provider", "gemini", "--requests", "40", "--no-scenarios"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "gemini-2.5-flash" in result.output or "batches/" in result.output
    assert "is done" in result.output and "-> downloading -> done" in result.output


def test_submit_on_the_gemini_simulator_runs_to_done(tmp_path: Path) -> None:
    """`--provider simulator-gemini` takes Gemini's own lines and ends done."""
    path = write_requests(tmp_path / "in.jsonl", 8, vendor="gemini")
    result = runner.invoke(
        app,
        ["submit", str(path), "-p", "simulator-gemini", "-m", "gemini-2.5-flash", "--json"],
    )
    assert result.exit_code == 0, result.output
    payload = _json(result.stdout)
    assert payload["state"] == "done" and payload["outcomes"] == {"succeeded": 8}


def test_status_shows_a_gemini_batch_stalled_in_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Gemini batch PENDING past KILN_STALL_AFTER_SECONDS: `kiln status` says so."""
    monkeypatch.setenv("KILN_STALL_AFTER_SECONDS", "600")
    monkeypatch.setenv("KILN_SIMULATOR_FAULTS", "queue=1800")
    path = write_requests(tmp_path / "in.jsonl", 2, vendor="gemini")
    submitted = runner.invoke(
        app,
        ["submit", str(path), "-p", "simulator-gemini", "-m", "gemini-2.5-flash", "--key", "g1"],
    )
    assert submitted.exit_code == 0, submitted.output
    as_json = runner.invoke(app, ["status", "g1", "--json"])
    (stalled,) = _json(as_json.stdout)["stalled"]  # type: ignore[misc]
    assert "BATCH_STATE_PENDING" in stalled["reason"]
    shown = runner.invoke(app, ["status", "g1"])
    assert "stalled" in shown.stdout and stalled["batch_id"] in shown.stdout


def test_config_prints_the_effective_settings_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`kiln config --json` shows every variable; keys and URL passwords never appear."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    monkeypatch.setenv("KILN_DATABASE_URL", "postgresql://kiln:hunter2@db.internal/kiln")
    monkeypatch.setenv("KILN_BUDGET_USD", "25")
    result = runner.invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    shown = _json(result.output)
    assert shown["OPENAI_API_KEY"] == "****" and shown["KILN_BUDGET_USD"] == "25.0"
    assert shown["KILN_DATABASE_URL"] == "postgresql://kiln:***@db.internal/kiln"
    assert "sk-very-secret" not in result.output and "hunter2" not in result.output


def test_a_key_shaped_like_a_job_id_is_refused_and_never_lands_on_that_job(
    tmp_path: Path,
) -> None:
    """`submit --key <another job's id>` is refused (exit 2, one line); status by that
    id still shows the job that owns it."""
    path = write_requests(tmp_path / "in.jsonl", 2)
    first = runner.invoke(
        app, ["submit", str(path), "-p", "simulator", "-m", "gpt-4o-mini", "--json"]
    )
    job_id = str(_json(first.stdout)["job_id"])
    other = write_requests(tmp_path / "other.jsonl", 3, prefix="o")
    refused = runner.invoke(
        app, ["submit", str(other), "-p", "simulator", "-m", "gpt-4o-mini", "--key", job_id]
    )
    assert refused.exit_code == 2
    assert "reserved for batchkiln's own ids" in refused.stderr
    assert "Traceback" not in refused.output
    shown = runner.invoke(app, ["status", job_id, "--json"])
    assert _json(shown.stdout)["job_id"] == job_id and _json(shown.stdout)["requests"] == 2
