"""Validate and read a ~200 MB request file: throughput and peak memory.

    .venv/bin/python bench/input_memory.py [--mb 200] [--prompt-bytes 1000]

Generates the file in a temporary directory, then runs `validate_file` and a
full `iter_requests` pass twice each, each run in a fresh interpreter: once
untraced, for throughput (MB/s) and the growth of the RSS high-water mark over
the interpreter's own (after imports), and once under tracemalloc, for the peak
of memory allocated by Python (tracemalloc slows the pass, so its time is not
used). Prints the figures; asserts nothing about time.

Expected shape: the validation peak is the 1 MB read buffer, the longest line,
and 32-96 bytes per request for duplicate detection; never the file.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import orjson

from batchkiln.intake import iter_requests, validate_file

MB = 1_000_000


def make_file(path: Path, megabytes: int, prompt_bytes: int) -> int:
    """OpenAI chat lines with ~prompt_bytes of prompt each, until the file has `megabytes`."""
    target, count = megabytes * MB, 0
    prompt = ("lorem ipsum dolor sit amet " * (prompt_bytes // 27 + 1))[:prompt_bytes]
    with path.open("wb") as out:
        while out.tell() < target:
            line = {
                "custom_id": f"req-{count}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "max_tokens": 200,
                    "messages": [{"role": "user", "content": f"{count}: {prompt}"}],
                },
            }
            out.write(orjson.dumps(line) + b"\n")
            count += 1
    return count


def rss_mb() -> float:
    """This process's RSS high-water mark (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_pass(kind: str, path: Path, traced: bool) -> dict[str, float | str]:
    """Run one pass in this (fresh) process; return its time and memory figures."""
    baseline = rss_mb()
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    if kind == "validate":
        summary = validate_file(path, provider="openai")
        result = f"{summary.count:,} requests, {len(summary.shards)} shards"
    else:
        result = f"{sum(1 for _ in iter_requests(path, provider='openai')):,} requests"
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if traced else 0
    return {
        "seconds": elapsed,
        "rss_growth_mb": rss_mb() - baseline,
        "rss_mb": rss_mb(),
        "traced_peak_mb": peak / MB,
        "result": result,
    }


def in_child(kind: str, path: Path, traced: bool) -> dict[str, float | str]:
    """One pass in a fresh interpreter, so its RSS high-water mark is its own."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(path)] + (["--traced"] if traced else []),
        check=True,
        capture_output=True,
    ).stdout
    figures: dict[str, float | str] = json.loads(out)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=200, help="file size in MB (10^6 bytes)")
    parser.add_argument("--prompt-bytes", type=int, default=1000, help="prompt size a request")
    parser.add_argument("--child", nargs=2, metavar=("PASS", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_pass(args.child[0], Path(args.child[1]), args.traced)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "requests.jsonl"
        started = time.perf_counter()
        count = make_file(path, args.mb, args.prompt_bytes)
        size_mb = path.stat().st_size / MB
        print(
            f"file: {size_mb:.0f} MB, {count:,} requests"
            f" (~{size_mb * MB / count:,.0f} bytes a line; written in"
            f" {time.perf_counter() - started:.1f} s)"
        )
        for kind, label in (("validate", "validate_file"), ("iter", "iter_requests")):
            plain, traced = in_child(kind, path, False), in_child(kind, path, True)
            seconds = float(plain["seconds"])
            print(
                f"{label:<14} {size_mb / seconds:6.1f} MB/s {seconds:6.2f} s |"
                f" RSS growth {float(plain['rss_growth_mb']):6.1f} MB"
                f" (high-water {float(plain['rss_mb']):6.1f} MB) |"
                f" tracemalloc peak {float(traced['traced_peak_mb']):6.2f} MB | {plain['result']}"
            )


if __name__ == "__main__":
    main()
