"""`/metrics` in the Prometheus text format, with prometheus-client.

Most figures are counted from the database at scrape time (the audit log, the
batches, the results, the outbox), so they are right after a restart and across
every process sharing the store; the counters of what this process did itself
(HTTP requests, webhook delivery attempts) are ordinary in-process counters.

    kiln_batches{provider,state}                     gauge
    kiln_vendor_calls_total{provider}                counter (all kinds)
    kiln_vendor_calls_by_kind_total{kind}            counter (create, reconcile)
    kiln_submissions_total{outcome}                  counter: accepted|reconciled|unknown|rejected
    kiln_detection_latency_seconds                   histogram: vendor end -> we noticed
    kiln_ingest_lines_total, kiln_ingest_bytes_total counter
    kiln_webhooks_in_total{result}                   counter: received|duplicate|rejected
    kiln_webhooks_out_total{result}                  counter: delivered|retry|failed|disabled
    kiln_webhook_outbox{state}                       gauge; kiln_webhook_outbox_depth gauge
    kiln_budget_refusals_total                       counter
    kiln_http_requests_total{method,route,status}    counter (this process)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from batchkiln.store.listing import Figures

LATENCY_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Snapshot(Collector):
    def __init__(self) -> None:
        self.figures = Figures()

    def collect(self) -> Iterator[Metric]:
        f = self.figures
        batches = GaugeMetricFamily(
            "kiln_batches", "Batches by state", labels=["provider", "state"]
        )
        for (provider, state), n in sorted(f.batches.items()):
            batches.add_metric([provider, state], n)
        yield batches
        calls = CounterMetricFamily(
            "kiln_vendor_calls", "Vendor API calls made for batches", labels=["provider"]
        )
        for provider, n in sorted(f.vendor_calls.items()):
            calls.add_metric([provider], n)
        yield calls
        kinds = CounterMetricFamily(
            "kiln_vendor_calls_by_kind", "Vendor calls by kind (audited ones)", labels=["kind"]
        )
        kinds.add_metric(["create"], f.audit_kinds.get("submit.attempt", 0))
        kinds.add_metric(["reconcile"], f.audit_kinds.get("submit.reconcile", 0))
        yield kinds
        subs = CounterMetricFamily(
            "kiln_submissions", "Batch submissions by outcome", labels=["outcome"]
        )
        for outcome, n in sorted(f.submissions.items()):
            subs.add_metric([outcome], n)
        yield subs
        yield _histogram(f.detection_latencies)
        yield CounterMetricFamily(
            "kiln_ingest_lines", "Result lines ingested", value=f.ingest_lines
        )
        yield CounterMetricFamily(
            "kiln_ingest_bytes", "Result bytes ingested", value=f.ingest_bytes
        )
        hooks = CounterMetricFamily(
            "kiln_webhooks_in", "Vendor webhook deliveries received", labels=["result"]
        )
        for result in ("received", "duplicate", "rejected"):
            hooks.add_metric([result], f.audit_kinds.get(f"webhook.{result}", 0))
        yield hooks
        box = GaugeMetricFamily(
            "kiln_webhook_outbox", "Outbox deliveries by state", labels=["state"]
        )
        for state in ("pending", "delivered", "failed", "disabled"):
            box.add_metric([state], f.outbox.get(state, 0))
        yield box
        yield GaugeMetricFamily(
            "kiln_webhook_outbox_depth",
            "Deliveries not finished yet",
            value=f.outbox.get("pending", 0),
        )
        yield CounterMetricFamily(
            "kiln_budget_refusals",
            "Submissions and retries refused by a budget",
            value=f.audit_kinds.get("budget.refused", 0),
        )


def _histogram(values: Iterable[float]) -> HistogramMetricFamily:
    data = sorted(values)
    buckets = []
    for bound in LATENCY_BUCKETS:
        buckets.append((str(bound), sum(1 for v in data if v <= bound)))
    buckets.append(("+Inf", len(data)))
    return HistogramMetricFamily(
        "kiln_detection_latency_seconds",
        "Seconds from the vendor ending a batch to our noticing it",
        buckets=buckets,
        sum_value=sum(data),
    )


class Metrics:
    """One registry per API instance (tests build many)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)
        self.http = Counter(
            "kiln_http_requests",
            "HTTP requests served by this process",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.webhooks_out = Counter(
            "kiln_webhooks_out",
            "Webhook delivery attempts by this process",
            ["result"],
            registry=self.registry,
        )

    def delivery(self, result: str) -> None:
        self.webhooks_out.labels(result).inc()

    def render(self, figures: Figures) -> bytes:
        self._snapshot.figures = figures
        return generate_latest(self.registry)
