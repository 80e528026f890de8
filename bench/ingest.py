"""Ingest benchmark: how fast, and in how much memory, a big result file goes from
bytes to durable rows, next to two baselines.

    .venv/bin/python bench/ingest.py                      # 25k, 50k, 100k lines, both stores
    .venv/bin/python bench/ingest.py --sizes 50000 --profile
    .venv/bin/python bench/ingest.py --no-postgres --no-tracemalloc

For each size N it makes one real result file with the simulator: a Job of N requests
is submitted to a scratch store and its batch created through the OpenAI adapter and
SDK against the simulator served on loopback (`serve_in_thread`), on a FakeClock. The
requests' token counts are then set as if every prompt were ~9.6 KB (2,400 tokens), so
each output line is ~2 KB, as for a ~320-token chat answer; uploading real 9.6 KB
prompts would need a ~480 MB input file, over the 200 MB limit. Everything after
that is the simulator's own: the timeline, the output file (N lines, ~N x 2 KB), and
the download, which is timed twice over loopback (raw bytes with the SDK, and through
the adapter's `results()`, which also parses every line) and saved once to a file.

Then, each in a fresh subprocess (so the RSS high-water mark is the case's own):

  parse-only  orjson.loads on each line of the file, nothing kept
  common      the pattern other libraries use: read the whole text, json.loads each
              line, keep a dict custom_id -> object
  ours        the real `Ingestor.ingest` of a completed batch on SQLite / PostgreSQL:
              the adapter's line parsing, the join by wire id, `_result_row`,
              `store_results` in chunks, then plan + `close_batch` (one transaction),
              with a provider that streams the saved file in 64 KiB chunks instead of
              HTTP (the download is its own figure). The store is prepared in another
              subprocess; `stream` is the `_download` part, `close` the rest and
              the store's close (on SQLite, the checkpoint of what is left in the
              WAL, as min-sqlite's closing its connection does).

Every case runs `--repeat` times (5), in rounds that interleave the cases (this machine's
speed drifts by 10-30 % within minutes); the table shows the median run of each, with all
run times under it. A target that compares two cases takes the ratio within each round,
where both ran seconds apart, and the median of those ratios (each round's is printed).
Peak memory is the highest RSS high-water mark above the RSS at the start of the measured
work (Linux: /proc/self/clear_refs resets it), and the tracemalloc peak in a second run
of the same case in the first round (tracemalloc slows Python down, so its run is not
timed).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from batchkiln.clock import FakeClock
from batchkiln.engine.budget import BudgetGuard
from batchkiln.engine.ingest import Ingestor
from batchkiln.engine.kiln import Kiln
from batchkiln.intake import batch_tag, derive_batch_key, sharding
from batchkiln.lifecycle import Event, State
from batchkiln.providers._shared import jsonl_lines
from batchkiln.providers.base import CreateSpec, ResultLine, VendorBatch
from batchkiln.providers.openai import OpenAIProvider, parse_line
from batchkiln.simulator import Simulator, openai_batches, serve_in_thread
from batchkiln.simulator.model import output_tokens
from batchkiln.simulator.timeline import PlannedRequest, plan_timeline
from batchkiln.store import Store

HERE = Path(__file__).resolve().parent

# One batch of 100,000 lines (the growth check) is over OpenAI's 50,000-request limit
# (Anthropic's is 100,000): in this process only, our shard planner and the simulator
# take 100,000 OpenAI requests a batch, so every size is one batch.
_limits = sharding.PROVIDER_LIMITS["openai"]
sharding.PROVIDER_LIMITS["openai"] = replace(_limits, requests=100_000)
openai_batches.MAX_REQUESTS = 100_000
MODEL = "gpt-4o-mini"
PROMPT_TOKENS = 2400  # as if each prompt were ~9.6 KB: output lines of ~2 KB
CHUNK = 64 * 1024
POSTGRES_URL = os.environ.get(
    "KILN_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
MB = 1e6
PHASES = ("open", "stream", "close")


# ---- memory --------------------------------------------------------------------------


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakRss:
    """The RSS high-water mark (kB), resettable per stretch of work on Linux."""

    def __init__(self) -> None:
        self.resettable = True

    def current_kb(self) -> int:
        return _proc_status_kb("VmRSS") or 0

    def reset(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # VmHWM := the current RSS
        except OSError:
            self.resettable = False  # then the high-water mark is the process's

    def high_water_kb(self) -> int:
        hwm = _proc_status_kb("VmHWM")
        if hwm is None:
            import resource

            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return hwm


# ---- the result file -----------------------------------------------------------------


@dataclass
class Generated:
    size: int
    key: str
    tag: str
    vendor_id: str
    requests_path: str
    results_path: str
    lines: int
    bytes: int
    download_raw_s: float
    download_results_s: float


def write_requests(path: Path, n: int, prompt_bytes: int) -> None:
    filler = ("lorem ipsum dolor sit amet " * (prompt_bytes // 27 + 1))[:prompt_bytes]
    with path.open("wb") as out:
        for i in range(n):
            body = {"messages": [{"role": "user", "content": f"{i}: {filler}"}], "max_tokens": 512}
            out.write(orjson.dumps({"custom_id": f"r{i}", "body": body}) + b"\n")


def job_key(n: int) -> str:
    return f"bench-ingest-{n}"


async def generate(n: int, out: Path, prompt_bytes: int) -> Generated:
    """Create the batch in the simulator (over loopback), finish it, download it."""
    requests_path = out / f"requests-{n}.jsonl"
    results_path = out / f"results-{n}.jsonl"
    write_requests(requests_path, n, prompt_bytes)
    clock = FakeClock()
    sim = Simulator(clock=clock, seed=0)
    with tempfile.TemporaryDirectory() as scratch, serve_in_thread(sim) as url:
        provider = OpenAIProvider(base_url=f"{url}/v1", api_key="bench")
        store = await Store.open(f"sqlite:///{scratch}/gen.db", clock=clock)
        try:
            kiln = Kiln(store, {"openai": provider}, clock=clock, worker="bench")
            job = (
                await kiln.submit(requests_path, provider="openai", model=MODEL, key=job_key(n))
            ).job
            await kiln.run_once(job_id=job.id)  # upload + create through the SDK
            (batch,) = await store.batches.for_job(job.id)
            assert batch.vendor_id is not None, batch.state
            _enlarge(sim, batch.vendor_id)
            clock.advance(2 * 86400)
            vendor = await provider.retrieve(batch.vendor_id)
            assert vendor.state == State.COMPLETED, vendor
            # best of two: the server shares this process (and the GIL) with the client
            raw_s, size = min(
                [await _download_raw(provider, batch.vendor_id, results_path) for _ in range(2)]
            )
            results_s, lines = min([await _download_results(provider, vendor) for _ in range(2)])
        finally:
            await provider.aclose()
            await store.close()
    assert lines == n, (lines, n)
    return Generated(
        size=n,
        key=job_key(n),
        tag=batch.tag,
        vendor_id=batch.vendor_id,
        requests_path=str(requests_path),
        results_path=str(results_path),
        lines=lines,
        bytes=size,
        download_raw_s=raw_s,
        download_results_s=results_s,
    )


def _enlarge(sim: Simulator, vendor_id: str) -> None:
    """Give every request of the simulator batch a 2,400-token prompt (see the doc)."""
    batch = sim.openai_batches[vendor_id]
    tl = batch.timeline
    planned = [
        PlannedRequest(
            p.custom_id,
            None,
            PROMPT_TOKENS,
            output_tokens(f"{batch.seed}|{batch.id}|{p.custom_id}", PROMPT_TOKENS, None),
        )
        for p in sorted(tl.plans, key=lambda p: p.index)
    ]
    batch.timeline = plan_timeline(
        now=tl.created_at, batch_id=batch.id, seed=batch.seed, faults=batch.faults, requests=planned
    )


async def _download_raw(provider: OpenAIProvider, vendor_id: str, path: Path) -> tuple[float, int]:
    current = await provider.client.batches.retrieve(vendor_id)
    assert current.output_file_id and not current.error_file_id
    size = 0
    t0 = time.perf_counter()
    with path.open("wb") as out:
        async with provider.client.files.with_streaming_response.content(
            current.output_file_id
        ) as resp:
            async for chunk in resp.iter_bytes():
                out.write(chunk)
                size += len(chunk)
    return time.perf_counter() - t0, size


async def _download_results(provider: OpenAIProvider, vendor: VendorBatch) -> tuple[float, int]:
    lines = 0
    t0 = time.perf_counter()
    async for _ in provider.results(vendor):
        lines += 1
    return time.perf_counter() - t0, lines


# ---- the store, prepared in its own process --------------------------------------------


class FileProvider:
    """The OpenAI adapter's result path over a saved file instead of HTTP."""

    name = "openai"
    supports_webhooks = False
    list_page_size = 100

    def __init__(self, gen: Generated) -> None:
        self.gen = gen

    def _batch(self) -> VendorBatch:
        n = self.gen.lines
        return VendorBatch(
            vendor_id=self.gen.vendor_id,
            vendor_status="completed",
            state=State.COMPLETED,
            total=n,
            succeeded=n,
            failed=0,
            created_at=0.0,
            tag=self.gen.tag,
        )

    async def retrieve(self, vendor_id: str) -> VendorBatch:
        return self._batch()

    async def results(self, batch: VendorBatch) -> AsyncIterator[ResultLine]:
        async for raw in jsonl_lines(_chunks(Path(self.gen.results_path))):
            yield parse_line(raw)

    async def create(self, spec: CreateSpec) -> VendorBatch:
        raise NotImplementedError

    async def find_candidates(self, spec: CreateSpec, *, since: float) -> list[VendorBatch]:
        return []

    def list_recent(self, *, since: float) -> AsyncIterator[VendorBatch]:
        raise NotImplementedError

    async def cancel(self, vendor_id: str) -> VendorBatch:
        raise NotImplementedError

    async def cleanup(self, batch: VendorBatch) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


