// Conveyor dashboard: ask before every action, and refresh the live part of
// the page in place every few seconds. No libraries, no network but ours.
"use strict";

document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

(() => {
  const seconds = Number(document.body.dataset.refresh || 0);
  const live = document.getElementById("live");
  const state = document.getElementById("live-state");
  if (!seconds || !live) {
    if (state) state.hidden = true;
    return;
  }

  async function refresh() {
    // Leave the page alone while someone is typing in it or it is hidden.
    if (document.hidden || live.contains(document.activeElement)) return;
    try {
      const response = await fetch(window.location.href, {
        headers: { "X-Requested-With": "conveyor-refresh" },
        credentials: "same-origin",
      });
      if (!response.ok) throw new Error(response.status);
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById("live");
      if (fresh) live.replaceChildren(...fresh.childNodes);
      state.textContent = "live";
      state.classList.remove("stale");
      state.title = "Updated " + new Date().toLocaleTimeString();
    } catch (error) {
      state.textContent = "offline";
      state.classList.add("stale");
    }
  }

  window.setInterval(refresh, seconds * 1000);
})();
