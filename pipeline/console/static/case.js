// One case, with what a reviewer needs to decide it: the one-line explanation and the
// numbers behind it, the subject's activity over time against its expected level with
// the flagged windows, for a group the lockstep itself, the members (with their accounts'
// age, network and device, and what several of them share), the actions in force
// with mode and expiry, the appeals, the case's audit records with the chain's last
// verification, and related cases. A group case is decided as one, members excluded one
// by one. Keys: a approve the case, r reject it, u (or Escape) back to the queue.

import { actionsTable, appealsTable } from "./actions.js";
import { decides, enc, get, post } from "./api.js";
import { activityChart, destroyCharts, lockstepChart, memberItemsChart } from "./charts.js";
import {
  accountLink,
  badge,
  boundedTable,
  caseLink,
  clear,
  decide,
  duration,
  h,
  issuedText,
  number,
  short,
  when,
} from "./ui.js";

let shown = null; // {caseId, view, state}: the case on screen and its filters and exclusions

function freshState() {
  return {
    members: { filter: "", shown: 25 },
    actions: { filter: "", shown: 25 },
    audit: { filter: "", shown: 25 },
    excluded: new Set(),
  };
}

/** The case `caseId`, drawn into `root`; `back` is the queue it was opened from. */
export async function showCase(root, caseId, back) {
  const view = await get(`/api/cases/${enc(caseId)}`);
  if (!shown || shown.caseId !== caseId) shown = { caseId, state: freshState() };
  shown.view = view;
  shown.back = back || "#/cases";
  draw(root);
}

async function reload(root) {
  shown.view = await get(`/api/cases/${enc(shown.caseId)}`);
  draw(root);
}

/** What the members share, in words: the evidence's own entries as they are, and those
 * the console worked out from what is known of each member (networks and devices several
 * came from, with how many; when they were created). */
function sharedEntries(shared) {
  return Object.entries(shared).map(([k, v]) => {
    if (k === "member_networks" || k === "member_devices")
      return [k, Object.entries(v).map(([what, n]) => `${what} (${n})`).join(", ")];
    if (k === "member_created")
      return [
        k,
        `${v.members} accounts created between ${when(v.first)} and ${when(v.last)} (within ${duration(v.span_s)})`,
      ];
    return [k, v];
  });
}

function dl(entries) {
  return h(
    "dl",
    { class: "numbers" },
    entries.flatMap(([k, v]) => [
      h("dt", {}, k.replaceAll("_", " ")),
      h("dd", {}, typeof v === "object" ? JSON.stringify(v) : number(v)),
    ]),
  );
}

function draw(root) {
  const { view, state } = shown;
  const c = view.case;
  const after = () => reload(root);
  const head = h(
    "section",
    { class: "panel", id: "case-head" },
    h("p", {}, h("a", { href: shown.back, id: "back" }, "← Cases")),
    h(
      "div",
      { class: "case-head" },
      h("h1", {}, `${c.subject_type}:${c.subject_id}`),
      badge("sev", c.severity),
      badge("st", c.status),
      h(
        "span",
        { class: "muted" },
        `score ${c.score} · ${c.detectors.join(", ")} · Article ${c.articles.join(", ")} · mode ${c.modes.join(", ") || "—"}`,
      ),
    ),
    h("p", { class: "explanation", id: "explanation" }, view.explanation || "(no explanation)"),
    h(
      "p",
      { class: "muted" },
      `${view.findings_total} finding(s) from ${when(c.first_ts)} to ${when(c.last_ts)}; windows ${when(c.window_start)} – ${when(c.window_end)}; `,
      `${number(view.members_total)} member(s), ${number(view.actions_total)} action(s), ${number(c.pending)} awaiting a decision. Case `,
      short(c.case_id),
    ),
    h(
      "div",
      { class: "grid two" },
      h("div", {}, h("h3", {}, "The numbers behind it"), dl(Object.entries(view.numbers))),
      h(
        "div",
        {},
        h("h3", {}, "What the members share"),
        Object.keys(view.shared).length
          ? dl(sharedEntries(view.shared))
          : h("p", { class: "muted" }, "Nothing recorded."),
      ),
    ),
  );
  const panels = [
    head,
    decidePanel(root),
    charts(view),
    membersPanel(view, state),
    h(
      "section",
      { class: "panel", id: "actions-panel" },
      h("h2", {}, "Actions"),
      actionsTable(view.actions, after, {
        id: "actions",
        state: state.actions,
        total: view.actions_total,
        step: 25,
      }),
    ),
    h(
      "section",
      { class: "panel", id: "appeals-panel" },
      h("h2", {}, "Appeals"),
      appealsTable(view.appeals, after),
    ),
    findingsPanel(view),
    auditPanel(view, state),
    relatedPanel(view),
  ];
  destroyCharts();
  clear(root).append(...panels.filter(Boolean));
  drawCharts(view);
}

