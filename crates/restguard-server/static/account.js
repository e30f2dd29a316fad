// The account page's JSON API use: with JavaScript on, token actions call the session-
// authenticated API (/api/tokens/…) with the X-CSRFToken header, as a single-page app would.
// Without JavaScript the same forms POST to /account/… and work the same.
(function () {
  "use strict";
  var cookieName = document.body.getAttribute("data-csrf-cookie") || "csrftoken";

  function cookie(name) {
    var parts = document.cookie ? document.cookie.split(";") : [];
    for (var i = 0; i < parts.length; i++) {
      var kv = parts[i].trim();
      if (kv.slice(0, name.length + 1) === name + "=") {
        return decodeURIComponent(kv.slice(name.length + 1));
      }
    }
    return "";
  }

  function api(method, url, body) {
    var init = {
      method: method,
      credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRFToken": cookie(cookieName) }
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(url, init).then(function (response) {
      if (response.status === 204) { return null; }
      return response.json().catch(function () { return null; }).then(function (data) {
        if (!response.ok) {
          var message = data && data.detail ? data.detail : "Request failed (HTTP " + response.status + ").";
          if (response.status === 401 || response.status === 403) {
            message += " Reload the page to sign in again.";
          }
          throw new Error(message);
        }
        return data;
      });
    });
  }

  function say(text, isError) {
    var box = document.getElementById("messages");
    box.textContent = "";
    var p = document.createElement("p");
    p.className = isError ? "error" : "notice";
    p.setAttribute("role", isError ? "alert" : "status");
    p.textContent = text;
    box.appendChild(p);
  }

  function showKey(key) {
    document.getElementById("new-key").textContent = key;
    document.getElementById("new-key-box").hidden = false;
  }

  function when(iso) {
    return iso ? iso.replace("T", " ").slice(0, 16) + " UTC" : null;
  }

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function actionForm(label, cls, action, api, method, kind) {
    var form = document.createElement("form");
    form.method = "post";
    form.className = "inline";
    form.action = action;
    form.setAttribute("data-api", api);
    form.setAttribute("data-api-method", method);
    form.setAttribute("data-kind", kind);
    var button = document.createElement("button");
    button.type = "submit";
    button.className = cls;
    button.textContent = label;
    form.appendChild(button);
    return form;
  }

  function renderTokens(tokens) {
    var body = document.querySelector("#tokens tbody");
    body.textContent = "";
    if (!tokens.length) {
      var empty = document.createElement("tr");
      empty.className = "empty";
      cell(empty, "No API tokens.").colSpan = 6;
      body.appendChild(empty);
      return;
    }
    tokens.forEach(function (t) {
      var row = document.createElement("tr");
      row.setAttribute("data-token-id", String(t.id));
      cell(row, t.name || "—");
      var prefix = cell(row, "");
      var code = document.createElement("code");
      code.textContent = t.prefix + "…";
      prefix.appendChild(code);
      cell(row, when(t.created));
      cell(row, when(t.last_used) || "never");
      cell(row, when(t.expiry) || "never");
      var actions = cell(row, "");
      actions.className = "actions";
      actions.appendChild(actionForm("Rotate", "secondary small", "/account/tokens/" + t.id + "/rotate/",
        "/api/tokens/" + t.id + "/rotate/", "POST", "rotate"));
      actions.appendChild(actionForm("Revoke", "danger small", "/account/tokens/" + t.id + "/revoke/",
        "/api/tokens/" + t.id + "/", "DELETE", "revoke"));
      body.appendChild(row);
    });
  }

  function reload() {
    return api("GET", "/api/tokens/").then(renderTokens);
  }

  var create = document.getElementById("token-create");
  create.addEventListener("submit", function (event) {
    event.preventDefault();
    var body = {};
    var name = document.getElementById("id_token_name").value.trim();
    if (name) { body.name = name; }
    var expires = document.getElementById("id_expires_in").value;
    if (expires) { body.expires_in = Number(expires); }
    api("POST", create.getAttribute("data-api"), body).then(function (issued) {
      showKey(issued.token);
      create.reset();
      say("Token created. Copy it now: it will not be shown again.", false);
      return reload();
    }).catch(function (e) { say(e.message, true); });
  });

  document.getElementById("tokens").addEventListener("submit", function (event) {
    var form = event.target;
    var url = form.getAttribute("data-api");
    if (!url) { return; }
    event.preventDefault();
    var kind = form.getAttribute("data-kind");
    api(form.getAttribute("data-api-method"), url).then(function (issued) {
      if (kind === "rotate" && issued) {
        showKey(issued.token);
        say("Token rotated: the old key no longer works. Copy the new one now.", false);
      } else {
        say("Token revoked.", false);
      }
      return reload();
    }).catch(function (e) { say(e.message, true); });
  });

  var copy = document.getElementById("copy-key");
  copy.hidden = false;
  copy.addEventListener("click", function () {
    var key = document.getElementById("new-key").textContent;
    var done = function () { copy.textContent = "Copied"; setTimeout(function () { copy.textContent = "Copy"; }, 1500); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(key).then(done, function () { say("Could not copy; select the key instead.", true); });
    } else {
      var range = document.createRange();
      range.selectNodeContents(document.getElementById("new-key"));
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      try { document.execCommand("copy"); done(); } catch (e) { say("Select the key and copy it.", true); }
    }
  });

  document.body.setAttribute("data-js", "on");
})();
