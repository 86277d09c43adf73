// An account looked up: the cases where it is the subject or a member, its actions with
// those in force now, and what the throttling hook answers for it now, per action.

import { actionsTable } from "./actions.js";
import { enc, get } from "./api.js";
import { badge, caseLink, clear, duration, h, number, short, when } from "./ui.js";

let memo = { id: "", actions: { filter: "", shown: 25 } };

function casesTable(cases, id) {
  if (!cases.length) return h("p", { class: "muted" }, "None.");
  return h(
    "table",
    { id },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Case", "Status", "Severity", "Detectors", "Last finding", "Explanation"].map((c) => h("th", {}, c)),
      ),
    ),
    h(
      "tbody",
      {},
      cases.map((c) =>
        h(
          "tr",
          { dataset: { caseId: c.case_id } },
          h("td", {}, caseLink(c)),
          h("td", {}, badge("st", c.status)),
          h("td", {}, badge("sev", c.severity)),
          h("td", {}, c.detectors.join(", ")),
          h("td", {}, when(c.last_ts)),
          h("td", { class: "explain" }, c.explanation),
        ),
      ),
    ),
  );
}

function verdictTable(verdict) {
  return h(
    "table",
    { id: "verdict" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Action", "Verdict", "Why", "Retry after"].map((c) => h("th", {}, c)),
      ),
    ),
    h(
      "tbody",
      {},
      Object.entries(verdict).map(([kind, v]) =>
        h(
          "tr",
          { dataset: { kind } },
          h("td", {}, kind === "*" ? "any action" : kind),
          h(
            "td",
            {},
            v.limited ? h("span", { class: "bad" }, "limited (429)") : h("span", { class: "yes" }, "allowed"),
          ),
          h("td", {}, v.limited ? [v.reason, " ", short(v.action_id)] : "—"),
          h(
            "td",
            {},
            v.limited ? (v.retry_after_s === null ? "until lifted" : duration(v.retry_after_s)) : "—",
          ),
        ),
      ),
    ),
  );
}

function form(id) {
  const input = h("input", {
    type: "search",
    id: "account-id",
    value: id,
    placeholder: "An account id",
    "aria-label": "Account id",
  });
  const f = h(
    "form",
    { class: "filters", role: "search" },
    h("label", {}, "Account", input),
    h("button", { type: "submit" }, "Look up"),
  );
  f.addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value.trim()) location.hash = `#/account/${enc(input.value.trim())}`;
  });
  return [f, input];
}

/** The account page for `id` (a form alone without one). */
export async function showAccount(root, id) {
  const [lookup, input] = form(id);
  if (!id) {
    clear(root).append(h("section", { class: "panel" }, h("h1", {}, "Account lookup"), lookup));
    input.focus();
    return;
  }
  const view = await get(`/api/accounts/${enc(id)}`);
  if (memo.id !== id) memo = { id, actions: { filter: "", shown: 25 } };
  const after = () => showAccount(root, id);
  const limits = view.limits.length
    ? h(
        "ul",
        {},
        view.limits.map((l) =>
          h(
            "li",
            {},
            `${l.action === "*" ? "any action" : l.action}: ${l.measure}`,
            l.requests_per_unit ? ` (${l.requests_per_unit} per ${duration(l.unit_s)})` : "",
            `, until ${l.expires_at === null ? "lifted" : when(l.expires_at)} `,
            short(l.action_id),
          ),
        ),
      )
    : h("p", { class: "muted" }, "No limit in force.");
  clear(root).append(
    h(
      "section",
      { class: "panel", id: "account-head" },
      h("h1", {}, `Account ${view.account_id}`),
      lookup,
      h(
        "p",
        { class: "muted" },
        `Subject of ${view.cases_as_subject.length} case(s), member of ${number(view.member_of_total)}; ${number(view.actions_total)} action(s), ${view.in_force.length} in force now.`,
      ),
    ),
    h(
      "div",
      { class: "grid two" },
      h(
        "section",
        { class: "panel", id: "verdict-panel" },
        h("h2", {}, "The throttling hook's verdict now"),
        verdictTable(view.verdict),
      ),
      h("section", { class: "panel", id: "limits-panel" }, h("h2", {}, "Limits it holds"), limits),
    ),
    h(
      "section",
      { class: "panel", id: "in-force-panel" },
      h("h2", {}, "Actions in force"),
      actionsTable(view.in_force, after, { id: "in-force" }),
    ),
    h(
      "section",
      { class: "panel" },
      h("h2", {}, "Cases where it is the subject"),
      casesTable(view.cases_as_subject, "as-subject"),
    ),
    h(
      "section",
      { class: "panel" },
      h("h2", {}, "Cases where it is a member"),
      casesTable(view.cases_as_member, "as-member"),
    ),
    h(
      "section",
      { class: "panel" },
      h("h2", {}, "All its actions"),
      actionsTable(view.actions, after, {
        id: "account-actions",
        state: memo.actions,
        total: view.actions_total,
        step: 25,
      }),
    ),
  );
}
