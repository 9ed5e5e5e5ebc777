"""A small service that trusts authd's access tokens, verified offline with PyJWT.

It fetches authd's public keys from the JWKS endpoint through PyJWT's stock PyJWKClient
(cached; refetched when a token names an unknown key id, and at the latest every
JWKS_CACHE_SECONDS), and checks the signature, the algorithm (EdDSA only), `typ`
(at+jwt, RFC 9068), `iss`, `aud` and `exp`.

    GET /whoami   Authorization: Bearer <access token>
      200 {"sub": ..., "sid": ..., "role": ..., "kid": ...}
      401 {"error": "invalid_token", "message": ...}

Configuration (environment): AUTHD_JWKS_URL (default
http://127.0.0.1:8080/.well-known/jwks.json), AUTHD_ISSUER and AUTHD_AUDIENCE (default
authd), JWKS_CACHE_SECONDS (default 300), JWKS_COOLDOWN_SECONDS (the least time between two
refetches for unknown key ids; default 30), PORT (default 9001, on 127.0.0.1).
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt  # PyJWT, with the `crypto` extra for EdDSA

JWKS_URL = os.environ.get("AUTHD_JWKS_URL", "http://127.0.0.1:8080/.well-known/jwks.json")
ISSUER = os.environ.get("AUTHD_ISSUER", "authd")
AUDIENCE = os.environ.get("AUTHD_AUDIENCE", "authd")
CACHE_SECONDS = int(os.environ.get("JWKS_CACHE_SECONDS", "300"))
COOLDOWN_SECONDS = int(os.environ.get("JWKS_COOLDOWN_SECONDS", "30"))
PORT = int(os.environ.get("PORT", "9001"))

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
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    print(f"python verifier listening on http://127.0.0.1:{PORT}", flush=True)
    server.serve_forever()
