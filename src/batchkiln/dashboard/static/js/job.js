// A job's page: overview, Retry N failed requests, its batches in the diagram, the
// lineage of retry batches, costs, the Done hygiene, the audit timeline, requests.

import { getJSON, postJSON } from "./api.js";
import { Diagram, hygieneList } from "./diagram.js";
import { el, money, newKey, replace, seconds, when } from "./dom.js";
import { STREAM, live, loadLifecycle, viewToggle } from "./shared.js";

const jobId = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
let view = null;
let retryKey = null; // one key per retry the user asked for, reused if the POST is resent

function overview(v) {
  const j = v.job;
  const counts = Object.entries(v.counts).map(([k, n]) => `${n} ${k}`).join(", ");
  const rows = [
    ["Job", j.id],
    ["State", j.state],
    ["Provider", j.provider],
    ["Model", j.model],
    ["Requests", `${j.requests} (${counts})`],
    ["Idempotency key", j.key],
    ["Automatic retry", j.auto_retry ? `on (up to ${j.max_attempts} attempts)` : "off: failures wait for you"],
    ["Created", when(j.created_at)],
    ["Finished", when(j.finished_at)],
  ];
  replace(
    document.getElementById("overview"),
    rows.map(([k, val]) => el("div", { class: "kv" }, el("dt", { text: k }), el("dd", { class: k === "State" ? `state state-${j.state}` : "", id: k === "State" ? "job-state" : null, text: val }))),
  );
  document.getElementById("job-title").textContent = j.id;
  document.title = `batchkiln · ${j.id}`;
}

function jobLifecycle(v) {
  // The Job's own lifecycle (active → awaiting_retry → done), its words from lifecycle.py.
  const lc = v.job_lifecycle;
  const here = lc.states.find((s) => s.id === lc.current);
  const steps = el("ol", { class: "job-steps", "aria-label": "Job lifecycle" });
  for (const s of lc.states) {
    const moves = lc.edges.filter((e) => e.from === s.id).map((e) => `${e.event} → ${e.to}`);
    steps.append(
      el("li", { class: s.id === lc.current ? "current" : "", "aria-current": s.id === lc.current ? "step" : null, title: moves.join("; ") || "final" }, el("span", { class: `state state-${s.id}`, text: s.id })),
    );
  }
  replace(
    document.getElementById("job-lifecycle"),
    steps,
    here ? el("p", { class: "job-state-text" }, el("strong", { text: "Job: " }), `${here.meaning}. Next: ${here.next_action}.`) : null,
  );
}

function retryButton(v) {
  // Kept across refreshes (only its words change), so a press is never lost to a redraw.
  const area = document.getElementById("retry-area");
  if (!v.failures_waiting || v.job.status === "done") {
    replace(area);
    return;
  }
  const n = v.failures_waiting;
  const words = `Retry ${n} failed request${n === 1 ? "" : "s"}`;
  const existing = document.getElementById("retry");
  if (existing) {
    existing.textContent = words;
    return;
  }
  const button = el("button", { type: "button", id: "retry", class: "primary", text: words });
  button.addEventListener("click", async () => {
    button.disabled = true;
    retryKey = retryKey || newKey(`retry-${jobId}`);
    const out = document.getElementById("retry-result");
    try {
      const res = await postJSON(`/v1/jobs/${encodeURIComponent(jobId)}/retry`, {}, retryKey);
      retryKey = null;
      const made = (res && res.created) || [];
      replace(
        out,
        el("p", {
          class: "ok",
          text: `Retry started: ${made.length ? made.join(", ") : "child batch created"}. Watch it move Pending → In Progress → Completed.`,
        }),
      );
      await refresh();
    } catch (err) {
      replace(out, el("p", { class: "error", text: `Retry refused: ${err.message}` }));
      button.disabled = false;
    }
  });
  replace(area, button);
}

function lineage(v) {
  const byParent = new Map();
  for (const b of v.batches) {
    const key = b.parent_id || "";
    if (!byParent.has(key)) byParent.set(key, []);
    byParent.get(key).push(b);
  }
  const known = new Set(v.batches.map((b) => b.id));
  const roots = v.batches.filter((b) => !b.parent_id || !known.has(b.parent_id));
  const item = (b) => {
    const li = el(
      "li",
      { "data-batch": b.id, "data-state": b.state },
      el("div", { class: "tree-node" },
        el("span", { class: `state state-${b.state}`, text: b.state }),
        el("code", { text: b.id }),
        el("span", { class: "muted", text: ` attempt ${b.attempt} · ${b.requests} requests · ${b.vendor_calls} vendor calls${b.vendor_id ? ` · ${b.vendor_id}` : ""}${b.next_check_in !== null && b.state !== "done" ? ` · next check in ${seconds(Math.max(0, b.next_check_in))}` : ""}` }),
      ),
      el("div", { class: "walked", text: b.walked.join(" → ") }),
    );
    const kids = byParent.get(b.id) || [];
    if (kids.length) li.append(el("ul", { class: "tree" }, kids.map(item)));
    return li;
  };
  replace(document.getElementById("lineage"), el("ul", { class: "tree root" }, roots.map(item)));
}

