"""Memory stays flat: a request file is streamed, never held.

Duplicate detection keeps the custom_ids in a scratch database on disk (`LineBook`),
a chunk at a time, so what Python holds does not grow with the request count.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import orjson
import pytest

from batchkiln.intake import validate_file

MB = 1_000_000


def make_file(path: Path, count: int, pad: int) -> Path:
    """`count` OpenAI lines with about `pad` bytes of prompt each."""
    with path.open("wb") as out:
        for n in range(count):
            line = {
                "custom_id": f"req-{n}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"{n} " + "lorem " * (pad // 6)}],
                },
            }
            out.write(orjson.dumps(line) + b"\n")
    return path


def peak_while_validating(path: Path) -> int:
    tracemalloc.start()
    try:
        validate_file(path, provider="openai")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """5 MB and 20 MB of 1 KB requests, and 20 MB of 4.3 KB requests (as many as the 5 MB)."""
    root = tmp_path_factory.mktemp("memory")
    made = {
        "5mb": make_file(root / "5mb.jsonl", 4_700, pad=1_000),
        "20mb": make_file(root / "20mb.jsonl", 18_800, pad=1_000),
        "20mb-long-lines": make_file(root / "20mb-long.jsonl", 4_700, pad=4_200),
    }
    sizes = {name: path.stat().st_size / MB for name, path in made.items()}
    assert 4.5 < sizes["5mb"] < 5.5 and all(19 < sizes[n] < 22 for n in made if "20" in n), sizes
    return made


def test_peak_memory_for_a_20_mb_file_is_a_few_mb(files: dict[str, Path]) -> None:
    """Validating 20 MB (18,800 requests) peaks under 3 MB of traced memory."""
    assert peak_while_validating(files["20mb"]) < 3 * MB


def test_peak_memory_does_not_grow_with_the_size_of_the_file(files: dict[str, Path]) -> None:
    """5 MB and 20 MB files with the same number of requests peak alike."""
    small, large = (
        peak_while_validating(files["5mb"]),
        peak_while_validating(files["20mb-long-lines"]),
    )
    assert large < small * 1.2, (small, large)


def test_what_grows_with_more_requests_is_under_100_bytes_each(files: dict[str, Path]) -> None:
    """Four times the requests add under 100 bytes per request (against 1,000 of file)."""
    grown = peak_while_validating(files["20mb"]) - peak_while_validating(files["5mb"])
    assert grown < 100 * 18_800, grown
