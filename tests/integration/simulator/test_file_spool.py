"""The simulator spools file contents above a small size to a temporary directory, so
long runs keep little in memory; the bytes served are the same. A memory test (what is
held, measured with tracemalloc), not a timed one."""

from __future__ import annotations

import gc
import tracemalloc

import openai

from batchkiln.clock import FakeClock
from batchkiln.simulator import Simulator
from batchkiln.simulator.files import SPOOL_ABOVE_BYTES

from .helpers import chat_lines, file_lines, openai_client, submit


async def test_big_files_are_spooled_and_served_unchanged(
    sim: Simulator, oai: openai.AsyncOpenAI, clock: FakeClock
) -> None:
    """Inputs and outputs above the threshold are on disk, not in memory; downloads
    return exactly what was uploaded and what the batch produced."""
    content = chat_lines(2000, tag="sp")
    assert len(content) > SPOOL_ABOVE_BYTES
    batch = await submit(oai, content, tag="sp")
    clock.advance(25 * 3600)
    done = await oai.batches.retrieve(batch.id)
    assert done.status == "completed" and done.output_file_id
    assert (await oai.files.content(batch.input_file_id)).content == content
    lines = await file_lines(oai, done.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == sorted(f"sp-r{i}" for i in range(2000))
    spooled = [f for f in sim.files.live(sim.now()) if f.spooled is not None]
    assert {f.id for f in spooled} == {batch.input_file_id, done.output_file_id}
    assert all(f.spooled.stat().st_size == f.size for f in spooled if f.spooled)
    assert sim.files.memory_bytes() == 0
    small = await oai.files.create(file=("small.jsonl", b'{"a": 1}\n'), purpose="batch")
    record = sim.files.get(small.id, sim.now())
    assert record is not None and record.spooled is None and record.read() == b'{"a": 1}\n'


async def test_many_big_batches_hold_little_memory() -> None:
    """Six 1,000-line batches (inputs and outputs, ~20 MB of files): with spooling, what
    stays allocated after them is a small share of what stays without it (the rest is
    the per-request plans, which every mode keeps)."""
    held: dict[bool, int] = {}
    total = 0
    for spool in (True, False):
        clock = FakeClock()
        sim = Simulator(clock=clock, seed=0, spool_above=SPOOL_ABOVE_BYTES if spool else None)
        client = openai_client(sim.app, sim.openai_base_url, max_retries=0)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        total = 0
        for n in range(6):
            content = chat_lines(1000, tag=f"m{n}", words=20)
            batch = await submit(client, content, tag=f"m{n}")
            clock.advance(25 * 3600)
            done = await client.batches.retrieve(batch.id)
            assert done.output_file_id
            total += len(content) + len((await client.files.content(done.output_file_id)).content)
            del content
        gc.collect()
        held[spool] = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert (sim.files.memory_bytes() == 0) is spool
        await client.close()
        await sim.aclose()
        sim.files.close()
    assert held[False] > total, (held, total)  # every file, in memory
    assert held[True] < held[False] / 3, (held, total)
