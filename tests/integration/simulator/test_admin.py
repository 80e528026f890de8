"""The /_sim/ admin API: faults, clock, counters and webhooks, apart from vendor paths."""

from __future__ import annotations

import httpx
import openai

from batchkiln.clock import FakeClock
from batchkiln.simulator import Faults, Simulator

from .helpers import SIM_URL, chat_lines, submit


def admin(sim: Simulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url=SIM_URL)


async def test_faults_can_be_set_from_a_spec_or_fields(sim: Simulator) -> None:
    """PUT /_sim/faults replaces the default faults; per-tag overrides too."""
    async with admin(sim) as http:
        response = await http.put("/_sim/faults", json={"spec": "retryable=0.05,seed=7"})
        assert response.status_code == 200 and response.json()["retryable_rate"] == 0.05
        assert sim.faults == Faults(retryable_rate=0.05, seed=7)
        await http.put("/_sim/faults", json={"permanent_rate": 0.5})
        assert sim.faults.permanent_rate == 0.5
        assert (await http.get("/_sim/faults")).json()["permanent_rate"] == 0.5
        await http.put("/_sim/faults/batch/abc", json={"spec": "permanent=1"})
        from batchkiln.simulator import BatchMatch

        assert sim.resolve_faults(BatchMatch("openai", "abc"))[0].permanent_rate == 1.0
        await http.delete("/_sim/faults/batch/abc")
        assert sim.resolve_faults(BatchMatch("openai", "abc"))[0].permanent_rate == 0.5
        bad = await http.put("/_sim/faults", json={"spec": "retryable=2"})
        assert bad.status_code == 400 and "retryable_rate" in bad.json()["error"]


async def test_clock_advance_moves_batches_along(
    sim: Simulator, oai: openai.AsyncOpenAI, clock: FakeClock
) -> None:
    """POST /_sim/clock/advance moves virtual time (the injected FakeClock itself)."""
    batch = await submit(oai, chat_lines(1))
    async with admin(sim) as http:
        before = (await http.get("/_sim/clock")).json()["now"]
        after = (await http.post("/_sim/clock/advance", json={"seconds": 3600})).json()["now"]
        assert after - before == 3600 and clock.now() == after
        assert (await http.post("/_sim/clock/advance", json={"seconds": -1})).status_code == 400
    assert (await oai.batches.retrieve(batch.id)).status == "completed"


async def test_counters_report_calls_creates_and_retry_counts(
    sim: Simulator, oai: openai.AsyncOpenAI
) -> None:
    """GET /_sim/counters shows calls per endpoint, creates per key and tag."""
    await submit(oai, chat_lines(1), tag="abc")
    async with admin(sim) as http:
        counters = (await http.get("/_sim/counters")).json()
    assert counters["calls"]["POST /v1/batches"] == 1
    assert counters["retry_counts"]["POST /v1/batches 0"] == 1
    assert counters["created_by_tag"] == {"abc": 1}
    assert counters["created_by_key"] == {"sk-test": 1}
    assert counters["created_by_metadata"] == {"kiln_tag abc": 1}
    assert "/_sim/counters" not in str(counters["calls"])


async def test_webhook_urls_and_delivery_via_admin(
    sim: Simulator, oai: openai.AsyncOpenAI, clock: FakeClock
) -> None:
    """Webhook URLs can be replaced, and due webhooks delivered on demand."""
    async with admin(sim) as http:
        await http.put("/_sim/webhooks", json={"urls": []})
        assert (await http.get("/_sim/webhooks")).json()["secret"].startswith("whsec_")
        await submit(oai, chat_lines(1))
        clock.advance(3600)
        assert (await http.post("/_sim/webhooks/deliver")).json() == {"attempted": 0}
    assert sim.counters.webhook_events == 1


async def test_scaled_clock_can_be_advanced_by_offset() -> None:
    """A clock without advance() (ScaledClock) is moved by an offset instead."""
    from batchkiln.clock import ScaledClock

    sim = Simulator(clock=ScaledClock(1.0))
    before = sim.now()
    sim.advance(86400)
    assert sim.now() - before >= 86400
