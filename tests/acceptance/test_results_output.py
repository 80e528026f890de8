"""`kiln results -o PATH` writes by what is at PATH: a regular file or a new path is
replaced atomically; a symlink is written through (the link stays a link); a FIFO or a
character device is written directly; `-o -` is stdout; no temp file is ever left."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from batchkiln.cli import app
from batchkiln.export import write_results
from batchkiln.store import NotFound

from .conftest import MODELS, Env, write_requests

runner = CliRunner()


async def _done_job(env: Env, n: int = 3) -> str:
    path = write_requests(env.tmp / "in.jsonl", n)
    submitted = await env.kiln.submit(path, provider="openai", model=MODELS["openai"])
    await env.kiln.run_until_done(submitted.job.id)
    return submitted.job.id


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def _lines(data: bytes) -> list[str]:
    return [orjson.loads(line)["custom_id"] for line in data.splitlines()]


async def test_a_regular_file_is_replaced_atomically_keeping_its_mode(env: Env) -> None:
    """An existing file gets the new content under the same name and permissions."""
    job_id = await _done_job(env)
    out = env.tmp / "out" / "results.jsonl"
    out.parent.mkdir()
    out.write_bytes(b"old\n")
    out.chmod(0o640)
    assert await write_results(env.store, job_id, out) == 3
    assert _lines(out.read_bytes()) == ["r0", "r1", "r2"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and _leftovers(out.parent) == []


async def test_a_symlink_is_written_through_to_its_target(env: Env) -> None:
    """The link stays a link; the file it points at gets the results."""
    job_id = await _done_job(env)
    target = env.tmp / "real.jsonl"
    target.write_bytes(b"old\n")
    link = env.tmp / "link.jsonl"
    link.symlink_to(target)
    await write_results(env.store, job_id, link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert _lines(target.read_bytes()) == ["r0", "r1", "r2"]
    assert _leftovers(env.tmp) == []


async def test_a_fifo_is_written_directly_and_its_reader_gets_every_line(env: Env) -> None:
    """The FIFO stays a FIFO and the process reading it receives the whole export."""
    job_id = await _done_job(env)
    fifo = env.tmp / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    try:
        await write_results(env.store, job_id, fifo)
    finally:
        reader.join(timeout=10)
        if reader.is_alive():  # nothing opened the FIFO for writing: unblock the reader
            with fifo.open("wb"):
                pass
            reader.join(timeout=10)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert _lines(received[0]) == ["r0", "r1", "r2"]
    assert _leftovers(env.tmp) == []


async def test_a_character_device_is_written_directly_never_replaced(env: Env) -> None:
    """A device node (a private copy of /dev/null, made in the test folder) stays a device."""
    job_id = await _done_job(env)
    node = env.tmp / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root")
    assert await write_results(env.store, job_id, node) == 3
    assert stat.S_ISCHR(node.stat().st_mode) and _leftovers(env.tmp) == []


async def test_no_temp_file_is_left_on_any_failure(env: Env) -> None:
    """An unknown job, a directory and a missing folder each fail without residue."""
    job_id = await _done_job(env)
    with pytest.raises(NotFound):
        await write_results(env.store, "no-such-job", env.tmp / "a.jsonl")
    assert not (env.tmp / "a.jsonl").exists()
    folder = env.tmp / "adir"
    folder.mkdir()
    with pytest.raises(IsADirectoryError):
        await write_results(env.store, job_id, folder)
    with pytest.raises(FileNotFoundError):
        await write_results(env.store, job_id, env.tmp / "missing" / "x.jsonl")
    assert _leftovers(env.tmp) == [] and list(folder.iterdir()) == []


def test_dash_writes_to_stdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kiln results JOB -o -` prints the JSONL on stdout and creates no file named '-'."""
    monkeypatch.setenv("KILN_DATABASE_URL", f"sqlite:///{tmp_path}/kiln.db")
    monkeypatch.chdir(tmp_path)
    path = write_requests(tmp_path / "in.jsonl", 2)
    done = runner.invoke(
        app, ["submit", str(path), "-p", "simulator", "-m", "gpt-4o-mini", "--key", "k-out"]
    )
    assert done.exit_code == 0, done.output
    shown = runner.invoke(app, ["results", "k-out", "-o", "-"])
    assert shown.exit_code == 0, shown.output
    assert _lines(shown.stdout.encode()) == ["r0", "r1"]
    assert not (tmp_path / "-").exists() and _leftovers(tmp_path) == []
    missing = runner.invoke(app, ["results", "nope", "-o", str(tmp_path / "x.jsonl")])
    assert missing.exit_code == 2 and _leftovers(tmp_path) == []
