"""Validate and read a ~200 MB request file: throughput and peak memory.

    .venv/bin/python bench/input_memory.py [--mb 200]

Prints MB/s for the validation pass and the reading pass, the tracemalloc peak
of each, and the process's RSS high-water mark. Memory is bounded by the
longest line plus ~100 bytes per request (duplicate detection), never by the
file size.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import orjson

from batchkiln.intake import iter_requests, validate_file


def make_file(path: Path, megabytes: int) -> int:
    target, count = megabytes * 1024 * 1024, 0
    body = "lorem ipsum dolor sit amet " * 36  # ~1 KB of prompt
    with path.open("wb") as out:
        while out.tell() < target:
            line = {
                "custom_id": f"req-{count}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "max_tokens": 200,
                    "messages": [{"role": "user", "content": f"{count}: {body}"}],
                },
            }
            out.write(orjson.dumps(line) + b"\n")
            count += 1
    return count


def measure(label: str, size_mb: float, run: object) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    result = run()  # type: ignore[operator]
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"{label:<22} {size_mb / elapsed:8.1f} MB/s  {elapsed:6.2f} s"
        f"  tracemalloc peak {peak / 1e6:7.1f} MB  ({result})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "requests.jsonl"
        count = make_file(path, args.mb)
        size_mb = path.stat().st_size / 1024 / 1024
        print(f"file: {size_mb:.0f} MB, {count:,} requests")
        measure(
            "validate_file",
            size_mb,
            lambda: f"{validate_file(path, provider='openai').count:,} requests",
        )
        measure(
            "iter_requests",
            size_mb,
            lambda: f"{sum(1 for _ in iter_requests(path, provider='openai')):,} requests",
        )
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"process RSS high-water mark: {rss:.0f} MB")


if __name__ == "__main__":
    main()
