// The login page: the form works without a script (POST /login answers with a redirect);
// with it, a wrong password is said on the page, and the console opens where it was asked
// for (the page the login stood in for keeps its #fragment).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("login");
  const error = document.getElementById("login-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = new FormData(form);
    const token = String(fields.get("token") || "");
    const body = token
      ? { token }
      : { name: String(fields.get("name") || ""), password: String(fields.get("password") || "") };
    const button = form.querySelector("button");
    button.disabled = true;
    error.textContent = "";
    try {
      const answer = await fetch("/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        credentials: "same-origin",
      });
      if (answer.ok) {
        location.replace("/" + location.hash);
        return;
      }
      const said = await answer.json().catch(() => ({}));
      const why = said.error || `the console answered ${answer.status}`;
      error.textContent = why.charAt(0).toUpperCase() + why.slice(1) + ".";
    } catch (failure) {
      error.textContent = `The console cannot be reached: ${failure}`;
    } finally {
      button.disabled = false;
    }
  });
});
