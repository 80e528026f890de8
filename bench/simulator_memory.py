"""Memory of a long simulator run: many big OpenAI batches, with file spooling on/off.

    .venv/bin/python bench/simulator_memory.py [--batches 16] [--lines 50000]

Each mode runs in a fresh interpreter: upload an input of `--lines` chat requests,
create the batch, jump the virtual clock past the window, download the output; repeat
`--batches` times. Prints the resident set size (VmRSS) after imports and after the
run, and the file bytes the simulator held in memory. Measures memory only; times
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
from pathlib import Path

import orjson

MB = 1_000_000


def rss_mb() -> float:
    """Current resident set size (VmRSS) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / MB
    return float("nan")


def chat_lines(n: int, tag: str) -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "custom_id": f"{tag}-r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "max_tokens": 64,
                    "messages": [{"role": "user", "content": f"Summarise item {i}: " + "x " * 40}],
                },
            }
        )
        + b"\n"
        for i in range(n)
    )


async def run(batches: int, lines: int, spool: bool) -> dict[str, float]:
    import httpx
    import openai

    from batchkiln.clock import FakeClock
    from batchkiln.simulator import Simulator
    from batchkiln.simulator.files import SPOOL_ABOVE_BYTES

    clock = FakeClock()
    sim = Simulator(clock=clock, seed=0, spool_above=SPOOL_ABOVE_BYTES if spool else None)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app))
    client = openai.AsyncOpenAI(
        base_url=sim.openai_base_url, api_key="sim", http_client=http, max_retries=0
    )
    gc.collect()
    start = rss_mb()
    file_bytes = 0
    for n in range(batches):
        content = chat_lines(lines, f"b{n}")
        upload = await client.files.create(file=(f"kiln-b{n}.jsonl", content), purpose="batch")
        batch = await client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        clock.advance(25 * 3600)
        done = await client.batches.retrieve(batch.id)
        assert done.output_file_id
        output = (await client.files.content(done.output_file_id)).content
        file_bytes += len(content) + len(output)
        del content, output
    gc.collect()
    figures = {
        "rss_start_mb": start,
        "rss_end_mb": rss_mb(),
        "file_mb": file_bytes / MB,
        "held_in_memory_mb": sim.files.memory_bytes() / MB,
    }
    await client.close()
    await http.aclose()
    sim.files.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--child", choices=["spool", "memory"])
    args = parser.parse_args()
    if args.child:
        figures = asyncio.run(run(args.batches, args.lines, args.child == "spool"))
        print(json.dumps(figures))
        return
    print(f"{args.batches} batches x {args.lines:,} lines, OpenAI wire, in-process simulator")
    for mode in ("memory", "spool"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                mode,
                "--batches",
                str(args.batches),
                "--lines",
                str(args.lines),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        f = json.loads(out.splitlines()[-1])
        print(
            f"  files {mode:>6}: RSS {f['rss_start_mb']:7.1f} MB -> {f['rss_end_mb']:7.1f} MB"
            f" after {f['file_mb']:7.1f} MB of files; {f['held_in_memory_mb']:7.1f} MB of"
            " file content in memory"
        )


if __name__ == "__main__":
    main()
