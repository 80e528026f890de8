"""The CLI's error and exit-code contract, on real `kiln` subprocesses.

Every case is one ordinary mistake (or one ending of a job) and asserts the exit code of
the documented table, exactly one `error:` line naming the thing, no traceback, nothing
stored or sent and no residue files. The cases run concurrently in one module fixture
(each `kiln` start costs about a second of CPU on this machine), each in its own folder
with its own fresh SQLite database; PostgreSQL cases use a database made for the case.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from batchkiln.cli.contract import EXIT_CODES, ExitCode

from .cli_harness import (
    HELD,
    IN_CI,
    KILN,
    OK_LINE,
    PG_BASE,
    SECRET,
    SIM,
    Case,
    Ran,
    bad_prices,
    base_env,
    db_bytes,
    files,
    jobs_stored,
    make_fifo,
    port_in_use,
    postgres_db,
    postgres_reachable,
    psql,
    read_only,
    run,
)

CASES = [
    # options, at parse time
    Case(
        "validate-unknown-provider",
        ["validate", "ok.jsonl", "-p", "bogus"],
        2,
        ["--provider", "bogus"],
    ),
    Case(
        "submit-unknown-provider",
        ["submit", "ok.jsonl", "-p", "bogus", "--json"],
        2,
        ["--provider", "bogus"],
    ),
    Case("key-not-ascii", ["submit", "ok.jsonl", *SIM, "--key", "clé"], 2, ["--key", "position 2"]),
    Case("key-empty", ["submit", "ok.jsonl", *SIM, "--key", ""], 2, ["--key", "empty"]),
    Case(
        "key-300-chars",
        ["submit", "ok.jsonl", *SIM, "--key", "k" * 300],
        2,
        ["--key", "300 characters"],
    ),
    Case(
        "max-attempts-0",
        ["submit", "ok.jsonl", *SIM, "--max-attempts", "0"],
        2,
        ["--max-attempts", "got 0"],
    ),
    Case("budget-negative", ["submit", "ok.jsonl", *SIM, "--budget", "-1"], 2, ["--budget", "-1"]),
    Case("budget-nan", ["submit", "ok.jsonl", *SIM, "--budget", "nan"], 2, ["--budget", "finite"]),
    Case("worker-idle-cap-negative", ["worker", "--idle-cap", "-5"], 2, ["--idle-cap", "-5"]),
    Case("worker-batch-size-0", ["worker", "--batch-size", "0"], 2, ["--batch-size", "got 0"]),
    Case("worker-batch-size-negative", ["worker", "--batch-size", "-3"], 2, ["--batch-size", "-3"]),
    Case(
        "worker-unknown-mode",
        ["worker", "--mode", "sometimes"],
        2,
        ["--mode", "poll, webhook, hybrid"],
    ),
    Case("demo-zero-requests", ["demo", "--requests", "0"], 2, ["--requests"]),
    Case("demo-unknown-vendor", ["demo", "--vendor", "acme"], 2, ["--vendor", "acme"]),
    Case("cost-limit-0", ["cost", "--limit", "0"], 2, ["--limit"]),
    Case("simulator-port-too-big", ["simulator", "--port", "70000"], 2, ["--port", "65535"]),
    Case("unknown-option", ["status", "--frobnicate"], 2, ["--frobnicate", "kiln status --help"]),
    Case("unknown-command", ["frobnicate"], 2, ["frobnicate"]),
    Case("missing-argument", ["validate"], 2, ["FILE", "kiln validate"]),
    Case(
        "webhook-port-in-use",
        ["worker", "--webhook-port", "{port}"],
        2,
        ["--webhook-port", "in use"],
        env={"OPENAI_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
        setup=port_in_use,
    ),
    # configuration: the variable is named
    Case(
        "budget-usd-not-a-number",
        ["status"],
        2,
        ["KILN_BUDGET_USD", "abc"],
        env={"KILN_BUDGET_USD": "abc"},
    ),
    Case(
        "budget-period-year",
        ["status"],
        2,
        ["KILN_BUDGET_PERIOD", "year"],
        env={"KILN_BUDGET_PERIOD": "year"},
    ),
    Case(
        "tokenizer-bogus",
        ["status"],
        2,
        ["KILN_TOKENIZER", "bogus"],
        env={"KILN_TOKENIZER": "bogus"},
    ),
    Case(
        "prices-file-missing",
        ["status"],
        2,
        ["KILN_PRICES_FILE", "nope.json"],
        env={"KILN_PRICES_FILE": "nope.json"},
    ),
    Case(
        "prices-file-malformed",
        ["validate", "ok.jsonl", "-m", "gpt-4o-mini"],
        2,
        ["KILN_PRICES_FILE", "prices.json"],
        setup=bad_prices,
    ),
    Case(
        "simulator-faults-bad",
        ["submit", "ok.jsonl", *SIM],
        2,
        ["KILN_SIMULATOR_FAULTS", "bogus"],
        env={"KILN_SIMULATOR_FAULTS": "bogus=1"},
    ),
    Case(
        "no-openai-key",
        ["submit", "ok.jsonl", "-p", "openai", "-m", "gpt-4o-mini"],
        2,
        ["OPENAI_API_KEY", "simulator"],
    ),
    # the store
    Case(
        "database-url-not-a-url",
        ["status"],
        2,
        ["notaurl", "sqlite:///"],
        env={"KILN_DATABASE_URL": "notaurl"},
    ),
    Case(
        "database-url-mysql",
        ["status", "--json"],
        2,
        ["mysql", "postgresql://"],
        env={"KILN_DATABASE_URL": f"mysql://root:{SECRET}@127.0.0.1/kiln"},
        hidden=[SECRET],
    ),
    Case(
        "database-closed-port",
        ["status"],
        4,
        ["the database at 127.0.0.1:{closed}"],
        env={"KILN_DATABASE_URL": f"postgresql://postgres:{SECRET}@127.0.0.1:{{closed}}/test"},
        hidden=[SECRET],
    ),
    Case(
        "database-unknown",
        ["status"],
        4,
        ["kiln_no_such_db", "does not exist"],
        env={"KILN_DATABASE_URL": f"{PG_BASE}/kiln_no_such_db"},
        postgres=True,
    ),
    Case(
        "database-unknown-user",
        ["status"],
        4,
        ["kiln_no_such_user", "127.0.0.1"],
        env={"KILN_DATABASE_URL": "postgresql://kiln_no_such_user@127.0.0.1:5432/test"},
        postgres=True,
    ),
    Case(
        "database-random-bytes",
        ["status"],
        4,
        ["kiln.db", "not a SQLite database", "backup"],
        setup=db_bytes(os.urandom(4096)),
    ),
    Case(
        "database-truncated",
        ["status"],
        4,
        ["kiln.db", "corrupt", "backup"],
        setup=db_bytes(b"SQLite format 3\x00" + b"\x10\x00" + b"\x00" * 90),
    ),
    Case(
        "database-is-jsonl",
        ["status"],
        4,
        ["kiln.db", "not a SQLite database"],
        setup=db_bytes(OK_LINE * 40),
    ),
    Case(
        "database-read-only-file",
        ["submit", "ok.jsonl", *SIM],
        4,
        ["data/kiln.db", "read-only"],
        setup=read_only("file"),
    ),
    Case(
        "database-read-only-folder",
        ["status"],
        4,
        ["data", "folder", "read-only"],
        setup=read_only("folder"),
    ),
    Case(
        "vendor-unreachable",
        ["submit", "ok.jsonl", "-p", "openai", "-m", "gpt-4o-mini", "--json"],
        4,
        ["openai", "127.0.0.1:{closed}", "kiln worker"],
        env={"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://127.0.0.1:{closed}/v1"},
        stored=1,  # the job is kept for a worker; nothing reached a vendor
    ),
    # input files
    Case(
        "nul-in-custom-id-validate",
        ["validate", "nul.jsonl", "-m", "gpt-4o-mini"],
        2,
        ["nul.jsonl:2", "NUL"],
    ),
    Case(
        "nul-in-custom-id-submit-sqlite", ["submit", "nul.jsonl", *SIM], 2, ["nul.jsonl:2", "NUL"]
    ),
    Case(
        "nul-in-custom-id-submit-postgres",
        ["submit", "nul.jsonl", *SIM],
        2,
        ["nul.jsonl:2", "NUL"],
        setup=postgres_db,
        postgres=True,
    ),
    Case(
        "invalid-utf8",
        ["validate", "bad8.jsonl", "-m", "gpt-4o-mini", "--json"],
        2,
        ["bad8.jsonl:1", "not valid UTF-8 at byte offset 40"],
    ),
    Case(
        "fifo-validate",
        ["validate", "in.fifo", "-m", "gpt-4o-mini"],
        2,
        ["in.fifo", "not a regular file"],
        setup=make_fifo,
    ),
    Case(
        "fifo-submit",
        ["submit", "in.fifo", *SIM],
        2,
        ["in.fifo", "not a regular file"],
        setup=make_fifo,
    ),
    Case(
        "directory-as-input",
        ["validate", ".", "-m", "gpt-4o-mini"],
        2,
        ["not a regular file", "directory"],
    ),
    Case("missing-input", ["submit", "absent.jsonl", *SIM], 2, ["absent.jsonl", "No such file"]),
    # jobs
    Case("unknown-job-status", ["status", "nosuchjob", "--json"], 2, ["nosuchjob"]),
    Case("unknown-job-results", ["results", "nosuchjob", "-o", "out.jsonl"], 2, ["nosuchjob"]),
    Case(
        "budget-refused",
        ["submit", "ok.jsonl", *SIM, "--budget", "0.0000001"],
        3,
        ["budget", "nothing was sent"],
    ),
    Case(
        "failed-for-good",
        ["submit", "ok.jsonl", *SIM, "--max-attempts", "1", "--json"],
        1,
        [],
        env={"KILN_SIMULATOR_FAULTS": "permanent=1"},
        errors=0,
        stored=1,
    ),
    Case(
        "waiting-for-manual-retry",
        ["submit", "ok.jsonl", *SIM, "--no-auto-retry", "--json"],
        1,
        [],
        env={"KILN_SIMULATOR_FAULTS": "retryable=1"},
        errors=0,
        stored=1,
    ),
    Case("all-succeeded", ["submit", "ok.jsonl", *SIM, "--json"], 0, [], errors=0, stored=1),
]


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, Ran]]:
    """Every selected case, run as a `kiln` subprocess, a few at a time."""
    root = tmp_path_factory.mktemp("contract")
    selected = {
        item.callspec.id
        for item in request.session.items
        if isinstance(item, pytest.Function) and hasattr(item, "callspec")
    }
    cases = [c for c in CASES if c.id in selected]
    pg_skip = postgres_reachable() if any(c.postgres for c in cases) else None
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {c.id: pool.submit(run, c, root / c.id, pg_skip) for c in cases}
        results = {name: f.result() for name, f in futures.items()}
    yield results
    for held in HELD:
        held.close()
    for ran in results.values():
        env = ran.case.env
        if "_UNLOCK" in env and os.geteuid() == 0:
            subprocess.run(["chattr", "-i", env["_UNLOCK"]], check=False)
        elif "_UNLOCK" in env:
            Path(env["_UNLOCK"]).chmod(0o755)
        if "_PGDB" in env:
            psql(f'DROP DATABASE IF EXISTS "{env["_PGDB"]}"')


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_mistake_is_one_line_and_the_contracts_exit_code(
    case: Case, runs: dict[str, Ran]
) -> None:
    """Exit code from the table, one `error:` line naming the thing, no traceback,
    nothing stored or sent, no residue files."""
    ran = runs[case.id]
    if ran.skip:
        if IN_CI and case.postgres:
            pytest.fail(f"{ran.skip} (CI=true: PostgreSQL cases must run)")
        pytest.skip(ran.skip)
    output = ran.stdout + ran.stderr
    assert ran.code == case.code, output
    error_lines = [line for line in ran.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == case.errors, output
    for name in case.names:
        assert name in error_lines[0], output
    assert "Traceback" not in output
    for secret in case.hidden:
        assert secret not in output
    if "--json" in case.args:
        payload = orjson.loads(ran.stdout[ran.stdout.index("{") :])
        if case.errors:
            assert payload["error"]["exit_code"] == case.code
            assert payload["error"]["message"].splitlines()[0] == error_lines[0][len("error: ") :]
            assert payload["error"]["type"]
        else:
            assert "error" not in payload and payload["state"] in ("done", "awaiting_retry")
    assert jobs_stored(ran) == case.stored
    new = {
        name
        for name in files(ran.folder) - ran.before - {"kiln.db", "out.jsonl"}
        if not name.endswith(("kiln.db-wal", "kiln.db-shm"))  # SQLite's own, beside the db
    }
    assert not new, f"residue files: {sorted(new)}"
    assert not (ran.folder / "out.jsonl").exists() or case.code == 0


def test_the_exit_code_table_is_in_the_readme_and_in_kiln_help() -> None:
    """README and `kiln --help` list every code of the contract with its meaning."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    shown = subprocess.run(
        [KILN, "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}
    )
    assert shown.returncode == 0
    for code, meaning in EXIT_CODES:
        assert f"| {int(code)} | {meaning} |" in readme
        assert f"{int(code):>3}  {meaning}" in shown.stdout


def test_debug_prints_the_traceback_with_the_same_one_line_error(tmp_path: Path) -> None:
    """`--debug` and KILN_DEBUG=1 add the traceback; the error line and exit code stay."""
    env = base_env(tmp_path)
    flag = subprocess.run(
        [KILN, "--debug", "status", "nosuchjob"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    variable = subprocess.run(
        [KILN, "status", "nosuchjob"],
        capture_output=True,
        text=True,
        env={**env, "KILN_DEBUG": "1"},
        cwd=tmp_path,
    )
    for done in (flag, variable):
        assert done.returncode == ExitCode.BAD_INPUT
        assert "Traceback" in done.stderr
        assert [ln for ln in done.stderr.splitlines() if ln.startswith("error:")] == [
            "error: no job with id or key 'nosuchjob'"
        ]
