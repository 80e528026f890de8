"""SIGINT and SIGTERM of `kiln submit --wait` mid-step, and a lease that blocks progress,
on real `kiln` subprocesses reading the store afterwards."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from batchkiln.cli.contract import ExitCode

from .cli_harness import KILN, OK_LINE, SIM, TIMEOUT, base_env
from .conftest import write_requests


def _leases(db: Path) -> list[tuple[str, str | None, float | None]]:
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
    env = base_env(tmp_path)
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
