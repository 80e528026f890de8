"""batchkiln: run LLM batch jobs through their whole lifecycle without losing a
request or paying twice.

The public surface is what `__all__` lists; every module behind it is private
to the package and may change.
"""

from __future__ import annotations

from batchkiln.clock import Clock, FakeClock, ScaledClock, SystemClock
from batchkiln.engine.export import ExportFormat, iter_results, write_results
from batchkiln.engine.kiln import JobStatus, Kiln, Submitted
from batchkiln.engine.policy import JobOptions, RetryPolicy
from batchkiln.engine.schedule import Backoff
from batchkiln.engine.worker import Worker
from batchkiln.intake import InputError, KeyConflict, validate_file
from batchkiln.lifecycle import STATE_INFO, TRANSITIONS, Event, IllegalTransition, State
from batchkiln.providers import make_provider
from batchkiln.store import NotFound, StaleTransition, Store
from batchkiln.sync import job_results, run_job

__version__ = "0.1.0"

__all__ = [
    "STATE_INFO",
    "TRANSITIONS",
    "Backoff",
    "Clock",
    "Event",
    "ExportFormat",
    "FakeClock",
    "IllegalTransition",
    "InputError",
    "JobOptions",
    "JobStatus",
    "KeyConflict",
    "Kiln",
    "NotFound",
    "RetryPolicy",
    "ScaledClock",
    "StaleTransition",
    "State",
    "Store",
    "Submitted",
    "SystemClock",
    "Worker",
    "__version__",
    "iter_results",
    "job_results",
    "make_provider",
    "run_job",
    "validate_file",
    "write_results",
]