async def prepare(url: str, gen: Generated) -> None:
    """A store holding the Job with its one batch completed at the vendor, not ingested."""
    clock = FakeClock()
    store = await Store.open(_db_url(url), clock=clock, **_engine_args(url))
    try:
        kiln = Kiln(store, {"openai": FileProvider(gen)}, clock=clock, worker="bench")
        job = (
            await kiln.submit(gen.requests_path, provider="openai", model=MODEL, key=gen.key)
        ).job
        (batch,) = await store.batches.for_job(job.id)
        assert batch.tag == gen.tag == batch_tag(derive_batch_key(gen.key, 0, 1))
        await store.batches.transition(batch, State.NOT_SUBMITTED, Event.SUBMIT)
        await store.batches.transition(
            batch, State.SUBMITTING, Event.ACCEPTED, values={"vendor_id": gen.vendor_id}
        )
        await store.batches.transition(batch, State.PENDING, Event.VENDOR_COMPLETED)
    finally:
        await store.close()


def _engine_args(url: str) -> dict[str, Any]:
    if "#schema=" not in url:
        return {}
    return {"connect_args": {"server_settings": {"search_path": url.split("#schema=")[1]}}}


def _db_url(url: str) -> str:
    return url.split("#schema=")[0]


# ---- the measured cases (each in a child process) --------------------------------------


