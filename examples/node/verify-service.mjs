// A small service that trusts authd's access tokens, verified offline with `jose`.
//
// It fetches authd's public keys through jose's stock createRemoteJWKSet (cached for
// JWKS_CACHE_SECONDS; refetched when a token names an unknown key id, at most once per
// JWKS_COOLDOWN_SECONDS), and checks the signature, the algorithm (EdDSA only), `typ`
// (at+jwt, RFC 9068), `iss`, `aud` and `exp`.
//
//   GET /whoami   Authorization: Bearer <access token>
//     200 {"sub", "sid", "role", "kid"}   401 {"error": "invalid_token", "message"}
//
// Environment: AUTHD_JWKS_URL (default http://127.0.0.1:8080/.well-known/jwks.json),
// AUTHD_ISSUER / AUTHD_AUDIENCE (default authd), JWKS_CACHE_SECONDS (default 300),
// JWKS_COOLDOWN_SECONDS (default 30), PORT (default 9002, on 127.0.0.1).
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

/** The token's claims when authd signed it for us and it is live; throws otherwise. */
async function verify(token) {
  const { payload, protectedHeader } = await jwtVerify(token, jwks, {
    algorithms: ['EdDSA'], // pinned: never the algorithm the token names
    typ: 'at+jwt',
    issuer,
    audience,
    requiredClaims: ['exp', 'iat', 'sub', 'sid'],
  });
  return { sub: payload.sub, sid: payload.sid, role: payload.role, kid: protectedHeader.kid };
}

function answer(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
}

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
