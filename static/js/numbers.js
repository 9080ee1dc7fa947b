// The digit page: draw on the pad, send it to /api/predict, show the digit, its certainty
// and the alternatives; CPU and memory from /api/system_info every few seconds.
// Every text from the server is set with textContent, never parsed as HTML.
(() => {
  "use strict";
  const TOP = 3;
  const SYSTEM_EVERY_MS = 5000;
  const $ = (id) => document.getElementById(id);
  const send = $("numbers-send");
  const clearButton = $("numbers-clear");
  const undoButton = $("numbers-undo");
  const auto = $("numbers-auto");
  const hint = $("numbers-hint");
  const message = $("numbers-message");
  const digit = $("numbers-digit");
  const certainty = $("numbers-certainty");
  const bar = $("numbers-bar");
  const list = $("numbers-top");
  const inline = $("numbers-inline");
  let sequence = 0; // answers to older requests are dropped

  const pad = DrawPad.create($("numbers-pad"), {
    lineWidth: 18,
    reference: 280,
    // The model sees 28x28 pixels: a 140x140 PNG (5x) keeps every detail of the digit, and
    // decodes in a quarter of the time of the 280x280 canvas on a high-density screen.
    exportSize: 140,
    onchange: () => {
      hint.hidden = !pad.isEmpty();
      if (auto.checked && !pad.isEmpty()) predict();
    },
  });

  const say = (text, kind) => Ui.say(message, text, kind);

  function reset() {
    digit.textContent = "?";
    digit.className = "digit empty";
    certainty.textContent = "–";
    setBar(0, false);
    list.replaceChildren();
    inline.textContent = "";
  }

  function setBar(value, unsure) {
    bar.setAttribute("aria-valuenow", String(value));
    bar.classList.toggle("unsure", unsure);
    bar.firstElementChild.style.width = value + "%";
  }

  function render(result, unsure) {
    digit.textContent = String(result.prediction);
    digit.className = "digit" + (unsure ? " unsure" : "");
    // /api/predict keeps its original contract: certainty in percent.
    certainty.textContent = Ui.percent(result.certainty / 100, 2);
    setBar(result.certainty, unsure);
    inline.textContent = result.prediction + " · " + Ui.percent(result.certainty / 100, 2);
    inline.className = "inline-result" + (unsure ? " unsure" : "");
    const rows = (result.top || []).map((row) => ({ label: String(row.digit), share: row.certainty / 100 }));
    Ui.bars(list, rows, { digits: 2, markFirst: true });
  }

  async function predict() {
    if (pad.isEmpty()) {
      reset();
      return say("Nothing drawn: draw a digit first.", "warn");
    }
    const mine = ++sequence;
    send.disabled = true;
    say("Recognising…", "ok");
    try {
      const body = await Api.postJSON("/api/predict", { image: pad.toDataURL("image/png"), top: TOP });
      if (mine !== sequence) return;
      render(body, false);
      say("");
    } catch (err) {
      if (mine !== sequence) return;
      if (err.status === 0) {
        say("Cannot reach the server: " + err.cause.message, "error");
      } else if (err.status === 422 && err.code === "low_certainty") {
        // A 422 that still holds the best guess: show it, marked as unsure.
        render(err.body, true);
        say(err.message, "warn");
      } else {
        reset();
        say(err.message, err.code === "nothing_drawn" ? "warn" : "error");
      }
    } finally {
      if (mine === sequence) send.disabled = false;
    }
  }

  function clearAll() {
    sequence++;
    send.disabled = false;
    pad.clear();
    reset();
    say("");
  }

  send.addEventListener("click", predict);
  clearButton.addEventListener("click", clearAll);
  undoButton.addEventListener("click", () => pad.undo());
  pad.canvas.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      predict();
    } else if (event.key === "Escape" || event.key === "Delete" || event.key === "Backspace") {
      event.preventDefault();
      clearAll();
    }
  });
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "z" && !event.target.closest("input, textarea")) {
      event.preventDefault();
      pad.undo();
    }
  });

  // Server load: cheap JSON, refreshed while the page is visible.
  async function system() {
    if (document.hidden) return;
    try {
      const info = await Api.getJSON("/api/system_info");
      $("numbers-cpu").textContent = info.cpu;
      $("numbers-memory").textContent = info.memory;
      $("numbers-server-status").textContent = "";
    } catch (err) {
      $("numbers-server-status").textContent = "unavailable";
    }
  }
  system();
  setInterval(system, SYSTEM_EVERY_MS);
  document.addEventListener("visibilitychange", system);
  reset();
})();
