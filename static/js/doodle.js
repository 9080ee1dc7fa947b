// The doodle page: the guesses update while you draw. Requests are debounced (one at most every
// DEBOUNCE_MS, the newest drawing winning) and answers to older drawings are dropped.
// Every text from the server is set with textContent, never parsed as HTML.
(() => {
  "use strict";
  const TOP = 3;
  const DEBOUNCE_MS = 250;
  // The snapshot sent to the server: the model crops and rescales the strokes itself, so a small
  // PNG is enough, and it stays quick to send from a phone on every pause.
  const SNAPSHOT_PX = 280;
  const $ = (id) => document.getElementById(id);
  const root = $("doodle");
  const model = root.dataset.model;
  const canvas = $("doodle-pad");
  const hint = $("doodle-hint");
  const message = $("doodle-message");
  const best = $("doodle-best");
  const list = $("doodle-top");
  const live = $("doodle-live");
  let timer = null;
  let inFlight = false;
  let again = false; // the drawing changed while a request was on its way
  let sequence = 0; // bumped on Clear, so late answers to a cleared drawing are ignored
  let drawing = false;

  const pad = DrawPad.create(canvas, {
    lineWidth: 12,
    reference: 280,
    onchange: () => {
      hint.hidden = !pad.isEmpty();
      if (pad.isEmpty()) reset();
      else schedule();
    },
  });

  const say = (text, kind) => Ui.say(message, text, kind);

  function reset() {
    sequence += 1;
    clearTimeout(timer);
    timer = null;
    again = false;
    best.className = "best muted";
    best.textContent = "Nothing yet.";
    live.hidden = true;
    list.replaceChildren();
    say("");
  }

  function schedule() {
    // A timer already waiting will send the newest drawing anyway.
    if (timer === null) timer = setTimeout(fire, DEBOUNCE_MS);
  }

  function fire() {
    timer = null;
    if (pad.isEmpty() && !drawing) return;
    if (inFlight) {
      again = true;
      return;
    }
    predict();
  }

  function snapshot() {
    // Copies what is on screen, the stroke being drawn included, keeping the transparency.
    const out = document.createElement("canvas");
    out.width = SNAPSHOT_PX;
    out.height = Math.max(1, Math.round((SNAPSHOT_PX * canvas.height) / Math.max(canvas.width, 1)));
    out.getContext("2d").drawImage(canvas, 0, 0, out.width, out.height);
    return out.toDataURL("image/png");
  }

  async function predict() {
    const mine = sequence;
    inFlight = true;
    try {
      const url = "/api/classifier/" + encodeURIComponent(model);
      const result = await Api.postJSON(url, { base64_drawing: snapshot(), top: TOP });
      if (mine === sequence) {
        render(result);
        say("");
      }
    } catch (err) {
      if (mine !== sequence) return;
      if (err.code === "nothing_drawn") say("");
      else say(err.message);
    } finally {
      inFlight = false;
      if (again) {
        again = false;
        schedule();
      }
    }
  }

  function render(result) {
    best.className = "best";
    best.textContent = result.label + " (" + Ui.percent(result.confidence) + ")";
    live.textContent = result.label + " " + Ui.percent(result.confidence);
    live.hidden = false;
    Ui.bars(list, result.top.map((row) => ({ label: row.label, share: row.confidence })));
  }

  // While a stroke is being drawn, guess too, not only when the pen is lifted.
  canvas.addEventListener("pointerdown", () => {
    drawing = true;
  });
  canvas.addEventListener("pointermove", () => {
    if (drawing) schedule();
  });
  for (const type of ["pointerup", "pointercancel"]) {
    canvas.addEventListener(type, () => {
      drawing = false;
    });
  }

  $("doodle-clear").addEventListener("click", () => pad.clear());
  $("doodle-undo").addEventListener("click", () => pad.undo());
  document.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement) return;
    if (event.key === "Escape") {
      pad.clear();
    } else if (event.key === "z" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      pad.undo();
    }
  });
})();
