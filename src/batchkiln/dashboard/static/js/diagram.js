// The lifecycle drawn as SVG from /dashboard/api/lifecycle: states, arrows, colours and
// texts all come from the package (batchkiln.lifecycle); this file only knows where to
// put them (the seed's shape: top-down, four outcomes, Retry from Partial and Expired)
// and how to route the arrows between those places.

import { el, money, replace, seconds, svg, when } from "./dom.js";

const W = 1000;
const H = 690;
const BIG = { w: 176, h: 58 };
const SMALL = { w: 128, h: 38 };

// Where each node sits (centre). A state the table gains later that is not placed
// here is still drawn, in a row of extras at the bottom right.
const PLACE = {
  not_submitted: [470, 42],
  submitting: [470, 124],
  pending: [470, 205],
  in_progress: [470, 312],
  cancelling: [870, 312],
  retry: [112, 262],
  poll: [160, 122],
  partial: [112, 452],
  expired: [312, 452],
  completed: [505, 452],
  failed: [700, 452],
  cancelled: [880, 452],
  downloading: [470, 560],
  done: [470, 636],
};

const BUS_DOWN = 392; // In Progress fans out to the four outcomes along this line
const BUS_END = 518; // every outcome is downloaded along this one

function box(id, node) {
  const [cx, cy] = PLACE[id] || [0, 0];
  const size = node.seed || node.step ? BIG : SMALL;
  return { cx, cy, ...size, x: cx - size.w / 2, y: cy - size.h / 2 };
}

// Routed arrows for the pairs the seed's shape knows; anything else is a straight line.
function route(from, to, a, b) {
  const key = `${from}>${to}`;
  const bottom = (n) => [n.cx, n.y + n.h];
  const top = (n) => [n.cx, n.y];
  switch (key) {
    case "submitting>failed":
      return [[a.x + a.w, a.cy], [790, a.cy], [790, b.y - 16], [b.cx + 40, b.y - 16], [b.cx + 40, b.y]];
    case "not_submitted>cancelled":
      return [[a.x + a.w, a.cy], [975, a.cy], [975, b.cy], [b.x + b.w, b.cy]];
    case "pending>cancelling":
      return [[a.x + a.w, a.cy], [b.cx, a.cy], [b.cx, b.y]];
    case "in_progress>cancelling":
      return [[a.x + a.w, a.cy], [b.x, b.cy]];
    case "partial>retry":
      return [[a.x + 30, a.y], [a.x + 30, b.y + b.h]];
    case "expired>retry":
      return [[a.x + 24, a.y], [a.x + 24, b.cy], [b.x + b.w, b.cy]];
    case "retry>pending":
      return [[a.cx, a.y], [a.cx, b.cy], [b.x, b.cy]];
    case "downloading>done":
      return [bottom(a), top(b)];
    default:
      break;
  }
  if (from === "in_progress" || from === "cancelling") {
    const start = from === "in_progress" ? bottom(a) : [a.cx, a.y + a.h];
    return [start, [start[0], BUS_DOWN], [b.cx, BUS_DOWN], top(b)];
  }
  if (to === "downloading") {
    return [bottom(a), [a.cx, BUS_END], [b.cx, BUS_END], top(b)];
  }
  return [[a.cx, a.y + a.h], [b.cx, b.y]];
}

function pathOf(points) {
  return points.map(([x, y], i) => `${i ? "L" : "M"}${x},${y}`).join(" ");
}

export class Diagram {
  /**
   * @param {HTMLElement} host  where the SVG goes
   * @param {HTMLElement} card  the panel a node's card is written into
   * @param {object} lifecycle  /dashboard/api/lifecycle
   */
  constructor(host, card, lifecycle, { jobScoped = false, onActivate = null } = {}) {
    this.host = host;
    this.card = card;
    this.data = lifecycle;
    this.jobScoped = jobScoped;
    this.onActivate = onActivate;
    this.view = lifecycle.tracking.view; // the server's actual mode decides the first view
    this.summary = null;
    this.nodes = new Map(); // id -> {info, box, g, count, badge}
    this.current = null;
    this.build();
  }

  info(id) {
    return this.nodes.get(id)?.info;
  }

  setView(view) {
    this.view = view;
    this.svg.dataset.view = view;
    const polling = view === "polling";
    for (const part of this.svg.querySelectorAll(".polling-only")) part.toggleAttribute("hidden", !polling);
    for (const part of this.svg.querySelectorAll(".webhook-only")) part.toggleAttribute("hidden", polling);
    const poll = this.nodes.get("poll");
    if (poll) poll.g.setAttribute("tabindex", polling ? "0" : "-1");
    this.svg.setAttribute("aria-label", this.title());
    if (this.current) this.show(this.current);
  }