function decidePanel(root) {
  const { view, state } = shown;
  const c = view.case;
  if (!decides())
    return h(
      "section",
      { class: "panel" },
      h("p", { class: "muted" }, "You are logged in as a viewer: you read, reviewers decide."),
    );
  const group = c.subject_type === "group";
  const count = h(
    "span",
    { id: "excluded-count", class: "muted" },
    group ? `${state.excluded.size} member(s) excluded from an approval (tick them below)` : "",
  );
  const approve = h(
    "button",
    { type: "button", class: "approve", id: "approve-case", dataset: { op: "approve-case" } },
    "Approve the case",
  );
  const reject = h(
    "button",
    { type: "button", class: "reject", id: "reject-case", dataset: { op: "reject-case" } },
    "Reject the case",
  );
  approve.addEventListener("click", () => decideCase(root, "approve", approve));
  reject.addEventListener("click", () => decideCase(root, "reject", reject));
  shown.count = count;
  return h(
    "section",
    { class: "panel", id: "decide-panel" },
    h("h2", {}, "Decide the case as one"),
    h(
      "p",
      { class: "muted" },
      "Approving approves every action awaiting a person; rejecting rejects those and reverses the case's measures, those whose term is over too. An excluded member's actions are rejected and its measures reversed.",
    ),
    h("div", { class: "decide-bar" }, approve, reject, count),
    h(
      "p",
      { class: "keys" },
      h("kbd", {}, "a"),
      " approve · ",
      h("kbd", {}, "r"),
      " reject · ",
      h("kbd", {}, "u"),
      " back to the queue",
    ),
  );
}

async function decideCase(root, decision, button) {
  const { view, state } = shown;
  const c = view.case;
  const exclude = decision === "approve" ? [...state.excluded].sort() : [];
  const label = decision === "approve" ? "Approve" : "Reject";
  const detail =
    `${c.subject_type}:${c.subject_id}: ${c.pending} action(s) await a decision.` +
    (exclude.length
      ? ` Excluded (their actions rejected, their measures reversed): ${exclude.join(", ")}.`
      : "") +
    (decision === "reject" && state.excluded.size ? " A rejection takes in every member." : "");
  const answer = await decide(
    button,
    { title: `${label} the case as one`, detail, confirm: label },
    ({ reason }) => post(`/api/cases/${enc(c.case_id)}/decision`, { decision, reason, exclude }),
    (body) =>
      `Case ${decision === "approve" ? "approved" : "rejected"}${body.excluded.length ? `, ${body.excluded.length} member(s) excluded` : ""}: ${body.applied.length} step(s), ${issuedText(body)}`,
  );
  if (answer) {
    if (answer.status === 200) state.excluded.clear();
    await reload(root);
  }
}

