"""What one step of a batch did, and when the batch should next be looked at."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepResult:
    """What a step did, and when the batch should next be looked at (None: not by us)."""

    next_check_in: float | None
    note: str = ""  # what happened, in words: shows in a StepResult's repr when debugging
