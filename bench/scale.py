"""Batch lifecycles per second through the whole pipeline, by store, workers and concurrency.

    .venv/bin/python bench/scale.py [--jobs 32] [--requests 4] [--latency 0 0.05]
    .venv/bin/python bench/scale.py --profile      # where one worker's CPU goes

Each run: a fresh database (a SQLite file, or a PostgreSQL database of its own), the
simulator served on loopback from this process (every HTTP call delayed by the vendor
latency), W `kiln worker` processes at concurrency C on one virtual clock (SPEED x real
time, so the vendor's queueing and processing take milliseconds and the figure is our
pipeline's, not the vendor's). Once every worker has registered, JOBS one-batch jobs are
submitted; a lifecycle is submit (upload + create), the polls, download, ingest and the
closing transaction. Lifecycles per second = JOBS / (last `batch.ingested` - first
`batch.submit`, from the audit log, in real seconds).

CPU: each worker's user+system seconds (from wait4 after SIGTERM) and this process's
(the simulator's thread and the submitter), per lifecycle. PostgreSQL's own CPU is not
counted (it is another process); on this machine everything shares 2 cores with other
work, so the figures are noisy: run it twice before believing a difference under 20 %.

`--profile` runs one in-process worker (SQLite, zero latency, concurrency 8, the simulator
in-process over ASGI) under cProfile and prints its CPU by package.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from sqlalchemy import func, select, text

from batchkiln import App, Settings
from batchkiln.cli.operate import virtual_clock
from batchkiln.clock import FakeClock
from batchkiln.engine.kiln import Kiln
from batchkiln.engine.worker import Worker
from batchkiln.providers import make_provider
from batchkiln.simulator import Faults, Simulator
from batchkiln.simulator.standalone import serve_app_in_thread
from batchkiln.store import Store
from batchkiln.store.tables import audit_events

SPEED = 1000.0
LEASE_REAL = 10.0
PG_ADMIN = os.environ.get("KILN_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
FAULTS = Faults(queue_delay_seconds=2, processing_seconds=5, finalizing_seconds=1)
CONFIGS = [  # (store, workers, concurrency)
    ("sqlite", 1, 1),
    ("sqlite", 1, 8),
    ("postgres", 1, 1),
    ("postgres", 2, 1),
    ("postgres", 4, 1),
    ("postgres", 1, 8),
    ("postgres", 4, 8),
]


@dataclass
class Result:
    store: str
    workers: int
    concurrency: int
    latency: float
    seconds: float
    jobs: int
    worker_cpu: float
    local_cpu: float
    commits: int | None = None  # PostgreSQL transactions in the database, read-only included

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0


CALLS: Counter[str] = Counter()  # HTTP calls the simulator served, by kind, this run


def _kind(method: str, path: str) -> str:
    parts = [p for p in path.split("/") if p and p != "v1"]
    if len(parts) > 1:
        parts[1] = "{id}"
    return f"{method} /{'/'.join(parts[:3])}"


def delayed(app: Any, seconds: float) -> Any:
    """The simulator behind `seconds` of latency on every HTTP call (counted in CALLS)."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            CALLS[_kind(scope["method"], scope["path"])] += 1
            if seconds > 0:
                await asyncio.sleep(seconds)
        await app(scope, receive, send)

    return wrapped


@contextmanager
def simulator(latency: float, clock: Any) -> Iterator[str]:
    sim = Simulator(clock=clock, seed=1, faults=FAULTS)

    def bound(url: str) -> None:
        sim.base_url = url

    with serve_app_in_thread(delayed(sim.app, latency), on_bound=bound) as url:
        yield url


def write_jobs(tmp: Path, jobs: int, requests: int) -> list[Path]:
    paths = []
    for j in range(jobs):
        path = tmp / f"job{j}.jsonl"
        with path.open("wb") as out:
            for i in range(requests):
                body = {"messages": [{"role": "user", "content": f"j{j} r{i}"}], "max_tokens": 16}
                line = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions"}
                out.write(orjson.dumps({**line, "body": body}) + b"\n")
        paths.append(path)
    return paths


SYNC_OFF = False  # --sync-off: diagnosis only (commits no longer wait for the WAL fsync)