  title() {
    const mode = this.data.tracking.mode;
    const showing = this.view === "polling" ? "polling view" : "webhook view";
    return `Batch lifecycle, ${showing} (server mode: ${mode}). Tab or arrow keys move between states.`;
  }

  build() {
    const palette = this.data.palette;
    const root = svg("svg", {
      viewBox: `0 0 ${W} ${H}`,
      role: "group",
      "aria-label": this.title(),
      class: "diagram",
      id: "diagram-svg",
    });
    const defs = svg("defs");
    defs.append(
      svg(
        "marker",
        { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
        svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow-head" }),
      ),
      svg(
        "marker",
        { id: "arrow-poll", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
        svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow-head poll" }),
      ),
    );
    root.append(defs);
    const edges = svg("g", { class: "edges", "aria-hidden": "true" });
    const nodes = svg("g", { class: "nodes" });
    root.append(edges, nodes);

    const all = [...this.data.states, ...this.data.steps];
    let extra = 0;
    for (const node of all) {
      if (!PLACE[node.id]) {
        PLACE[node.id] = [880, 560 + extra * 48];
        extra += 1;
      }
      this.nodes.set(node.id, { info: node, box: box(node.id, node) });
    }

    for (const edge of this.data.edges) {
      const a = this.nodes.get(edge.from);
      const b = this.nodes.get(edge.to);
      if (!a || !b) continue;
      const points = route(edge.from, edge.to, a.box, b.box);
      const cls = ["edge", edge.to === "retry" || edge.from === "retry" ? "retry" : ""].join(" ");
      edges.append(svg("path", { d: pathOf(points), class: cls, "marker-end": "url(#arrow)", "data-edge": `${edge.from}>${edge.to}` }));
      if (edge.label) edges.append(this.edgeLabel(edge, points));
    }
    this.drawPolling(edges);
    this.drawWebhookNote(edges);

    for (const node of all) {
      const entry = this.nodes.get(node.id);
      const { x, y, w, h, cx } = entry.box;
      const colours = palette[node.palette] || palette.slate;
      const small = !(node.seed || node.step);
      const g = svg("g", {
        class: `node${small ? " small" : ""}${node.step ? " step" : ""}${node.id === "poll" ? " polling-only" : ""}`,
        tabindex: "0",
        role: "button",
        "data-node": node.id,
        "aria-describedby": this.card.id,
      });
      g.append(
        svg("rect", { x, y, width: w, height: h, rx: small ? 8 : 12, fill: colours.fill, stroke: colours.stroke, class: "shape" }),
        svg("text", { x: cx, y: y + (small ? 16 : 24), class: "label", fill: colours.text, text: node.label }),
        svg("text", { x: cx, y: y + (small ? 30 : 43), class: "verdict", fill: colours.text, text: node.verdict }),
      );
      if (node.step !== true) {
        const count = svg("text", { x: x + 10, y: y - 6, class: "count", text: "" });
        g.append(count);
        entry.count = count;
      }
      if (node.cost_badge) {
        const bx = x + w - 32;
        const badge = svg("g", { class: "badge", "aria-hidden": "true" });
        const pill = svg("rect", { x: bx - 30, y: y - 22, width: 62, height: 19, rx: 9.5, class: "badge-pill" });
        const txt = svg("text", { x: bx + 1, y: y - 8, class: "badge-text", text: "$" });
        badge.append(pill, txt);
        g.append(badge);
        entry.badge = txt;
        entry.pill = pill;
      }
      if (node.live_at_vendor) {
        // The polling view's self-loop on every state a poller keeps asking about: a
        // small loop on a bottom corner (left on the big nodes, right on the small).
        const loop = svg("g", { class: "polling-only self-loop", "aria-hidden": "true" });
        const [cx0, by] = small ? [x + w - 14, y + h] : [x + 14, y + h];
        const side = small ? 1 : -1;
        const [ex, ey] = small ? [x + w, y + h - 12] : [x, y + h - 12];
        loop.append(
          svg("path", {
            d: `M${cx0},${by} C${cx0},${by + 26} ${ex + side * 30},${ey + 14} ${ex + side * 2},${ey}`,
            class: "edge poll",
            "marker-end": "url(#arrow-poll)",
          }),
          svg("text", { x: ex + side * 22, y: by + 22, class: "loop-text", "text-anchor": "middle", text: "poll" }),
        );
        g.append(loop);
        entry.loopAt = [ex + side * 14, by + 8];
      }
      entry.g = g;
      g.addEventListener("focus", () => this.show(node.id));
      g.addEventListener("mouseenter", () => this.show(node.id));
      g.addEventListener("keydown", (ev) => this.key(ev, node.id));
      g.addEventListener("click", () => this.activate(node.id));
      nodes.append(g);
    }
    this.svg = root;
    replace(this.host, root);
    // size the idempotency-key annotation's box to its text, now that it is laid out
    for (const g of root.querySelectorAll(".edge-label.idem")) {
      const box = g.querySelector("text").getBBox();
      const rect = g.querySelector("rect");
      rect.setAttribute("x", box.x - 6);
      rect.setAttribute("y", box.y - 3);
      rect.setAttribute("width", box.width + 12);
      rect.setAttribute("height", box.height + 6);
    }
    this.label();
    this.setView(this.view);
  }

  edgeLabel(edge, points) {
    // Put the words next to the longest straight stretch of the arrow.
    let best = [points[0], points[1]];
    let length = -1;
    // arrows into the download bus: label the drop out of the state, not the shared bus
    const only = edge.to === "downloading" ? 2 : points.length;
    for (let i = 1; i < only; i += 1) {
      const [a, b] = [points[i - 1], points[i]];
      const len = Math.hypot(b[0] - a[0], b[1] - a[1]);
      if (len > length) [best, length] = [[a, b], len];
    }
    const [[x1, y1], [x2, y2]] = best;
    const vertical = Math.abs(x1 - x2) < Math.abs(y1 - y2);
    const x = vertical ? x1 + 8 : (x1 + x2) / 2;
    const y = vertical ? (y1 + y2) / 2 + 4 : y1 - 7;
    const idem = edge.from === "not_submitted";
    const g = svg("g", { class: `edge-label${idem ? " idem" : ""}` });
    const text = svg("text", { x, y, "text-anchor": vertical ? "start" : "middle", text: edge.label });
    if (idem) g.append(svg("rect", { x: x - 5, y: y - 14, width: 10, height: 20, rx: 6, class: "idem-box" }));
    g.append(text);
    return g;
  }

  drawPolling(layer) {
    const poll = this.nodes.get("poll");
    if (!poll) return;
    const t = this.data.tracking;
    const b = poll.box;
    const group = svg("g", { class: "polling-only", "aria-hidden": "true" });
    for (const target of this.data.polled_states) {
      const n = this.nodes.get(target);
      if (!n || target === "cancelling") continue; // its own loop says it; a line would cross the page
      const to = [n.box.x - 16, n.box.y + n.box.h + 2];
      group.append(svg("path", { d: pathOf([[b.x + b.w, b.cy + (target === "pending" ? 0 : 14)], to]), class: "edge poll", "marker-end": "url(#arrow-poll)" }));
    }
    // The Poll node's own loop: it asks again on the schedule, from the engine's policy.
    group.append(
      svg("path", { d: `M${b.x},${b.cy - 12} C${b.x - 40},${b.cy - 22} ${b.x - 40},${b.cy + 22} ${b.x - 2},${b.cy + 12}`, class: "edge poll", "marker-end": "url(#arrow-poll)" }),
    );
    const sched = t.poll.map((s, i) => (i === t.poll.length - 1 ? `${seconds(s)} cap` : seconds(s))).join(" → ");
    group.append(
      svg("text", { x: 8, y: 30, class: "schedule", id: "backoff-text", text: `backoff ${sched}` }),
      svg("text", {
        x: 8,
        y: 46,
        class: "schedule small",
        text: `${t.jitter ? "full jitter under each step; " : ""}hybrid caps at ${seconds(t.hybrid[t.hybrid.length - 1])}`,
      }),
    );
    layer.append(group);
  }

  drawWebhookNote(layer) {
    const t = this.data.tracking;
    const [cx, cy] = PLACE.poll;
    const group = svg("g", { class: "webhook-only", "aria-hidden": "true" });
    group.append(
      svg("rect", { x: cx - 120, y: cy - 30, width: 240, height: 62, rx: 10, class: "note" }),
      svg("text", { x: cx, y: cy - 10, class: "note-text strong", text: "vendor → signed webhook" }),
      svg("text", { x: cx, y: cy + 7, class: "note-text", text: "verified, deduplicated; marks due" }),
      svg("text", { x: cx, y: cy + 23, class: "note-text", text: `safety-net check every ${seconds(t.safety_net)}` }),
    );
    layer.append(group);
  }

  /** Accessible names and the count/badge texts, from the last summary. */
  label() {
    const s = this.summary;
    for (const [id, entry] of this.nodes) {
      const node = entry.info;
      const n = s ? s.counts[id] || 0 : 0;
      if (entry.count) entry.count.textContent = n ? `${n} now` : "";
      if (entry.badge) {
        const cost = s && s.costs[id] ? s.costs[id].usd : 0;
        entry.badge.textContent = money(cost);
        fitPill(entry.badge, entry.pill);
      }
      const parts = [node.label, node.verdict];
      if (!node.step) parts.push(`${n} batch${n === 1 ? "" : "es"} now`);
      if (node.cost_badge) parts.push(`billed ${money(s && s.costs[id] ? s.costs[id].usd : 0)}`);
      entry.g.setAttribute("aria-label", parts.join(", "));
      entry.g.classList.toggle("occupied", n > 0);
    }
  }

  update(summary) {
    this.summary = summary;
    this.label();
    if (this.current) this.show(this.current);
  }

  neighbours(id, direction) {
    // the seed's own nodes first, so Down walks the main path and Right its alternatives
    const edges = this.data.edges.filter((e) => this.visible(e.from) && this.visible(e.to));
    const ends = direction === "out" ? edges.filter((e) => e.from === id).map((e) => e.to) : edges.filter((e) => e.to === id).map((e) => e.from);
    const big = (n) => (this.info(n).seed || this.info(n).step ? 0 : 1);
    return ends.map((n, i) => [big(n), i, n]).sort((a, b) => a[0] - b[0] || a[1] - b[1]).map((x) => x[2]);
  }

  visible(id) {
    return id !== "poll" || this.view === "polling";
  }

  key(ev, id) {
    // Down/Right follow an arrow out of this state (Right takes the next one), Up/Left
    // go back along an arrow into it; Home goes to the start, End to Done.
    const outs = this.neighbours(id, "out");
    const ins = this.neighbours(id, "in");
    let target = null;
    if (ev.key === "ArrowDown") target = outs[0];
    else if (ev.key === "ArrowUp") target = ins[0];
    else if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
      // siblings: the other ends of the arrows leaving the state we came from
      const parent = ins[0];
      const sibs = parent ? this.neighbours(parent, "out") : [];
      const i = sibs.indexOf(id);
      if (sibs.length > 1 && i >= 0) {
        const step = ev.key === "ArrowRight" ? 1 : -1;
        target = sibs[(i + step + sibs.length) % sibs.length];
      } else target = ev.key === "ArrowRight" ? outs[1] || outs[0] : ins[1] || ins[0];
    } else if (ev.key === "Home") target = "not_submitted";
    else if (ev.key === "End") target = "done";
    else if (ev.key === "Enter" || ev.key === " ") {
      ev.preventDefault();
      this.activate(id);
      return;
    } else return;
    ev.preventDefault();
    if (target && this.nodes.has(target)) this.focus(target);
  }

  focus(id) {
    this.nodes.get(id)?.g.focus();
  }

  activate(id) {
    if (this.onActivate) this.onActivate(id);
  }

  /** Write the card of node `id` into the card panel. */
  show(id) {
    this.current = id;
    for (const [other, entry] of this.nodes) entry.g.classList.toggle("current", other === id);
    const node = this.info(id);
    const s = this.summary;
    const rows = [
      ["Meaning", node.meaning],
      ["Typical wait", node.typical_wait],
      ["Next action", node.next_action],
      ["Billed", node.billed],
    ];
    const parts = [
      el("h2", { id: "card-title", text: `${node.label}: ${node.verdict}` }),
      el("dl", {}, rows.map(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])),
    ];
    if (!node.step) {
      const cost = s && s.costs[id];
      parts.push(
        el("p", {
          class: "cost-line",
          text: node.cost_badge
            ? `Cost so far ${this.jobScoped ? "(this job)" : ""}: ${money(cost ? cost.usd : 0)} over ${cost ? cost.batches : 0} billed batch(es)`
            : `Cost so far: $0 recorded (billed: ${node.billed}; recorded once, when the results are stored)`,
        }),
      );
      parts.push(this.liveList(id));
    }
    if (id === "poll") parts.push(this.pollCard());
    if (id === "done") parts.push(this.hygieneCard());
    if (id === "retry" && s) parts.push(this.retryCard());
    replace(this.card, parts);
    this.card.dataset.card = id;
  }

