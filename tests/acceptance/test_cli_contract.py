"""The CLI's error and exit-code contract, on real `kiln` subprocesses.

Every case is one ordinary mistake (or one ending of a job) and asserts the exit code of
the documented table, exactly one `error:` line naming the thing, no traceback, nothing
stored or sent and no residue files. The cases run concurrently in one module fixture
(each `kiln` start costs about a second of CPU on this machine), each in its own folder
with its own fresh SQLite database; PostgreSQL cases use a database made for the case.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchkiln.cli.contract import EXIT_CODES, ExitCode
from batchkiln.store import Store

from .conftest import write_requests

POSTGRES_URL = os.environ.get(  # as tests/conftest.py reads it
    "KILN_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
KILN = str(Path(sys.executable).with_name("kiln"))
PG_BASE = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://").rsplit("/", 1)[0]
SECRET = "hunter2pw"
OK_LINE = b'{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "hi"}]}}\n'
SIM = ["-p", "simulator", "-m", "gpt-4o-mini"]
TIMEOUT = 240  # a bound, never a wait: a case that hangs (a FIFO) fails instead of blocking


@dataclass
class Case:
    id: str
    args: list[str]
    code: int
    names: list[str]  # what the one error: line must name
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], dict[str, str]] | None = None  # returns more env
    errors: int = 1  # how many `error:` lines (0 for a job that ends with failures)
    postgres: bool = False
    hidden: list[str] = field(default_factory=list)  # must not appear (a password)
    stored: int = 0  # jobs in the store afterwards


@dataclass
class Ran:
    case: Case
    folder: Path
    code: int
    stdout: str
    stderr: str
    before: set[str]
    skip: str | None = None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make_fifo(folder: Path) -> dict[str, str]:
    os.mkfifo(folder / "in.fifo")
    return {}


def _bad_prices(folder: Path) -> dict[str, str]:
    (folder / "prices.json").write_bytes(b"{ not json")
    return {"KILN_PRICES_FILE": str(folder / "prices.json")}


def _db_bytes(content: bytes) -> Callable[[Path], dict[str, str]]:
    def setup(folder: Path) -> dict[str, str]:
        (folder / "kiln.db").write_bytes(content)
        return {}

    return setup


def _migrated(path: Path) -> None:
    async def go() -> None:
        store = await Store.open(f"sqlite:///{path}")
        await store.close()

    asyncio.run(go())


def _read_only(target: str) -> Callable[[Path], dict[str, str]]:
    """A migrated database whose file (or folder) cannot be written, even by root
    (the immutable attribute; chmod does not stop root)."""

    def setup(folder: Path) -> dict[str, str]:
        holder = folder / "data"
        holder.mkdir()
        db = holder / "kiln.db"
        _migrated(db)
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        locked = db if target == "file" else holder
        if os.geteuid() == 0:
            done = subprocess.run(["chattr", "+i", str(locked)], capture_output=True)
            if done.returncode:
                raise RuntimeError(f"chattr +i not supported here: {done.stderr!r}")
        else:
            locked.chmod(0o444 if target == "file" else 0o555)
        return {"KILN_DATABASE_URL": f"sqlite:///{db}", "_UNLOCK": str(locked)}

    return setup


def _port_in_use(folder: Path) -> dict[str, str]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    _HELD.append(holder)
    return {"_PORT": str(holder.getsockname()[1])}


_HELD: list[socket.socket] = []


def _postgres_db(folder: Path) -> dict[str, str]:
    name = f"kiln_cli_{uuid.uuid4().hex[:10]}"
    _psql(f'CREATE DATABASE "{name}"')
    return {"KILN_DATABASE_URL": f"{PG_BASE}/{name}", "_PGDB": name}


def _psql(statement: str, database: str = "test") -> Any:
    import asyncpg

    async def go() -> Any:
        conn = await asyncpg.connect(f"{PG_BASE}/{database}", timeout=5)
        try:
            return await conn.fetchval(statement)
        finally:
            await conn.close()

    return asyncio.run(go())


def _postgres_reachable() -> str | None:
    try:
        _psql("SELECT 1")
    except Exception as exc:  # any failure to connect: the reason for the skip
        return f"PostgreSQL not reachable at {PG_BASE}: {exc}"
    return None


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
        setup=_port_in_use,
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
        setup=_bad_prices,
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
        setup=_db_bytes(os.urandom(4096)),
    ),
    Case(
        "database-truncated",
        ["status"],
        4,
        ["kiln.db", "corrupt", "backup"],
        setup=_db_bytes(b"SQLite format 3\x00" + b"\x10\x00" + b"\x00" * 90),
    ),
    Case(
        "database-is-jsonl",
        ["status"],
        4,
        ["kiln.db", "not a SQLite database"],
        setup=_db_bytes(OK_LINE * 40),
    ),
    Case(
        "database-read-only-file",
        ["submit", "ok.jsonl", *SIM],
        4,
        ["data/kiln.db", "read-only"],
        setup=_read_only("file"),
    ),
    Case(
        "database-read-only-folder",
        ["status"],
        4,
        ["data", "folder", "read-only"],
        setup=_read_only("folder"),
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
        setup=_postgres_db,
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
        setup=_make_fifo,
    ),
    Case(
        "fifo-submit",
        ["submit", "in.fifo", *SIM],
        2,
        ["in.fifo", "not a regular file"],
        setup=_make_fifo,
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


def _base_env(folder: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KILN_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_"))
    }
    env.update(
        KILN_DATABASE_URL=f"sqlite:///{folder}/kiln.db", COLUMNS="200", KILN_TOKENIZER="approx"
    )
    return env


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _run(case: Case, folder: Path, pg_skip: str | None) -> Ran:
    folder.mkdir(parents=True)
    (folder / "ok.jsonl").write_bytes(OK_LINE)
    (folder / "nul.jsonl").write_bytes(
        OK_LINE
        + b'{"custom_id": "a\\u0000b", "body": {"messages": [{"role": "user", "content": "x"}]}}\n'
    )
    (folder / "bad8.jsonl").write_bytes(b'{"custom_id": "a", "body": {"text": "caf\xe9"}}\n')
    if case.postgres and pg_skip:
        return Ran(case, folder, -1, "", "", set(), skip=pg_skip)
    env = _base_env(folder)
    env.update(case.env)
    try:
        extra = case.setup(folder) if case.setup else {}
    except RuntimeError as exc:
        return Ran(case, folder, -1, "", "", set(), skip=str(exc))
    env.update(extra)
    closed = str(_closed_port())
    fill = {"port": extra.get("_PORT", ""), "closed": closed}
    case.names = [n.format(**fill) for n in case.names]
    env.update({k: v.format(**fill) for k, v in case.env.items()})
    args = [a.format(**fill) for a in case.args]
    before = _files(folder)
    done = subprocess.run(
        [KILN, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    ran = Ran(case, folder, done.returncode, done.stdout, done.stderr, before)
    ran.case.env = env
    return ran


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
    pg_skip = _postgres_reachable() if any(c.postgres for c in cases) else None
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {c.id: pool.submit(_run, c, root / c.id, pg_skip) for c in cases}
        results = {name: f.result() for name, f in futures.items()}
    yield results
    for held in _HELD:
        held.close()
    for ran in results.values():
        env = ran.case.env
        if "_UNLOCK" in env and os.geteuid() == 0:
            subprocess.run(["chattr", "-i", env["_UNLOCK"]], check=False)
        elif "_UNLOCK" in env:
            Path(env["_UNLOCK"]).chmod(0o755)
        if "_PGDB" in env:
            _psql(f'DROP DATABASE IF EXISTS "{env["_PGDB"]}"')


def _jobs_stored(ran: Ran) -> int:
    url = ran.case.env.get("KILN_DATABASE_URL", "")
    if "_PGDB" in ran.case.env:
        return int(_psql("SELECT count(*) FROM jobs", database=ran.case.env["_PGDB"]))
    path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
    if path is None or not path.is_file() or ran.case.setup is not None:
        return 0
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return int(db.execute("SELECT count(*) FROM jobs").fetchone()[0]) if "jobs" in tables else 0


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
    assert _jobs_stored(ran) == case.stored
    new = {
        name
        for name in _files(ran.folder) - ran.before - {"kiln.db", "out.jsonl"}
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
    env = _base_env(tmp_path)
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


def _leases(db: Path) -> list[tuple[str, str | None, float | None]]:
    with sqlite3.connect(db, timeout=5) as conn:
        return list(conn.execute("SELECT state, lease_owner, lease_expires_at FROM batches"))


def _interrupt_mid_step(tmp_path: Path, sig: signal.Signals) -> tuple[int, str, Path]:
    """Start `kiln submit --wait` on 1,500 requests, signal it while it holds a batch's
    lease (mid-step), and return its exit code, stderr and database."""
    db = tmp_path / "kiln.db"
    path = write_requests(tmp_path / "big.jsonl", 1500)
    env = {**_base_env(tmp_path), "KILN_SIMULATOR_FAULTS": "processing=30000"}
    proc = subprocess.Popen(
        [KILN, "submit", str(path), *SIM, "--wait", "--json"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + TIMEOUT
    held = False
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            held = any(owner for _state, owner, _until in _leases(db))
        except sqlite3.Error:
            held = False  # not created or migrated yet
        if held:
            break
        time.sleep(0.005)  # polling a real process: bounded by the deadline above
    assert held, "the batch was never seen leased"
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, err, db


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_submit_wait_leaves_no_lease_held(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGINT/SIGTERM mid-step: the step finishes, the lease is released, exit 130."""
    code, err, db = _interrupt_mid_step(tmp_path, sig)
    assert code == ExitCode.INTERRUPTED, err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        f"error: interrupted by {sig.name} at a safe point: no lease is held"
    ]
    assert "Traceback" not in err
    rows = _leases(db)
    assert rows and all(owner is None and until is None for _s, owner, until in rows)


def test_status_says_who_holds_a_lease_that_blocks_progress(tmp_path: Path) -> None:
    """`kiln status` names the worker holding a batch's lease and until when."""
    env = _base_env(tmp_path)
    (tmp_path / "ok.jsonl").write_bytes(OK_LINE)
    done = subprocess.run(
        [KILN, "submit", "ok.jsonl", *SIM, "--key", "leased", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    until = time.time() + 3600
    with sqlite3.connect(tmp_path / "kiln.db") as conn:
        conn.execute("UPDATE batches SET lease_owner = 'ghost:42', lease_expires_at = ?", (until,))
    shown = subprocess.run(
        [KILN, "status", "leased"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(until))
    assert f"is leased by ghost:42 until {stamp} UTC" in shown.stdout