def case_parse_only(gen: Generated) -> dict[str, Any]:
    lines = 0
    with open(gen.results_path, "rb") as f:
        for line in f:
            orjson.loads(line)
            lines += 1
    return {"lines": lines}


def case_common(gen: Generated) -> dict[str, Any]:
    with open(gen.results_path, encoding="utf-8") as f:
        text = f.read()
    results: dict[str, Any] = {}
    for line in text.splitlines():
        if line:
            obj = json.loads(line)
            results[obj["custom_id"]] = obj
    return {"lines": len(results)}


def case_min_sqlite(gen: Generated, url: str) -> dict[str, Any]:
    """The least a durable ingest can do on SQLite: orjson + stdlib sqlite3 executemany of
    the same columns into the same table, 1,000 rows a transaction; no join, no plan."""
    con = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("PRAGMA foreign_keys=ON")
    batch_id, job_id = con.execute("SELECT id, job_id FROM batches").fetchone()
    columns = (
        "batch_id, seq, job_id, outcome, failure, error_code, error_message, input_tokens,"
        " cached_input_tokens, output_tokens, billed, raw"
    )
    sql = f"INSERT INTO results ({columns}) VALUES ({', '.join('?' * 12)}) ON CONFLICT DO NOTHING"
    skip = len(gen.tag) + 1
    rows: list[tuple[Any, ...]] = []

    def flush() -> None:
        con.execute("BEGIN IMMEDIATE")
        con.executemany(sql, rows)
        con.execute("COMMIT")
        rows.clear()

    with open(gen.results_path, "rb") as f:
        for line in f:
            data = orjson.loads(line)
            usage = data["response"]["body"]["usage"]
            rows.append(
                (
                    batch_id,
                    int(data["custom_id"][skip:]),
                    job_id,
                    "succeeded",
                    None,
                    None,
                    None,
                    usage["prompt_tokens"],
                    usage["prompt_tokens_details"]["cached_tokens"],
                    usage["completion_tokens"],
                    1,
                    line.rstrip(b"\n"),
                )
            )
            if len(rows) >= 1000:
                flush()
    if rows:
        flush()
    stored = con.execute("SELECT count(*) FROM results").fetchone()[0]
    con.close()
    assert stored == gen.lines, stored
    return {"lines": stored}


