// The service's JSON APIs, same origin only. Errors become ApiError with the service's own code and message.

export class ApiError extends Error {
  /** status: HTTP status (0 when the server could not be reached); code: the service's error code. */
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const TIMEOUT_MS = 60000;

async function request(path, options = {}) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), options.timeoutMs ?? TIMEOUT_MS);
  let response;
  try {
    response = await fetch(path, { ...options, signal: controller.signal, credentials: "same-origin" });
  } catch (err) {
    const why = err.name === "AbortError" ? "no answer in time" : "the server could not be reached";
    throw new ApiError(0, "network_error", `${why} (${err.message})`);
  } finally {
    clearTimeout(timer);
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = body && body.error;
    if (error && typeof error.message === "string") {
      throw new ApiError(response.status, String(error.code || "error"), error.message);
    }
    const snippet = text.slice(0, 200).trim() || response.statusText || "no details";
    throw new ApiError(response.status, `http_${response.status}`, snippet);
  }
  if (body === null) throw new ApiError(response.status, "bad_response", "the server's answer was not JSON");
  return body;
}

export const getJSON = (path) => request(path, { headers: { Accept: "application/json" } });

/** POST /classify for one image: ``{file}`` (a Blob/File) or ``{url}``. Returns the ClassifyResponse. */
export function classify({ file, url }, { model, topK }) {
  const params = new URLSearchParams();
  if (topK) params.set("top_k", String(topK));
  if (model) params.set("model", model);
  const path = `/classify?${params}`;
  if (url !== undefined) {
    return request(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ url }),
    });
  }
  const form = new FormData();
  form.append("file", file, file.name || "pasted-image");
  return request(path, { method: "POST", body: form, headers: { Accept: "application/json" } });
}

/** POST to an admin route with the bearer token; ``body`` is sent as JSON when given. */
export function admin(path, token, body) {
  const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  const options = { method: "POST", headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  return request(path, { ...options, timeoutMs: 600000 });
}

/** "413 payload_too_large: ..." as one line, for status messages. */
export function describeError(err) {
  if (err instanceof ApiError) return err.status ? `${err.status} ${err.code}: ${err.message}` : err.message;
  return String(err && err.message ? err.message : err);
}
