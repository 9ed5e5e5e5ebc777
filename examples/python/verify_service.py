"""A small service that trusts authd's access tokens, verified offline with PyJWT.

It fetches authd's public keys from the JWKS endpoint through PyJWT's stock PyJWKClient
(cached; refetched when a token names an unknown key id, and at the latest every
JWKS_CACHE_SECONDS), and checks the signature, the algorithm (EdDSA only), `typ`
(at+jwt, RFC 9068), `iss`, `aud` and `exp`. Beside the JWKS cache, a background thread polls
authd's revoked-session feed every `pollAfter` seconds and refuses the tokens of sessions that
were revoked (logout, logout-all, an admin's revocation, ...) before they expire.

    GET /whoami   Authorization: Bearer <access token>
      200 {"sub": ..., "sid": ..., "role": ..., "kid": ...}
      401 {"error": "invalid_token", "message": ...}

Configuration (environment): AUTHD_JWKS_URL (default
http://127.0.0.1:8080/.well-known/jwks.json), AUTHD_ISSUER and AUTHD_AUDIENCE (default
authd), JWKS_CACHE_SECONDS (default 300), JWKS_COOLDOWN_SECONDS (the least time between two
refetches for unknown key ids; default 30), AUTHD_REVOCATION_FEED_URL (default: the JWKS URL
with /.well-known/revoked-sessions in place of /.well-known/jwks.json), PORT (default 9001, on
127.0.0.1).
"""

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt  # PyJWT, with the `crypto` extra for EdDSA

JWKS_URL = os.environ.get("AUTHD_JWKS_URL", "http://127.0.0.1:8080/.well-known/jwks.json")
ISSUER = os.environ.get("AUTHD_ISSUER", "authd")
AUDIENCE = os.environ.get("AUTHD_AUDIENCE", "authd")
CACHE_SECONDS = int(os.environ.get("JWKS_CACHE_SECONDS", "300"))
COOLDOWN_SECONDS = int(os.environ.get("JWKS_COOLDOWN_SECONDS", "30"))
PORT = int(os.environ.get("PORT", "9001"))
FEED_URL = os.environ.get(
    "AUTHD_REVOCATION_FEED_URL",
    JWKS_URL.replace("/.well-known/jwks.json", "/.well-known/revoked-sessions"),
)
# An entry is kept this long past its exp: longer than any verifier's clock leeway.
KEEP_PAST_EXP = 60

# The stock client: caches the whole key set for `lifespan` seconds and refetches it once
# when a token's `kid` is not in the cached set (how a rotation is picked up), at most once
# per `cooldown_duration` seconds.
jwks = jwt.PyJWKClient(
    JWKS_URL,
    cache_jwk_set=True,
    lifespan=CACHE_SECONDS,
    cache_keys=False,
    cooldown_duration=COOLDOWN_SECONDS,
)


class RevokedSessions:
    """authd's revoked-session feed (GET /.well-known/revoked-sessions), polled in the
    background: the ids of revoked sessions whose tokens have not expired yet, with their exp."""

    def __init__(self, url: str):
        self.url = url
        self.cursor = None
        self.revoked = {}  # sid -> exp (Unix seconds)
        self.lock = threading.Lock()

    def poll_once(self) -> int:
        """Reads what was revoked since the last cursor; returns the seconds to wait."""
        url = self.url
        if self.cursor is not None:
            url += "?" + urllib.parse.urlencode({"since": self.cursor})
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as e:
            if e.code == 400:  # a cursor too old (or from another database): start again
                self.cursor = None
                return 0
            raise
        now = time.time()
        with self.lock:
            for entry in body["revoked"]:
                self.revoked[entry["sid"]] = entry["exp"]
            self.revoked = {s: e for s, e in self.revoked.items() if e + KEEP_PAST_EXP >= now}
        self.cursor = body["cursor"]
        return max(int(body["pollAfter"]), 1)

    def run(self):
        while True:
            try:
                wait = self.poll_once()
            except Exception as e:  # authd unreachable: keep what we know, try again
                print(f"revoked-session feed: {e}", file=sys.stderr, flush=True)
                wait = 5
            time.sleep(wait)

    def is_revoked(self, sid: str) -> bool:
        with self.lock:
            return sid in self.revoked


revoked_sessions = RevokedSessions(FEED_URL)


def verify(token: str) -> dict:
    """The token's claims when authd signed it for us and it is live; raises otherwise."""
    header = jwt.get_unverified_header(token)
    if header.get("typ") != "at+jwt":
        raise jwt.InvalidTokenError("not an access token (typ)")
    key = jwks.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["EdDSA"],  # pinned: never the algorithm the token names
        issuer=ISSUER,
        audience=AUDIENCE,
        options={"require": ["exp", "iat", "iss", "aud", "sub", "sid"]},
    )
    if revoked_sessions.is_revoked(claims["sid"]):
        raise jwt.InvalidTokenError("session revoked")
    return {"sub": claims["sub"], "sid": claims["sid"], "role": claims["role"], "kid": header.get("kid")}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/whoami":
            return self.answer(404, {"error": "not_found"})
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return self.answer(401, {"error": "invalid_token", "message": "no bearer token"})
        try:
            return self.answer(200, verify(auth[len("Bearer "):]))
        except (jwt.PyJWTError, KeyError) as e:
            return self.answer(401, {"error": "invalid_token", "message": str(e)})

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    threading.Thread(target=revoked_sessions.run, daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    print(f"python verifier listening on http://127.0.0.1:{PORT}", flush=True)
    server.serve_forever()
