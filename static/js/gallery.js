// The gallery page: list stored images, open one's metadata, correct its label, upload, delete.
// Every text that came from the server is set with textContent, never parsed as HTML.
// Labelling, deleting and exporting need the admin: the token typed in the sign-in form is kept in
// sessionStorage (this tab only) and sent as `Authorization: Bearer <token>` with those requests.
(() => {
  "use strict";
  const PER_PAGE = 24;
  const $ = (id) => document.getElementById(id);
  const grid = $("gallery-grid");
  const message = $("gallery-message");
  const dialog = $("image-dialog");
  const dialogMessage = $("dialog-message");
  const filters = $("gallery-filters");
  let page = 1;
  let pages = 0;
  let current = null; // the metadata shown in the dialog
  // Set here, not in a style attribute, which a strict Content-Security-Policy would refuse.
  grid.style.setProperty("--thumb", grid.dataset.thumb + "px");

  function query() {
    const params = new URLSearchParams({ page: String(page), per_page: String(PER_PAGE) });
    for (const [key, value] of new FormData(filters)) {
      if (value) params.set(key, value);
    }
    return params;
  }

  // The store keeps every confidence as a fraction from 0 to 1.
  function percent(confidence) {
    return confidence === null || confidence === undefined ? "" : Ui.percent(confidence);
  }

  const explain = (err) => Ui.refusal(err, "label, delete or export images");

  function thumbnail(item) {
    const box = document.createElement("div");
    box.className = "thumb-placeholder";
    if (item.thumbnail.status === "failed") {
      box.textContent = "No thumbnail: " + (item.thumbnail.error || "failed");
      return box;
    }
    box.textContent = "Thumbnail on its way…";
    const img = new Image();
    img.className = "thumb";
    img.alt = "";
    // Not lazy: a detached lazy image never loads, and a page holds at most 24 small JPEGs.
    let tries = 0;
    img.addEventListener("load", () => box.replaceWith(img));
    // /vignette answers 202 JSON while the thumbnail is made: the <img> fails, so try again.
    img.addEventListener("error", () => {
      tries += 1;
      if (tries <= 10) setTimeout(() => { img.src = item.thumbnail.url + "?try=" + tries; }, 800 * tries);
      else box.textContent = "Thumbnail not ready yet";
    });
    img.src = item.thumbnail.url;
    return box;
  }

  function card(item) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.append(thumbnail(item));
    const caption = document.createElement("span");
    caption.className = "caption";
    const guess = item.prediction !== null ? item.prediction : "—";
    caption.textContent = (item.model || item.endpoint) + ": " + guess + " " + percent(item.confidence);
    if (item.label !== null) {
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = " ✓ " + item.label;
      caption.append(label);
    }
    button.append(caption);
    button.setAttribute("aria-label", "Open image " + item.id + ", " + caption.textContent);
    button.addEventListener("click", () => openImage(item.id));
    li.append(button);
    return li;
  }

  // Each load() takes a ticket; only the newest one's answer is shown, so that a slower earlier
  // answer (the page's first, unfiltered list) cannot overwrite the one for the filter just chosen.
  let latest = 0;

  async function load() {
    const ticket = ++latest;
    Ui.say(message, "");
    try {
      const body = await Api.getJSON("/images?" + query().toString());
      if (ticket !== latest) return;
      pages = body.pages;
      grid.replaceChildren(...body.items.map(card));
      $("gallery-count").textContent = body.total + " image" + (body.total === 1 ? "" : "s");
      $("page-info").textContent = pages ? "Page " + body.page + " of " + pages : "";
      $("page-prev").disabled = page <= 1;
      $("page-next").disabled = page >= pages;
      if (!body.items.length) Ui.say(message, "No images match these filters yet.", "warn");
    } catch (err) {
      if (ticket !== latest) return;
      Ui.say(message, err.message);
    }
    const model = $("filter-model").value;
    $("export-link").href = "/images/export" + (model ? "?model=" + encodeURIComponent(model) : "");
  }

  // A link cannot send the token: fetch the zip, then hand it to the browser as a download.
  async function exportZip(url) {
    let response;
    try {
      response = await fetch(url, { headers: Api.adminHeaders({ Accept: "application/zip" }) });
    } catch (err) {
      Ui.say(message, "The server cannot be reached: " + err.message);
      return;
    }
    if (!response.ok) {
      let body = null;
      try {
        body = await response.json();
      } catch (err) {
        body = null;
      }
      const err = new Error(body && body.error ? body.error : "The server answered " + response.status + ".");
      err.status = response.status;
      err.code = body && body.code ? body.code : null;
      Ui.say(message, explain(err));
      return;
    }
    const match = /filename="?([^";]+)"?/.exec(response.headers.get("Content-Disposition") || "");
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = match ? match[1] : "labelled.zip";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
    Ui.say(message, "Exported " + (response.headers.get("X-Image-Count") || "the") + " labelled images.", "ok");
  }

  function row(name, value) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = name;
    const td = document.createElement("td");
    td.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
    tr.append(th, td);
    return tr;
  }

  function showMeta(meta) {
    current = meta;
    $("dialog-title").textContent = "Image " + meta.id;
    $("dialog-image").src = meta.download_url + "?inline=1";
    $("dialog-image").alt = "Stored image " + meta.id;
    $("dialog-download").href = meta.download_url;
    $("label-input").value = meta.label || "";
    const rows = [
      row("Received", new Date(meta.created_at).toLocaleString()),
      row("From", meta.endpoint),
      row("Model", meta.model),
      row("Prediction", meta.prediction),
      row("Confidence", percent(meta.confidence)),
      row("Label", meta.label),
      row("Size", meta.width + " × " + meta.height + " px, " + meta.byte_size + " bytes"),
      row("Format", meta.format + " (" + meta.mime + ")"),
      row("Uploaded as", meta.original_name),
      row("Thumbnail", meta.thumbnail.status + (meta.thumbnail.error ? ": " + meta.thumbnail.error : "")),
    ];
    if (meta.gps) rows.push(row("GPS", meta.gps.latitude + ", " + meta.gps.longitude
      + (meta.gps.altitude !== null ? " (" + meta.gps.altitude + " m)" : "")));
    rows.push(row("SHA-256", meta.sha256));
    $("dialog-meta").replaceChildren(...rows);
    $("dialog-exif").textContent = meta.exif ? JSON.stringify(meta.exif, null, 2) : "No EXIF.";
  }

  async function openImage(id) {
    Ui.say(dialogMessage, "");
    try {
      showMeta(await Api.getJSON("/images/" + encodeURIComponent(id)));
      if (!dialog.open) dialog.showModal();
      $("label-input").focus();
    } catch (err) {
      Ui.say(message, err.message);
    }
  }

  async function saveLabel(label) {
    if (!current) return;
    try {
      const meta = await Api.request("/images/" + current.id + "/label", {
        method: "POST",
        headers: Api.adminHeaders({ "Content-Type": "application/json" }),
        body: JSON.stringify({ label }),
      });
      showMeta(meta);
      Ui.say(dialogMessage, label === null ? "Label cleared." : "Label saved.", "ok");
      load();
    } catch (err) {
      Ui.say(dialogMessage, explain(err));
    }
  }

  $("label-form").addEventListener("submit", (event) => {
    event.preventDefault();
    saveLabel($("label-input").value.trim());
  });
  $("label-clear").addEventListener("click", () => saveLabel(null));
  $("dialog-close").addEventListener("click", () => dialog.close());
  $("dialog-delete").addEventListener("click", async () => {
    if (!current || !window.confirm("Delete this image and its metadata?")) return;
    try {
      await Api.request("/images/" + current.id, { method: "DELETE", headers: Api.adminHeaders() });
      dialog.close();
      await load();
      Ui.say(message, "Image deleted.", "ok");
    } catch (err) {
      Ui.say(dialogMessage, explain(err));
    }
  });

  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    page = 1;
    load();
  });
  filters.addEventListener("change", () => { page = 1; load(); });
  $("page-prev").addEventListener("click", () => { if (page > 1) { page -= 1; load(); } });
  $("page-next").addEventListener("click", () => { if (page < pages) { page += 1; load(); } });

  $("gallery-upload").addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = $("upload-file").files[0];
    if (!file) {
      Ui.say(message, "Choose an image file first.");
      return;
    }
    const form = new FormData();
    form.append("file", file);
    const label = $("upload-label").value.trim();
    if (label) form.append("label", label);
    const model = $("filter-model").value;
    if (model) form.append("model", model);
    try {
      // A plain upload needs no token; one with a label does (labelling).
      const created = await Api.request("/images", { method: "POST", body: form, headers: Api.adminHeaders() });
      event.target.reset();
      page = 1;
      await load(); // clears the message box first, so the news comes after
      Ui.say(message, "Uploaded as " + created.id + ".", "ok");
    } catch (err) {
      Ui.say(message, explain(err));
    }
  });

  $("export-link").addEventListener("click", (event) => {
    event.preventDefault();
    exportZip($("export-link").href);
  });

  Ui.signIn(message, "Signed in for this tab: labelling, deleting and exporting send the token.");
  load();
})();
