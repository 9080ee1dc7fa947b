// The OCR page: send an image (chosen, dropped or pasted) to /api/ocr, then show each line as
// character buttons and each character's box over the image. Server text goes through textContent.
(() => {
  "use strict";
  const LOW = 0.9; // characters under this confidence are marked
  const MAX_BYTES = 7.5 * 1024 * 1024; // larger files are re-encoded before upload
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const form = $("ocr-form");
  const fileInput = $("ocr-file");
  const submit = $("ocr-submit");
  const message = $("ocr-message");
  const stage = $("ocr-drop");
  const frame = $("ocr-frame");
  const img = $("ocr-image");
  const svg = $("ocr-boxes");
  const showBoxes = $("ocr-show-boxes");
  const linesBox = $("ocr-lines");
  const info = $("ocr-char-info");
  const fieldsBox = $("ocr-fields");
  let current = null; // the Blob being read
  let rects = [];
  let buttons = [];

  const say = (text, kind) => Ui.say(message, text, kind);

  async function shrink(blob) {
    if (blob.size <= MAX_BYTES || !window.createImageBitmap) return blob;
    const bitmap = await createImageBitmap(blob, { imageOrientation: "from-image" });
    const canvas = document.createElement("canvas");
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    canvas.getContext("2d").drawImage(bitmap, 0, 0);
    const out = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
    return out || blob;
  }

  function showImage(blob) {
    if (img.src) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(blob);
    frame.hidden = false;
    $("ocr-empty").hidden = true;
  }

  function clearResult() {
    svg.replaceChildren();
    linesBox.replaceChildren();
    fieldsBox.replaceChildren();
    info.textContent = "";
    rects = [];
    buttons = [];
  }

  function activate(index) {
    rects.forEach((r, i) => r.classList.toggle("active", i === index));
    buttons.forEach((b, i) => b.setAttribute("aria-pressed", String(i === index)));
    const b = buttons[index];
    if (b) info.textContent = b.dataset.info;
  }

  function drawBoxes(result) {
    svg.setAttribute("viewBox", "0 0 " + img.naturalWidth + " " + img.naturalHeight);
    svg.setAttribute("preserveAspectRatio", "none");
    rects = result.characters.map((c, i) => {
      const r = document.createElementNS(SVG, "rect");
      const [x, y, w, h] = c.box;
      r.setAttribute("x", x);
      r.setAttribute("y", y);
      r.setAttribute("width", w);
      r.setAttribute("height", h);
      if (c.confidence < LOW) r.classList.add("low");
      r.style.pointerEvents = "all";
      r.addEventListener("pointerdown", (e) => {
        e.preventDefault();
        activate(i);
        buttons[i].focus({ preventScroll: true });
      });
      return r;
    });
    svg.replaceChildren(...rects);
  }

  function renderLines(result) {
    if (!result.lines.length) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "No text found in this image.";
      linesBox.replaceChildren(p);
      return;
    }
    let index = 0;
    const blocks = result.lines.map((line, n) => {
      const block = document.createElement("div");
      block.className = "ocr-line";
      const meta = document.createElement("p");
      meta.className = "ocr-line-meta";
      meta.textContent =
        "Line " + (n + 1) + " · " + line.characters.length + " characters · lowest confidence " + Ui.percent(line.confidence);
      const text = document.createElement("p");
      text.className = "ocr-text";
      text.textContent = line.text;
      const chars = document.createElement("div");
      chars.className = "ocr-chars";
      chars.setAttribute("role", "group");
      chars.setAttribute("aria-label", "Characters of line " + (n + 1));
      let c = 0;
      for (const ch of line.text) {
        if (ch === " ") {
          const gap = document.createElement("span");
          gap.className = "space";
          gap.setAttribute("aria-hidden", "true");
          chars.append(gap);
          continue;
        }
        const item = line.characters[c++];
        const i = index++;
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = item.char;
        if (item.confidence < LOW) b.classList.add("low");
        b.setAttribute("aria-pressed", "false");
        b.dataset.info =
          "“" + item.char + "”: confidence " + Ui.percent(item.confidence) + ", box x " + item.box[0] + ", y " +
          item.box[1] + ", " + item.box[2] + "×" + item.box[3] + " px";
        b.setAttribute("aria-label", item.char + ", " + Ui.percent(item.confidence));
        b.addEventListener("click", () => activate(i));
        b.addEventListener("focus", () => activate(i));
        b.addEventListener("pointerenter", () => activate(i));
        buttons.push(b);
        chars.append(b);
      }
      block.append(meta, text, chars);
      return block;
    });
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "btn";
    copy.textContent = "Copy text";
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(result.text);
        say("Text copied.", "ok");
      } catch (err) {
        say("The browser did not allow copying: select the text instead.");
      }
    });
    const summary = document.createElement("p");
    summary.textContent = "Lowest character confidence: " + Ui.percent(result.confidence) +
      (result.deskew_degrees ? " · straightened by " + result.deskew_degrees + "°" : "") +
      (result.inverted ? " · light text on dark" : "");
    summary.className = "muted";
    linesBox.replaceChildren(summary, ...blocks, copy);
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.append(td);
  }

  function fieldDetails(f) {
    const parts = [];
    if (f.date) parts.push("date " + f.date);
    if (f.amount) parts.push("amount " + f.amount + (f.currency ? " (currency " + f.currency + ")" : ""));
    if (f.measure) parts.push(f.measure);
    if (f.document_type) parts.push("document type " + f.document_type + (f.serial ? ", serial " + f.serial : ""));
    if (f.check_digit) {
      parts.push(f.check_digit.valid ? "check digit valid" : "check digit INVALID (expected " + f.check_digit.expected + ")");
    }
    if (f.description) parts.push(f.description);
    return parts.join("; ");
  }

  function renderFields(fields) {
    const keys = Object.keys(fields || {}).filter((k) => k !== "valid");
    if (!keys.length) return;
    const title = document.createElement("h3");
    title.textContent = fields.valid ? "GS1 fields" : "GS1 fields (with problems)";
    const table = document.createElement("table");
    table.className = "ocr-fields";
    const head = document.createElement("tr");
    ["AI", "Name", "Value", "Details"].forEach((t) => {
      const th = document.createElement("th");
      th.textContent = t;
      th.scope = "col";
      head.append(th);
    });
    table.append(head);
    for (const key of keys) {
      const f = fields[key];
      const row = document.createElement("tr");
      cell(row, key === "control_key" ? "*…*" : f.ai);
      cell(row, f.title ? f.name + " – " + f.title : f.name || key);
      cell(row, f.value || "");
      const errors = (f.errors || []).join("; ");
      cell(row, [fieldDetails(f), errors].filter(Boolean).join(" · "), errors ? "bad" : f.check_digit ? "good" : "");
      table.append(row);
    }
    fieldsBox.replaceChildren(title, table);
  }

  async function read(blob) {
    if (!blob) return say("Choose, drop or paste an image first.");
    current = blob;
    showImage(blob);
    clearResult();
    say("Reading…", "ok");
    submit.disabled = true;
    try {
      const body = new FormData();
      body.append("image", await shrink(blob), blob.name || "image.png");
      const result = await Api.post("/api/ocr", body);
      if (!img.complete) await new Promise((resolve) => img.addEventListener("load", resolve, { once: true }));
      drawBoxes(result);
      renderLines(result);
      renderFields(result.fields);
      say("");
    } catch (err) {
      say(err.message);
    } finally {
      submit.disabled = false;
    }
  }

  function imageFrom(items) {
    for (const item of items || []) {
      if (item.kind === "file" && item.type.startsWith("image/")) return item.getAsFile();
    }
    return null;
  }

  async function pasteButton() {
    if (!navigator.clipboard || !navigator.clipboard.read) {
      return say("This browser does not let a button read the clipboard: press Ctrl+V (Cmd+V on a Mac) instead.", "warn");
    }
    try {
      for (const item of await navigator.clipboard.read()) {
        const type = item.types.find((t) => t.startsWith("image/"));
        if (type) return read(await item.getType(type));
      }
      say("The clipboard holds no image.", "warn");
    } catch (err) {
      say("The clipboard could not be read (" + err.message + "): press Ctrl+V (Cmd+V) instead.", "warn");
    }
  }

  fileInput.addEventListener("change", () => {
    if (fileInput.files[0]) read(fileInput.files[0]);
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    read(fileInput.files[0] || current);
  });
  $("ocr-paste").addEventListener("click", pasteButton);
  document.addEventListener("paste", (e) => {
    const file = imageFrom(e.clipboardData && e.clipboardData.items);
    if (file) {
      e.preventDefault();
      read(file);
    }
  });
  stage.addEventListener("dragover", (e) => {
    e.preventDefault();
    stage.classList.add("dragging");
  });
  stage.addEventListener("dragleave", () => stage.classList.remove("dragging"));
  stage.addEventListener("drop", (e) => {
    e.preventDefault();
    stage.classList.remove("dragging");
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) read(file);
  });
  showBoxes.addEventListener("change", () => svg.classList.toggle("off", !showBoxes.checked));
})();
