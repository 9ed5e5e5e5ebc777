"""The passkey example page (examples/passkeys/index.html), served by the test (not authd),
registers a passkey and logs in with it through authd's real API in headless Chromium with a
virtual authenticator (CTAP2, resident keys, user verification): the options authd sends go
through the browser's own `parseCreationOptionsFromJSON` / `parseRequestOptionsFromJSON`, and
authd accepts what `toJSON()` makes of the credentials."""

import os

import support as s

PAGE = os.path.join(s.ROOT, "examples", "passkeys", "index.html")


@s.real_only
def test_register_a_passkey_and_log_in_with_it():
    with open(PAGE, encoding="utf-8") as f:
        page = f.read()
    with s.StaticSite({"/": ("text/html; charset=utf-8", page)}) as site:
        origin = site.url("").rstrip("/")
        env = {
            "AUTHD_WEBAUTHN__RP_ID": "localhost",
            "AUTHD_WEBAUTHN__ORIGINS": origin,
            "AUTHD_SERVER__CORS_ORIGINS": origin,
        }
        with s.Authd(env) as authd, s.browser() as d:
            address = "passkey-user@example.com"
            authd.register(address)
            d.get(site.url("/?api=" + authd.base))
            authenticator = s.add_virtual_authenticator(d)

            s.fill(d, "email", address)
            s.fill(d, "password", s.PASSWORD)
            s.click(d, "register")
            s.wait_until(d, "the registration's outcome",
                         lambda d: d.find_element(s.By.ID, "status").text)
            text = d.find_element(s.By.ID, "status").text
            assert text.startswith("passkey registered"), (text, authd.log())
            stored = s.virtual_credentials(d, authenticator)
            assert len(stored) == 1 and stored[0]["isResidentCredential"], stored

            d.execute_script("document.getElementById('status').textContent = ''")
            s.click(d, "login")
            s.wait_until(d, "the login's outcome",
                         lambda d: d.find_element(s.By.ID, "status").text)
            text = d.find_element(s.By.ID, "status").text
            assert text == "logged in as " + address, (text, authd.log())

            # Without user verification the browser cannot produce an assertion authd takes.
            s.set_user_verified(d, authenticator, False)
            d.execute_script("document.getElementById('status').textContent = ''")
            s.click(d, "login")
            s.wait_until(d, "the refused login",
                         lambda d: d.find_element(s.By.ID, "status").text)
            text = d.find_element(s.By.ID, "status").text
            assert not text.startswith("logged in"), text
            s.remove_virtual_authenticator(d, authenticator)


if __name__ == "__main__":
    s.run_tests(globals())
