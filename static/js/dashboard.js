// The dashboard: refresh the tracking routes' counts and latency every 2 seconds.
(() => {
  "use strict";
  const EVERY_MS = 2000;
  const $ = (id) => document.getElementById(id);
  const rows = $("dash-rows");
  const total = $("dash-total");
  const updated = $("dash-updated");
  const message = $("dash-message");
  const pause = $("dash-pause");
  let paused = false;
  let timer = 0;

  const say = (text) => Ui.say(message, text);

  function show(stats) {
    stats.routes.forEach((route) => {
      const row = rows.querySelector('tr[data-path="' + CSS.escape(route.path) + '"]');
      if (!row) return;
      ["count", "mean_ms", "p95_ms"].forEach((field) => {
        const value = route[field];
        row.querySelector('[data-field="' + field + '"]').textContent = value === null ? "–" : String(value);
      });
    });
    total.textContent = String(stats.total);
    updated.textContent = "Updated at " + new Date().toLocaleTimeString() + ".";
  }

  async function refresh() {
    if (paused || document.hidden) return;
    try {
      show(await Api.getJSON("/api/track/stats"));
      say("");
    } catch (err) {
      // A network failure keeps its wording here: the browser's words after this page's prefix.
      say("Cannot refresh the figures: " + (err.cause || err).message);
    }
  }

  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume updates" : "Pause updates";
    if (!paused) refresh();
  });
  timer = setInterval(refresh, EVERY_MS);
  window.addEventListener("pagehide", () => clearInterval(timer));
})();
