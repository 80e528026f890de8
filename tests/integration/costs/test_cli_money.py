"""`kiln validate`/`submit` show the estimate; `kiln cost` and `kiln events` on a job run
through the in-process simulator show the numbers and the timeline."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from batchkiln.cli import app

from .conftest import write_requests

runner = CliRunner()
SUBMIT = ["submit", "-p", "simulator", "-m", "gpt-4o-mini"]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KILN_DATABASE_URL", f"sqlite:///{tmp_path}/kiln.db")
    monkeypatch.setenv("COLUMNS", "200")
    write_requests(tmp_path / "in.jsonl", 12)
    return tmp_path


def test_validate_prints_the_estimate_at_batch_and_standard_prices(workdir: Path) -> None:
    """The plan ends with the dollar bound, the token counts and the counter used."""
    result = runner.invoke(app, ["validate", str(workdir / "in.jsonl"), "-m", "gpt-4o-mini"])
    assert result.exit_code == 0, result.output
    assert "at batch prices" in result.output and "at standard prices" in result.output
    assert "tokens counted by approximation" in result.output
    as_json = runner.invoke(
        app, ["validate", str(workdir / "in.jsonl"), "-m", "gpt-4o-mini", "--json"]
    )
    estimate = orjson.loads(as_json.output)["estimate"]
    assert estimate["requests"] == 12 and estimate["output_tokens"] == 12 * 64
    assert estimate["cost_usd"] == pytest.approx(estimate["list_cost_usd"] / 2)


def test_submit_over_budget_exits_3_with_the_numbers_and_sends_nothing(workdir: Path) -> None:
    """--budget below the estimate: exit code 3, the refusal, and no job stored."""
    result = runner.invoke(
        app,
        [*SUBMIT, str(workdir / "in.jsonl"), "--budget", "0.000001", "--key", "tiny"],
    )
    assert result.exit_code == 3, result.output
    assert "refused" in result.output and "nothing was sent" in result.output
    assert runner.invoke(app, ["status", "tiny"]).exit_code == 2


def test_cost_and_events_on_a_finished_job(workdir: Path) -> None:
    """After a simulated run: estimate vs actual with the saving, and a JSONL timeline."""
    submitted = runner.invoke(
        app,
        [*SUBMIT, str(workdir / "in.jsonl"), "--key", "nightly", "--budget", "1"],
    )
    assert submitted.exit_code == 0, submitted.output
    assert "estimate: at most $" in submitted.output

    report = orjson.loads(runner.invoke(app, ["cost", "nightly", "--json"]).output)
    assert report["actual"]["requests"] == 12
    assert 0 < report["actual"]["cost_usd"] <= report["estimate"]["cost_usd"]
    assert report["actual"]["saving_usd"] == pytest.approx(report["actual"]["cost_usd"])
    assert len(report["chains"]) == 1

    shown = runner.invoke(app, ["cost", "nightly"])
    assert "saving against standard prices" in shown.output and "(50%)" in shown.output
    listed = runner.invoke(app, ["cost"])
    assert "cost of recent jobs" in listed.output and "this month" in listed.output

    lines = runner.invoke(app, ["events", "nightly", "--json"]).output.splitlines()
    events = [orjson.loads(line) for line in lines]
    kinds = [e["kind"] for e in events]
    for kind in ("job.created", "cost.estimated", "submit.attempt", "cost.recorded", "job.done"):
        assert kind in kinds
    assert all({"at", "from", "to", "reason", "worker"} <= set(e) for e in events)
    timeline = runner.invoke(app, ["events", "nightly"]).output
    assert "not_submitted → submitting" in timeline and "kept until" in timeline
