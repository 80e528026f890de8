"""batchkiln: run LLM batch jobs through their whole lifecycle without losing a
request or paying twice.

The public surface is what `__all__` lists; every module behind it is private
to the package and may change. `App` is where to start:

    async with batchkiln.App.open() as app:
        submitted = await app.kiln.submit("requests.jsonl", provider="openai")
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from batchkiln.app import App
from batchkiln.clock import Clock, FakeClock, ScaledClock, SystemClock
from batchkiln.engine.kiln import JobStatus, Kiln, Submitted
from batchkiln.engine.policy import JobOptions, RetryPolicy
from batchkiln.engine.schedule import Backoff, TrackingMode, TrackingPolicy
from batchkiln.engine.worker import Worker
from batchkiln.errors import (
    AmbiguousOutcome,
    BudgetExceeded,
    ConfigError,
    FileChanged,
    IllegalTransition,
    InputError,
    InvalidKey,
    KeyConflict,
    KilnError,
    NotFound,
    StaleTransition,
    StoreError,
    TransitionError,
    VendorError,
)
from batchkiln.export import ExportFormat, iter_results, write_results
from batchkiln.intake import validate_file
from batchkiln.lifecycle import STATE_INFO, TRANSITIONS, Event, State
from batchkiln.providers import make_provider
from batchkiln.settings import Settings
from batchkiln.simulator import Faults, Simulator
from batchkiln.store import Store
from batchkiln.sync import job_results, run_job

try:
    __version__ = version("batchkiln")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "STATE_INFO",
    "TRANSITIONS",
    "AmbiguousOutcome",
    "App",
    "Backoff",
    "BudgetExceeded",
    "Clock",
    "ConfigError",
    "Event",
    "ExportFormat",
    "FakeClock",
    "Faults",
    "FileChanged",
    "IllegalTransition",
    "InputError",
    "InvalidKey",
    "JobOptions",
    "JobStatus",
    "KeyConflict",
    "Kiln",
    "KilnError",
    "NotFound",
    "RetryPolicy",
    "ScaledClock",
    "Settings",
    "Simulator",
    "StaleTransition",
    "State",
    "Store",
    "StoreError",
    "Submitted",
    "SystemClock",
    "TrackingMode",
    "TrackingPolicy",
    "TransitionError",
    "VendorError",
    "Worker",
    "__version__",
    "iter_results",
    "job_results",
    "make_provider",
    "run_job",
    "validate_file",
    "write_results",
]
