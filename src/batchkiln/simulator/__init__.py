"""A vendor simulator: OpenAI Batch and Anthropic Message Batches as one ASGI app that the
official SDKs talk to unchanged, on an injected (virtual) clock, with seeded faults.

    from batchkiln.simulator import Simulator, Faults
    sim = Simulator(clock=FakeClock(), seed=0, faults=Faults(retryable_rate=0.05))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app))
    client = openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="x", http_client=http)

The anthropic SDK (2.10.0) only accepts `httpx2` clients:
`httpx2.AsyncClient(transport=httpx2.ASGITransport(app=sim.app))`.

Modules: `app` (the Simulator), `openai_routes` / `openai_batches`, `anthropic_routes` /
`anthropic_batches`, `timeline` (lazy batch lifecycles), `model` (the deterministic model
stand-in), `faults` (Faults and the --faults format), `webhooks`, `admin` (/_sim/),
`standalone` (the standalone server: serve, serve_in_thread).
"""

from batchkiln.simulator.app import ConnectionCut, Simulator
from batchkiln.simulator.counters import Counters, WebhookAttempt
from batchkiln.simulator.faults import FAULTS_FORMAT, BatchMatch, FailureKind, Faults, parse_faults
from batchkiln.simulator.standalone import (
    banner,
    build_simulator,
    serve,
    serve_app_in_thread,
    serve_in_thread,
)
from batchkiln.simulator.webhooks import sign

__all__ = [
    "FAULTS_FORMAT",
    "BatchMatch",
    "ConnectionCut",
    "Counters",
    "FailureKind",
    "Faults",
    "Simulator",
    "WebhookAttempt",
    "banner",
    "build_simulator",
    "parse_faults",
    "serve",
    "serve_app_in_thread",
    "serve_in_thread",
    "sign",
]
