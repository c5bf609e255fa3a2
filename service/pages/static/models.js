// The models page: every model, version, alias (and traffic split, when /models carries one), the cards' metrics
// and figures, each version's residency on this replica (resident, loading, cold; its measured memory, cold start,
// last use and hit rate) under the memory budget, live charts from GET /stats, and admin actions once an admin
// token is given.

import { admin, describeError, getJSON } from "./api.js";
import { LineChart } from "./charts.js";
import { el, formatMs, formatNumber, replace } from "./dom.js";

const STATS_EVERY_MS = 1000;
const MODELS_EVERY_MS = 5000;
const KNOWN_MODEL_KEYS = new Set(["name", "serving_version", "aliases", "versions"]);
const KNOWN_VERSION_KEYS = new Set([
  "version", "aliases", "loaded", "serving", "ready", "load_error", "metrics", "created_at", "description",
  "num_classes", "img_size", "pinned", "residency", "on_demand", "memory_bytes", "cold_start_s", "last_used", "hits",
  "misses", "hit_rate",
]);
const RESIDENCY = { resident: "resident", loading: "loading…", draining: "unloading", cold: "cold" };

const modelsBox = document.getElementById("models");
const modelsStatus = document.getElementById("models-status");
const memoryLine = document.createElement("p"); // the replica's memory budget, above the models
memoryLine.id = "memory";
memoryLine.className = "muted";
modelsBox.before(memoryLine);
const liveStatus = document.getElementById("live-status");
const adminStatus = document.getElementById("admin-status");
const figures = new Map(); // "name:version" -> {dataset: url}
let token = null; // kept in memory only: a reload forgets it
let lastModels = "";

const charts = (() => {
  const box = document.getElementById("charts");
  return [
    new LineChart(box, { id: "chart-throughput", title: "Throughput", unit: "images/s", digits: 1, lines: [{ key: "images_per_s", name: "images" }] }),
    new LineChart(box, { id: "chart-requests", title: "Requests", unit: "req/s", digits: 1, lines: [{ key: "requests_per_s", name: "requests" }] }),
    new LineChart(box, { id: "chart-queue", title: "Queue depth", unit: "images", digits: 0, lines: [{ key: "queue_depth", name: "queued" }] }),
    new LineChart(box, { id: "chart-batch", title: "Batch size", unit: "images", digits: 1, lines: [{ key: "batch_size", name: "mean" }] }),
    new LineChart(box, {
      id: "chart-latency", title: "Latency", unit: "ms", digits: 0,
      lines: [{ key: "p50_ms", name: "p50" }, { key: "p99_ms", name: "p99" }],
    }),
  ];
})();

async function pollStats() {
  try {
    const stats = await getJSON("/stats");
    const series = Array.isArray(stats.series) ? stats.series : [];
    for (const chart of charts) chart.update(series, stats.window_s || 60);
    const s = stats.summary || {};
    liveStatus.textContent = `Last minute: ${s.requests ?? 0} requests, ${formatNumber(s.images_per_s, 2)} images/s, `
      + `p50 ${formatMs(s.p50_ms)}, p99 ${formatMs(s.p99_ms)}, mean batch ${formatNumber(s.batch_size, 2)}.`;
  } catch (err) {
    liveStatus.textContent = `Live figures unavailable: ${describeError(err)}`;
  }
  setTimeout(pollStats, STATS_EVERY_MS);
}

