// The photo page: send a photo to the chosen classifier and show its most likely labels; add a
// Teachable Machine model from its zip, or remove one added here.
// Every text from the server is set with textContent, never parsed as HTML.
// Adding and removing need the admin: the token typed in the sign-in form is kept in sessionStorage
// (this tab only, shared with the gallery page) and sent as `Authorization: Bearer <token>`.
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

  // --- adding and removing models ---------------------------------------------------------------
  const addForm = $("add-form");
  const added = $("added-models");
  const addMessage = $("add-message");
  const explain = (err) => Ui.refusal(err, "add or remove models");

  // The classifier list and the added models, as the server lists them now.
  async function reload(selectName) {
    const listing = await Api.getJSON("/api/classifier/models");
    const keep = selectName || select.value;
    select.replaceChildren(
      ...listing.models.map((row) => {
        const option = document.createElement("option");
        option.value = row.name;
        option.dataset.labels = row.labels.join(", ");
        option.disabled = !row.loaded;
        option.selected = row.name === keep && row.loaded;
        option.textContent = row.name + " (" + row.kind + (row.loaded ? "" : ", not loaded") + ")";
        return option;
      })
    );
    showLabels();
    const rows = listing.models.filter((row) => row.removable);
    added.replaceChildren(
      ...rows.map((row) => {
        const item = document.createElement("li");
        const name = document.createElement("span");
        name.textContent = row.name + " ";
        const facts = document.createElement("span");
        facts.className = "muted";
        facts.textContent = "(" + row.format + ", " + row.labels.length + " labels)";
        name.append(facts);
        const button = document.createElement("button");
        button.type = "button";
        button.className = "btn";
        button.dataset.remove = row.name;
        button.textContent = "Remove";
        item.append(name, " ", button);
        return item;
      })
    );
    $("added-none").hidden = rows.length > 0;
  }

  async function addModel(event) {
    event.preventDefault();
    const file = $("add-file").files[0];
    const name = $("add-name").value.trim();
    if (!file) return Ui.say(addMessage, "Choose the zip Teachable Machine gave you.");
    Ui.say(addMessage, "Uploading and converting " + file.name + "…", "ok");
    $("add-submit").disabled = true;
    try {
      const body = new FormData();
      body.append("name", name);
      body.append("file", file, file.name);
      const row = await Api.request("/api/classifier/models", { method: "POST", body, headers: Api.adminHeaders() });
      addForm.reset();
      await reload(row.name);
      Ui.say(addMessage, "Added " + row.name + " (" + row.format + "): it knows " + row.labels.join(", ") + ".", "ok");
    } catch (err) {
      Ui.say(addMessage, explain(err));
    } finally {
      $("add-submit").disabled = false;
    }
  }

  async function removeModel(event) {
    const button = event.target.closest("button[data-remove]");
    if (!button) return;
    const name = button.dataset.remove;
    if (!window.confirm("Remove the model " + name + "? Every worker stops serving it.")) return;
    button.disabled = true;
    try {
      await Api.request("/api/classifier/models/" + encodeURIComponent(name), {
        method: "DELETE",
        headers: Api.adminHeaders(),
      });
      await reload();
      Ui.say(addMessage, "Removed " + name + ".", "ok");
    } catch (err) {
      button.disabled = false;
      Ui.say(addMessage, explain(err));
    }
  }

  if (addForm) {
    addForm.addEventListener("submit", addModel);
    added.addEventListener("click", removeModel);
  }
  Ui.signIn(addMessage, "Signed in for this tab: adding and removing models send the token.");
})();