async def case_ours(gen: Generated, url: str, phases: Callable[[str], None]) -> dict[str, Any]:
    clock = FakeClock()
    store = await Store.open(_db_url(url), clock=clock, run_migrations=False, **_engine_args(url))
    try:
        job = await store.jobs.get(gen.key)
        (batch,) = await store.batches.for_job(job.id)
        ingestor = Ingestor(store, clock, "bench", BudgetGuard(store, clock))
        download = ingestor._download

        async def timed_download(*args: Any) -> dict[str, int]:
            phases("stream")
            stats = await download(*args)
            phases("close")
            return stats

        ingestor._download = timed_download  # type: ignore[method-assign,assignment]
        phases("open")  # transition, the carried requests, retrieve
        await ingestor.ingest(job, batch, FileProvider(gen))
    finally:
        # The close is timed (part of `close`): on SQLite it waits for a background
        # checkpoint still running, and its last connection then checkpoints what is
        # left in the WAL, as min-sqlite's closing its connection does: every byte
        # written is checkpointed once, in the time measured.
        await store.close()
    phases("end")
    store = await Store.open(_db_url(url), clock=clock, run_migrations=False, **_engine_args(url))
    try:
        counts = await store.ledger.job_counts(job.id)
        assert counts == {"succeeded": gen.lines}, counts
    finally:
        await store.close()
    return {"lines": gen.lines}


class Phases:
    """Wall time and peak memory per phase; peaks are MB above the first phase's start
    (RSS high-water mark, or the tracemalloc peak when tracing)."""

    def __init__(self, trace: bool) -> None:
        self.trace = trace
        self.rss = PeakRss()
        self.seconds: dict[str, float] = {}
        self.peaks: dict[str, float] = {}
        self._current: str | None = None
        self._started = 0.0
        self._base = 0

    def _now_bytes(self) -> int:
        return tracemalloc.get_traced_memory()[0] if self.trace else self.rss.current_kb() * 1024

    def _peak_bytes(self) -> int:
        if self.trace:
            return tracemalloc.get_traced_memory()[1]
        return self.rss.high_water_kb() * 1024

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        if self._current is None:
            self._base = self._now_bytes()
        else:
            self.seconds[self._current] = now - self._started
            self.peaks[self._current] = max(0, self._peak_bytes() - self._base) / MB
        if name == "end":
            self._current = None
            return
        if self.trace:
            tracemalloc.reset_peak()
        else:
            self.rss.reset()
        self._current = name
        self._started = time.perf_counter()


