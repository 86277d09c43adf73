// The console's single page: the session first (who, which role, the CSRF token), then
// the page the address names (#/cases?…, #/case/ID, #/account/ID, #/overview), drawn
// again whenever it changes, and the keyboard shortcuts of the page on screen.

import { showAccount } from "./account.js";
import { decides, loadSession, me, post, toLogin } from "./api.js";
import { caseKey, showCase } from "./case.js";
import { destroyCharts } from "./charts.js";
import { showOverview } from "./overview.js";
import { queueKey, showQueue } from "./queue.js";
import { clear, h, toast } from "./ui.js";

const root = document.getElementById("page");
let page = "";
let lastQueue = "#/cases";
let drawing = 0;

function parse() {
  const hash = location.hash.replace(/^#/, "") || "/cases";
  const [path, query = ""] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(query) };
}

async function route() {
  const { parts, params } = parse();
  const name = parts[0] || "cases";
  const turn = ++drawing;
  destroyCharts(); // the page drawn next draws its own
  page = name;
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === (name === "case" ? "cases" : name));
  }
  try {
    if (name === "cases") {
      lastQueue = location.hash || "#/cases";
      await showQueue(root, params);
    } else if (name === "case" && parts[1]) {
      await showCase(root, parts[1], lastQueue);
    } else if (name === "account") {
      await showAccount(root, parts[1] || "");
    } else if (name === "overview") {
      await showOverview(root);
    } else {
      location.hash = "#/cases";
      return;
    }
    if (turn === drawing) document.title = `Lockstep console: ${name}`;
  } catch (failure) {
    if (failure.status === 401) return;
    clear(root).append(
      h(
        "section",
        { class: "panel" },
        h("h1", {}, "Not shown"),
        h("p", { class: "bad", id: "page-error" }, failure.message || String(failure)),
      ),
    );
  }
}

function typing(target) {
  return (
    target instanceof HTMLElement &&
    (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))
  );
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (document.getElementById("reason-dialog").open) return;
  if (typing(event.target)) {
    if (event.key === "Escape") event.target.blur();
    return;
  }
  let used = false;
  if (page === "cases") used = queueKey(event);
  else if (page === "case") used = caseKey(event, root);
  if (!used && event.key === "/") {
    location.hash = lastQueue;
    setTimeout(() => document.getElementById("search")?.focus(), 300);
    used = true;
  }
  if (used) event.preventDefault();
});

document.getElementById("lookup").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = document.getElementById("lookup-id").value.trim();
  if (id) location.hash = `#/account/${encodeURIComponent(id)}`;
});

document.getElementById("logout").addEventListener("click", async () => {
  await post("/logout", {});
  toLogin();
});

async function start() {
  try {
    await loadSession();
  } catch (failure) {
    if (failure.status !== 401) toast(`No session: ${failure.message}`, true);
    return;
  }
  document.getElementById("who").textContent = `${me.name} (${me.role}${decides() ? "" : ": read only"})`;
  window.addEventListener("hashchange", route);
  await route();
}

start();