async def new_database(kind: str, tmp: Path) -> tuple[str, str | None]:
    if kind == "sqlite":
        return f"sqlite:///{tmp}/bench-{uuid.uuid4().hex[:6]}.db", None
    name = f"kiln_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG_ADMIN)
    await conn.execute(f'CREATE DATABASE "{name}"')
    if SYNC_OFF:
        await conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    await conn.close()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", name


async def commits(name: str | None) -> int | None:
    """Transactions so far in database `name`, read-only ones (rolled back) included."""
    if name is None:
        return None
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        value = await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1", name
        )
    finally:
        await conn.close()
    return int(value or 0)


async def drop_database(name: str | None) -> None:
    if name is None:
        return
    conn = await asyncpg.connect(PG_ADMIN)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


def spawn(
    env: dict[str, str], concurrency: int, epoch: float, log: Path
) -> subprocess.Popen[bytes]:
    code = "import sys; from batchkiln.cli import app; sys.argv[0] = 'kiln'; app()"
    args = ["worker", "--concurrency", str(concurrency), "--idle-cap", str(SPEED)]
    args += ["--speed", str(SPEED), "--epoch", str(epoch)]
    out = log.open("ab")
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=out, stderr=out)


def stop(procs: list[subprocess.Popen[bytes]]) -> float:
    """SIGTERM every worker; their CPU seconds (user + system) from wait4."""
    cpu = 0.0
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        _, _, usage = os.wait4(proc.pid, 0)
        proc.returncode = 0
        cpu += usage.ru_utime + usage.ru_stime
    return cpu


