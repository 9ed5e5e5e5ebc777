"""Headless Chromium with a virtual WebAuthn authenticator (DevTools `WebAuthn.enable` and
`addVirtualAuthenticator`: CTAP2, resident keys, user verification) works on this machine:
`create()` of a discoverable credential with user verification required, then a discoverable
`get()` (empty `allowCredentials`) that names its user, both through the browser's own JSON
forms (`parseCreationOptionsFromJSON`, `toJSON()`), on a page served from `http://localhost`.
The support helpers used here are the ones the passkey tests reuse."""

import json
import os

import support as s

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>WebAuthn smoke test</title></head><body><p>WebAuthn smoke test</p></body></html>"""


def test_virtual_authenticator_create_and_discoverable_get():
    user_id = os.urandom(16)
    with s.StaticSite({"/": ("text/html; charset=utf-8", PAGE)}) as site, s.browser() as d:
        d.get(site.url("/"))
        origin = site.url("").rstrip("/")
        assert d.execute_script("return window.isSecureContext"), "http://localhost is not secure"
        assert d.execute_script(
            "return typeof PublicKeyCredential.parseCreationOptionsFromJSON === 'function'"
        ), "this Chromium lacks the WebAuthn JSON methods"
        authenticator = s.add_virtual_authenticator(d)

        challenge = os.urandom(32)
        created = s.webauthn_create(d, {
            "rp": {"id": "localhost", "name": "authd"},
            "user": {"id": s.b64url(user_id), "name": "alice@example.com", "displayName": "Alice"},
            "challenge": s.b64url(challenge),
            "pubKeyCredParams": [{"type": "public-key", "alg": -8},
                                 {"type": "public-key", "alg": -7},
                                 {"type": "public-key", "alg": -257}],
            "timeout": 60000,
            "attestation": "none",
            "authenticatorSelection": {"residentKey": "required", "requireResidentKey": True,
                                       "userVerification": "required"},
        })
        assert "error" not in created, created
        assert created["type"] == "public-key" and created["id"] == created["rawId"], created
        client = json.loads(s.b64url_decode(created["response"]["clientDataJSON"]))
        assert client["type"] == "webauthn.create", client
        assert client["origin"] == origin, client
        assert client["challenge"] == s.b64url(challenge), client
        flags = s.authenticator_flags(created["response"]["authenticatorData"])
        assert flags["up"] and flags["uv"] and flags["at"], flags
        assert created["clientExtensionResults"].get("credProps", {}).get("rk") in (None, True)

        stored = s.virtual_credentials(d, authenticator)
        assert len(stored) == 1 and stored[0]["isResidentCredential"], stored
        assert stored[0]["rpId"] == "localhost", stored

        challenge = os.urandom(32)
        got = s.webauthn_get(d, {
            "challenge": s.b64url(challenge),
            "rpId": "localhost",
            "allowCredentials": [],
            "userVerification": "required",
            "timeout": 60000,
        })
        assert "error" not in got, got
        assert got["id"] == created["id"], (got, created)
        assert got["response"]["userHandle"] == s.b64url(user_id), got
        client = json.loads(s.b64url_decode(got["response"]["clientDataJSON"]))
        assert client["type"] == "webauthn.get" and client["challenge"] == s.b64url(challenge)
        flags = s.authenticator_flags(got["response"]["authenticatorData"])
        assert flags["up"] and flags["uv"], flags

        # Without user verification the ceremony fails (the helper that passkey tests use to
        # show authd refuses an unverified assertion needs a soft authenticator instead).
        s.set_user_verified(d, authenticator, False)
        refused = s.webauthn_get(d, {"challenge": s.b64url(os.urandom(32)), "rpId": "localhost",
                                     "allowCredentials": [], "userVerification": "required"})
        assert "error" in refused, refused
        s.remove_virtual_authenticator(d, authenticator)


if __name__ == "__main__":
    s.run_tests(globals())
