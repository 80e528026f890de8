"""Request files in: streaming reading and validation, the shard plan, and keys.

summary = validate_file(path, provider="openai")       # one pass; InputError lists bad lines
key = job_key(user_key, summary.fingerprint)           # user key, or fp-<fingerprint>
for shard in summary.shards:                           # contiguous seq ranges within limits
    tag = batch_tag(derive_batch_key(key, shard.index, 1))
for request in iter_requests(path, provider="openai"):  # another pass: normalised bodies
    ...
for request in RequestPass(path, provider="openai"):    # Kiln.submit's one pass: stops at
    ...                                                 # the first bad line, plans shards
"""

from __future__ import annotations

from batchkiln.errors import InputError, InvalidKey, KeyConflict, LineError
from batchkiln.intake.keys import (
    ContentFingerprint,
    batch_tag,
    canonical_json,
    check_user_key,
    derive_batch_key,
    fingerprint,
    job_key,
)
from batchkiln.intake.lines import (
    ANTHROPIC_ENDPOINT,
    DEFAULT_OPENAI_ENDPOINT,
    GEMINI_ENDPOINT,
    MAX_CUSTOM_ID,
    OPENAI_ENDPOINTS,
    Provider,
)
from batchkiln.intake.reader import (
    InputRequest,
    InputSummary,
    RequestPass,
    iter_requests,
    validate_file,
)
from batchkiln.intake.sharding import (
    PROVIDER_LIMITS,
    Limits,
    Shard,
    ShardPlanner,
    plan_shards,
    wire_line_bytes,
)

__all__ = [
    "ANTHROPIC_ENDPOINT",
    "DEFAULT_OPENAI_ENDPOINT",
    "GEMINI_ENDPOINT",
    "MAX_CUSTOM_ID",
    "OPENAI_ENDPOINTS",
    "PROVIDER_LIMITS",
    "ContentFingerprint",
    "InputError",
    "InputRequest",
    "InputSummary",
    "InvalidKey",
    "KeyConflict",
    "Limits",
    "LineError",
    "Provider",
    "RequestPass",
    "Shard",
    "ShardPlanner",
    "batch_tag",
    "canonical_json",
    "check_user_key",
    "derive_batch_key",
    "fingerprint",
    "iter_requests",
    "job_key",
    "plan_shards",
    "validate_file",
    "wire_line_bytes",
]
