"""Done hygiene that needs the vendor: deleting a batch's files once its results
are safely stored (when the Job asks for it), audited either way.

It runs after the closing transaction has committed, so a failure here never
undoes an ingest; it is reported in the timeline and the files stay (the vendor
expires them: OpenAI batch files after 30 days, Anthropic results after 29).
"""

from __future__ import annotations

from batchkiln.engine.policy import JobOptions
from batchkiln.providers.base import Provider, VendorBatch, VendorError
from batchkiln.store import BatchRow, JobRow, Store


async def delete_vendor_files(
    store: Store,
    provider: Provider,
    job: JobRow,
    batch: BatchRow,
    vendor: VendorBatch | None,
    *,
    worker: str,
) -> bool:
    """Delete the vendor files of an ingested batch (named by `vendor`, the snapshot the
    ingest read) if the Job's options say so. True when they were deleted."""
    if vendor is None or not JobOptions.load(job.options).delete_vendor_files:
        return False
    try:
        await provider.cleanup(vendor)
    except VendorError as exc:
        kind, deleted = "vendor.cleanup_failed", False
        reason = f"vendor files of {batch.vendor_id} not deleted: {exc.message}"
    else:
        kind, deleted = "vendor.files_deleted", True
        reason = f"input and result files of {batch.vendor_id} deleted after ingest"
    await store.audit.record(kind, job_id=job.id, batch_id=batch.id, worker=worker, reason=reason)
    return deleted
