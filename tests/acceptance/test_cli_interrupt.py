"""SIGINT and SIGTERM of `kiln submit --wait` mid-step, and a lease that blocks progress,
on real `kiln` subprocesses reading the store afterwards."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from batchkiln.cli.contract import ExitCode

from .cli_harness import KILN, OK_LINE, SIM, TIMEOUT, base_env
from .conftest import write_requests


def leases(db: Path) -> list[tuple[str, str | None, float | None]]:
    with sqlite3.connect(db, timeout=5) as conn:
        return list(conn.execute("SELECT state, lease_owner, lease_expires_at FROM batches"))


def _interrupt_mid_step(tmp_path: Path, sig: signal.Signals) -> tuple[int, str, Path]:
    """Start `kiln submit --wait` on 1,500 requests, signal it while it holds a batch's
    lease (mid-step), and return its exit code, stderr and database."""
    db = tmp_path / "kiln.db"
    path = write_requests(tmp_path / "big.jsonl", 1500)
    env = {**base_env(tmp_path), "KILN_SIMULATOR_FAULTS": "processing=30000"}
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
            held = any(owner for _state, owner, _until in leases(db))
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
    rows = leases(db)
    assert rows and all(owner is None and until is None for _s, owner, until in rows)


def _stopped_while_pending(folder: Path) -> None:
    """A job whose batch is pending at the vendor: `submit --wait` stopped by SIGINT."""
    (folder / "ok.jsonl").write_bytes(OK_LINE)
    env = {**base_env(folder), "KILN_SIMULATOR_FAULTS": "processing=30000"}
    proc = subprocess.Popen(
        [KILN, "submit", "ok.jsonl", *SIM, "--key", "leased", "--json"],
        env=env,
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if any(state == "pending" for state, _o, _u in leases(folder / "kiln.db")):
                break
        except sqlite3.Error:
            pass  # not created or migrated yet
        time.sleep(0.02)  # polling a real process: bounded by the deadline above
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == ExitCode.INTERRUPTED


def test_status_and_watch_say_who_holds_a_lease_that_blocks_progress(tmp_path: Path) -> None:
    """`kiln status` and `kiln watch` name the worker holding a batch's lease and until
    when (here a worker that died holding it)."""
    _stopped_while_pending(tmp_path)
    until = time.time() + 3600
    with sqlite3.connect(tmp_path / "kiln.db") as conn:
        conn.execute("UPDATE batches SET lease_owner = 'ghost:42', lease_expires_at = ?", (until,))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(until))
    said = f"is leased by ghost:42 until {stamp} UTC"
    env = base_env(tmp_path)
    shown = subprocess.run(
        [KILN, "status", "leased"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert said in shown.stdout
    watching = subprocess.Popen(
        [KILN, "watch", "leased"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watching.stderr is not None
    guard = threading.Timer(TIMEOUT, watching.kill)  # a bound, should the line never come
    guard.start()
    seen = ""
    for line in watching.stderr:
        seen += line
        if said in line:
            break
    watching.send_signal(signal.SIGINT)
    watching.communicate(timeout=TIMEOUT)
    guard.cancel()
    assert said in seen
    assert watching.returncode == ExitCode.INTERRUPTED
