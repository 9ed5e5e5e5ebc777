// A small service that trusts authd's access tokens, verified offline with `jose`.
//
// It fetches authd's public keys through jose's stock createRemoteJWKSet (cached for
// JWKS_CACHE_SECONDS; refetched when a token names an unknown key id, at most once per
// JWKS_COOLDOWN_SECONDS), and checks the signature, the algorithm (EdDSA only), `typ`
// (at+jwt, RFC 9068), `iss`, `aud` and `exp`. Beside the JWKS cache, a background loop polls
// authd's revoked-session feed every `pollAfter` seconds and refuses the tokens of sessions that
// were revoked (logout, logout-all, an admin's revocation, ...) before they expire.
//
//   GET /whoami   Authorization: Bearer <access token>
//     200 {"sub", "sid", "role", "kid"}   401 {"error": "invalid_token", "message"}
//
// Environment: AUTHD_JWKS_URL (default http://127.0.0.1:8080/.well-known/jwks.json),
// AUTHD_ISSUER / AUTHD_AUDIENCE (default authd), JWKS_CACHE_SECONDS (default 300),
// JWKS_COOLDOWN_SECONDS (default 30), AUTHD_REVOCATION_FEED_URL (default: the JWKS URL with
// /.well-known/revoked-sessions in place of /.well-known/jwks.json), PORT (default 9002, on
// 127.0.0.1).
import http from 'node:http';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const env = process.env;
const jwksUrl = new URL(env.AUTHD_JWKS_URL ?? 'http://127.0.0.1:8080/.well-known/jwks.json');
const issuer = env.AUTHD_ISSUER ?? 'authd';
const audience = env.AUTHD_AUDIENCE ?? 'authd';
const port = Number(env.PORT ?? 9002);

const jwks = createRemoteJWKSet(jwksUrl, {
  cacheMaxAge: 1000 * Number(env.JWKS_CACHE_SECONDS ?? 300),
  cooldownDuration: 1000 * Number(env.JWKS_COOLDOWN_SECONDS ?? 30),
});

// authd's revoked-session feed (GET /.well-known/revoked-sessions): the ids of revoked sessions
// whose tokens have not expired yet, with their exp. Entries are kept this long past their exp:
// longer than any verifier's clock leeway.
const feedUrl = new URL(
  env.AUTHD_REVOCATION_FEED_URL ??
    jwksUrl.href.replace('/.well-known/jwks.json', '/.well-known/revoked-sessions'),
);
const keepPastExp = 60;
const revoked = new Map(); // sid -> exp (Unix seconds)
let cursor = null;

/** Reads what was revoked since the last cursor; returns the seconds to wait. */
async function pollOnce() {
  const url = new URL(feedUrl);
  if (cursor !== null) url.searchParams.set('since', cursor);
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  if (res.status === 400) {
    cursor = null; // a cursor too old (or from another database): start again
    return 0;
  }
  if (!res.ok) throw new Error(`feed answered ${res.status}`);
  const body = await res.json();
  for (const { sid, exp } of body.revoked) revoked.set(sid, exp);
  const now = Date.now() / 1000;
  for (const [sid, exp] of revoked) if (exp + keepPastExp < now) revoked.delete(sid);
  cursor = body.cursor;
  return Math.max(Number(body.pollAfter), 1);
}

async function pollForever() {
  for (;;) {
    let wait;
    try {
      wait = await pollOnce();
    } catch (e) {
      console.error(`revoked-session feed: ${e.message}`); // authd unreachable: try again
      wait = 5;
    }
    await new Promise((resolve) => setTimeout(resolve, wait * 1000));
  }
}

/** The token's claims when authd signed it for us and it is live; throws otherwise. */
async function verify(token) {
  const { payload, protectedHeader } = await jwtVerify(token, jwks, {
    algorithms: ['EdDSA'], // pinned: never the algorithm the token names
    typ: 'at+jwt',
    issuer,
    audience,
    requiredClaims: ['exp', 'iat', 'sub', 'sid'],
  });
  if (revoked.has(payload.sid)) throw new Error('session revoked');
  return { sub: payload.sub, sid: payload.sid, role: payload.role, kid: protectedHeader.kid };
}

function answer(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
}

pollForever();

http
  .createServer(async (req, res) => {
    if (req.method !== 'GET' || req.url !== '/whoami') return answer(res, 404, { error: 'not_found' });
    const auth = req.headers.authorization ?? '';
    if (!auth.startsWith('Bearer ')) {
      return answer(res, 401, { error: 'invalid_token', message: 'no bearer token' });
    }
    try {
      answer(res, 200, await verify(auth.slice('Bearer '.length)));
    } catch (e) {
      answer(res, 401, { error: 'invalid_token', message: String(e.code ?? e.message) });
    }
  })
  .listen(port, '127.0.0.1', () => console.log(`node verifier listening on http://127.0.0.1:${port}`));
