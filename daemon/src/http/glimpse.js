// The box's pages' only script: search by picture. The chosen file goes up as the body of
// POST /pictures (same origin, so the session cookie passes), and the page moves to the search
// the answer names, /?picture=ID, a URL like any other search's.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const input = document.querySelector("input.picture");
  if (!input) return;
  input.addEventListener("change", async () => {
    const file = input.files[0];
    if (!file) return;
    const problem = document.querySelector("p.upload");
    try {
      const answer = await fetch("/pictures", { method: "POST", body: file, headers: { "Content-Type": file.type } });
      const body = await answer.json();
      if (!answer.ok) throw new Error(body.error || answer.statusText);
      window.location.assign(body.search);
    } catch (e) {
      problem.textContent = "The picture could not be sent: " + e.message;
      problem.hidden = false;
    }
  });
});