function charts(view) {
  const activity = h(
    "section",
    { class: "panel", id: "activity-panel" },
    h("h2", {}, "Activity over time"),
    view.series.t.length
      ? h(
          "div",
          { class: "chart-box" },
          h("canvas", {
            id: "activity-chart",
            "aria-label": "The subject's activity, its expected level and the flagged windows",
            role: "img",
          }),
        )
      : h("p", { class: "muted" }, "The findings record no count to chart."),
    h(
      "p",
      { class: "legend-note" },
      `The count each window was judged by (${view.series.source === "evidence" ? "the detector's own series" : "one point per finding"}), the level expected of this subject, and the windows flagged (shaded).`,
    ),
  );
  if (!view.picture) return h("div", { class: "grid" }, activity);
  const grid = view.picture.member_items ? itemsPanel(view.picture.member_items) : null;
  if (!view.picture.rounds) return h("div", { class: "grid two" }, activity, grid);
  const rounds = view.picture.rounds.length;
  const exact = view.picture.member_rounds && Object.keys(view.picture.member_rounds).length;
  const picture = h(
    "section",
    { class: "panel", id: "picture-panel" },
    h("h2", {}, "The lockstep: members by time"),
    h(
      "div",
      { class: "chart-box tall" },
      h("canvas", {
        id: "picture-chart",
        role: "img",
        "aria-label": "Members by time: the rounds each acted in",
      }),
    ),
    h(
      "p",
      { class: "legend-note" },
      exact
        ? `${rounds} round(s) on items of the same account: one row per member, a bar over each round it acted in and a dot at its first action there, for the ${exact} member(s) the finding places; any other in fewer rounds is one pale bar over the span.`
        : `${rounds} round(s) on items of the same account: one row per member, a bar over each round it acted in. Members in fewer rounds are one pale bar over the span (the finding records how many rounds, not which).`,
    ),
  );
  return h("div", { class: "grid two" }, activity, picture, grid);
}

/** A group's members by item (`evidence.member_items`): a dot where a member acted on an
 * item, coloured by when. */
function itemsPanel(grid) {
  const cut =
    grid.members_total > grid.members.length || grid.items_total > grid.items.length
      ? ` (the first ${grid.members.length} of ${grid.members_total} members, ${grid.items.length} of ${grid.items_total} items)`
      : "";
  return h(
    "section",
    { class: "panel", id: "items-panel" },
    h("h2", {}, "The lockstep: members by item"),
    h(
      "div",
      { class: "chart-box tall" },
      h("canvas", {
        id: "items-chart",
        role: "img",
        "aria-label": "Members by item: which member acted on which item",
      }),
    ),
    h(
      "p",
      { class: "legend-note" },
      `One row per member, one column per item${cut}, in the order they were first acted on: a dot where the member acted on the item, coloured from its earliest action (blue) to its latest (red). A full grid is the lockstep.`,
    ),
  );
}

function drawCharts(view) {
  const activity = document.getElementById("activity-chart");
  if (activity) activityChart(activity, view.series);
  const picture = document.getElementById("picture-chart");
  if (picture) {
    const finding = view.findings.find((f) => f.finding_id === view.picture.finding_id);
    lockstepChart(picture, view.picture, finding);
  }
  const items = document.getElementById("items-chart");
  if (items) memberItemsChart(items, view.picture.member_items);
}

function membersPanel(view, state) {
  if (!view.members_total) return null;
  const group = view.case.subject_type === "group" && decides();
  const columns = [
    group ? "Exclude" : "",
    "Account",
    "Account age#",
    "Network",
    "Device",
    "Bot score#",
    "Other cases#",
    "Actions#",
    "In force#",
    "Pending#",
  ];
  const table = boundedTable({
    id: "members",
    state: state.members,
    rows: view.members,
    columns,
    step: 25,
    placeholder: "Filter members by id, network or device",
    key: (m) => [m.account_id, m.network || "", m.device || ""].join(" "),
    empty: "No members.",
    row: (m) => {
      const box = group
        ? h("input", {
            type: "checkbox",
            class: "exclude",
            checked: state.excluded.has(m.account_id),
            "aria-label": `Exclude ${m.account_id}`,
          })
        : null;
      if (box) {
        box.addEventListener("change", () => {
          if (box.checked) state.excluded.add(m.account_id);
          else state.excluded.delete(m.account_id);
          if (shown.count)
            shown.count.textContent = `${state.excluded.size} member(s) excluded from an approval (tick them below)`;
        });
      }
      return h(
        "tr",
        { dataset: { member: m.account_id } },
        h("td", {}, box),
        h("td", {}, accountLink(m.account_id)),
        h(
          "td",
          { class: "num", title: m.created_at === null ? null : `created ${when(m.created_at)}` },
          m.age_s === null ? "—" : duration(m.age_s),
        ),
        h("td", { class: "mono" }, m.network || "—"),
        h("td", { class: "mono" }, m.device || "—"),
        h("td", { class: "num" }, m.bot_score === null ? "—" : m.bot_score.toFixed(2)),
        h("td", { class: "num" }, number(m.other_cases)),
        h("td", { class: "num" }, number(m.actions.length)),
        h("td", { class: "num" }, number(m.in_force)),
        h("td", { class: "num" }, number(m.pending)),
      );
    },
  });
  return h(
    "section",
    { class: "panel", id: "members-panel" },
    h("h2", {}, `Members (${number(view.members_total)})`),
    view.members_total > view.members.length
      ? h("p", { class: "muted" }, `The ${view.members.length} most bot-like are listed.`)
      : null,
    table,
  );
}

