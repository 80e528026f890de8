"""Settings refused at startup by a real `kiln` process: one line naming the variable,
no traceback, and nothing stored or sent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from .conftest import write_requests


def _kiln(args: list[str], tmp: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """`kiln ARGS` in a subprocess with a store in `tmp` and `extra` in its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env |= {"KILN_DATABASE_URL": f"sqlite:///{tmp}/kiln.db", "COLUMNS": "200", **extra}
    exe = shutil.which("kiln", path=str(Path(sys.executable).parent))
    command = [exe] if exe else [sys.executable, "-m", "batchkiln.cli"]
    return subprocess.run(
        [*command, *args], env=env, cwd=tmp, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_budget_that_is_not_a_finite_number_is_refused_at_startup(
    tmp_path: Path, value: str
) -> None:
    """KILN_BUDGET_USD=nan/inf would turn the budget off (every comparison with NaN is
    false): `kiln submit` refuses to start, names the variable, and creates no job."""
    path = write_requests(tmp_path / "in.jsonl", 2)
    refused = _kiln(
        ["submit", str(path), "-p", "simulator", "-m", "gpt-4o-mini"],
        tmp_path,
        KILN_BUDGET_USD=value,
    )
    assert refused.returncode not in (0, 1), refused.stderr  # 1 would be "done with failures"
    assert "KILN_BUDGET_USD" in refused.stderr and "finite" in refused.stderr
    assert "Traceback" not in refused.stderr + refused.stdout
    listed = _kiln(["status", "--json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert orjson.loads(listed.stdout) == []
