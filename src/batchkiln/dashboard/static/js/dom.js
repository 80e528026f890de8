// Building the page from data without ever parsing data as markup: every text goes
// through textContent or a text node, never an HTML-parsing sink (names, custom ids and error
// texts come from users and vendors).

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "class") node.setAttribute("class", value);
    else if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An HTML element: el("li", {class: "x"}, "text", otherNode). */
export function el(tag, attrs = {}, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function svg(tag, attrs = {}, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replace a node's children. */
export function replace(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
  return node;
}

export function money(usd) {
  if (usd === null || usd === undefined) return "-";
  if (usd === 0) return "$0";
  if (usd < 0.01) return `$${Number(usd.toPrecision(2)).toFixed(Math.min(8, 1 - Math.floor(Math.log10(usd))))}`;
  return `$${usd.toFixed(2)}`;
}

export function seconds(value) {
  // 80 s reads better than 1.3 min in a backoff schedule; whole minutes and hours as such.
  if (value === null || value === undefined) return "-";
  const s = Math.round(value);
  const abs = Math.abs(s);
  if (abs >= 3600 && abs % 3600 === 0) return `${s / 3600} h`;
  if (abs >= 60 && abs % 60 === 0) return `${s / 60} min`;
  if (abs < 600) return `${s} s`;
  if (abs < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

export function when(epoch) {
  if (epoch === null || epoch === undefined) return "-";
  return new Date(epoch * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

/** A fresh Idempotency-Key for one press of a state-changing button. */
export function newKey(prefix) {
  const random = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
  return `${prefix}-${random}`;
}