function costs(v) {
  const c = v.costs;
  const table = el(
    "table",
    { class: "costs" },
    el("thead", {}, el("tr", {}, ["Batch", "Estimate", "Actual", "Standard price"].map((h) => el("th", { scope: "col", text: h })))),
    el(
      "tbody",
      {},
      v.batches.map((b) => el("tr", {}, el("td", {}, el("code", { text: b.id })), el("td", { text: money(b.estimate_usd) }), el("td", { text: money(b.actual_usd) }), el("td", { text: money(b.standard_usd) }))),
      el("tr", { class: "total" }, el("th", { scope: "row", text: "Job" }), el("td", { id: "cost-estimate", text: money(c.estimate_usd) }), el("td", { id: "cost-actual", text: money(c.actual_usd) }), el("td", { id: "cost-standard", text: money(c.standard_usd ?? c.standard_estimate_usd) })),
    ),
  );
  const saved = c.standard_usd && c.actual_usd !== null ? c.standard_usd - c.actual_usd : null;
  replace(
    document.getElementById("costs"),
    table,
    el("p", { class: "muted", text: saved !== null ? `The batch price saved ${money(saved)} against the standard price.` : "Actual cost is recorded once, when a batch's results are stored." }),
  );
}

function hygiene(v) {
  const host = document.getElementById("hygiene");
  if (!v.hygiene) {
    replace(host, el("p", { class: "muted", text: v.job.state === "awaiting_retry" ? "Not done: failures are waiting for a retry." : "Not done yet." }));
    return;
  }
  replace(host, hygieneList(v.hygiene));
}

function timeline(v) {
  const only = document.getElementById("failures-only").checked;
  const items = v.events
    .filter((e) => !only || e.failure)
    .map((e) =>
      el(
        "li",
        { class: e.failure ? "failure" : "", "data-kind": e.kind },
        el("span", { class: "when", text: `#${e.id} ${when(e.at)}` }),
        el("span", { class: "kind", text: e.kind }),
        e.from_state || e.to_state ? el("span", { class: "move", text: `${e.from_state || "·"} → ${e.to_state || "·"}` }) : null,
        e.batch_id ? el("code", { text: e.batch_id }) : null,
        e.reason ? el("span", { class: "reason", text: e.reason }) : null,
      ),
    );
  replace(document.getElementById("timeline"), items.length ? items : [el("li", { class: "muted", text: "Nothing to show." })]);
}

function requests(v) {
  const errorText = (e) => {
    if (!e) return "";
    if (typeof e === "string") return e;
    return [e.kind || e.type || e.code, e.message].filter(Boolean).join(": ") || JSON.stringify(e);
  };
  replace(
    document.getElementById("requests-body"),
    v.requests.map((r) =>
      el(
        "tr",
        {},
        el("td", { text: r.line }),
        el("td", { class: "custom-id", text: r.custom_id }),
        el("td", { text: r.outcome || "pending" }),
        el("td", { text: r.attempts }),
        el("td", {}, r.batch_id ? el("code", { text: r.batch_id }) : ""),
        el("td", { class: "error-text", text: errorText(r.last_error) }),
      ),
    ),
  );
}

let diagram = null;

async function refresh() {
  const [v, summary] = await Promise.all([getJSON(`/dashboard/api/jobs/${encodeURIComponent(jobId)}`), getJSON(`/dashboard/api/summary?job=${encodeURIComponent(jobId)}`)]);
  view = v;
  overview(v);
  jobLifecycle(v);
  retryButton(v);
  lineage(v);
  costs(v);
  hygiene(v);
  timeline(v);
  requests(v);
  diagram.update(summary);
  return summary;
}

async function main() {
  const lifecycle = await loadLifecycle();
  diagram = new Diagram(document.getElementById("diagram"), document.getElementById("card"), lifecycle, { jobScoped: true });
  viewToggle(diagram);
  document.getElementById("failures-only").addEventListener("change", () => view && timeline(view));
  let summary;
  try {
    summary = await refresh();
  } catch (err) {
    replace(document.getElementById("overview"), el("p", { class: "error", text: `Cannot show job ${jobId}: ${err.message}` }));
    document.body.dataset.ready = "true";
    return;
  }
  live({
    lastEventId: summary.last_event_id,
    stream: `${STREAM}?job_id=${encodeURIComponent(jobId)}`, // this job's events only
    refresh: async () => {
      await refresh();
    },
  });
  document.body.dataset.ready = "true";
}

main().catch((err) => {
  const status = document.getElementById("live-status");
  status.textContent = `could not load: ${err.message}`;
  status.dataset.state = "error";
});
