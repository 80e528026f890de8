// The main page: the live diagram, the practice scenarios, the job list, the feed.

import { getJSON, postJSON } from "./api.js";
import { Diagram } from "./diagram.js";
import { el, newKey, replace, when } from "./dom.js";
import { describeEvent, legend, live, loadLifecycle, viewToggle } from "./shared.js";

const filters = { state: "", provider: "" };

async function refreshJobs() {
  const q = new URLSearchParams();
  if (filters.state) q.set("state", filters.state);
  if (filters.provider) q.set("provider", filters.provider);
  const data = await getJSON(`/dashboard/api/jobs?${q}`);
  const providerSelect = document.getElementById("filter-provider");
  const have = new Set([...providerSelect.options].map((o) => o.value));
  for (const p of data.providers) if (!have.has(p)) providerSelect.append(el("option", { value: p, text: p }));
  const rows = data.jobs.map((j) => {
    const outcomes = Object.entries(j.counts).map(([k, v]) => `${v} ${k}`).join(", ");
    return el(
      "tr",
      { "data-job": j.id },
      el("td", {}, el("a", { href: `/jobs/${encodeURIComponent(j.id)}`, text: j.id })),
      el("td", {}, el("span", { class: `state state-${j.state}`, text: j.state })),
      el("td", { text: j.provider }),
      el("td", { class: "model", text: j.model }),
      el("td", { text: j.request_count }),
      el("td", { text: outcomes }),
      el("td", { text: when(j.created_at) }),
    );
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "7", class: "muted", text: "No jobs yet: run a scenario above." })));
  replace(document.getElementById("jobs-body"), rows);
}

let watching = null; // the last launched scenario, until its job is done

/** The seed's question answered by the real run: which terminal state(s) it walked. */
async function answer(lifecycle) {
  if (!watching) return;
  const v = await getJSON(`/dashboard/api/jobs/${encodeURIComponent(watching.job_id)}`);
  const ended = new Set(lifecycle.states.filter((s) => s.terminal_at_vendor).map((s) => s.id));
  const walked = v.batches.map((b) => b.walked.filter((st) => ended.has(st)).join("")).filter(Boolean);
  const host = document.getElementById("scenario-answer");
  if (!host) return;
  host.textContent = walked.length
    ? `Landed in: ${walked.join(", then (retry batch) ")}; job ${v.job.state}.`
    : `Job ${v.job.state}: no batch has ended yet.`;
  if (v.job.state === "done") watching = null;
}

function scenarioButtons(catalogue, onLaunched) {
  const host = document.getElementById("scenarios");
  const result = document.getElementById("scenario-result");
  if (!catalogue.simulator) {
    document.getElementById("scenarios-note").textContent =
      "Practice scenarios need the built-in simulator: start the service with `kiln serve --simulator`.";
  }
  for (const s of catalogue.scenarios) {
    const button = el(
      "button",
      { type: "button", class: "scenario", "data-scenario": s.number, disabled: !catalogue.simulator },
      el("span", { class: "num", text: `${s.number}` }),
      el("span", { class: "title", text: s.title }),
    );
    button.addEventListener("click", async () => {
      button.disabled = true;
      const key = newKey(`scenario-${s.number}`);
      try {
        const out = await postJSON(`/dashboard/api/scenarios/${s.number}`, {}, key);
        const parts = [
          el("strong", { text: `Scenario ${s.number} launched: ` }),
          el("a", { href: `/jobs/${encodeURIComponent(out.job_id)}`, class: "launched", "data-job": out.job_id, text: out.job_id }),
          el("span", { text: ` — expect ${s.terminal}; then: ${s.action}.` }),
        ];
        parts.push(el("p", { id: "scenario-answer", class: "answer", text: "Waiting for the first batch to end…" }));
        watching = { job_id: out.job_id };
        if (out.rejected_input) parts.push(el("p", { class: "rejected", text: `Rejected before any vendor call: ${out.rejected_input.join("; ")}` }));
        if (out.note) parts.push(el("p", { class: "muted", text: `Note: ${out.note}.` }));
        if (out.same_job_again !== undefined) parts.push(el("p", { text: `Resubmitted with the same key: ${out.same_job_again ? "the same job came back, nothing sent twice" : "a different job (unexpected)"}` }));
        replace(result, el("div", {}, parts));
        onLaunched();
      } catch (err) {
        replace(result, el("p", { class: "error", text: `Scenario ${s.number} failed: ${err.message}` }));
      } finally {
        button.disabled = false;
      }
    });
    host.append(button);
  }
}

function addToFeed(event) {
  const feed = document.getElementById("feed");
  const { text } = describeEvent(event);
  feed.prepend(el("li", {}, el("span", { class: "muted", text: `#${event.id || "·"} ` }), text));
  while (feed.children.length > 12) feed.lastElementChild.remove();
}

async function main() {
  const lifecycle = await loadLifecycle();
  const stateSelect = document.getElementById("filter-state");
  for (const s of lifecycle.states) stateSelect.append(el("option", { value: s.id, text: s.label }));
  stateSelect.append(el("option", { value: "awaiting_retry", text: "Awaiting retry" }));
  stateSelect.addEventListener("change", () => {
    filters.state = stateSelect.value;
    refreshJobs();
  });
  document.getElementById("filter-provider").addEventListener("change", (ev) => {
    filters.provider = ev.target.value;
    refreshJobs();
  });

  const diagram = new Diagram(document.getElementById("diagram"), document.getElementById("card"), lifecycle, {
    onActivate: (id) => {
      if (![...stateSelect.options].some((o) => o.value === id)) return;
      stateSelect.value = id;
      filters.state = id;
      refreshJobs();
    },
  });
  viewToggle(diagram);
  legend(lifecycle);
  const summary = await getJSON("/dashboard/api/summary");
  diagram.update(summary);
  await refreshJobs();
  const refresh = async () => {
    diagram.update(await getJSON("/dashboard/api/summary"));
    await refreshJobs();
    await answer(lifecycle);
  };
  scenarioButtons(await getJSON("/dashboard/api/scenarios"), refresh);
  // start a dozen events back, so the feed opens with the latest ones (replayed once)
  live({ lastEventId: Math.max(0, summary.last_event_id - 12), refresh, onEvent: addToFeed });
  document.body.dataset.ready = "true";
}

main().catch((err) => {
  const status = document.getElementById("live-status");
  status.textContent = `could not load: ${err.message}`;
  status.dataset.state = "error";
});
