// What both pages share: following the event stream (with a pause toggle), the
// webhook / polling toggle, and the legend.

import { follow, getJSON } from "./api.js";
import { el, replace } from "./dom.js";

export const STREAM = "/v1/events/stream";

/**
 * Call `refresh(event)` (debounced) for every event of the stream, from
 * `lastEventId` on. The pause button stops applying updates; resuming reconnects
 * with Last-Event-ID, so nothing that happened meanwhile is missed. Without the
 * stream (an older service) it falls back to asking every two seconds.
 */
export function live({ lastEventId, refresh, onEvent, stream = STREAM }) {
  const status = document.getElementById("live-status");
  const pause = document.getElementById("pause");
  let handle = null;
  let timer = null;
  let fallback = null;
  let paused = false;
  let last = lastEventId;
  const pending = [];

  const setStatus = (text, cls) => {
    status.textContent = text;
    status.dataset.state = cls;
  };
  const schedule = (event) => {
    if (event) pending.push(event);
    if (timer) return;
    timer = setTimeout(async () => {
      timer = null;
      const batch = pending.splice(0);
      try {
        await refresh(batch);
      } catch (err) {
        setStatus(`update failed: ${err.message}`, "error");
      }
    }, 400);
  };
  const start = () => {
    handle = follow(stream, {
      lastEventId: last,
      onEvent: (event) => {
        if (event.id) last = event.id;
        if (onEvent) onEvent(event);
        schedule(event);
      },
      onState: (state) => {
        // While the stream is down, ask every two seconds instead, so the page never
        // goes stale; the stream's replay (Last-Event-ID) takes over when it is back.
        if (state === "live") {
          setStatus("live", "live");
          if (fallback) clearInterval(fallback);
          fallback = null;
          return;
        }
        setStatus(state === "unavailable" ? "live (asking every 2 s: no event stream)" : "reconnecting… (asking every 2 s)", state === "unavailable" ? "live" : "waiting");
        if (!fallback && !paused) fallback = setInterval(() => schedule(null), 2000);
      },
    });
  };
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume live updates" : "Pause live updates";
    if (paused) {
      if (handle) {
        last = handle.lastEventId || last;
        handle.stop();
      }
      if (fallback) clearInterval(fallback);
      fallback = null;
      setStatus("paused", "paused");
    } else {
      setStatus("reconnecting…", "waiting");
      start();
      schedule(null);
    }
  });
  start();
  return { get paused() { return paused; } };
}

/** The webhook / polling toggle: starts at the server's actual mode, previews the other. */
export function viewToggle(diagram) {
  const box = document.getElementById("polling-toggle");
  const text = document.getElementById("mode-text");
  const t = diagram.data.tracking;
  const serverView = t.view;
  const say = () => {
    const showing = diagram.view;
    text.textContent =
      showing === serverView
        ? `server mode: ${t.mode} (this is what it does)`
        : `server mode: ${t.mode} (previewing ${showing})`;
  };
  box.checked = diagram.view === "polling";
  box.addEventListener("change", () => {
    diagram.setView(box.checked ? "polling" : "webhook");
    say();
  });
  say();
}

export function legend(lifecycle) {
  const host = document.getElementById("legend");
  if (!host) return;
  const seen = new Map();
  for (const s of [...lifecycle.states, ...lifecycle.steps]) {
    if (!seen.has(s.palette)) seen.set(s.palette, []);
    seen.get(s.palette).push(s.label);
  }
  const items = [];
  for (const [name, labels] of seen) {
    const c = lifecycle.palette[name];
    const swatch = el("span", { class: `swatch sw-${name}`, "aria-hidden": "true" });
    swatch.style.background = c.fill;
    swatch.style.borderColor = c.stroke;
    items.push(el("li", {}, swatch, labels.join(", ")));
  }
  items.push(el("li", {}, el("span", { class: "swatch dollar", "aria-hidden": "true", text: "$" }), "billed here (actual cost)"));
  replace(host, items);
}

export async function loadLifecycle() {
  return getJSON("/dashboard/api/lifecycle");
}

/** One line of the event feed, from whatever shape the stream sends. */
export function describeEvent(event) {
  const d = event.data && typeof event.data === "object" ? event.data : {};
  const kind = d.kind || event.type;
  const bits = [kind];
  if (d.from_state || d.to_state) bits.push(`${d.from_state || "·"} → ${d.to_state || "·"}`);
  if (d.batch_id) bits.push(d.batch_id);
  else if (d.job_id) bits.push(d.job_id);
  if (d.reason) bits.push(d.reason);
  return { text: bits.filter(Boolean).join("  "), jobId: d.job_id || null };
}
