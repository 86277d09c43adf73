// The case queue: filters (detector, article, severity, mode, status), a search by any
// account, content or group id (a member finds its case), a sort, counts per status, and
// pages of the API's size (the store is never read whole). Keys: j/k or the arrows move,
// Enter opens, / searches, ←/→ turn pages, a approves and r rejects the case as one.

import { decides, enc, get, post } from "./api.js";
import { badge, caseLink, clear, decide, h, issuedText, number, when } from "./ui.js";

const STATUSES = ["needs_review", "appealed", "enforced", "shadow", "reverted", "closed"];
const SEVERITIES = ["critical", "high", "medium", "low"];
const MODES = ["enforce", "shadow", "review"];
const SORTS = [
  ["-severity", "Gravest first"],
  ["severity", "Mildest first"],
  ["-time", "Newest first"],
  ["time", "Oldest first"],
  ["-size", "Largest first"],
  ["size", "Smallest first"],
];
const SIZES = ["10", "25", "50", "100"];
const FIELDS = ["q", "detector", "article", "severity", "mode", "status", "sort", "page", "page_size"];

let facets = null; // the detectors and articles of the run, for the filters
let view = null; // the queue's nodes and what it shows, kept while it is on screen
let lastOpened = "";

function go(params) {
  const kept = new URLSearchParams();
  for (const f of FIELDS) if (params[f]) kept.set(f, params[f]);
  const hash = "#/cases" + (kept.toString() ? "?" + kept.toString() : "");
  if (location.hash !== hash) location.hash = hash;
  else refresh();
}

function current() {
  return Object.fromEntries(FIELDS.map((f) => [f, view.params.get(f) || ""]));
}

function change(field, value) {
  const params = current();
  params[field] = value;
  if (field !== "page") params.page = "";
  go(params);
}

function select(labelText, field, options) {
  const el = h(
    "select",
    { id: `filter-${field}`, name: field },
    options.map(([value, label]) => h("option", { value }, label)),
  );
  el.addEventListener("change", () => change(field, el.value));
  return [h("label", {}, labelText, el), el];
}

function build(root) {
  const search = h("input", {
    id: "search",
    type: "search",
    name: "q",
    autocomplete: "off",
    placeholder: "Account, content or group id (a member finds its case)",
    "aria-label": "Search cases",
  });
  const form = h("form", { class: "filters", role: "search" });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search.blur(); // the keys move in the results now
    change("q", search.value.trim());
  });
  const any = (label) => [["", label]];
  const [detectorLabel, detector] = select("Detector", "detector", [
    ...any("any"),
    ...facets.detectors.map((d) => [d, d]),
  ]);
  const [articleLabel, article] = select("Article", "article", [
    ...any("any"),
    ...facets.articles.map((a) => [a, a]),
  ]);
  const [severityLabel, severity] = select("Severity", "severity", [
    ...any("any"),
    ...SEVERITIES.map((s) => [s, s]),
  ]);
  const [modeLabel, mode] = select("Mode", "mode", [...any("any"), ...MODES.map((m) => [m, m])]);
  const [sortLabel, sort] = select("Sort", "sort", SORTS);
  const [sizeLabel, size] = select(
    "Per page",
    "page_size",
    SIZES.map((s) => [s, s]),
  );
  form.append(
    h("label", {}, "Search", search),
    h("button", { type: "submit" }, "Search"),
    detectorLabel,
    articleLabel,
    severityLabel,
    modeLabel,
    sortLabel,
    sizeLabel,
  );
  const chips = h("div", { class: "chips", id: "status-chips" });
  const body = h("tbody");
  const pager = h("div", { class: "pager" });
  const table = h(
    "table",
    { id: "queue" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        [
          "Severity",
          "Status",
          "Subject",
          "Detectors",
          "Article",
          "Mode",
          "Size",
          "Pending",
          "Last finding",
          "Explanation",
        ].map((c) => h("th", { class: ["Size", "Pending"].includes(c) ? "num" : null }, c)),
      ),
    ),
    body,
  );
  const keys = h(
    "p",
    { class: "keys" },
    h("kbd", {}, "j"),
    "/",
    h("kbd", {}, "k"),
    " or ",
    h("kbd", {}, "↓"),
    "/",
    h("kbd", {}, "↑"),
    " move · ",
    h("kbd", {}, "Enter"),
    " open · ",
    h("kbd", {}, "/"),
    " search · ",
    h("kbd", {}, "←"),
    "/",
    h("kbd", {}, "→"),
    " pages · ",
    h("kbd", {}, "a"),
    " approve · ",
    h("kbd", {}, "r"),
    " reject the selected case (a reason is asked)",
  );
  const panel = h(
    "section",
    { class: "panel", id: "queue-page" },
    h("h1", {}, "Cases"),
    form,
    chips,
    table,
    pager,
    keys,
  );
  clear(root).append(panel);
  return {
    root,
    panel,
    search,
    detector,
    article,
    severity,
    mode,
    sort,
    size,
    chips,
    body,
    pager,
    cases: [],
    selected: -1,
    params: new URLSearchParams(),
  };
}