  liveList(id) {
    const s = this.summary;
    const list = (s && s.batches[id]) || [];
    const n = s ? s.counts[id] || 0 : 0;
    const wrap = el("section", { class: "live", "aria-label": "batches in this state now" });
    wrap.append(el("h3", { text: `Live now: ${n} batch${n === 1 ? "" : "es"}` }));
    if (!list.length) return wrap;
    const ul = el("ul", { class: "batch-list" });
    for (const b of list.slice(0, 8)) {
      const bits = [`attempt ${b.attempt}`, `${b.requests} requests`, `${b.vendor_calls} vendor calls`];
      if (b.next_check_in !== null && id !== "done") bits.push(`next check in ${seconds(Math.max(0, b.next_check_in))}`);
      ul.append(
        el(
          "li",
          {},
          el("a", { href: `/jobs/${encodeURIComponent(b.job_id)}`, text: b.id }),
          el("span", { class: "muted", text: ` ${b.provider} · ${b.model} · ${bits.join(" · ")}` }),
        ),
      );
    }
    if (n > list.length) ul.append(el("li", { class: "muted", text: `and ${n - list.length} more` }));
    wrap.append(ul);
    return wrap;
  }

  retryCard() {
    const waiting = (this.summary && this.summary.awaiting_retry) || [];
    const wrap = el("section", { class: "live", "aria-label": "failures waiting for a retry" });
    wrap.append(el("h3", { text: `Waiting for a retry: ${waiting.length} job${waiting.length === 1 ? "" : "s"}` }));
    if (!waiting.length) return wrap;
    wrap.append(
      el(
        "ul",
        { class: "batch-list" },
        waiting.map((w) =>
          el("li", {}, el("a", { href: `/jobs/${encodeURIComponent(w.job_id)}`, text: w.job_id }), ` ${w.waiting} failed request(s): press Retry on its page`),
        ),
      ),
    );
    return wrap;
  }

