// authd's landing pages for mailed links: /reset-password, /verify-email and
// /confirm-email-change. Each reads the one-time token from the URL fragment (#token=...),
// which browsers never send to a server, removes it from the address bar, and sends it only in
// the JSON body of a POST to authd's API, without cookies. No page consumes anything on load:
// the person presses the button (so a mail scanner that opens links uses nothing up).
"use strict";

(function () {
  var API = {
    "reset-password": "/api/auth/password-reset/confirm",
    "verify-email": "/api/auth/verify-email",
    "confirm-email-change": "/api/auth/email/confirm"
  };

  var page = document.body.getAttribute("data-page");
  var form = document.getElementById("form");
  var status = document.getElementById("status");
  var submit = document.getElementById("submit");

  // The token, read once from the fragment and kept in memory only.
  var token = new URLSearchParams(window.location.hash.slice(1)).get("token");
  if (window.location.hash) {
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  // Another link pasted into this tab changes only the fragment: start over with it.
  window.addEventListener("hashchange", function () {
    window.location.reload();
  });

  // Shows `text` in the live region (read out by screen readers); `kind` is "success",
  // "error" or "info". With `focus`, moves the keyboard focus to it as well.
  function say(kind, text, focus) {
    status.textContent = text;
    status.className = kind;
    status.hidden = false;
    if (focus) {
      status.focus();
    }
  }

  function fieldErrors(id, messages) {
    var list = document.getElementById(id + "-errors");
    var input = document.getElementById(id);
    if (!list || !input) {
      return;
    }
    while (list.firstChild) {
      list.removeChild(list.firstChild);
    }
    messages.forEach(function (m) {
      var item = document.createElement("li");
      item.textContent = m;
      list.appendChild(item);
    });
    if (messages.length) {
      input.setAttribute("aria-invalid", "true");
    } else {
      input.removeAttribute("aria-invalid");
    }
  }

  function minutes(seconds) {
    var n = Math.max(1, Math.ceil(seconds / 60));
    return n === 1 ? "a minute" : n + " minutes";
  }

  // The sentence for an error answer of the API (section 2's JSON: `error`, `message`,
  // `details`), or null when the page handles it itself.
  function explain(httpStatus, body, retryAfter) {
    var code = body && body.error;
    switch (code) {
      case "TOKEN_INVALID":
        return "This link does not work any more: it was used already, or a newer link was sent since. Ask for a new link.";
      case "TOKEN_EXPIRED":
        return "This link has expired. Ask for a new link.";
      case "RATE_LIMITED":
        return "Too many attempts from your network. Try again in " + minutes(Number(retryAfter) || 60) + ".";
      case "ACCOUNT_LOCKED":
        return "This account is locked for a while after too many failed attempts. Try again in " + minutes(Number(retryAfter) || 60) + ".";
      case "EMAIL_TAKEN":
        return "Another account uses that address now, so the change was cancelled.";
      case "NOT_FOUND":
        return "This service is not available here.";
      case "SERVICE_UNAVAILABLE":
        return "The service is busy. Try again in a moment.";
    }
    if (body && typeof body.message === "string" && body.message) {
      return "That did not work: " + body.message + ".";
    }
    return "That did not work (HTTP " + httpStatus + "). Try again later.";
  }

  function success(body) {
    var data = (body && body.data) || {};
    if (page === "reset-password") {
      return "Your password has been changed, and every session of your account was signed out. Sign in with the new password.";
    }
    if (page === "verify-email") {
      var who = data.user && data.user.email;
      return who ? "Thank you: " + who + " is confirmed." : "Thank you: your email address is confirmed.";
    }
    if (data.complete === false) {
      return "Confirmed. The change completes once the link sent to the other address is opened too.";
    }
    var email = data.user && data.user.email;
    return email ? "Done: the account's email address is now " + email + "." : "Done: the email address was changed.";
  }

  // Reset page: the two fields, checked here before anything is sent.
  function passwordBody() {
    var pw = document.getElementById("new-password");
    var again = document.getElementById("confirm-password");
    fieldErrors("new-password", []);
    fieldErrors("confirm-password", []);
    if (!pw.value) {
      fieldErrors("new-password", ["Enter a new password."]);
      say("error", "Enter a new password.", false);
      pw.focus();
      return null;
    }
    if (pw.value !== again.value) {
      fieldErrors("confirm-password", ["The two passwords are not the same."]);
      say("error", "The two passwords are not the same.", false);
      again.focus();
      return null;
    }
    return { token: token, newPassword: pw.value };
  }

  // A 400 VALIDATION_ERROR on `newPassword`: the token is still good, so the person fixes
  // the password and sends again.
  function policyFailure(body) {
    var details = (body && body.details) || [];
    var messages = details
      .filter(function (d) { return d && d.field === "newPassword"; })
      .map(function (d) { return "The password " + d.message + "."; });
    if (!messages.length) {
      return false;
    }
    fieldErrors("new-password", messages);
    say("error", "The new password does not meet the rules: " + messages.join(" ") + " Change it and try again; the link still works.", false);
    document.getElementById("new-password").focus();
    return true;
  }

  function send(payload) {
    submit.disabled = true;
    form.setAttribute("aria-busy", "true");
    say("info", "Sending…", false);
    fetch(API[page], {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payload),
      credentials: "omit",
      cache: "no-store",
      redirect: "error",
      referrerPolicy: "no-referrer"
    }).then(function (resp) {
      return resp.json().catch(function () { return null; }).then(function (body) {
        finish(resp.status, resp.ok, body, resp.headers.get("Retry-After"));
      });
    }, function () {
      finish(0, false, null, null);
    });
  }

  function finish(httpStatus, ok, body, retryAfter) {
    submit.disabled = false;
    form.removeAttribute("aria-busy");
    if (ok && body && body.success) {
      form.hidden = true;
      token = null;
      say("success", success(body), true);
      return;
    }
    if (httpStatus === 0) {
      say("error", "Could not reach the server. Check your connection and try again.", true);
      return;
    }
    if (page === "reset-password" && body && body.error === "VALIDATION_ERROR" && policyFailure(body)) {
      return;
    }
    var code = body && body.error;
    if (code === "TOKEN_INVALID" || code === "TOKEN_EXPIRED" || code === "EMAIL_TAKEN" ||
        code === "NOT_FOUND" || code === "VALIDATION_ERROR") {
      // Nothing on this page can fix these: only a new link can.
      form.hidden = true;
    }
    say("error", explain(httpStatus, body, retryAfter), true);
  }

  if (!token) {
    say("error", "This link is incomplete: it holds no token. Open the link from the mail again, or copy all of it into the address bar.", true);
    return;
  }
  form.hidden = false;
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (submit.disabled) {
      return;
    }
    var payload = page === "reset-password" ? passwordBody() : { token: token };
    if (payload) {
      send(payload);
    }
  });
  var first = form.querySelector("input, button");
  if (first) {
    first.focus();
  }
})();
