"""Per-Job choices: how many attempts a request gets, which failures retry, what
the Job may spend, and whether the vendor's files are deleted once ingested."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RetryPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(3, ge=1, le=20)
    auto_retry: bool = True  # False: failures wait for `kiln retry JOB`
    retry_errors: bool = True  # retryable per-request errors (timeouts, 5xx, overloaded, 429)
    retry_expired: bool = True  # requests the 24 h window cut off
    retry_missing: bool = True  # requests with no result line at all


class JobOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    retry: RetryPolicy = RetryPolicy()
    # The most the Job may cost at batch prices, retries included; a submission or
    # retry whose estimate would pass it is refused before the vendor sees it.
    budget_usd: float | None = Field(None, gt=0)
    delete_vendor_files: bool = False  # OpenAI input/output/error files, after ingest

    @classmethod
    def load(cls, raw: dict[str, Any] | None) -> JobOptions:
        return cls.model_validate(raw or {})
