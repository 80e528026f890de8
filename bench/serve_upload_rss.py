"""Upload a ~200 MB JSONL to `kiln serve` over real HTTP: the server's peak RSS.

    .venv/bin/python bench/serve_upload_rss.py [--mb 200] [--prompt-bytes 1000]

Generates the file in a temporary directory, starts `kiln serve --no-worker
--port 0` on a fresh SQLite database, as production runs it (the OpenAI provider
with a dummy key and an unreachable base URL: with no worker in the process no
vendor call is made, so the figure is the upload's and the job creation's, not a
simulator's holding the batch in memory), streams the file as
multipart/form-data with an Idempotency-Key, and reads the server's VmHWM
(peak resident set) from /proc before the upload, and after the job was created.
Also replays the POST (the stored answer, no second job). Prints the figures;
asserts nothing about time. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson

MB = 1_000_000


def make_file(path: Path, megabytes: int, prompt_bytes: int) -> int:
    target, count = megabytes * MB, 0
    prompt = ("lorem ipsum dolor sit amet " * (prompt_bytes // 27 + 1))[:prompt_bytes]
    with path.open("wb") as out:
        while out.tell() < target or count == 0:
            line = {
                "custom_id": f"req-{count}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"{count} {prompt}"}],
                    "max_tokens": 32,
                },
            }
            out.write(orjson.dumps(line) + b"\n")
            count += 1
    return count


def status_kb(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) if found else 0


def chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(size):
            yield block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--prompt-bytes", type=int, default=1000)
    args = parser.parse_args()
    kiln = Path(sys.executable).with_name("kiln")
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        tmpdir = Path(tmp)
        data = tmpdir / "big.jsonl"
        count = make_file(data, args.mb, args.prompt_bytes)
        size = data.stat().st_size
        env = {
            **os.environ,
            "KILN_DATABASE_URL": f"sqlite:///{tmpdir}/kiln.db",
            "KILN_UPLOAD_DIR": str(tmpdir),
            "OPENAI_API_KEY": "sk-bench-never-used",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        }
        env.pop("KILN_API_TOKENS", None)
        server = subprocess.Popen(
            [str(kiln), "serve", "--no-worker", "--port", "0"],
            env=env,
            cwd=tmpdir,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stderr is not None
            url = None
            while url is None:
                line = server.stderr.readline()
                if not line:
                    raise SystemExit("kiln serve exited before listening")
                found = re.search(r"listening on (http://\S+)", line)
                url = found.group(1) if found else None
            idle_hwm = status_kb(server.pid, "VmHWM")
            boundary = "kilnbenchboundary"
            head = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="provider"\r\n\r\n'
                f'openai\r\n--{boundary}\r\nContent-Disposition: form-data; name="file";'
                f' filename="big.jsonl"\r\nContent-Type: application/x-ndjson\r\n\r\n'
            ).encode()
            tail = f"\r\n--{boundary}--\r\n".encode()

            def body() -> Iterator[bytes]:
                yield head
                yield from chunks(data)
                yield tail

            headers = {
                "Idempotency-Key": "bench-upload-1",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            }
            with httpx.Client(base_url=url, timeout=3600) as client:
                # warm-up: a one-line job loads the SDKs and the tokenizer, so the
                # growth below is the big upload's own
                tiny = tmpdir / "tiny.jsonl"
                make_file(tiny, 0, 10)
                warm = client.post(
                    "/v1/jobs",
                    files={"file": ("tiny.jsonl", tiny.read_bytes())},
                    data={"provider": "openai"},
                    headers={"Idempotency-Key": "bench-warm-up"},
                )
                assert warm.status_code == 201, warm.text
                warm_hwm = status_kb(server.pid, "VmHWM")
                start = time.perf_counter()
                answer = client.post("/v1/jobs", content=body(), headers=headers)
                elapsed = time.perf_counter() - start
                peak = status_kb(server.pid, "VmHWM")
                if answer.status_code != 201:
                    raise SystemExit(f"upload failed: {answer.status_code} {answer.text[:500]}")
                job = answer.json()
                replay_start = time.perf_counter()
                replay = client.post("/v1/jobs", content=body(), headers=headers)
                replay_elapsed = time.perf_counter() - replay_start
                replay_peak = status_kb(server.pid, "VmHWM")
        finally:
            server.terminate()
            server.wait(30)
    print(f"file: {size / MB:.1f} MB, {count} requests")
    print(
        f"upload + job creation: {elapsed:.1f} s ({size / MB / elapsed:.1f} MB/s),"
        f" {len(job['batches'])} batches, status {answer.status_code}"
    )
    print(
        f"server peak RSS (VmHWM): idle {idle_hwm / 1024:.1f} MB; after a one-line warm-up job"
        f" (SDKs, tokenizer loaded) {warm_hwm / 1024:.1f} MB; after the upload {peak / 1024:.1f}"
        f" MB: the upload's own growth {(peak - warm_hwm) / 1024:.1f} MB"
    )
    print(
        f"replay: status {replay.status_code}, Idempotent-Replayed"
        f" {replay.headers.get('idempotent-replayed')}, {replay_elapsed:.1f} s,"
        f" peak RSS {replay_peak / 1024:.1f} MB"
    )
    print(f"target: peak under 150 MB -> {'met' if peak / 1024 < 150 else 'NOT met'}")


if __name__ == "__main__":
    main()
