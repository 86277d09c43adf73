// The console's JSON API as the pages use it: the session (who, which role, and the CSRF
// token every state-changing request carries as X-CSRF-Token), reads, and decisions.
// A 401 means the session ended: to the login page, back here afterwards.

let csrf = "";
export const me = { name: "", role: "viewer", via: "" };

/** To the login page; it opens the console again where it stood (the #fragment). */
export function toLogin() {
  location.assign("/login" + location.hash);
}

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

async function answered(response) {
  if (response.status === 401) {
    toLogin();
    throw new ApiError(401, "log in first", {});
  }
  const body = await response.json().catch(() => ({}));
  return body;
}

/** Who is logged in; keeps the session's CSRF token for the requests that change anything. */
export async function loadSession() {
  const response = await fetch("/api/session", { credentials: "same-origin" });
  const body = await answered(response);
  if (!response.ok) throw new ApiError(response.status, body.error || "no session", body);
  Object.assign(me, body);
  csrf = body.csrf_token || "";
  return me;
}

export function decides() {
  return me.role === "reviewer";
}

/** A GET of the API, its JSON; an error the API gives, thrown with its message. */
export async function get(path, params) {
  const query = params ? "?" + new URLSearchParams(params).toString() : "";
  const response = await fetch(path + query, { credentials: "same-origin" });
  const body = await answered(response);
  if (!response.ok) {
    throw new ApiError(response.status, body.error || `${path}: ${response.status}`, body);
  }
  return body;
}

/** A POST with the session's CSRF token: {status, body}, whatever the status (a 409 says
 * by whom a thing was decided, which the page shows). */
export async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body || {}),
  });
  return { status: response.status, body: await answered(response) };
}

export const enc = encodeURIComponent;
