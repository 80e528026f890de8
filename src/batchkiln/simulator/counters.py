"""What the simulator saw, for tests and benchmarks: calls, creates, faults, webhooks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class WebhookAttempt:
    """One POST of one webhook event to one URL."""

    webhook_id: str
    event_id: str
    event_type: str
    batch_id: str
    url: str
    attempt: int  # 0 for the first try of this delivery, then 1, 2, ...
    at: float  # virtual time of the attempt
    status_code: int | None  # None when the POST itself failed
    error: str | None = None
    duplicate: bool = False  # an injected second delivery of the same event

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class Counters:
    """Tallies kept by a `Simulator` (read them in tests, or at GET /_sim/counters).

    - `calls[(method, route)]`: vendor calls per endpoint, e.g. ("POST", "/v1/batches").
    - `retry_counts[(method, route, n)]`: calls that carried `x-stainless-retry-count: n`.
    - `batches_created`: batches committed (both vendors, including dropped-then-lost ones).
    - `created_by_vendor`, `created_by_key` (API key), `created_by_tag` (kiln tag),
      `created_by_metadata[(key, value)]` (OpenAI metadata pairs).
    - `faults[name]`: faults injected, e.g. "rate_limit", "read_5xx", "drop_create_cut".
    - `webhook_events`: events emitted; `webhook_deliveries`: 2xx deliveries;
      `webhook_attempts`: every POST, in order (`WebhookAttempt`); `webhook_dropped`.
    """

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    retry_counts: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    batches_created: int = 0
    created_by_vendor: Counter[str] = field(default_factory=Counter)
    created_by_key: Counter[str] = field(default_factory=Counter)
    created_by_tag: Counter[str] = field(default_factory=Counter)
    created_by_metadata: Counter[tuple[str, str]] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    webhook_events: int = 0
    webhook_deliveries: int = 0
    webhook_dropped: int = 0
    webhook_attempts: list[WebhookAttempt] = field(default_factory=list)

    def record_call(self, method: str, route: str, retry_count: str | None) -> None:
        self.calls[(method, route)] += 1
        if retry_count is not None and retry_count.isdigit():
            self.retry_counts[(method, route, int(retry_count))] += 1

    def record_create(
        self, vendor: str, api_key: str | None, tag: str | None, metadata: dict[str, str]
    ) -> None:
        self.batches_created += 1
        self.created_by_vendor[vendor] += 1
        if api_key:
            self.created_by_key[api_key] += 1
        if tag:
            self.created_by_tag[tag] += 1
        for pair in metadata.items():
            self.created_by_metadata[pair] += 1

    def to_json(self) -> dict[str, Any]:
        """A JSON view (tuple keys joined with spaces)."""

        def joined(counter: Counter[Any]) -> dict[str, int]:
            return {
                " ".join(map(str, k)) if isinstance(k, tuple) else str(k): v
                for k, v in sorted(counter.items(), key=lambda kv: str(kv[0]))
            }

        return {
            "calls": joined(self.calls),
            "retry_counts": joined(self.retry_counts),
            "batches_created": self.batches_created,
            "created_by_vendor": joined(self.created_by_vendor),
            "created_by_key": joined(self.created_by_key),
            "created_by_tag": joined(self.created_by_tag),
            "created_by_metadata": joined(self.created_by_metadata),
            "faults": joined(self.faults),
            "webhook_events": self.webhook_events,
            "webhook_deliveries": self.webhook_deliveries,
            "webhook_dropped": self.webhook_dropped,
            "webhook_attempts": [
                {
                    "webhook_id": a.webhook_id,
                    "event_type": a.event_type,
                    "batch_id": a.batch_id,
                    "url": a.url,
                    "attempt": a.attempt,
                    "at": a.at,
                    "status_code": a.status_code,
                    "error": a.error,
                    "duplicate": a.duplicate,
                }
                for a in self.webhook_attempts
            ],
        }