function findingsPanel(view) {
  return h(
    "section",
    { class: "panel", id: "findings-panel" },
    h("h2", {}, `Findings (${view.findings_total})`),
    h(
      "table",
      {},
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Finding", "Detector", "Article", "Severity", "Score", "Window", "Members#", "Explanation"].map(
            (c) => h("th", {}, c.replace("#", "")),
          ),
        ),
      ),
      h(
        "tbody",
        {},
        view.findings.map((f) =>
          h(
            "tr",
            {},
            h("td", {}, short(f.finding_id)),
            h("td", {}, f.detector),
            h("td", {}, f.article),
            h("td", {}, badge("sev", f.severity)),
            h("td", { class: "num" }, f.score),
            h("td", {}, `${when(f.window_start)} – ${when(f.window_end).slice(11)}`),
            h("td", { class: "num" }, number(f.members.length)),
            h("td", { class: "explain" }, f.evidence.explanation || ""),
          ),
        ),
      ),
    ),
  );
}

function auditPanel(view, state) {
  const chain = view.audit.chain;
  let status;
  if (chain.verified === true)
    status = h(
      "span",
      { class: "chain-ok", id: "chain-status" },
      `Chain intact: ${number(chain.records)} records verified at ${when(chain.checked_at)}`,
    );
  else if (chain.verified === false)
    status = h(
      "span",
      { class: "chain-bad", id: "chain-status" },
      `Chain BROKEN: ${chain.problem || chain.error}`,
    );
  else
    status = h(
      "span",
      { class: "muted", id: "chain-status" },
      chain.error ? `Not verified: ${chain.error}` : "Not verified yet (it is checked in the background).",
    );
  return h(
    "section",
    { class: "panel", id: "audit-panel" },
    h("h2", {}, "Audit trail"),
    h("p", {}, status),
    boundedTable({
      id: "audit",
      state: state.audit,
      rows: view.audit.records,
      step: 25,
      columns: ["Seq#", "Kind", "Record", "Time", "Hash"],
      placeholder: "Filter by kind or id",
      key: (r) => `${r.kind} ${r.record_id}`,
      empty: "No records.",
      row: (r) =>
        h(
          "tr",
          {},
          h("td", { class: "num" }, r.seq),
          h("td", {}, r.kind),
          h("td", {}, short(r.record_id)),
          h("td", {}, when(r.ts)),
          h("td", {}, h("code", { title: r.hash }, r.hash.slice(0, 16) + "…")),
        ),
    }),
  );
}

function relatedPanel(view) {
  return h(
    "section",
    { class: "panel", id: "related-panel" },
    h("h2", {}, "Related cases"),
    view.related.length
      ? h(
          "table",
          {},
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ["Case", "Status", "Severity", "Why", "Shared members"].map((c) => h("th", {}, c)),
            ),
          ),
          h(
            "tbody",
            {},
            view.related.map((r) =>
              h(
                "tr",
                {},
                h("td", {}, caseLink(r)),
                h("td", {}, badge("st", r.status)),
                h("td", {}, badge("sev", r.severity)),
                h("td", {}, r.why.join(", ")),
                h("td", { class: "num" }, number(r.shared_members)),
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, "None."),
  );
}

/** A key pressed on a case: true if it was the case view's. */
export function caseKey(event, root) {
  if (!shown) return false;
  if (event.key === "u" || event.key === "Escape") {
    location.hash = shown.back;
    return true;
  }
  if (event.key === "a" || event.key === "r") {
    const button = document.getElementById(event.key === "a" ? "approve-case" : "reject-case");
    if (button) decideCase(root, event.key === "a" ? "approve" : "reject", button);
    return true;
  }
  return false;
}