  pollCard() {
    const t = this.data.tracking;
    const steps = t.poll.map((v) => seconds(v)).join(" → ");
    return el(
      "section",
      { class: "live" },
      el("h3", { text: "Backoff schedule (from the engine's TrackingPolicy)" }),
      el("p", { class: "schedule-text", text: `${steps} cap` }),
      el("p", { text: `Server mode: ${t.mode}. Hybrid polling backs off to ${seconds(t.hybrid[t.hybrid.length - 1])}; checks are aligned to a ${seconds(t.list_tick)} grid so one list call covers many batches.` }),
    );
  }

  hygieneCard() {
    const h = this.summary && this.summary.hygiene;
    const wrap = el("section", { class: "live hygiene", "aria-label": "Done hygiene" });
    wrap.append(el("h3", { text: "Hygiene performed" }));
    if (!h) {
      wrap.append(el("p", { class: "muted", text: "No job has finished yet." }));
      return wrap;
    }
    wrap.append(hygieneList(h));
    return wrap;
  }
}

/** Size a badge's pill to its text (the text is centred on the pill). */
function fitPill(text, pill) {
  let width = 0;
  try {
    width = text.getComputedTextLength();
  } catch {
    return; // not rendered yet
  }
  if (!width) return;
  const w = Math.max(44, width + 16);
  pill.setAttribute("x", Number(text.getAttribute("x")) - w / 2);
  pill.setAttribute("width", w);
}

/** The Done hygiene of one job as a list (shared by the card and the job page). */
export function hygieneList(h) {
  const ul = el("ul", { class: "hygiene-list" });
  ul.append(
    el("li", {}, "Job ", el("a", { href: `/jobs/${encodeURIComponent(h.job_id)}`, text: h.job_id }), ` finished ${when(h.done_at)}`),
    el("li", { text: `Idempotency key ${h.key || "-"} archived until ${when(h.key_archived_until)} (audit event #${h.key_event_id ?? "-"})` }),
  );
  for (const c of h.cost_records) {
    ul.append(el("li", { text: `Cost record stored for ${c.batch_id}: ${money(c.cost_usd)} for ${c.billed_requests ?? 0} billed requests (audit event #${c.event_id})` }));
  }
  if (!h.cost_records.length) ul.append(el("li", { text: "No cost record (nothing billed)" }));
  ul.append(el("li", { text: `${h.batch_keys_archived} batch key(s) archived; ${h.vendor_files_deleted} vendor file set(s) deleted` }));
  ul.append(el("li", { text: `Audit event emitted: job.done #${h.done_event_id}` }));
  return ul;
}