def run_child(args: argparse.Namespace) -> None:
    gen = Generated(**json.loads(Path(args.gen).read_text()))
    if args.child == "prepare":
        asyncio.run(prepare(args.db, gen))
        return
    if args.trace:
        tracemalloc.start()
    phases = Phases(args.trace)
    profile = cProfile.Profile() if args.profile else None
    if args.child == "ours":
        if profile:
            profile.enable()
        asyncio.run(case_ours(gen, args.db, phases))
        if profile:
            profile.disable()
    elif args.child == "min-sqlite":
        phases("all")
        case_min_sqlite(gen, args.db)
        phases("end")
    else:
        fn = case_parse_only if args.child == "parse-only" else case_common
        phases("all")
        fn(gen)
        phases("end")
    result: dict[str, Any] = {
        "seconds": sum(phases.seconds.values()),
        "peak_mb": max(phases.peaks.values()),
        "phases": phases.seconds,
        "phase_peaks": phases.peaks,
        "rss_resettable": phases.rss.resettable,
    }
    if profile is not None:
        text = io.StringIO()
        stats = pstats.Stats(profile, stream=text)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumtime").print_stats("batchkiln", 40)
        result["profile"] = text.getvalue()
    print("RESULT " + json.dumps(result))


# ---- the orchestra ---------------------------------------------------------------------


