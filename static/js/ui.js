/*
 * Ui: what every page shows the same way, so a message, a percentage or a list of scores reads
 * alike on each page.
 *
 *   <script src="/static/js/ui.js"></script>   (base.html loads it after api.js, before the page's script)
 *   const say = (text, kind) => Ui.say(messageBox, text, kind);
 *   say("Reading…", "ok");  say(err.message);  say("");      // kind: "error" (default), "warn", "ok"
 *   Ui.percent(0.9731)          -> "97.3%"
 *   Ui.percent(0.9731, 2)       -> "97.31%"
 *   Ui.bars(list, rows);                       // rows: [{ label, share: 0..1 }], one <li> each
 *   Ui.bars(list, rows, { digits: 2, markFirst: true });   // "97.31%"; the first <li> gets class best
 *
 * Text is set with textContent, never parsed as HTML: labels come from the server.
 */
(function (global) {
  "use strict";

  // An empty text empties the box, and .message:empty hides it.
  function say(box, text, kind) {
    box.textContent = text || "";
    box.className = "message" + (text ? " " + (kind || "error") : "");
  }

  function percent(share, digits) {
    return (share * 100).toFixed(digits === undefined ? 1 : digits) + "%";
  }

  // One <li> per row: the label, a bar as long as the share, and the share as text.
  function bars(list, rows, options) {
    const { digits, markFirst } = options || {};
    list.replaceChildren(
      ...rows.map((row, index) => {
        const item = document.createElement("li");
        if (markFirst && index === 0) item.className = "best";
        const name = document.createElement("span");
        name.textContent = row.label;
        const bar = document.createElement("div");
        bar.className = "bar";
        bar.setAttribute("role", "presentation");
        const fill = document.createElement("span");
        fill.style.width = percent(row.share);
        bar.append(fill);
        const value = document.createElement("span");
        value.textContent = percent(row.share, digits);
        item.append(name, bar, value);
        return item;
      })
    );
  }

  global.Ui = { say, percent, bars };
})(window);
