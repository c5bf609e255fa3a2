// The classify page: images from a file picker, drag and drop, the clipboard or a URL; one request per image so
// that each image gets its own answer (or its own error, worded by the service).

import { ApiError, classify, getJSON } from "./api.js";
import { el, formatMs, replace } from "./dom.js";

const results = document.getElementById("results");
const statusLine = document.getElementById("status");
const modelSelect = document.getElementById("model");
const topKSelect = document.getElementById("top-k");
const STAGES = [
  ["fetch_ms", "fetch"],
  ["decode_ms", "decode"],
  ["queue_ms", "queue"],
  ["infer_ms", "infer"],
];
let pending = 0;

/** Fill the model picker from GET /models: the served name, its aliases and every version (unloaded disabled). */
async function loadModels() {
  let body;
  try {
    body = await getJSON("/models");
  } catch (err) {
    modelSelect.append(el("option", { disabled: true }, `models unavailable: ${err.message}`));
    return;
  }
  for (const model of Array.isArray(body.models) ? body.models : []) {
    const versions = Array.isArray(model.versions) ? model.versions : [];
    const loaded = new Set(versions.filter((v) => v.loaded).map((v) => v.version));
    const group = el("optgroup", { label: model.name });
    const serving = model.serving_version;
    group.append(el("option", { value: model.name }, serving ? `${model.name} (serving v${serving})` : model.name));
    for (const [alias, target] of Object.entries(model.aliases || {})) {
      const version = typeof target === "object" && target !== null ? target.version : target;
      const ok = loaded.has(version);
      group.append(
        el("option", { value: `${model.name}@${alias}`, disabled: !ok }, `${model.name}@${alias} → v${version}${ok ? "" : " (not loaded)"}`),
      );
    }
    for (const version of versions) {
      const label = `${model.name}:${version.version}${version.serving ? " · serving" : ""}${version.loaded ? "" : " (not loaded)"}`;
      group.append(el("option", { value: `${model.name}:${version.version}`, disabled: !version.loaded }, label));
    }
    modelSelect.append(group);
  }
}

function setStatus() {
  statusLine.textContent = pending ? `Classifying ${pending} image${pending > 1 ? "s" : ""}…` : "";
}

/** Start one image: a card at the top of the results, filled in when the service answers. */
async function submit(input, title, preview) {
  const figure = preview
    ? el("img", { src: preview, alt: `Your image ${title}`, class: "thumb" })
    : el("div", { class: "thumb thumb-url", "aria-hidden": "true" }, input.url !== undefined ? "URL" : "file");
  const body = el("div", { class: "result-body" }, el("p", { class: "muted" }, "Classifying…"));
  const card = el(
    "article",
    { class: "result", "aria-busy": "true", dataset: { state: "pending" } },
    el("figure", {}, figure, el("figcaption", { class: "name", title }, title)),
    body,
  );
  results.prepend(card);
  pending += 1;
  setStatus();
  const options = { model: modelSelect.value, topK: Number(topKSelect.value) };
  try {
    const answer = await classify(input, options);
    renderAnswer(card, body, answer);
  } catch (err) {
    renderError(card, body, err);
  } finally {
    card.removeAttribute("aria-busy");
    pending -= 1;
    setStatus();
  }
}

function renderAnswer(card, body, answer) {
  const result = answer.results[0];
  const model = `${answer.model.name}:${answer.model.version}`;
  card.dataset.state = "done";
  card.dataset.model = model;
  const top = result.predictions[0];
  const list = el(
    "ol",
    { class: "labels", "aria-label": "Top labels" },
    result.predictions.map((p) => {
      const percent = (100 * p.score).toFixed(1);
      const fill = el("span", { class: "fill" });
      fill.style.width = `${Math.max(0.5, 100 * p.score)}%`; // CSSOM, allowed by the CSP (no inline style)
      return el(
        "li",
        { dataset: { label: p.label, index: p.index, score: p.score } },
        el("span", { class: "label" }, p.label),
        el("span", { class: "score" }, `${percent} %`),
        el("span", { class: "bar", "aria-hidden": "true" }, fill),
      );
    }),
  );
  const timings = result.timings || {};
  const stages = STAGES.filter(([key]) => timings[key] !== null && timings[key] !== undefined);
  const dl = el(
    "dl",
    { class: "timings" },
    stages.map(([key, name]) => [el("dt", {}, name), el("dd", { dataset: { stage: name } }, formatMs(timings[key]))]),
    el("dt", {}, "batch"),
    el("dd", {}, String(timings.batch_size ?? "—")),
    el("dt", {}, "total"),
    el("dd", {}, formatMs(answer.total_ms)),
  );
  replace(
    body,
    el("p", { class: "headline" }, el("strong", {}, top ? top.label : "—"), top ? ` ${(100 * top.score).toFixed(1)} %` : ""),
    list,
    el("p", { class: "answered" }, "Answered by ", el("code", { class: "model-ref" }, model)),
    dl,
  );
}

function renderError(card, body, err) {
  card.dataset.state = "error";
  const status = err instanceof ApiError ? err.status : 0;
  const code = err instanceof ApiError ? err.code : "error";
  card.dataset.status = String(status);
  card.dataset.code = code;
  replace(
    body,
    el(
      "div",
      { class: "error", role: "alert" },
      el("p", { class: "error-title" }, status ? `${status} · ${code}` : code),
      el("p", { class: "error-message" }, err.message || String(err)),
    ),
  );
}

function submitFiles(files) {
  for (const file of files) {
    const preview = file.type.startsWith("image/") ? URL.createObjectURL(file) : null;
    submit({ file }, file.name || "pasted image", preview);
  }
}

function wire() {
  const input = document.getElementById("files");
  input.addEventListener("change", () => {
    submitFiles([...input.files]);
    input.value = ""; // the same file can be chosen again
  });
  const drop = document.getElementById("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    submitFiles([...(event.dataTransfer?.files || [])]);
  });
  document.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files || [])];
    if (files.length) {
      event.preventDefault();
      submitFiles(files);
    }
  });
  document.getElementById("url-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const field = document.getElementById("url");
    const url = field.value.trim();
    if (url) submit({ url }, url, null);
  });
}

wire();
loadModels();
