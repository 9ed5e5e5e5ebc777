"""The password-reset landing page (`/reset-password`) in headless Chromium: a link from a real
mail of authd's `file` transport, a password the policy refuses (the same link then still
works), a new password, and a login with it; against the stub API (`--stub`), the exact request
the page sends and every error it can meet."""

import support as s
from selenium.webdriver.common.by import By
from stub_api import StubApi


@s.real_only
def test_reset_password_from_the_mailed_link():
    address = "reset-browser@example.com"
    with s.Authd() as authd, s.browser() as d:
        authd.register(address)
        r = authd.api("POST", "/api/auth/password-reset/request", {"email": address})
        assert r.status == 202, f"reset request: {r}"
        link = authd.wait_for_link(address, "/reset-password")

        s.open_link(d, link)
        # A password the policy refuses: the error names the rule, and the token is not used up.
        s.fill(d, "new-password", s.WEAK_PASSWORD)
        s.fill(d, "confirm-password", s.WEAK_PASSWORD)
        s.click(d, "submit")
        s.wait_status(d, "error", "does not meet the rules")
        assert s.focused_id(d) == "new-password"
        assert d.find_element(By.ID, "new-password").get_attribute("aria-invalid") == "true"
        assert "at least" in d.find_element(By.ID, "new-password-errors").text

        s.fill(d, "new-password", s.NEW_PASSWORD)
        s.fill(d, "confirm-password", s.NEW_PASSWORD)
        s.click(d, "submit")
        s.wait_status(d, "success", "password has been changed")
        assert s.focused_id(d) == "status"

        assert authd.login(address, s.NEW_PASSWORD).status == 200, "login with the new password"
        old = authd.login(address, s.PASSWORD)
        assert old.status == 401 and old.body["error"] == "INVALID_CREDENTIALS", old

        # The link is used up: opening it again says so.
        s.open_link(d, link)
        s.fill(d, "new-password", "Another-pass-8")
        s.fill(d, "confirm-password", "Another-pass-8")
        s.click(d, "submit")
        s.wait_status(d, "error", "does not work any more")
        assert authd.login(address, s.NEW_PASSWORD).status == 200
        s.assert_clean_console(d)


@s.stub_only
def test_reset_page_sends_only_the_token_and_the_password():
    with s.Authd() as authd, StubApi(authd.base) as stub, s.browser() as d:
        token = stub.issue("reset")
        s.open_link(d, stub.link("reset", token))
        # A cookie for this origin: the page must not send it.
        d.add_cookie({"name": "authd_refresh", "value": "planted", "path": "/"})

        # Two different passwords: nothing is sent, the second field says why.
        s.fill(d, "new-password", s.NEW_PASSWORD)
        s.fill(d, "confirm-password", s.NEW_PASSWORD + "x")
        s.click(d, "submit")
        s.wait_status(d, "error", "not the same")
        assert s.focused_id(d) == "confirm-password"
        assert d.find_element(By.ID, "confirm-password").get_attribute("aria-invalid") == "true"
        assert stub.posts("reset") == []

        # The policy refuses the password: the details are shown and the same link works again.
        s.fill(d, "new-password", s.WEAK_PASSWORD)
        s.fill(d, "confirm-password", s.WEAK_PASSWORD)
        s.click(d, "submit")
        s.wait_status(d, "error", "does not meet the rules")
        assert s.focused_id(d) == "new-password"
        errors = d.find_element(By.ID, "new-password-errors").text
        assert "must be at least 8 characters" in errors and "must contain at least one digit" in errors, errors
        assert not stub.used(token)

        s.fill(d, "new-password", s.NEW_PASSWORD)
        s.fill(d, "confirm-password", s.NEW_PASSWORD)
        s.click(d, "submit")
        s.wait_status(d, "success", "password has been changed")
        assert s.focused_id(d) == "status"
        assert not d.find_element(By.ID, "form").is_displayed()
        assert stub.tokens[token]["newPassword"] == s.NEW_PASSWORD

        posts = stub.posts("reset")
        assert [b for b, _ in posts] == [
            {"token": token, "newPassword": s.WEAK_PASSWORD},
            {"token": token, "newPassword": s.NEW_PASSWORD},
        ], posts
        for _, headers in posts:
            assert headers["content-type"].startswith("application/json"), headers
            assert "cookie" not in headers, f"the page sent a cookie: {headers}"
        # The token travelled only in those bodies: never in a path, a query or a header.
        for r in stub.requests:
            assert token not in r["path"], r
            assert all(token not in v for v in r["headers"].values()), r
        s.assert_clean_console(d)


@s.stub_only
def test_reset_page_explains_dead_links():
    with s.Authd() as authd, StubApi(authd.base) as stub, s.browser() as d:
        for token, expected in [
            (stub.issue("reset", expired=True), "has expired"),
            (stub.issue("verify"), "does not work any more"),  # another purpose's token
            ("unknown-token", "does not work any more"),
        ]:
            s.open_link(d, stub.link("reset", token))
            s.fill(d, "new-password", s.NEW_PASSWORD)
            s.fill(d, "confirm-password", s.NEW_PASSWORD)
            s.click(d, "submit")
            s.wait_status(d, "error", expected)
            assert s.focused_id(d) == "status"
            assert not d.find_element(By.ID, "form").is_displayed()


def test_reset_page_without_a_token():
    with s.Authd() as authd, s.browser() as d:
        d.get(authd.base + "/reset-password")
        s.wait_status(d, "error", "holds no token")
        assert s.focused_id(d) == "status"
        assert not d.find_element(By.ID, "form").is_displayed()
        s.assert_clean_console(d)


if __name__ == "__main__":
    s.run_tests(globals())
