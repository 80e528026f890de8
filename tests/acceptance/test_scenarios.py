"""The seed's practice scenarios, plus a late duplicate webhook, run for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchkiln.clock import FakeClock
from batchkiln.scenarios import SCENARIOS, run_scenario


@pytest.mark.parametrize("number", sorted(SCENARIOS))
async def test_scenario_holds(number: int, tmp_path: Path) -> None:
    """Each scenario walks its lifecycle and every check it states holds."""
    report = await run_scenario(number, tmp_path, clock=FakeClock())
    failed = [name for name, held in report.checks.items() if not held]
    assert report.checks and not failed, (failed, report)
