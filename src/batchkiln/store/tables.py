"""The schema, as SQLAlchemy Core tables. Alembic migrations must produce exactly
this (a test compares them); change both together.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("key", String(255), nullable=False, index=True),
    Column("fingerprint", String(64), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("model", String(200), nullable=False),
    Column("endpoint", String(100), nullable=False),
    Column("source", Text, nullable=True),  # the input file, as the user named it
    Column("request_count", Integer, nullable=False),
    Column("options", JSON, nullable=False),  # retry policy, budget, ...
    Column("status", String(20), nullable=False),  # active | done
    Column("outcome", JSON, nullable=True),  # summary once done
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
)

batches = Table(
    "batches",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("job_id", String(40), ForeignKey("jobs.id"), nullable=False, index=True),
    Column("parent_id", String(40), ForeignKey("batches.id"), nullable=True),
    Column("key", String(300), nullable=False, unique=True),
    Column("tag", String(16), nullable=False, unique=True),
    Column("shard", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    Column("request_count", Integer, nullable=False),
    Column("wire_bytes", Integer, nullable=False),
    # what the vendor said, last time we asked
    Column("vendor_id", String(100), nullable=True, index=True),
    Column("vendor_status", String(30), nullable=True),
    Column("vendor_total", Integer, nullable=True),
    Column("vendor_succeeded", Integer, nullable=True),
    Column("vendor_failed", Integer, nullable=True),
    Column("vendor_created_at", Float, nullable=True),
    Column("vendor_ended_at", Float, nullable=True),
    Column("error", JSON, nullable=True),  # batch-level errors or the rejection
    # exactly-once submission
    Column("submit_started_at", Float, nullable=True),  # first intent: reconcile window start
    Column("submit_attempts", Integer, nullable=False, default=0),
    Column("last_submit_at", Float, nullable=True),  # the settle period runs from here
    Column("input_file", String(200), nullable=True),  # Gemini: uploaded before create
    # tracking: the persisted schedule, so a restart resumes it
    Column("next_check_at", Float, nullable=True),
    Column("check_attempt", Integer, nullable=False, default=0),
    Column("vendor_calls", Integer, nullable=False, default=0),
    Column("detected_at", Float, nullable=True),
    # leases for many workers
    Column("lease_owner", String(100), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # ownership: 1 while the vendor batch was adopted without proof (Anthropic window +
    # count); it is never cancelled or deleted at the vendor until its results show our tag
    Column("provisional", Integer, nullable=False, default=0, server_default="0"),
    Column("foreign_vendor_ids", JSON, nullable=True),  # adopted once, proven not ours
    Column("cancel_requested_at", Float, nullable=True),  # the user's cancel, as intent
    Column("woken_at", Float, nullable=True),  # marked due while leased: due again after
    Column("hold_reason", Text, nullable=True),  # why a not_submitted batch waits
    Index("ix_batches_due", "state", "next_check_at"),
)

# The request ledger: one row per request per job, and its one final outcome. Its
# bodies are a table of their own (migration 0012): a ledger row changes when its batch
# closes or retries, a body never, and a row that carried its body was written whole
# again each time (a close rewrote every page of a batch's bodies).
requests = Table(
    "requests",
    metadata,
    # no per-row foreign keys on the bulk tables (migration 0011): their writers check
    # counts against the plan instead (a Job's draft inserts its job and batch rows after
    # their requests, when it publishes them: store/drafts.py)
    Column("job_id", String(40), primary_key=True),
    Column("seq", Integer, primary_key=True),  # input order, 0-based
    Column("custom_id", Text, nullable=False),
    Column("line", Integer, nullable=False),
    Column("batch_id", String(40), nullable=True, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("outcome", String(20), nullable=True),  # succeeded|failed|exhausted|cancelled
    Column("last_error", JSON, nullable=True),
    Column("result_batch_id", String(40), nullable=True),  # the batch whose result is final
    UniqueConstraint("job_id", "custom_id", name="uq_requests_job_id_custom_id"),
)

# What each request asks the vendor: written once, at intake, beside its ledger row
request_bodies = Table(
    "request_bodies",
    metadata,
    Column("job_id", String(40), primary_key=True),  # no foreign key: see requests
    Column("seq", Integer, primary_key=True),
    Column("body", LargeBinary, nullable=False),  # orjson of the vendor body
)

# A Job being written (store/drafts.py): its request rows are committed as they are
# read, under an id no job row has yet; a draft silent for too long is swept with them
job_drafts = Table(
    "job_drafts",
    metadata,
    Column("job_id", String(40), primary_key=True),
    Column("worker", String(100), nullable=True),
    Column("started_at", Float, nullable=False),
    Column("touched_at", Float, nullable=False),  # its last sign of life
)

results = Table(
    "results",
    metadata,
    Column("batch_id", String(40), primary_key=True),  # no foreign key: see requests
    Column("seq", Integer, primary_key=True),
    Column("job_id", String(40), nullable=False, index=True),
    Column("outcome", String(20), nullable=False),  # succeeded|errored|expired|cancelled
    Column("failure", String(20), nullable=True),  # retryable|permanent
    Column("error_code", String(100), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("input_tokens", Integer, nullable=False, default=0),
    Column("cached_input_tokens", Integer, nullable=False, default=0),
    Column("output_tokens", Integer, nullable=False, default=0),
    # cache writes by lifetime (in input_tokens too): billed at 1.25x / 2x input
    Column("cache_write_5m_tokens", Integer, nullable=False, default=0, server_default="0"),
    Column("cache_write_1h_tokens", Integer, nullable=False, default=0, server_default="0"),
    Column("billed", Integer, nullable=False, default=0),
    Column("raw", LargeBinary, nullable=False),  # the vendor's line as received
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("scope", String(10), nullable=False),  # job | batch
    Column("target_id", String(40), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("archived_at", Float, nullable=True),
    Column("expires_at", Float, nullable=True),  # set when archived; the reaper deletes after
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("job_id", String(40), nullable=True, index=True),
    Column("batch_id", String(40), nullable=True),
    Column("kind", String(40), nullable=False),
    Column("from_state", String(20), nullable=True),
    Column("to_state", String(20), nullable=True),
    Column("reason", Text, nullable=True),
    Column("worker", String(100), nullable=True),
    Column("data", JSON, nullable=True),
)

# One cost record per batch, enforced by the primary key: costs are counted once.
costs = Table(
    "costs",
    metadata,
    Column("batch_id", String(40), ForeignKey("batches.id"), primary_key=True),
    Column("job_id", String(40), nullable=False, index=True),
    Column("provider", String(32), nullable=False),
    Column("model", String(200), nullable=False),
    Column("billed_requests", Integer, nullable=False),
    # a 50,000-request batch can pass 2**31 tokens
    Column("input_tokens", BigInteger, nullable=False),
    Column("cached_input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cache_write_5m_tokens", BigInteger, nullable=False, default=0, server_default="0"),
    Column("cache_write_1h_tokens", BigInteger, nullable=False, default=0, server_default="0"),
    Column("cost_usd", Float, nullable=True),  # null: model not in the price table
    Column("list_cost_usd", Float, nullable=True),  # the same work at non-batch prices
    Column("price_source", Text, nullable=True),
    Column("recorded_at", Float, nullable=False, index=True),  # spend over a period
)

# The upper-bound estimate made before a batch is sent, by batch key: a retry
# child is estimated (and admitted against the budgets) before its row exists.
estimates = Table(
    "estimates",
    metadata,
    Column("batch_key", String(300), primary_key=True),
    Column("job_id", String(40), ForeignKey("jobs.id"), nullable=False, index=True),
    Column("requests", Integer, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("uncapped", Integer, nullable=False),  # requests with no max_tokens
    Column("cost_usd", Float, nullable=True),  # null: model not in the price table
    Column("list_cost_usd", Float, nullable=True),
    Column("tokenizer", String(100), nullable=False),
    Column("created_at", Float, nullable=False),
)

# Enqueued-token limits learned from the vendor's rejections (OpenAI
# `token_limit_exceeded`), per provider and model; only ever lowered.
enqueued_limits = Table(
    "enqueued_limits",
    metadata,
    Column("provider", String(32), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("limit_tokens", BigInteger, nullable=False),
    Column("reason", Text, nullable=True),
    Column("updated_at", Float, nullable=False),
)

webhook_events = Table(
    "webhook_events",
    metadata,
    Column("webhook_id", String(200), primary_key=True),  # dedupe key
    Column("received_at", Float, nullable=False),
    Column("event_type", String(50), nullable=False),
    Column("vendor_batch_id", String(100), nullable=True),
    Column("batch_id", String(40), nullable=True),  # ours, when known
    Column("expires_at", Float, nullable=False),
)

# --- the HTTP service (issue 14) ---

# Idempotency-Key records of the API (IETF draft-ietf-httpapi-idempotency-key-header):
# one row per (caller scope, key); response_status NULL while the first request is in flight.
api_idempotency = Table(
    "api_idempotency",
    metadata,
    Column("scope", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("method", String(10), nullable=False),
    Column("path", String(300), nullable=False),
    Column("fingerprint", String(64), nullable=True),  # NULL until the body was read
    Column("response_status", Integer, nullable=True),  # NULL while in flight
    Column("body", LargeBinary, nullable=True),  # the stored response body
    Column("job_id", String(40), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("locked_at", Float, nullable=True),
    Column("expires_at", Float, nullable=False, index=True),
)

# A Job's callback endpoint. The secret is the job's own whsec_ key (NULL: the
# service's KILN_CALLBACK_SECRET); it is never returned, logged or audited.
job_callbacks = Table(
    "job_callbacks",
    metadata,
    Column("job_id", String(40), ForeignKey("jobs.id"), primary_key=True),
    Column("url", Text, nullable=False),
    Column("secret", Text, nullable=True),
    Column("events", String(10), nullable=False),  # final | all
    Column("disabled_at", Float, nullable=True),  # set by a 410 Gone
    Column("created_at", Float, nullable=False),
)

# Webhooks out: written in the transaction of the change they announce.
webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("id", String(40), primary_key=True),  # the webhook-id, reused across retries
    Column("job_id", String(40), nullable=False, index=True),
    Column("event_type", String(40), nullable=False),
    Column("payload", LargeBinary, nullable=False),  # the exact bytes signed and sent
    Column("delivery", String(12), nullable=False),  # pending | delivered | failed | disabled
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("lease_owner", String(100), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_webhook_outbox_due", "delivery", "next_attempt_at"),
)

# Every running worker process: registered at start, renewed by its heartbeat, removed
# on a clean stop. A row whose heartbeat is older than its lease is a lost worker (its
# batch leases run out on their own; nobody deletes them).
workers = Table(
    "workers",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", String(40), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("lease_seconds", Float, nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("state", String(20), nullable=False),  # running | stopping
    Column("steps", JSON, nullable=False),  # ids of the batches being stepped now
)

# A vendor's retry-after, shared: a 429 seen by one worker slows every worker's calls
# to that vendor until `until`.
vendor_pauses = Table(
    "vendor_pauses",
    metadata,
    Column("provider", String(32), primary_key=True),
    Column("until", Float, nullable=False),
    Column("reason", Text, nullable=True),
    Column("set_by", String(100), nullable=True),
    Column("set_at", Float, nullable=False),
)
