// The console's only door to the server: the documented REST API (/fhir and /auth/dev), with
// the bearer token of the signed-in user. Errors carry the server's OperationOutcome.

const TOKEN_KEY = "icm-console.token";

/** An answer other than 2xx, with the OperationOutcome the server sent (if any). */
export class ApiError extends Error {
  constructor(status, outcome, fallback) {
    super(outcomeText(outcome) || fallback || `HTTP ${status}`);
    this.status = status;
    this.outcome = outcome;
  }
}

/** The words of an OperationOutcome: each issue's diagnostics (or details text, or code). */
export function outcomeText(oo) {
  if (!oo || oo.resourceType !== "OperationOutcome") return "";
  return (oo.issue || [])
    .map((i) => i.diagnostics || i.details?.text || i.code)
    .filter(Boolean)
    .join("; ");
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t) {
  sessionStorage.setItem(TOKEN_KEY, t.trim());
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** The claims of the current token (read for display only: the server verifies it). */
export function claims(token = getToken()) {
  if (!token) return null;
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(padded), (c) => c.charCodeAt(0))));
  } catch {
    return null;
  }
}

/** The signed-in practitioner's id, from the token's fhirUser claim. */
export function practitionerId() {
  const u = claims()?.fhirUser || "";
  const m = /(?:^|\/)Practitioner\/([^/]+)$/.exec(u);
  return m ? m[1] : null;
}

async function parse(res) {
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * A /fhir request. `path` is relative to /fhir (e.g. "Patient/1" or "Task?status=ready").
 * Answers the parsed body (and, with `full`, {body, etag, status}).
 */
export async function fhir(path, { method = "GET", body, ifMatch, full = false } = {}) {
  const headers = { Accept: "application/fhir+json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/fhir+json";
  if (ifMatch) headers["If-Match"] = ifMatch;
  const res = await fetch(`/fhir/${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await parse(res);
  if (!res.ok) {
    if (res.status === 401) window.dispatchEvent(new CustomEvent("icm:unauthorized"));
    throw new ApiError(res.status, typeof data === "object" ? data : null, typeof data === "string" ? data : "");
  }
  return full ? { body: data, etag: res.headers.get("ETag"), status: res.status } : data;
}

/** A search: `params` an object or URLSearchParams; answers the Bundle. */
export function search(type, params = {}) {
  const q = new URLSearchParams(params);
  return fhir(`${type}?${q}`);
}

/** The resources of a Bundle, optionally of one type only. */
export function resources(bundle, type) {
  return (bundle?.entry || [])
    .map((e) => e.resource)
    .filter((r) => r && (!type || r.resourceType === type));
}

/** Development sign-in (only on a loopback server started with --dev-console). */
export async function devPractitioners() {
  const res = await fetch("/auth/dev/practitioners", { headers: { Accept: "application/json" } });
  if (!res.ok) return null;
  return (await res.json()).practitioners || [];
}

export async function devToken(practitioner) {
  const res = await fetch("/auth/dev/token", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ practitioner }),
  });
  const data = await parse(res);
  if (!res.ok) throw new ApiError(res.status, data, "the development sign-in failed");
  return data;
}
