"""A stand-in for authd's three routes that consume mailed tokens, for testing the landing pages
before those routes exist (`.ci/browser.sh --stub`, or by hand, see the bottom of this file).

`StubApi(upstream)` listens on a free loopback port and answers

    POST /api/auth/password-reset/confirm  {"token", "newPassword"}
    POST /api/auth/verify-email            {"token"}
    POST /api/auth/email/confirm           {"token"}

as CONTRACT sections 2 and 10.2-10.5 say (200 envelopes; 400 `TOKEN_INVALID` for an unknown,
used or other-purpose token, 400 `TOKEN_EXPIRED`, 400 `VALIDATION_ERROR` with `details` for a
password that fails the default policy, which leaves the token usable; 415 and 400 for a
wrong body), and forwards every other request to `upstream` (a real `authd serve` with the
pages on), so the pages, their script and their headers are authd's own. It records every
request it saw (`requests`), so a test can check what the browser sent.
"""

import json
import secrets
import sys
import threading
import time
import unicodedata
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Purpose -> (API route, landing page path, body fields).
ROUTES = {
    "reset": ("/api/auth/password-reset/confirm", "/reset-password", {"token", "newPassword"}),
    "verify": ("/api/auth/verify-email", "/verify-email", {"token"}),
    "change": ("/api/auth/email/confirm", "/confirm-email-change", {"token"}),
}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "host", "content-length"}


def policy_failures(password, min_length=8):
    """authd's registration policy (domain::validate): each failed rule's message."""
    pw = unicodedata.normalize("NFKC", password)
    out = []
    if len(pw) < min_length:
        out.append(f"must be at least {min_length} characters")
    if len(pw.encode("utf-8")) > 72:
        out.append("must be at most 72 bytes in UTF-8")
    if not any(c.isalpha() for c in pw):
        out.append("must contain at least one letter")
    if not any(unicodedata.category(c) in ("Nd", "Nl", "No") for c in pw):
        out.append("must contain at least one digit")
    if not any(not c.isalnum() and not c.isspace() for c in pw):
        out.append("must contain at least one symbol")
    return out


class StubApi:
    def __init__(self, upstream):
        self.upstream = upstream.rstrip("/")
        self.requests = []
        self.tokens = {}
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _record(self, body):
                with stub.lock:
                    stub.requests.append({
                        "method": self.command,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    })

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _send(self, status, headers, body):
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status, obj):
                self._send(status, [("Content-Type", "application/json"),
                                    ("Cache-Control", "no-store")], json.dumps(obj).encode())

            def _proxy(self, body):
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                req = urllib.request.Request(stub.upstream + self.path, data=body or None,
                                             method=self.command, headers=headers)
                try:
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        self._send(resp.status, resp.getheaders(), resp.read())
                except urllib.error.HTTPError as e:
                    self._send(e.code, e.headers.items(), e.read())

            def do_GET(self):
                self._record(None)
                self._proxy(b"")

            def do_POST(self):
                raw = self._body()
                self._record(raw)
                purpose = next((p for p, r in ROUTES.items() if r[0] == self.path), None)
                if purpose is None:
                    self._proxy(raw)
                else:
                    status, obj = stub.answer(purpose, self.headers.get("Content-Type", ""), raw)
                    self._json(status, obj)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def issue(self, purpose, email="someone@example.com", expired=False, complete=True,
              taken=False):
        """A new token for `purpose` ("reset", "verify" or "change"); `complete` is the email
        change's answer (False: the other address must confirm too); `taken`: the email
        change's address was taken meanwhile (409 `EMAIL_TAKEN`, the change dropped)."""
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = {"purpose": purpose, "email": email, "expired": expired,
                                  "complete": complete, "taken": taken, "used": False,
                                  "newPassword": None}
        return token

    def link(self, purpose, token):
        return f"{self.base}{ROUTES[purpose][1]}#token={token}"

    def posts(self, purpose):
        """The parsed JSON bodies the browser POSTed to `purpose`'s route, with their headers."""
        route = ROUTES[purpose][0]
        return [(json.loads(r["body"]), r["headers"]) for r in self.requests
                if r["method"] == "POST" and r["path"] == route]

    def used(self, token):
        return self.tokens[token]["used"]

    def answer(self, purpose, content_type, raw):
        """(status, JSON) as authd answers `purpose`'s route."""
        def error(status, code, message, details=None):
            body = {"success": False, "message": message, "error": code}
            if details is not None:
                body["details"] = details
            return status, body

        if content_type.split(";")[0].strip().lower() != "application/json":
            return error(415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return error(400, "MALFORMED_JSON", "request body is not a valid JSON object")
        fields = ROUTES[purpose][2]
        details = [{"field": k, "message": "unknown field"} for k in body if k not in fields]
        details += [{"field": k, "message": "is required"} for k in sorted(fields)
                    if not isinstance(body.get(k), str) or not body.get(k)]
        if details:
            return error(400, "VALIDATION_ERROR", "validation failed", details)
        with self.lock:
            t = self.tokens.get(body["token"])
            if t is None or t["used"] or t["purpose"] != purpose:
                return error(400, "TOKEN_INVALID", "token is invalid")
            if t["expired"]:
                return error(400, "TOKEN_EXPIRED", "token has expired")
            if purpose == "reset":
                failures = policy_failures(body["newPassword"])
                if failures:
                    return error(400, "VALIDATION_ERROR",
                                 "validation failed: " + "; ".join("newPassword " + f for f in failures),
                                 [{"field": "newPassword", "message": f} for f in failures])
                t["newPassword"] = body["newPassword"]
            t["used"] = True
            if t["taken"]:
                return error(409, "EMAIL_TAKEN", "email is already registered")
        user = {"id": "3f6c1d2e-8a4b-4c5d-9e0f-1a2b3c4d5e6f", "email": t["email"], "name": None,
                "role": "user", "createdAt": "2026-12-06T10:00:00Z", "lastLoginAt": None,
                "emailVerified": True}
        if purpose == "reset":
            return 200, {"success": True, "message": "password reset", "data": {"revokedSessions": 1}}
        if purpose == "verify":
            return 200, {"success": True, "data": {"user": user}}
        return 200, {"success": True, "data": {"user": user, "complete": t["complete"]}}


if __name__ == "__main__":
    # By hand: `python3 .ci/browser/stub_api.py http://127.0.0.1:8080` (an authd with
    # AUTHD_PAGES__ENABLED=true) prints one link per page, then serves until Ctrl-C.
    if len(sys.argv) != 2:
        sys.exit("usage: stub_api.py UPSTREAM_AUTHD_URL")
    with StubApi(sys.argv[1]) as stub:
        for purpose in ROUTES:
            print(stub.link(purpose, stub.issue(purpose)))
        print("change, first of two:", stub.link("change", stub.issue("change", complete=False)))
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
