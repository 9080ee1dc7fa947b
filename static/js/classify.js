// The photo page: send a photo to the chosen classifier and show its most likely labels.
// Every text from the server is set with textContent, never parsed as HTML.
(() => {
  "use strict";
  const TOP = 5;
  // Large phone photos are shrunk before upload: the models look at 224x224 pixels anyway.
  const MAX_SIDE = 1600;
  const $ = (id) => document.getElementById(id);
  const form = $("classify-form");
  const select = $("classify-model");
  const fileInput = $("classify-file");
  const submit = $("classify-submit");
  const message = $("classify-message");
  const preview = $("classify-preview");
  const best = $("classify-best");
  const list = $("classify-top");

  const say = (text, kind) => Ui.say(message, text, kind);

  function showLabels() {
    const option = select.selectedOptions[0];
    const labels = option ? option.dataset.labels : "";
    $("classify-labels").textContent = labels ? "Knows: " + labels : "";
  }

  async function shrink(file) {
    if (!window.createImageBitmap || file.type === "image/gif") return file;
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    } catch (err) {
      return file; // let the server say what is wrong with it
    }
    const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
    if (scale === 1 && file.size < 2 * 1024 * 1024) return file;
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(bitmap.width * scale);
    canvas.height = Math.round(bitmap.height * scale);
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
    return blob || file;
  }

  function render(result) {
    best.className = "best";
    best.textContent = result.label + " (" + Ui.percent(result.confidence) + ")";
    Ui.bars(list, result.top.map((row) => ({ label: row.label, share: row.confidence })));
  }

  async function classify(event) {
    event.preventDefault();
    const file = fileInput.files[0];
    if (!select.value) return say("Choose a classifier first.");
    if (!file) return say("Choose a photo first.");
    say("Classifying…", "ok");
    submit.disabled = true;
    try {
      const body = new FormData();
      const upload = await shrink(file);
      body.append("image", upload, file.name || "photo.jpg");
      body.append("top", String(TOP));
      render(await Api.post("/api/classifier/" + encodeURIComponent(select.value), body));
      say("");
    } catch (err) {
      say(err.message);
    } finally {
      submit.disabled = false;
    }
  }

  fileInput.addEventListener("change", () => {
    const file = fileInput.files[0];
    if (!file) return;
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    preview.alt = "The chosen photo";
    preview.hidden = false;
    form.requestSubmit();
  });
  select.addEventListener("change", () => {
    showLabels();
    if (fileInput.files[0]) form.requestSubmit();
  });
  form.addEventListener("submit", classify);
  showLabels();
})();