/** The queue for `params` (the #/cases?… of the address): drawn in place if on screen. */
export async function showQueue(root, params) {
  if (!facets) {
    const overview = await get("/api/overview");
    facets = {
      detectors: Object.keys(overview.findings.by_detector).sort(),
      articles: Object.keys(overview.findings.by_article).sort(),
    };
  }
  if (!view || !root.contains(view.panel)) view = build(root);
  view.params = params;
  const p = current();
  view.search.value = p.q;
  view.detector.value = p.detector;
  view.article.value = p.article;
  view.severity.value = p.severity;
  view.mode.value = p.mode;
  view.sort.value = p.sort || "-severity";
  const size = p.page_size || "25";
  if (![...view.size.options].some((o) => o.value === size))
    view.size.append(h("option", { value: size }, size));
  view.size.value = size;
  await refresh();
}

async function refresh() {
  const kept = view.cases[view.selected] ? view.cases[view.selected].case_id : lastOpened;
  const p = current();
  const query = { sort: p.sort || "-severity", page: p.page || "1", page_size: p.page_size || "25" };
  for (const f of ["q", "detector", "article", "severity", "mode", "status"]) if (p[f]) query[f] = p[f];
  const turn = (view.turn = (view.turn || 0) + 1);
  const data = await get("/api/cases", query);
  if (turn !== view.turn) return; // a later request is on its way: its answer is drawn
  view.cases = data.cases;
  drawChips(data.counts, p.status);
  drawRows(data);
  drawPager(data);
  const again = view.cases.findIndex((c) => c.case_id === kept);
  selectRow(again >= 0 ? again : view.cases.length ? 0 : -1);
}

// The outputs grow while a run goes on: the queue on screen is asked for again every
// REFRESH_MS (not while a reason is being asked for), the selected case kept selected.
const REFRESH_MS = 30_000;
setInterval(() => {
  const asking = document.getElementById("reason-dialog").open;
  if (view && document.contains(view.panel) && !document.hidden && !asking) refresh().catch(() => {});
}, REFRESH_MS);

function drawChips(counts, active) {
  const all = Object.values(counts).reduce((a, b) => a + b, 0);
  clear(view.chips);
  for (const status of ["", ...STATUSES]) {
    const n = status ? counts[status] : all;
    const chip = h(
      "button",
      {
        type: "button",
        class: `chip${status === active ? " active" : ""}`,
        dataset: { status: status || "all" },
      },
      status ? status.replace("_", " ") : "all",
      h("span", { class: "n" }, number(n)),
    );
    chip.addEventListener("click", () => change("status", status));
    view.chips.append(chip);
  }
}

