"""Request files in: reading, validation, sharding and keys."""

from __future__ import annotations

from batchkiln.intake.keys import KeyConflict, batch_tag, check_user_key, derive_batch_key, job_key
from batchkiln.intake.reader import (
    InputError,
    InputRequest,
    InputSummary,
    LineError,
    iter_requests,
    validate_file,
)
from batchkiln.intake.sharding import PROVIDER_LIMITS, Limits, Shard, plan_shards

__all__ = [
    "PROVIDER_LIMITS",
    "InputError",
    "InputRequest",
    "InputSummary",
    "KeyConflict",
    "Limits",
    "LineError",
    "Shard",
    "batch_tag",
    "check_user_key",
    "derive_batch_key",
    "iter_requests",
    "job_key",
    "plan_shards",
    "validate_file",
]