def child(
    case: str, gen_path: Path, db: str = "", *, trace: bool = False, profile: bool = False
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", case, "--gen", str(gen_path), "--db", db]
    if trace:
        cmd.append("--trace")
    if profile:
        cmd.append("--profile")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{proc.stdout}\n{proc.stderr}")
    if case == "prepare":
        return {}
    line = next(ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("RESULT "))
    return dict(json.loads(line[len("RESULT ") :]))


async def _postgres_schema(url: str, *, drop: str | None = None) -> str | None:
    import asyncpg

    raw = url.replace("postgresql+asyncpg://", "postgresql://")
    try:
        conn = await asyncpg.connect(raw, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"# PostgreSQL not reachable at {raw}: {exc}; skipping it", file=sys.stderr)
        return None
    try:
        if drop is not None:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{drop}" CASCADE')
            return drop
        schema = f"kiln_bench_{uuid.uuid4().hex[:10]}"
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        return schema
    finally:
        await conn.close()


@dataclass
class Row:
    size: int
    case: str
    seconds: float
    mb: float
    lines: int
    peak_rss_mb: float
    peak_tracemalloc_mb: float | None
    note: str = ""
    phases: dict[str, float] = field(default_factory=dict)
    runs: list[float] = field(default_factory=list)  # every run's time, round by round

    @property
    def mb_s(self) -> float:
        return self.mb / self.seconds

    @property
    def lines_s(self) -> float:
        return self.lines / self.seconds


def sqlite_copy(work: Path, gen: Generated) -> str:
    """A fresh copy of the store prepared for this size (see `main`)."""
    target = work / f"ingest-{gen.size}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(work / f"prepared-{gen.size}.db", target)
    return f"sqlite:///{target}"


def measure(
    case: str,
    gen: Generated,
    gen_path: Path,
    work: Path,
    args: argparse.Namespace,
    *,
    first: bool,
) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """Run a case, then (in the first round) again under tracemalloc and profiled
    (None: PostgreSQL is not reachable)."""
    runs: list[dict[str, Any]] = []
    profiling = first and args.profile and case.startswith("ours")
    tracing = first and not args.no_tracemalloc
    plan = [(False, False)] + [(True, False)] * tracing + [(False, True)] * profiling
    for trace, profile in plan:
        if case in ("parse-only", "common"):
            runs.append(child(case, gen_path, trace=trace))
        elif case in ("min-sqlite", "ours-sqlite"):
            kind = "ours" if case == "ours-sqlite" else case
            url = sqlite_copy(work, gen)
            runs.append(child(kind, gen_path, url, trace=trace, profile=profile))
        else:
            schema = asyncio.run(_postgres_schema(args.postgres))
            if schema is None:
                return None
            url = f"{args.postgres}#schema={schema}"
            try:
                child("prepare", gen_path, url)
                runs.append(child("ours", gen_path, url, trace=trace, profile=profile))
            finally:
                asyncio.run(_postgres_schema(args.postgres, drop=schema))
    if profiling:  # a third run, profiled; its times are not the ones reported
        runs[0]["profile"] = runs.pop()["profile"]
    return runs[0], (runs[1] if len(runs) > 1 else None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="25000,50000,100000", help="result lines per run")
    parser.add_argument(
        "--prompt-bytes", type=int, default=1000, help="request body size in the store"
    )
    parser.add_argument("--postgres", default=POSTGRES_URL)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-tracemalloc", action="store_true")
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed runs of each case (the median is shown)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile our ingest (both stores)")
    parser.add_argument("--out", default=str(HERE / "out"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--gen", help=argparse.SUPPRESS)
    parser.add_argument("--db", default="", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return

    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    downloads: list[Generated] = []
    profiles: list[str] = []
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"# {size:,} lines: generating the result file in the simulator ...", file=sys.stderr)
        gen = asyncio.run(generate(size, work, args.prompt_bytes))
        downloads.append(gen)
        gen_path = work / f"gen-{size}.json"
        gen_path.write_text(json.dumps(asdict(gen)))
        mb = gen.bytes / MB
        template = work / f"prepared-{size}.db"
        template.unlink(missing_ok=True)
        child("prepare", gen_path, f"sqlite:///{template}")
        cases = ["parse-only", "common", "min-sqlite", "ours-sqlite"]
        cases += [] if args.no_postgres else ["ours-postgres"]
        timed: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
        traces: dict[str, dict[str, Any] | None] = {}
        for round_ in range(1, args.repeat + 1):  # rounds interleave the cases
            for case in cases:
                print(f"# {size:,} lines, round {round_}: {case} ...", file=sys.stderr)
                measured = measure(case, gen, gen_path, work, args, first=round_ == 1)
                if measured is not None:
                    timed[case].append(measured[0])
                    traces.setdefault(case, measured[1])
        for case in cases:
            if not timed[case]:
                continue
            ordered = sorted(timed[case], key=lambda run: float(run["seconds"]))
            fast = ordered[len(ordered) // 2]  # the median run
            traced = traces[case]
            note = ""
            if case.startswith("ours"):
                phases, peaks = fast["phases"], fast["phase_peaks"]
                note = ", ".join(
                    f"{name} {phases[name]:.2f}s/{peaks[name]:.0f}MB" for name in PHASES
                )
                if traced:
                    tp = traced["phase_peaks"]
                    note += " (tracemalloc " + ", ".join(f"{n} {tp[n]:.1f}MB" for n in PHASES)
                    note += ")"
            if len(timed[case]) > 1:
                shown = ", ".join(f"{run['seconds']:.2f}" for run in timed[case])
                note += ("; " if note else "") + f"runs {shown} s"
            rows.append(
                Row(
                    size,
                    case,
                    fast["seconds"],
                    mb,
                    gen.lines,
                    max(run["peak_mb"] for run in timed[case]),
                    traced["peak_mb"] if traced else None,
                    note,
                    fast.get("phases", {}),
                    [float(run["seconds"]) for run in timed[case]],
                )
            )
            profiled = next((run for run in timed[case] if "profile" in run), None)
            if profiled is not None:
                profiles.append(f"## cProfile, {case}, {size:,} lines\n{profiled['profile']}")
    report(rows, downloads)
    for text in profiles:
        print(text)


def report(rows: list[Row], downloads: list[Generated]) -> None:
    print()
    print("Download over loopback (simulator served with serve_in_thread, same process)")
    print(f"{'lines':>8} {'MB':>7} {'raw SDK stream':>18} {'adapter results()':>20}")
    for g in downloads:
        mb = g.bytes / MB
        print(
            f"{g.lines:>8,} {mb:>7.1f} {mb / g.download_raw_s:>11.0f} MB/s"
            f" {mb / g.download_results_s:>9.0f} MB/s"
            f" ({g.lines / g.download_results_s:>7,.0f} l/s)"
        )
    print()
    header = (
        f"{'lines':>8} {'case':<18} {'s':>6} {'MB/s':>7} {'lines/s':>9} {'vs parse':>9}"
        f" {'vs common':>10} {'peak RSS':>9} {'peak tm':>8}"
    )
    print("Ingest from a saved file (peaks are MB above the start of the work)")
    print(header)
    print("-" * len(header))
    for size in sorted({r.size for r in rows}):
        group = [r for r in rows if r.size == size]
        parse = next(r for r in group if r.case == "parse-only")
        common = next(r for r in group if r.case == "common")
        for r in group:
            tm = f"{r.peak_tracemalloc_mb:.1f}" if r.peak_tracemalloc_mb is not None else "-"
            print(
                f"{r.lines:>8,} {r.case:<18} {r.seconds:>6.2f} {r.mb_s:>7.1f} {r.lines_s:>9,.0f}"
                f" {r.mb_s / parse.mb_s:>8.0%} {r.mb_s / common.mb_s:>9.2f}x"
                f" {r.peak_rss_mb:>8.1f} {tm:>8}"
            )
            if r.note:
                print(f"{'':>8}   {r.note}")
    for size in sorted({r.size for r in rows}):
        by_case = {r.case: r for r in rows if r.size == size}
        if "ours-sqlite" in by_case and "min-sqlite" in by_case:
            ratio = by_case["ours-sqlite"].mb_s / by_case["min-sqlite"].mb_s
            print(
                f"{size:,} lines: ours-sqlite runs at {ratio:.0%} of the min-sqlite floor"
                " (median times)"
            )
    targets(rows)


def paired(base: list[float], ours: list[float]) -> tuple[float, str]:
    """How many times faster `ours` ran than `base`, from each one's run times round by
    round: the median of the rounds' ratios (the two ran minutes apart at most, one after
    the other, so the machine's drift between rounds falls on both), and those ratios for
    the line; the ratio of the median times when the rounds do not pair up (a case
    missing from a round)."""
    if len(base) != len(ours) or len(ours) < 2:
        return sorted(base)[len(base) // 2] / sorted(ours)[len(ours) // 2], ""
    ratios = [b / o for b, o in zip(base, ours, strict=True)]
    shown = ", ".join(f"{x:.2f}" for x in ratios)
    return sorted(ratios)[len(ratios) // 2], f" (rounds {shown})"


def targets(rows: list[Row]) -> None:
    """The issue's targets, each with whether this run met it."""
    print()
    print("targets")

    def met(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    sizes = sorted({r.size for r in rows})
    by = {(r.size, r.case): r for r in rows}
    for size in sizes:
        common, floor = by[(size, "common")], by.get((size, "min-sqlite"))
        for case in ("ours-sqlite", "ours-postgres"):
            r = by.get((size, case))
            if r is None:
                continue
            ratio, rounds = paired(common.runs, r.runs)
            line = f"  {size:>7,} {case}: {ratio:.2f}x common{rounds} (>= 1.0x) {met(ratio >= 1.0)}"
            if case == "ours-sqlite" and floor is not None:
                share, rounds = paired(floor.runs, r.runs)
                line += f"; {share:.0%} of min-sqlite{rounds} (>= 85%) {met(share >= 0.85)}"
            if case == "ours-postgres":
                close = r.phases.get("close", 0.0) / r.seconds
                line += f"; close {close:.0%} of ingest (<= 10%) {met(close <= 0.10)}"
            print(line)
    for case in ("ours-sqlite", "ours-postgres"):
        runs = [by[(s, case)] for s in sizes if (s, case) in by]
        if len(runs) < 2:
            continue
        per_line = [r.seconds / r.lines * 1e6 for r in runs]
        mean = sum(per_line) / len(per_line)
        spread = max(abs(x - mean) / mean for x in per_line)
        shown = ", ".join(f"{x:.1f}" for x in per_line)
        print(
            f"  {case} time per line {shown} us: within {spread:.0%} of the mean (<= 20%)"
            f" {met(spread <= 0.20)}"
        )
        small, large = runs[0].peak_rss_mb, runs[-1].peak_rss_mb
        growth = (large - small) / max(small, 1e-9)
        print(
            f"  {case} peak RSS {runs[0].size:,} -> {runs[-1].size:,} lines: {small:.1f} ->"
            f" {large:.1f} MB ({growth:+.0%}, < 10%) {met(growth < 0.10)}"
        )


if __name__ == "__main__":
    main()