function drawRows(data) {
  clear(view.body);
  if (!data.cases.length) {
    view.body.append(h("tr", {}, h("td", { colspan: 10, class: "muted" }, "No case matches.")));
  }
  data.cases.forEach((c, i) => {
    const row = h(
      "tr",
      { class: "case-row", dataset: { caseId: c.case_id } },
      h("td", {}, badge("sev", c.severity)),
      h("td", {}, badge("st", c.status)),
      h("td", {}, caseLink(c)),
      h("td", {}, c.detectors.join(", ")),
      h("td", {}, c.articles.join(", ")),
      h("td", {}, c.modes.join(", ") || "—"),
      h("td", { class: "num" }, number(c.size)),
      h("td", { class: "num" }, number(c.pending)),
      h("td", {}, when(c.last_ts)),
      h("td", { class: "explain" }, c.explanation),
    );
    row.addEventListener("click", () => selectRow(i));
    row.addEventListener("dblclick", () => open());
    view.body.append(row);
  });
}

function drawPager(data) {
  const p = current();
  const page = Number(p.page || 1);
  const prev = h("button", { type: "button", id: "prev-page", disabled: page <= 1 }, "← Previous");
  const next = h("button", { type: "button", id: "next-page", disabled: page >= data.pages }, "Next →");
  prev.addEventListener("click", () => turn(-1));
  next.addEventListener("click", () => turn(1));
  clear(view.pager).append(
    prev,
    h(
      "span",
      { id: "page-info" },
      `Page ${data.pages ? page : 0} of ${data.pages} · ${number(data.total)} case${data.total === 1 ? "" : "s"}`,
    ),
    next,
  );
  view.pages = data.pages;
}

function turn(by) {
  const page = Number(current().page || 1) + by;
  if (page >= 1 && page <= (view.pages || 1)) change("page", String(page));
}

function selectRow(i) {
  const rows = view.body.querySelectorAll("tr.case-row");
  rows.forEach((r, j) => r.classList.toggle("selected", j === i));
  view.selected = i;
  if (rows[i]) rows[i].scrollIntoView({ block: "nearest" });
}

function open() {
  const c = view.cases[view.selected];
  if (!c) return;
  lastOpened = c.case_id;
  location.hash = `#/case/${enc(c.case_id)}`;
}

async function decideSelected(decision) {
  const c = view.cases[view.selected];
  if (!c || !decides()) return;
  const label = decision === "approve" ? "Approve" : "Reject";
  const answer = await decide(
    null,
    {
      title: `${label} the case as one`,
      detail: `${c.subject_type}:${c.subject_id} (${c.pending} action(s) await a decision). ${c.explanation}`,
      confirm: label,
    },
    ({ reason }) => post(`/api/cases/${enc(c.case_id)}/decision`, { decision, reason, exclude: [] }),
    (body) =>
      `Case ${decision === "approve" ? "approved" : "rejected"}: ${body.applied.length} step(s), ${issuedText(body)}`,
  );
  if (answer) {
    lastOpened = c.case_id;
    await refresh();
  }
}

/** A key pressed on the queue: true if it was the queue's. */
export function queueKey(event) {
  if (!view) return false;
  const moves = { j: 1, ArrowDown: 1, k: -1, ArrowUp: -1 };
  if (event.key in moves) {
    const i = Math.min(Math.max(view.selected + moves[event.key], 0), view.cases.length - 1);
    selectRow(i);
    return true;
  }
  if (event.key === "Enter") {
    open();
    return true;
  }
  if (event.key === "/") {
    view.search.focus();
    view.search.select();
    return true;
  }
  if (event.key === "ArrowRight") {
    turn(1);
    return true;
  }
  if (event.key === "ArrowLeft") {
    turn(-1);
    return true;
  }
  if (event.key === "a") {
    decideSelected("approve");
    return true;
  }
  if (event.key === "r") {
    decideSelected("reject");
    return true;
  }
  return false;
}