def cpu_of(procs: list[subprocess.Popen[bytes]]) -> float:
    """CPU seconds (user + system) the running `procs` have used so far (/proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for proc in procs:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def one_run(
    kind: str, workers: int, concurrency: int, latency: float, paths: list[Path], tmp: Path
) -> Result:
    url, name = await new_database(kind, tmp)
    epoch = time.time()
    clock = virtual_clock(SPEED, epoch)
    try:
        with simulator(latency, clock) as sim_url:
            env = {k: v for k, v in os.environ.items() if "WEBHOOK_SECRET" not in k}
            env.update(
                KILN_DATABASE_URL=url,
                KILN_LEASE_SECONDS=str(LEASE_REAL * SPEED),
                KILN_TRACKING="poll",
                OPENAI_BASE_URL=f"{sim_url}/v1",
                OPENAI_API_KEY="bench",
            )
            store = await Store.open(url, clock=clock)
            procs = [spawn(env, concurrency, epoch, tmp / "workers.log") for _ in range(workers)]
            try:
                # start-up is not measured; the rows are other processes' (no Event to await)
                while len(await store.workers.list()) < workers:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
                provider = make_provider("openai", base_url=f"{sim_url}/v1", api_key="bench")
                kiln = Kiln(store, {"openai": provider}, clock=clock, worker="bench")
                cpu0 = cpu_self()
                CALLS.clear()
                started = cpu_of(procs)  # start-up (imports, registration): not counted
                commits0 = await commits(name)
                for i, path in enumerate(paths):
                    await kiln.submit(path, provider="openai", model="gpt-4o-mini", key=f"b{i}")
                while any(j.status != "done" for j in await store.jobs.list()):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
                local = cpu_self() - cpu0
                if os.environ.get("KILN_BENCH_CALLS"):
                    per = {k: round(v / len(paths), 1) for k, v in sorted(CALLS.items())}
                    print(f"  vendor calls per lifecycle: {per}", flush=True)
                await provider.aclose()
            finally:
                worker_cpu = stop(procs)
            worker_cpu -= started
            await asyncio.sleep(1.0)  # backends report their counts when idle (about 1 s)
            committed = await commits(name)
            if committed is not None and commits0 is not None:
                committed -= commits0
            async with store.engine.connect() as conn:
                first = (
                    await conn.execute(
                        select(func.min(audit_events.c.at)).where(
                            audit_events.c.kind == "batch.submit"
                        )
                    )
                ).scalar_one()
                last = (
                    await conn.execute(
                        select(func.max(audit_events.c.at)).where(
                            audit_events.c.kind == "batch.ingested"
                        )
                    )
                ).scalar_one()
            await store.close()
    finally:
        await drop_database(name)
    seconds = (last - first) / SPEED
    return Result(
        kind, workers, concurrency, latency, seconds, len(paths), worker_cpu, local, committed
    )


async def run_to_done(app: App) -> None:
    """An in-process worker (concurrency 8) until every job is done."""
    worker = Worker(app.kiln, concurrency=8, idle_cap=5.0)
    running = asyncio.create_task(worker.run())
    while any(j.status != "done" for j in await app.store.jobs.list()):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    worker.stop()
    await running


async def store_bytes(paths: list[Path], tmp: Path) -> dict[str, float]:
    """Bytes per request in PostgreSQL (tables + indexes) after one run of `paths`."""
    url, name = await new_database("postgres", tmp)
    try:
        clock = FakeClock()
        async with App.simulated(Settings.load(), clock=clock, database_url=url) as app:
            requests = 0
            for i, path in enumerate(paths):
                job = (
                    await app.kiln.submit(path, provider="openai", model="gpt-4o-mini", key=f"s{i}")
                ).job
                requests += job.request_count
            await run_to_done(app)
            async with app.store.engine.connect() as conn:
                await conn.execute(text("ANALYZE"))
                rows = await conn.execute(
                    text(
                        "SELECT relname, pg_total_relation_size(relid) AS total,"
                        " pg_indexes_size(relid) AS idx, n_live_tup FROM pg_stat_user_tables"
                    )
                )
                sizes = {r.relname: (r.total, r.idx, r.n_live_tup) for r in rows}
        return {
            **{f"{t} bytes/request": v[0] / requests for t, v in sizes.items() if v[0]},
            **{f"{t} rows/request": v[2] / requests for t, v in sizes.items() if v[2]},
            "index bytes/request": sum(v[1] for v in sizes.values()) / requests,
            "total bytes/request": sum(v[0] for v in sizes.values()) / requests,
        }
    finally:
        await drop_database(name)


async def profile(jobs: int, requests: int, tmp: Path) -> None:
    """One in-process worker under cProfile: CPU by package."""
    paths = write_jobs(tmp, jobs, requests)
    clock = FakeClock()
    async with App.simulated(
        Settings.load(), clock=clock, database_url=f"sqlite:///{tmp}/profile.db", faults=FAULTS
    ) as app:
        for i, path in enumerate(paths):
            await app.kiln.submit(path, provider="openai", model="gpt-4o-mini", key=f"p{i}")
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        await run_to_done(app)
        profiler.disable()
        elapsed = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    by_package: dict[str, float] = defaultdict(float)
    builtins: dict[str, float] = defaultdict(float)
    for (filename, _, name), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        package = _package(filename)
        if package.startswith("builtins") and ("poll" in name or "acquire" in name):
            package = "waiting (epoll, locks: not CPU)"
        if package.startswith("builtins"):
            builtins[name] += tottime
        by_package[package] += tottime
    total = sum(by_package.values())
    print(f"\none in-process worker, {jobs} lifecycles in {elapsed:.1f} s: CPU by package")
    for package, seconds in sorted(by_package.items(), key=lambda kv: -kv[1])[:14]:
        print(f"  {package:<34} {seconds:6.2f} s  {100 * seconds / total:5.1f} %")
    print("  C functions:")
    for name, seconds in sorted(builtins.items(), key=lambda kv: -kv[1])[:8]:
        print(f"    {name[:60]:<60} {seconds:6.2f} s")


def _package(filename: str) -> str:
    path = filename.replace("\\", "/")
    if "/batchkiln/" in path:
        part = path.split("/batchkiln/", 1)[1].split("/")
        return "batchkiln." + (part[0].removesuffix(".py") if len(part) > 1 else part[0][:-3])
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/")[0].removesuffix(".py")
    if path.startswith("~") or "<" in path:
        return "builtins (C: sockets, sqlite3, json, select)"
    return "stdlib " + Path(path).stem


def table(results: list[Result]) -> str:
    lines = [
        "| vendor latency | store | workers | concurrency | lifecycles/s"
        " | worker CPU ms / lifecycle | bench process CPU ms / lifecycle"
        " | PostgreSQL transactions / lifecycle |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        per = "-" if r.commits is None else f"{r.commits / r.jobs:.0f}"
        lines.append(
            f"| {int(r.latency * 1000)} ms | {r.store} | {r.workers} | {r.concurrency} |"
            f" {r.rate:.1f} | {1000 * r.worker_cpu / r.jobs:.0f}"
            f" | {1000 * r.local_cpu / r.jobs:.0f} | {per} |"
        )
    return "\n".join(lines)


def ratios(results: list[Result]) -> list[str]:
    out = []
    for latency in sorted({r.latency for r in results}):
        rate = {
            (r.store, r.workers, r.concurrency): r.rate for r in results if r.latency == latency
        }
        one = rate.get(("postgres", 1, 1))
        if one:
            for w in (2, 4):
                if ("postgres", w, 1) in rate:
                    out.append(
                        f"{int(latency * 1000)} ms: PostgreSQL {w} workers / 1 worker"
                        f" (concurrency 1) = {rate[('postgres', w, 1)] / one:.2f}x"
                    )
            if ("postgres", 1, 8) in rate:
                out.append(
                    f"{int(latency * 1000)} ms: one worker, concurrency 8 / 1 (PostgreSQL)"
                    f" = {rate[('postgres', 1, 8)] / one:.2f}x"
                )
        s1, s8 = rate.get(("sqlite", 1, 1)), rate.get(("sqlite", 1, 8))
        if s1 and s8:
            out.append(
                f"{int(latency * 1000)} ms: one worker, concurrency 8 / 1 (SQLite) = {s8 / s1:.2f}x"
            )
    return out


# The targets, at 50 ms of vendor latency on PostgreSQL: (config, baseline, ratio).
TARGETS = (
    (("postgres", 4, 1), ("postgres", 1, 1), 3.0, "4 workers >= 3x one worker"),
    (
        ("postgres", 1, 8),
        ("postgres", 1, 1),
        4.0,
        "concurrency 8 >= 4x concurrency 1",
    ),
)


def targets(results: list[Result]) -> list[str]:
    """Each target at 50 ms, and whether this run met it."""
    rate = {(r.store, r.workers, r.concurrency): r.rate for r in results if r.latency == 0.05}
    out = []
    for config, baseline, wanted, what in TARGETS:
        if config in rate and rate.get(baseline):
            got = rate[config] / rate[baseline]
            verdict = "met" if got >= wanted else "NOT met"
            out.append(f"target (50 ms, PostgreSQL): {what}: {got:.2f}x -> {verdict}")
        else:
            out.append(f"target (50 ms, PostgreSQL): {what}: not measured in this run")
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--latency", type=float, nargs="+", default=[0.0, 0.05])
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--bytes", action="store_true", help="store bytes per request only")
    parser.add_argument(
        "--only", nargs=3, metavar=("STORE", "WORKERS", "CONCURRENCY"), help="one config only"
    )
    parser.add_argument(
        "--sync-off",
        action="store_true",
        help="PostgreSQL synchronous_commit=off (to see what the WAL fsync costs; unsafe)",
    )
    args = parser.parse_args()
    global SYNC_OFF
    SYNC_OFF = args.sync_off
    with tempfile.TemporaryDirectory(prefix="kiln-scale-") as tmp_name:
        tmp = Path(tmp_name)
        if args.profile:
            await profile(args.jobs, args.requests, tmp)
            return
        if args.bytes:
            paths = write_jobs(tmp, args.jobs, 1000)
            for key, value in (await store_bytes(paths, tmp)).items():
                print(f"  {key:<40} {value:10.2f}")
            return
        paths = write_jobs(tmp, args.jobs, args.requests)
        results = []
        configs = CONFIGS
        if args.only:
            configs = [(args.only[0], int(args.only[1]), int(args.only[2]))]
        for latency in args.latency:
            for kind, workers, concurrency in configs:
                result = await one_run(kind, workers, concurrency, latency, paths, tmp)
                print(
                    f"latency {int(latency * 1000):>3} ms  {kind:<8} {workers} worker(s) x"
                    f" {concurrency}: {result.rate:6.1f} lifecycles/s",
                    flush=True,
                )
                results.append(result)
        print()
        print(table(results))
        print()
        print("\n".join(ratios(results)))
        print("\n".join(targets(results)))


if __name__ == "__main__":
    asyncio.run(main())
