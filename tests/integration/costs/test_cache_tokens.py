"""Cache-write tokens are stored per result, summed per batch, and reach the cost row."""

from __future__ import annotations

from batchkiln.store import Store

from ..store.helpers import make_job


async def test_cache_write_tokens_are_summed_over_billed_results(store: Store) -> None:
    """usage_of sums 5-minute and 1-hour cache writes of billed results only."""
    job = await make_job(store, n=3)
    (batch,) = await store.batches.for_job(job.id)
    rows = [
        {
            "batch_id": batch.id,
            "seq": seq,
            "job_id": job.id,
            "outcome": "succeeded" if billed else "errored",
            "failure": None,
            "error_code": None,
            "error_message": None,
            "input_tokens": 100,
            "cached_input_tokens": 10,
            "output_tokens": 5,
            "cache_write_5m_tokens": 20,
            "cache_write_1h_tokens": 7,
            "billed": 1 if billed else 0,
            "raw": b"{}",
        }
        for seq, billed in ((0, True), (1, True), (2, False))
    ]
    await store.ledger.store_results(rows)
    usage = await store.ledger.usage_of(batch.id)
    assert usage == {
        "billed_requests": 2,
        "input_tokens": 200,
        "cached_input_tokens": 20,
        "output_tokens": 10,
        "cache_write_5m_tokens": 40,
        "cache_write_1h_tokens": 14,
    }
