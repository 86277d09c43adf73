// Small DOM helpers shared by the pages. Everything shown is built as nodes with text
// (never HTML from data: an account id or an explanation is text, whatever it holds).

/** An element: h("td", {class: "num"}, "12"); attributes null/false are left out. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "checked" || key === "disabled" || key === "value") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** An epoch-ms time as the trail's people read it: UTC, to the minute. */
export function when(ms) {
  if (ms === null || ms === undefined) return "—";
  return new Date(ms).toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

/** An epoch-ms time on a chart's axis: the hour and minute (UTC). */
export function clock(ms) {
  return new Date(ms).toISOString().slice(11, 16);
}

/** A duration in seconds, in the unit that reads best. */
export function duration(s) {
  if (s === null || s === undefined) return "—";
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

export function number(x) {
  if (typeof x !== "number") return String(x);
  return Number.isInteger(x) ? x.toLocaleString("en") : x.toLocaleString("en", { maximumFractionDigits: 3 });
}

export function badge(kind, value) {
  return h("span", { class: `badge ${kind}-${value}` }, String(value).replace("_", " "));
}

export function short(id) {
  return h("code", { title: id }, id.length > 12 ? id.slice(0, 12) + "…" : id);
}

export function caseLink(c) {
  return h("a", { href: `#/case/${encodeURIComponent(c.case_id)}` }, `${c.subject_type}:${c.subject_id}`);
}

export function accountLink(id) {
  return h("a", { href: `#/account/${encodeURIComponent(id)}`, class: "mono" }, id);
}

let toastTimer = 0;

/** Say what a decision did (or why it was refused), for a few seconds. */
export function toast(message, error = false) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.classList.toggle("error", error);
  clearTimeout(toastTimer);
  toastTimer = setTimeout(
    () => {
      el.textContent = "";
    },
    error ? 12000 : 6000,
  );
}

/** Ask for the reason every decision carries (and an appellant, for an appeal), then
 * `act` on the answer with the dialog still open, its buttons disabled (a double click on
 * Confirm is one request); what `act` returned, or null if the reviewer cancelled. */
export function askReason({ title, detail, appellant = null, confirm = "Confirm" }, act) {
  const dialog = document.getElementById("reason-dialog");
  const text = document.getElementById("reason-text");
  const who = document.getElementById("reason-appellant");
  const error = document.getElementById("reason-error");
  const ok = document.getElementById("reason-confirm");
  const cancel = document.getElementById("reason-cancel");
  const form = document.getElementById("reason-form");
  document.getElementById("reason-title").textContent = title;
  document.getElementById("reason-detail").textContent = detail || "";
  document.getElementById("appellant-row").classList.toggle("hidden", appellant === null);
  who.value = appellant || "";
  text.value = "";
  error.textContent = "";
  ok.textContent = confirm;
  ok.disabled = cancel.disabled = false;
  return new Promise((resolve) => {
    let sending = false;
    const done = (answer) => {
      form.removeEventListener("submit", onSubmit);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const onSubmit = async (event) => {
      event.preventDefault();
      if (sending) return;
      const reason = text.value.trim();
      if (!reason) {
        error.textContent = "Every decision needs a reason.";
        return;
      }
      sending = true;
      ok.disabled = cancel.disabled = true;
      ok.textContent = "Sending…";
      try {
        done(await act({ reason, appellant: who.value.trim() }));
      } catch (failure) {
        error.textContent = `Not sent: ${failure.message || failure}. Try again.`;
        sending = false;
        ok.disabled = cancel.disabled = false;
        ok.textContent = confirm;
      }
    };
    const onCancel = (event) => {
      event.preventDefault();
      if (!sending) done(null);
    };
    form.addEventListener("submit", onSubmit);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    text.focus();
  });
}

let busy = false;

/** One decision: the reason asked for, the request sent once (the button, if any, stays
 * disabled from the first click until the answer is in), the answer said. `send` gets the
 * reason (and appellant) and returns {status, body}. Returns the answer, or null. */
export async function decide(button, ask, send, describe) {
  if (busy || (button && button.disabled)) return null;
  busy = true;
  if (button) button.disabled = true;
  try {
    const answer = await askReason(ask, send);
    if (!answer) return null;
    if (answer.status === 200) {
      toast(describe(answer.body));
    } else {
      toast(`Refused (${answer.status}): ${answer.body.error || "no reason given"}`, true);
    }
    return answer;
  } finally {
    busy = false;
    if (button) button.disabled = false;
  }
}

/** What the API said a decision issued, in words. */
export function issuedText(body) {
  const issued = body.issued || [];
  const reverts = issued.filter((a) => a.action === "revert").length;
  const parts = [];
  if (reverts) parts.push(`${reverts} revert${reverts === 1 ? "" : "s"}`);
  if (issued.length - reverts)
    parts.push(`${issued.length - reverts} action${issued.length - reverts === 1 ? "" : "s"} in force`);
  const what = parts.length ? `issued ${parts.join(" and ")}` : "nothing issued";
  return body.repeated ? `already decided so: ${what}` : what;
}

/** A table over many rows, shown `step` at a time, with a filter on the text `key` gives
 * each row: long lists stay fast to draw and quick to search. */
export function boundedTable({ columns, rows, row, key, step = 100, placeholder, empty, id, state }) {
  const memo = state || { filter: "", shown: step };
  const body = h("tbody");
  const count = h("span", { class: "muted" });
  const more = h("button", { type: "button", class: "small more" }, "Show more");
  const filter = h("input", {
    type: "search",
    placeholder: placeholder || "Filter",
    value: memo.filter,
    "aria-label": placeholder || "Filter",
    class: "table-filter",
  });
  const draw = () => {
    const wanted = memo.filter.trim().toLowerCase();
    const matching = wanted ? rows.filter((r) => key(r).toLowerCase().includes(wanted)) : rows;
    clear(body);
    const shown = matching.slice(0, memo.shown);
    if (!shown.length)
      body.append(h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty || "None.")));
    for (const r of shown) body.append(row(r));
    count.textContent =
      matching.length === rows.length
        ? `${rows.length} in all`
        : `${matching.length} of ${rows.length} match`;
    more.classList.toggle("hidden", matching.length <= memo.shown);
    more.textContent = `Show ${Math.min(step, matching.length - memo.shown)} more`;
  };
  filter.addEventListener("input", () => {
    memo.filter = filter.value;
    memo.shown = step;
    draw();
  });
  more.addEventListener("click", () => {
    memo.shown += step;
    draw();
  });
  draw();
  const head = h(
    "tr",
    {},
    columns.map((c) => h("th", { class: c.endsWith("#") ? "num" : null }, c.replace(/#$/, ""))),
  );
  return h(
    "div",
    { id },
    rows.length > 10 ? h("div", { class: "table-tools" }, filter, count) : null,
    h("table", {}, h("thead", {}, head), body),
    more,
  );
}
