// Actions and appeals as the case view and the account page list them, with the decisions
// a reviewer makes on one: approve or reject a held action, reverse a measure, file an
// appeal, uphold or overturn one. Each asks for a reason; each is sent once.

import { decides, enc, post } from "./api.js";
import { accountLink, badge, boundedTable, decide, h, issuedText, short, when } from "./ui.js";

const NOT_MEASURES = new Set(["revert", "human_review"]);

function reversible(a) {
  return !NOT_MEASURES.has(a.action) && (a.state === "enforced" || a.state === "approved");
}

function expiry(a) {
  if (a.expires_at === null) return "never";
  return a.expired ? h("span", { class: "muted" }, `expired ${when(a.expires_at)}`) : when(a.expires_at);
}

function buttons(a, after) {
  if (!decides()) return [];
  const what = `${a.action} (${a.mode}) on ${a.subject_type}:${a.subject_id}, ${a.action_id}`;
  const out = [];
  const button = (op, label, ask, send, describe) => {
    const b = h("button", { type: "button", class: `small ${op}`, dataset: { op } }, label);
    b.addEventListener("click", async () => {
      const answer = await decide(b, ask, send, describe);
      if (answer) after(answer);
    });
    out.push(b);
  };
  if (a.pending) {
    for (const [op, label, done] of [
      ["approve", "Approve", "Approved"],
      ["reject", "Reject", "Rejected"],
    ]) {
      button(
        op,
        label,
        { title: `${label} this action`, detail: what, confirm: label },
        ({ reason }) => post(`/api/actions/${enc(a.action_id)}/decision`, { decision: op, reason }),
        (body) => `${done} ${a.action}: ${issuedText(body)}`,
      );
    }
  }
  if (reversible(a)) {
    button(
      "reverse",
      "Reverse",
      {
        title: "Reverse this action",
        confirm: "Reverse",
        detail: `${what}. A revert goes to every sink (actions file, webhooks, audit trail).`,
      },
      ({ reason }) => post(`/api/actions/${enc(a.action_id)}/reverse`, { reason }),
      (body) => `Reversed ${a.action}: ${issuedText(body)}`,
    );
    if (!a.appeals.length) {
      button(
        "appeal",
        "Appeal",
        {
          title: "File an appeal (Article 20)",
          detail: what,
          confirm: "File the appeal",
          appellant: a.subject_type === "account" ? a.subject_id : "",
        },
        ({ reason, appellant }) => post("/api/appeals", { action_id: a.action_id, appellant, reason }),
        (body) =>
          body.repeated ? "That appeal was filed already" : `Appeal filed: ${body.appeal.appeal_id}`,
      );
    }
  }
  return out;
}

/** The actions, with where each stands and what a reviewer can do with it. */
export function actionsTable(actions, after, { id, state, total, step = 100 } = {}) {
  const columns = ["Action", "Mode", "Subject", "State", "In force", "Expires", "Rule", "Decided", ""];
  const table = boundedTable({
    id,
    state,
    rows: actions,
    columns,
    step,
    placeholder: "Filter by account, action or state",
    key: (a) => `${a.action_id} ${a.action} ${a.subject_id} ${a.state} ${a.mode} ${a.rule}`,
    empty: "No actions.",
    row: (a) =>
      h(
        "tr",
        { dataset: { actionId: a.action_id, subject: a.subject_id } },
        h(
          "td",
          {},
          h("strong", {}, a.action),
          " ",
          short(a.action_id),
          a.reverts ? h("div", { class: "muted" }, "lifts ", short(a.reverts)) : null,
          a.approves ? h("div", { class: "muted" }, "approved copy of ", short(a.approves)) : null,
        ),
        h("td", {}, a.mode),
        h(
          "td",
          {},
          a.subject_type === "account" ? accountLink(a.subject_id) : `${a.subject_type}:${a.subject_id}`,
        ),
        h(
          "td",
          { class: "state" },
          badge("st", a.state),
          a.appeals.length ? h("div", { class: "muted" }, `${a.appeals.length} appeal(s)`) : null,
        ),
        h("td", {}, a.in_force ? h("span", { class: "yes" }, "yes") : h("span", { class: "no" }, "no")),
        h("td", {}, expiry(a)),
        h("td", { class: "muted" }, a.rule || "—"),
        h("td", { class: "muted" }, decidedBy(a)),
        h("td", { class: "ops" }, buttons(a, after)),
      ),
  });
  if (total && total > actions.length) {
    table.append(h("p", { class: "muted" }, `The first ${actions.length} of ${total} actions are listed.`));
  }
  return table;
}

function decidedBy(a) {
  const d = a.reversal || a.decision;
  if (!d) return "—";
  return `${d.decision} by ${d.reviewer}, ${when(d.ts)}${d.note ? `: ${d.note}` : ""}`;
}

/** The appeals against a case's actions; an open one can be upheld or overturned. */
export function appealsTable(appeals, after) {
  if (!appeals.length) return h("p", { class: "muted" }, "No appeals.");
  return h(
    "table",
    { id: "appeals" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Appeal", "Against", "Appellant", "Reason", "Filed", "State", ""].map((c) => h("th", {}, c)),
      ),
    ),
    h(
      "tbody",
      {},
      appeals.map((ap) =>
        h(
          "tr",
          { dataset: { appealId: ap.appeal_id, actionId: ap.action_id } },
          h("td", {}, short(ap.appeal_id)),
          h("td", {}, short(ap.action_id)),
          h("td", {}, ap.appellant || "—"),
          h("td", {}, ap.reason),
          h("td", {}, when(ap.ts)),
          h(
            "td",
            { class: "state" },
            badge("st", ap.state),
            ap.decision
              ? h("div", { class: "muted" }, `by ${ap.decision.reviewer}: ${ap.decision.note}`)
              : null,
          ),
          h("td", { class: "ops" }, ap.state === "open" && decides() ? appealButtons(ap, after) : null),
        ),
      ),
    ),
  );
}

function appealButtons(ap, after) {
  return [
    ["uphold", "Uphold"],
    ["overturn", "Overturn"],
  ].map(([op, label]) => {
    const b = h("button", { type: "button", class: `small ${op}`, dataset: { op } }, label);
    b.addEventListener("click", async () => {
      const detail =
        op === "uphold"
          ? `The measure ${ap.action_id} stands.`
          : `The appeal is granted: ${ap.action_id} is reversed (a revert to every sink).`;
      const answer = await decide(
        b,
        { title: `${label} the appeal`, detail, confirm: label },
        ({ reason }) => post(`/api/appeals/${enc(ap.appeal_id)}/decision`, { decision: op, reason }),
        (body) => `Appeal ${op === "uphold" ? "upheld" : "overturned"}: ${issuedText(body)}`,
      );
      if (answer) after(answer);
    });
    return b;
  });
}
