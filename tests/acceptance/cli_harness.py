"""The harness for the CLI contract tests: `kiln` as a real subprocess, each case in its
own folder with its own store, and the set-ups that make a mistake happen (a FIFO, a
corrupt or read-only database, a port in use, a PostgreSQL database made for the case)."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchkiln.store import Store

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


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_fifo(folder: Path) -> dict[str, str]:
    os.mkfifo(folder / "in.fifo")
    return {}


def bad_prices(folder: Path) -> dict[str, str]:
    (folder / "prices.json").write_bytes(b"{ not json")
    return {"KILN_PRICES_FILE": str(folder / "prices.json")}


def db_bytes(content: bytes) -> Callable[[Path], dict[str, str]]:
    def setup(folder: Path) -> dict[str, str]:
        (folder / "kiln.db").write_bytes(content)
        return {}

    return setup


def migrated(path: Path) -> None:
    async def go() -> None:
        store = await Store.open(f"sqlite:///{path}")
        await store.close()

    asyncio.run(go())


def read_only(target: str) -> Callable[[Path], dict[str, str]]:
    """A migrated database whose file (or folder) cannot be written, even by root
    (the immutable attribute; chmod does not stop root)."""

    def setup(folder: Path) -> dict[str, str]:
        holder = folder / "data"
        holder.mkdir()
        db = holder / "kiln.db"
        migrated(db)
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


def port_in_use(folder: Path) -> dict[str, str]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    HELD.append(holder)
    return {"_PORT": str(holder.getsockname()[1])}


HELD: list[socket.socket] = []


def postgres_db(folder: Path) -> dict[str, str]:
    name = f"kiln_cli_{uuid.uuid4().hex[:10]}"
    psql(f'CREATE DATABASE "{name}"')
    return {"KILN_DATABASE_URL": f"{PG_BASE}/{name}", "_PGDB": name}


def psql(statement: str, database: str = "test") -> Any:
    import asyncpg

    async def go() -> Any:
        conn = await asyncpg.connect(f"{PG_BASE}/{database}", timeout=5)
        try:
            return await conn.fetchval(statement)
        finally:
            await conn.close()

    return asyncio.run(go())


def postgres_reachable() -> str | None:
    try:
        psql("SELECT 1")
    except Exception as exc:  # any failure to connect: the reason for the skip
        return f"PostgreSQL not reachable at {PG_BASE}: {exc}"
    return None


def base_env(folder: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KILN_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_"))
    }
    env.update(
        KILN_DATABASE_URL=f"sqlite:///{folder}/kiln.db", COLUMNS="200", KILN_TOKENIZER="approx"
    )
    return env


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def run(case: Case, folder: Path, pg_skip: str | None) -> Ran:
    folder.mkdir(parents=True)
    (folder / "ok.jsonl").write_bytes(OK_LINE)
    (folder / "nul.jsonl").write_bytes(
        OK_LINE
        + b'{"custom_id": "a\\u0000b", "body": {"messages": [{"role": "user", "content": "x"}]}}\n'
    )
    (folder / "bad8.jsonl").write_bytes(b'{"custom_id": "a", "body": {"text": "caf\xe9"}}\n')
    if case.postgres and pg_skip:
        return Ran(case, folder, -1, "", "", set(), skip=pg_skip)
    env = base_env(folder)
    env.update(case.env)
    try:
        extra = case.setup(folder) if case.setup else {}
    except RuntimeError as exc:
        return Ran(case, folder, -1, "", "", set(), skip=str(exc))
    env.update(extra)
    closed = str(closed_port())
    fill = {"port": extra.get("_PORT", ""), "closed": closed}
    case.names = [n.format(**fill) for n in case.names]
    env.update({k: v.format(**fill) for k, v in case.env.items()})
    args = [a.format(**fill) for a in case.args]
    before = files(folder)
    done = subprocess.run(
        [KILN, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    ran = Ran(case, folder, done.returncode, done.stdout, done.stderr, before)
    ran.case.env = env
    return ran


def jobs_stored(ran: Ran) -> int:
    url = ran.case.env.get("KILN_DATABASE_URL", "")
    if "_PGDB" in ran.case.env:
        return int(psql("SELECT count(*) FROM jobs", database=ran.case.env["_PGDB"]))
    path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
    if path is None or not path.is_file() or ran.case.setup is not None:
        return 0
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return int(db.execute("SELECT count(*) FROM jobs").fetchone()[0]) if "jobs" in tables else 0
