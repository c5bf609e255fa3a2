// Small line charts in SVG (built with DOM calls: no inline script or style, so the CSP stays strict).

import { el, formatNumber } from "./dom.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const WIDTH = 240;
const HEIGHT = 64;
const PAD = 2;

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

/**
 * A chart of one or more lines over the window.
 * spec: {id, title, unit, digits, lines: [{key, name}]}; update(series, windowS) takes /stats' series
 * (objects with ``at`` in seconds and a value per key, null for "no data").
 */
export class LineChart {
  constructor(container, spec) {
    this.spec = spec;
    this.value = el("output", { class: "chart-value" }, "—");
    this.scale = el("span", { class: "chart-scale" }, "");
    this.plot = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", preserveAspectRatio: "none" });
    this.plot.append(svg("line", { x1: 0, y1: HEIGHT - PAD, x2: WIDTH, y2: HEIGHT - PAD, class: "axis" }));
    this.lines = spec.lines.map((line, i) => {
      const path = svg("polyline", { class: `line line-${i}`, points: "" });
      path.setAttribute("data-key", line.key);
      this.plot.append(path);
      return path;
    });
    const legend = spec.lines.length > 1
      ? el("span", { class: "legend" }, spec.lines.map((line, i) => el("span", { class: `key key-${i}` }, line.name)))
      : null;
    this.figure = el(
      "figure",
      { class: "chart", id: spec.id },
      el("figcaption", {}, el("span", { class: "chart-title" }, spec.title), this.value),
      this.plot,
      el("div", { class: "chart-foot" }, this.scale, legend),
    );
    container.append(this.figure);
  }

  update(series, windowS) {
    const last = series.length ? series[series.length - 1].at : 0;
    let max = 0;
    for (const point of series) {
      for (const line of this.spec.lines) max = Math.max(max, point[line.key] ?? 0);
    }
    const top = niceCeiling(max);
    const x = (at) => WIDTH - ((last - at) / windowS) * WIDTH;
    const y = (v) => HEIGHT - PAD - (v / top) * (HEIGHT - 2 * PAD);
    this.spec.lines.forEach((line, i) => {
      const points = series
        .filter((p) => p[line.key] !== null && p[line.key] !== undefined)
        .map((p) => `${x(p.at).toFixed(1)},${y(p[line.key]).toFixed(1)}`);
      this.lines[i].setAttribute("points", points.join(" "));
    });
    const current = series.length ? series[series.length - 1] : {};
    const shown = this.spec.lines
      .map((line) => `${this.spec.lines.length > 1 ? `${line.name} ` : ""}${formatNumber(current[line.key], this.spec.digits)}`)
      .join(" · ");
    this.value.textContent = `${shown} ${this.spec.unit}`;
    this.figure.dataset.last = JSON.stringify(this.spec.lines.map((line) => current[line.key] ?? null));
    this.figure.dataset.max = String(max);
    this.scale.textContent = `0–${formatNumber(top, 2)} ${this.spec.unit}, last ${windowS} s`;
    this.plot.setAttribute("aria-label", `${this.spec.title}: now ${shown} ${this.spec.unit}; peak ${formatNumber(max, this.spec.digits)}`);
  }
}

/** 1, 2, 5 × 10^n at or above ``value`` (at least 1), so the scale reads well. */
function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}
