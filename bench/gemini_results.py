"""Gemini results benchmark: a big responses file read through `GeminiProvider.results()`
(streamed through `files.download(destination=...)` and a bounded queue) next to the
SDK's plain `files.download` (the whole file in memory), over real loopback.

    .venv/bin/python bench/gemini_results.py                 # 20k lines
    .venv/bin/python bench/gemini_results.py --sizes 5000 50000

For each size N a batch of N requests is created through the adapter (file mode) against
the simulator served on loopback in a child process (so its send buffers are not counted
here) on a FakeClock moved by the admin API, run to its end, and its responses file
(~N x 0.5 KB) read both ways. Each way is timed, then run again under tracemalloc for
its Python-allocation peak in this process (tracemalloc slows Python, so that run is not
the timed one). Prints one table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection

import httpx

from batchkiln.clock import FakeClock
from batchkiln.providers import CreateSpec, GeminiProvider, WireRequest
from batchkiln.simulator import Simulator, serve_in_thread


async def _measure(run: Callable[[], Awaitable[int]]) -> tuple[float, int, float]:
    started = time.perf_counter()
    count = await run()
    seconds = time.perf_counter() - started
    tracemalloc.start()
    await run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, count, peak / 2**20


def _serve(conn: Connection) -> None:
    """The child: a simulator on loopback until the parent says it is done."""
    with serve_in_thread(Simulator(clock=FakeClock(), seed=1)) as url:
        conn.send(url)
        conn.recv()


async def bench(n: int) -> list[str]:
    rows = []
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(child,), daemon=True)
    server.start()
    url = parent.recv()
    try:
        provider = GeminiProvider(base_url=url, api_key="bench")
        body = {"contents": [{"role": "user", "parts": [{"text": "summarise " * 40}]}]}
        spec = CreateSpec(
            "bench", "bnch0001", "gemini-2.5-flash", "generateContent",
            [WireRequest(f"bnch0001-{i}", body) for i in range(n)],
        )  # fmt: skip
        try:
            created = await provider.create(spec)
            async with httpx.AsyncClient(base_url=url) as admin:  # past its end, inside 48 h
                await admin.post("/_sim/clock/advance", json={"seconds": 3600})
            ended = await provider.retrieve(created.vendor_id)
            assert ended.output_file_id, ended
            size = len(await provider.client.aio.files.download(file=ended.output_file_id))

            async def streamed() -> int:
                return sum([1 async for _ in provider.results(ended)])

            async def whole() -> int:
                data = await provider.client.aio.files.download(file=ended.output_file_id or "")
                return data.count(b"\n")

            for label, run in (("results() streamed", streamed), ("files.download", whole)):
                seconds, count, peak = await _measure(run)
                rows.append(
                    f"| {n:,} | {size / 2**20:.1f} MB | {label} | {count:,} | {seconds:.2f} s"
                    f" | {count / seconds:,.0f} | {peak:.1f} MB |"
                )
        finally:
            await provider.aclose()
    finally:
        parent.send("done")
        server.join(timeout=10)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000])
    args = parser.parse_args()
    print("| lines | file | how | lines read | time | lines/s | tracemalloc peak |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        for row in asyncio.run(bench(n)):
            print(row, flush=True)


if __name__ == "__main__":
    main()