/** "v3", or for an object target (a traffic split) every part of it: "v2 · canary: version 3, weight 10.0 %". */
function describeTarget(target) {
  if (typeof target === "number" || typeof target === "string") return `v${target}`;
  if (target === null || target === undefined) return "—";
  if (typeof target !== "object" || Array.isArray(target)) return JSON.stringify(target);
  const parts = [];
  for (const [key, value] of Object.entries(target)) {
    if (key === "version") parts.push(`v${value}`);
    else if (value && typeof value === "object" && !Array.isArray(value)) {
      const split = /weight|split|traffic|share/i.test(key); // {"2": 0.9, "3": 0.1}: version -> share
      const inner = Object.entries(value)
        .map(([k, v]) => (split ? `v${k} ${describeWeight("weight", v)}` : `${k} ${describeWeight(k, v)}`))
        .join(", ");
      parts.push(`${key}: ${inner}`);
    } else parts.push(`${key} ${describeWeight(key, value)}`);
  }
  return parts.join(" · ");
}

function describeWeight(key, value) {
  if (typeof value === "number" && /weight|share|fraction|percent/i.test(key) && value >= 0 && value <= 1) {
    return `${(100 * value).toFixed(1)} %`;
  }
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

function metricText(key, value) {
  if (typeof value !== "number") return `${key} ${JSON.stringify(value)}`;
  const name = key.replace("top1", "top-1").replace("top5", "top-5").replace(/_/g, " ");
  const percent = /top|agreement|acc/i.test(key) && value >= 0 && value <= 1;
  return `${name} ${percent ? `${(100 * value).toFixed(1)} %` : formatNumber(value, 4)}`;
}

/** One dataset's metrics: the headline figures (top-1, top-5, agreement...) inline, per-class ones folded. */
function datasetItem(dataset, values) {
  const entries = Object.entries(values || {});
  const rank = (key) => ["top1", "top5", "top1_agreement"].indexOf(key) >>> 0; // unknown keys after, in order
  const main = entries.filter(([k]) => !k.includes("/")).sort(([a], [b]) => rank(a) - rank(b));
  const perClass = entries.filter(([k]) => k.includes("/"));
  return el("li", { dataset: { dataset } }, el("span", { class: "dataset" }, dataset), ": ",
    main.map(([k, v]) => metricText(k, v)).join(" · "),
    perClass.length
      ? el("details", { class: "per-class" }, el("summary", {}, `per class (${perClass.length})`),
        perClass.map(([k, v]) => metricText(k, v)).join(" · "))
      : null);
}

function metricsCell(version, name) {
  const rows = Object.entries(version.metrics || {}).map(([dataset, values]) => datasetItem(dataset, values));
  const urls = figures.get(`${name}:${version.version}`) || {};
  const images = Object.entries(urls).map(([dataset, url]) =>
    el("a", { href: url, class: "figure-link" },
      el("img", { src: url, class: "confusion", loading: "lazy", alt: `Confusion matrix of ${name}:${version.version} on ${dataset}` })));
  return el("td", {}, rows.length ? el("ul", { class: "metrics" }, rows) : el("span", { class: "muted" }, "no metrics"), images);
}

function stateCell(version) {
  const badges = [];
  if (version.serving) badges.push(el("span", { class: "badge serving" }, "serving"));
  const residency = version.residency || (version.loaded ? "resident" : "cold");
  badges.push(el("span", { class: `badge ${residency === "resident" ? "loaded" : residency === "cold" ? "idle" : "extra"}`,
    dataset: { residency } }, RESIDENCY[residency] || residency));
  if (version.pinned) badges.push(el("span", { class: "badge" }, "pinned"));
  if (version.on_demand) badges.push(el("span", { class: "badge", title: "evicted first when memory is needed (least recently used)" }, "on demand"));
  const extra = Object.entries(version).filter(([k]) => !KNOWN_VERSION_KEYS.has(k))
    .map(([k, v]) => el("span", { class: "badge extra" }, `${k} ${describeTarget(v)}`));
  const error = version.load_error ? el("p", { class: "error-message" }, `load failed: ${version.load_error}`) : null;
  return el("td", {}, badges, extra, usage(version), error);
}

/** "112 MiB · cold start 1.20 s · used 3 s ago · hit rate 92 % (45 of 49)": what this replica measured. */
function usage(version) {
  const parts = [];
  if (typeof version.memory_bytes === "number") parts.push(formatBytes(version.memory_bytes));
  if (typeof version.cold_start_s === "number") parts.push(`cold start ${formatMs(version.cold_start_s * 1000)}`);
  if (version.last_used) parts.push(`used ${formatAgo(version.last_used)}`);
  const requests = (version.hits || 0) + (version.misses || 0);
  if (typeof version.hit_rate === "number") {
    parts.push(`hit rate ${(100 * version.hit_rate).toFixed(0)} % (${version.hits} of ${requests})`);
  }
  return parts.length ? el("p", { class: "muted small usage" }, parts.join(" · ")) : null;
}

function formatBytes(bytes) {
  return bytes >= 1024 ** 3 ? `${formatNumber(bytes / 1024 ** 3, 2)} GiB` : `${formatNumber(bytes / 1024 ** 2, 0)} MiB`;
}

/** "3 s ago", "4 min ago", "2 h ago" from an ISO time (the server's clock; a skew shows as "just now"). */
function formatAgo(iso) {
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  if (!Number.isFinite(seconds)) return iso;
  if (seconds < 1) return "just now";
  if (seconds < 120) return `${Math.round(seconds)} s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

function renderMemory(memory) {
  if (!memory || typeof memory.budget_bytes !== "number") {
    memoryLine.textContent = "";
    return;
  }
  const names = memory.on_demand_models || [];
  const onDemand = names.includes("*") ? "every model" : names.join(", ") || "none (loading on demand is off)";
  memoryLine.textContent = `Memory for loaded versions: ${formatBytes(memory.used_bytes)} of a ${formatBytes(memory.budget_bytes)} `
    + `budget (process ${formatBytes(memory.process_rss_bytes)}). Loaded on demand: ${onDemand}.`;
}

function actionsCell(model, version) {
  const ref = `${model.name}:${version.version}`;
  const buttons = [];
  if (!version.serving) {
    buttons.push(actionButton(`Promote v${version.version}`, `Promote ${ref} to production`,
      `/admin/models/${encodeURIComponent(model.name)}/aliases/production`, { version: version.version }));
  }
  if (!version.serving && !model.canary) {
    buttons.push(actionButton(`Canary v${version.version} 10 %`, `Send 10 % of ${model.name}@production to ${ref}`,
      `/admin/models/${encodeURIComponent(model.name)}/aliases/production/canary`, { version: version.version, weight: 10 }));
  }
  if (!version.loaded) buttons.push(actionButton("Load", `Load ${ref}`, `/admin/models/${encodeURIComponent(ref)}/load`));
  else if (!version.serving) buttons.push(actionButton("Unload", `Unload ${ref}`, `/admin/models/${encodeURIComponent(ref)}/unload`));
  return el("td", { class: "actions" }, buttons);
}

function actionButton(text, label, path, body) {
  return el("button", {
    type: "button", class: "small", "aria-label": label,
    onclick: async (event) => {
      const button = event.currentTarget;
      button.disabled = true;
      adminStatus.textContent = `${label}…`;
      try {
        const answer = await admin(path, token, body);
        adminStatus.textContent = `${label}: done (${describeAnswer(answer)}).`;
        lastModels = "";
        await refreshModels();
      } catch (err) {
        adminStatus.textContent = `${label} refused: ${describeError(err)}`;
      } finally {
        button.disabled = false;
      }
    },
  }, text);
}

function describeAnswer(answer) {
  if (answer.action) return `${answer.name}@${answer.alias}: ${answer.action}`;  // the canary routes
  return `${answer.name}:${answer.version}${answer.alias ? ` is ${answer.alias}` : ""}`;
}

function canaryButtons(model) {
  const canary = model.canary;
  if (!token || !canary || !canary.alias) return null;
  const base = `/admin/models/${encodeURIComponent(model.name)}/aliases/${encodeURIComponent(canary.alias)}/canary`;
  const split = `${model.name}@${canary.alias} canary v${canary.canary_version}`;
  return el("div", { class: "canary-actions" },
    actionButton("Promote canary", `Promote ${split}`, `${base}/promote`, {}),
    actionButton("Abort canary", `Abort ${split}`, `${base}/abort`));
}

function renderModel(model) {
  const aliases = Object.entries(model.aliases || {});
  const aliasList = aliases.length
    ? el("ul", { class: "aliases" }, aliases.map(([alias, target]) =>
      el("li", { dataset: { alias } }, el("code", {}, `@${alias}`), ` → ${describeTarget(target)}`)))
    : el("p", { class: "muted" }, "no aliases");
  const extras = Object.entries(model).filter(([k, v]) => !KNOWN_MODEL_KEYS.has(k) && v !== null && v !== undefined)
    .map(([k, v]) => el("p", { class: "split" }, el("strong", {}, `${k}: `), describeTarget(v)));
  const head = ["Version", "Aliases", "State", "Created", "Metrics and figures"];
  if (token) head.push("Admin");
  const rows = (model.versions || []).map((version) => el("tr", { dataset: { version: version.version } },
    el("th", { scope: "row" }, `v${version.version}`, version.description ? el("p", { class: "muted small" }, version.description) : null),
    el("td", {}, (version.aliases || []).map((a) => el("code", { class: "alias" }, `@${a}`))),
    stateCell(version),
    el("td", { class: "created" }, (version.created_at || "").replace("T", " ").replace(/\.\d+/, "").replace("+00:00", " UTC")),
    metricsCell(version, model.name),
    token ? actionsCell(model, version) : null));
  const rollback = token
    ? actionButton("Roll back production", `Roll back ${model.name}@production`,
      `/admin/models/${encodeURIComponent(model.name)}/rollback`, { alias: "production" })
    : null;
  return el("section", { class: "model", dataset: { model: model.name }, "aria-labelledby": `model-${model.name}` },
    el("h2", { id: `model-${model.name}` }, model.name,
      model.serving_version ? el("span", { class: "badge serving" }, `serving v${model.serving_version}`) : null),
    el("div", { class: "model-meta" }, aliasList, extras, rollback, canaryButtons(model)),
    el("div", { class: "table-wrap" }, el("table", { class: "versions" },
      el("caption", { class: "visually-hidden" }, `Versions of ${model.name}`),
      el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows))));
}

async function loadFigures(models) {
  const wanted = models.flatMap((m) => (m.versions || []).map((v) => [m.name, v.version]))
    .filter(([name, version]) => !figures.has(`${name}:${version}`));
  await Promise.all(wanted.map(async ([name, version]) => {
    try {
      const body = await getJSON(`/models/${encodeURIComponent(name)}/versions/${version}/figures`);
      figures.set(`${name}:${version}`, body.confusion || {});
    } catch {
      figures.set(`${name}:${version}`, {});
    }
  }));
}

async function refreshModels() {
  try {
    const body = await getJSON("/models");
    const models = Array.isArray(body.models) ? body.models : [];
    renderMemory(body.memory);
    const text = JSON.stringify(models) + String(Boolean(token));
    if (text !== lastModels) {
      await loadFigures(models);
      replace(modelsBox, models.length ? models.map(renderModel) : el("p", {}, "The store holds no model yet."));
      lastModels = text;
    }
    modelsStatus.textContent = "";
  } catch (err) {
    modelsStatus.textContent = `Models unavailable: ${describeError(err)}`;
  }
}

async function pollModels() {
  await refreshModels();
  setTimeout(pollModels, MODELS_EVERY_MS);
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const field = document.getElementById("token");
  token = field.value.trim() || null;
  field.value = "";
  adminStatus.textContent = token
    ? "Admin actions shown below; the service checks the token on each action."
    : "Admin actions hidden.";
  lastModels = "";
  refreshModels();
});

pollStats();
pollModels();
