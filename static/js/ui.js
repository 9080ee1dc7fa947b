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
 *   Ui.signIn(messageBox, "Signed in for this tab: …");   // wires the page's sign-in form (_signin.html)
 *   say(Ui.refusal(err, "delete images"));    // 401: "Sign in with the admin token (above) to delete images."
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

  // The page's sign-in form (templates/_signin.html), when it has one: keep or forget the admin
  // token (Api.adminToken) and say in #admin-state whether this tab is signed in: `signedIn` when
  // it is, else the form's own sentence. A token that cannot be kept is said in `box`.
  function signIn(box, signedIn) {
    const form = document.getElementById("admin-form");
    const state = document.getElementById("admin-state");
    if (!form || !state) return;
    const input = document.getElementById("admin-token");
    const signedOut = state.textContent;
    const show = () => {
      state.textContent = Api.adminToken() ? signedIn : signedOut;
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!Api.keepAdminToken(input.value.trim())) {
        say(box, "This browser keeps no session storage: the token cannot be kept.");
      }
      input.value = "";
      show();
    });
    document.getElementById("admin-signout").addEventListener("click", () => {
      Api.keepAdminToken(""); // nothing kept, nothing to remove
      show();
    });
    show();
  }

  // What to say when a change is refused: 401 asks to sign in (to do `what`), else the server's
  // message (403 says why: only this machine).
  function refusal(err, what) {
    if (err.status === 401) {
      return err.code === "invalid_credentials"
        ? "The admin token is not right: sign in again with the right one."
        : "Sign in with the admin token (above) to " + what + ".";
    }
    return err.message;
  }

  global.Ui = { say, percent, bars, signIn, refusal };
})(window);
