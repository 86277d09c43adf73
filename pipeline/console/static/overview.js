// The run at a glance: findings and actions over time by detector, article and mode; the
// review backlog and the time decisions took; shadow against enforced; the policy's rules.

import { get } from "./api.js";
import { countsChart } from "./charts.js";
import { clear, duration, h, number, when } from "./ui.js";

function tile(key, value, id) {
  return h("div", { class: "tile", id }, h("div", { class: "v" }, value), h("div", { class: "k" }, key));
}

function chartPanel(title, id) {
  return h(
    "section",
    { class: "panel" },
    h("h2", {}, title),
    h("div", { class: "chart-box short" }, h("canvas", { id, role: "img", "aria-label": title })),
  );
}

export async function showOverview(root) {
  const o = await get("/api/overview");
  const modes = o.policy.actions_by_mode;
  const oldest = o.backlog.oldest_ts;
  const hours = o.bucket_ms / 3_600_000;
  const bucket =
    hours === 1 ? "hour" : Number.isInteger(hours) ? `${hours} hours` : duration(o.bucket_ms / 1000);
  clear(root).append(
    h(
      "section",
      { class: "panel", id: "overview-head" },
      h("h1", {}, "Overview"),
      h(
        "div",
        { class: "grid tiles" },
        tile("cases", number(o.cases), "tile-cases"),
        tile("findings", number(o.findings_total), "tile-findings"),
        tile("actions", number(o.actions_total), "tile-actions"),
        tile("actions awaiting a person", number(o.backlog.pending_actions), "tile-backlog"),
        tile("cases needing review", number(o.backlog.cases), "tile-review-cases"),
        tile(`oldest waiting since${oldest ? "" : " (none)"}`, oldest ? when(oldest) : "—", "tile-oldest"),
        tile(
          `time to decision, median (${o.time_to_decision.decisions} decisions)`,
          duration(o.time_to_decision.p50_s),
          "tile-p50",
        ),
        tile("time to decision, 90th percentile", duration(o.time_to_decision.p90_s), "tile-p90"),
        tile("enforced actions", number(modes.enforce), "tile-enforce"),
        tile("shadow actions (recorded only)", number(modes.shadow), "tile-shadow"),
        tile("review-mode actions", number(modes.review), "tile-review"),
      ),
    ),
    h(
      "section",
      { class: "panel", id: "statuses" },
      h("h2", {}, "Cases per status"),
      h(
        "div",
        { class: "chips" },
        Object.entries(o.statuses).map(([s, n]) =>
          h(
            "a",
            { class: "chip", href: `#/cases?status=${s}`, dataset: { status: s } },
            s.replace("_", " "),
            h("span", { class: "n" }, number(n)),
          ),
        ),
      ),
    ),
    h(
      "div",
      { class: "grid two" },
      chartPanel(`Findings per ${bucket}, by detector`, "findings-by-detector"),
      chartPanel(`Findings per ${bucket}, by article`, "findings-by-article"),
      chartPanel(`Actions per ${bucket}, by mode (shadow against enforced)`, "actions-by-mode"),
      chartPanel(`Actions per ${bucket}, by measure`, "actions-by-action"),
    ),
    h(
      "section",
      { class: "panel", id: "rules" },
      h("h2", {}, `The policy's rules (cooldown ${duration(o.policy.cooldown_s)})`),
      h(
        "table",
        {},
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Rule", "Mode", "Enforced", "Shadow", "Review"].map((c) => h("th", {}, c)),
          ),
        ),
        h(
          "tbody",
          {},
          o.policy.rules.map((r) =>
            h(
              "tr",
              {},
              h("td", {}, r.rule),
              h("td", {}, r.mode),
              ...["enforce", "shadow", "review"].map((m) => h("td", { class: "num" }, number(r.actions[m]))),
            ),
          ),
        ),
      ),
    ),
  );
  countsChart(document.getElementById("findings-by-detector"), o.findings.by_detector, o.bucket_ms);
  countsChart(document.getElementById("findings-by-article"), o.findings.by_article, o.bucket_ms);
  countsChart(document.getElementById("actions-by-mode"), o.actions.by_mode, o.bucket_ms);
  countsChart(document.getElementById("actions-by-action"), o.actions.by_action, o.bucket_ms);
}
