// Talking to the service: bearer token (asked for once, kept in sessionStorage, never
// put in a URL), JSON reads, POSTs with an Idempotency-Key, and the event stream.

import { el } from "./dom.js";

const TOKEN = "kiln.token";
let asking = null;

function headers(extra = {}) {
  const out = { Accept: "application/json", ...extra };
  const token = sessionStorage.getItem(TOKEN);
  if (token) out.Authorization = `Bearer ${token}`;
  return out;
}

let checked = null;

/**
 * Before the first data request: if the service wants a token and the tab has none
 * (or a refused one), ask for it. The check itself never answers 401.
 */
export function ensureToken() {
  if (!checked) {
    checked = (async () => {
      for (let refused = false; ; refused = true) {
        const res = await fetch("/dashboard/api/auth", { headers: headers() });
        const state = await res.json();
        if (!state.required || state.accepted) return;
        sessionStorage.removeItem(TOKEN);
        await askForToken(refused);
      }
    })();
  }
  return checked;
}

/** Ask for the API token once, in a small dialog; resolves when one is entered. */
function askForToken(refused = false) {
  if (asking) return asking;
  asking = new Promise((resolve) => {
    const input = el("input", {
      type: "password",
      id: "token-input",
      autocomplete: "off",
      required: true,
    });
    const form = el(
      "form",
      { method: "dialog", class: "token-form" },
      el("h2", { text: "API token" }),
      el("p", { text: "This service needs a bearer token. It is kept for this tab only." }),
      refused ? el("p", { class: "error", text: "That token was refused." }) : null,
      el("label", { for: "token-input", text: "Token" }),
      input,
      el("button", { type: "submit", text: "Use token" }),
    );
    const dialog = el("dialog", { id: "token-dialog", "aria-labelledby": "token-title" }, form);
    form.querySelector("h2").id = "token-title";
    form.addEventListener("submit", () => {
      sessionStorage.setItem(TOKEN, input.value.trim());
      dialog.close();
      dialog.remove();
      asking = null;
      resolve();
    });
    dialog.addEventListener("cancel", (ev) => ev.preventDefault()); // the page needs it
    document.body.append(dialog);
    dialog.showModal();
  });
  return asking;
}

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function request(method, path, { body, key } = {}) {
  await ensureToken();
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const extra = {};
    if (body !== undefined) extra["Content-Type"] = "application/json";
    if (key) extra["Idempotency-Key"] = key;
    const res = await fetch(path, {
      method,
      headers: headers(extra),
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    if (res.status === 401) {
      sessionStorage.removeItem(TOKEN);
      await askForToken();
      continue;
    }
    const type = res.headers.get("content-type") || "";
    const data = type.includes("json") ? await res.json() : null;
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
  }
  throw new ApiError(401, { detail: "the token was refused" });
}

export const getJSON = (path) => request("GET", path);
export const postJSON = (path, body, key) => request("POST", path, { body, key });

/**
 * Follow a server-sent event stream with fetch (EventSource cannot send the
 * Authorization header, and the token must not go in the URL). Reconnects with
 * Last-Event-ID so nothing is missed; `stop()` ends it.
 */
export function follow(path, { lastEventId, onEvent, onState }) {
  // (ensureToken has run: the page read its data before it follows the stream)
  let stopped = false;
  let controller = null;
  let lastId = lastEventId ? String(lastEventId) : null;
  let delay = 500;

  async function once() {
    controller = new AbortController();
    const extra = { Accept: "text/event-stream" };
    if (lastId) extra["Last-Event-ID"] = lastId;
    const res = await fetch(path, { headers: headers(extra), signal: controller.signal });
    if (res.status === 401) {
      sessionStorage.removeItem(TOKEN);
      await askForToken();
      return;
    }
    if (!res.ok || !res.body) throw new ApiError(res.status, null);
    onState("live");
    delay = 500;
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = { data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.search(/\r?\n/)) >= 0) {
        const line = buffer.slice(0, cut);
        buffer = buffer.slice(cut + (buffer[cut] === "\r" ? 2 : 1));
        if (line === "") {
          if (event.data.length || event.id) {
            if (event.id) lastId = event.id;
            let data = event.data.join("\n");
            try {
              data = JSON.parse(data);
            } catch {
              /* a plain-text event */
            }
            onEvent({ id: event.id, type: event.type || "message", data });
          }
          event = { data: [] };
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") event.data.push(val);
          else if (field === "id") event.id = val;
          else if (field === "event") event.type = val;
        }
      }
    }
  }

  (async () => {
    while (!stopped) {
      try {
        await once();
      } catch (err) {
        if (stopped) break;
        onState(err && err.status === 404 ? "unavailable" : "reconnecting");
        if (err && err.status === 404) break;
      }
      if (stopped) break;
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();

  return {
    stop() {
      stopped = true;
      if (controller) controller.abort();
    },
    get lastEventId() {
      return lastId;
    },
  };
}
