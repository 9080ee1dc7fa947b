/*
 * Api: how every page calls the JSON API, so that every failure reads the same.
 *
 *   <script src="/static/js/api.js"></script>   (base.html loads it before the page's script)
 *   const result = await Api.getJSON("/images?page=1");
 *   const result = await Api.postJSON("/api/predict", { image, top: 3 });
 *   const result = await Api.post("/api/ocr", formData);      // a FormData or a Blob, sent as is
 *   await Api.request("/images/7", { method: "DELETE" });     // any other call; 204 gives null
 *
 * Each resolves to the parsed JSON answer. Each rejects with an Error whose message can be shown
 * as it is ("The server cannot be reached: …", the server's `error`, or "The server answered N."),
 * carrying `.status` (0 when no answer came), `.code` and `.body` (the server's JSON error, or
 * null) so a page can still show what an error answer holds, and `.cause` (the network error).
 *
 * The admin token, typed in a page's sign-in form (Ui.signIn), is kept in sessionStorage: this tab
 * only, shared by the pages. A change the admin makes sends it as `Authorization: Bearer <token>`:
 *   await Api.request("/images/7", { method: "DELETE", headers: Api.adminHeaders() });
 *   fetch(url, { headers: Api.adminHeaders({ Accept: "application/zip" }) });
 */
(function (global) {
  "use strict";

  function failure(message, status, body, cause) {
    const error = new Error(message, cause ? { cause } : undefined);
    error.status = status;
    error.body = body;
    error.code = body && body.code ? body.code : null;
    return error;
  }

  async function request(url, options) {
    const init = Object.assign({}, options);
    init.headers = Object.assign({ Accept: "application/json" }, init.headers);
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      throw failure("The server cannot be reached: " + err.message, 0, null, err);
    }
    if (response.status === 204) return null;
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null; // a proxy's HTML error page, say: the status is all there is to tell
    }
    if (!response.ok || body === null) {
      const message = body && body.error ? body.error : "The server answered " + response.status + ".";
      throw failure(message, response.status, body);
    }
    return body;
  }

  function getJSON(url) {
    return request(url);
  }

  function postJSON(url, data) {
    return request(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(data),
    });
  }

  // fetch sets the Content-Type itself: multipart with its boundary, or the Blob's own type.
  function post(url, body) {
    return request(url, { method: "POST", body });
  }

  const TOKEN_KEY = "vision.adminToken";

  function adminToken() {
    try {
      return window.sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (err) {
      return ""; // storage turned off: every change then asks for the token again
    }
  }

  // Keep the token, or forget it when empty; false when this browser keeps no session storage.
  function keepAdminToken(value) {
    try {
      if (value) window.sessionStorage.setItem(TOKEN_KEY, value);
      else window.sessionStorage.removeItem(TOKEN_KEY);
      return true;
    } catch (err) {
      return false;
    }
  }

  function adminHeaders(headers) {
    const value = adminToken();
    return Object.assign({}, headers, value ? { Authorization: "Bearer " + value } : {});
  }

  global.Api = { request, getJSON, postJSON, post, adminToken, keepAdminToken, adminHeaders };
})(window);
