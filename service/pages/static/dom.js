// Building DOM nodes from parts, never from markup strings: every text the server or the user supplies goes in as text.

/**
 * el("li", {class: "x", dataset: {label: "cat"}}, "text", child) -> HTMLElement
 * Attributes: "class", "dataset" (object), event handlers as "on<event>" functions, anything else via setAttribute.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

/** Replace every child of ``node``. */
export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
}

/** "12.3 ms", "1.20 s", "—" for a missing value. */
export function formatMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(ms >= 100 ? 0 : 1)} ms`;
}

/** A number with at most ``digits`` decimals, "—" when missing. */
export function formatNumber(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return Number(value).toFixed(digits).replace(/\.0+$/, "");
}
