"""The email-verification landing page (`/verify-email`) in headless Chromium: with
`email.require_verification`, a registration's mailed link confirms the address and the login
that was 403 `EMAIL_NOT_VERIFIED` then works; against the stub API (`--stub`), the exact request
and the answers to a used or expired link."""

import support as s
from selenium.webdriver.common.by import By
from stub_api import StubApi


@s.real_only
def test_verify_email_from_the_mailed_link():
    address = "verify-browser@example.com"
    with s.Authd({"AUTHD_EMAIL__REQUIRE_VERIFICATION": "true"}) as authd, s.browser() as d:
        r = authd.register(address)
        assert r.status == 202, f"register with verification required: {r}"
        before = authd.login(address, s.PASSWORD)
        assert before.status == 403 and before.body["error"] == "EMAIL_NOT_VERIFIED", before
        link = authd.wait_for_link(address, "/verify-email")

        s.open_link(d, link)
        # Nothing is used up by opening the page: the person confirms.
        assert authd.login(address, s.PASSWORD).status == 403
        s.click(d, "submit")
        s.wait_status(d, "success", address)
        assert s.focused_id(d) == "status"

        after = authd.login(address, s.PASSWORD)
        assert after.status == 200, after
        assert after.body["data"]["user"]["emailVerified"] is True, after

        s.open_link(d, link)
        s.click(d, "submit")
        s.wait_status(d, "error", "does not work any more")
        s.assert_clean_console(d)


@s.stub_only
def test_verify_page_sends_only_the_token():
    with s.Authd() as authd, StubApi(authd.base) as stub, s.browser() as d:
        token = stub.issue("verify", email="someone@example.com")
        s.open_link(d, stub.link("verify", token))
        d.add_cookie({"name": "authd_refresh", "value": "planted", "path": "/"})
        assert s.focused_id(d) == "submit"
        assert stub.posts("verify") == [], "the page sent the token before the button was pressed"
        s.click(d, "submit")
        s.wait_status(d, "success", "someone@example.com is confirmed")
        assert s.focused_id(d) == "status"
        assert not d.find_element(By.ID, "form").is_displayed()
        posts = stub.posts("verify")
        assert [b for b, _ in posts] == [{"token": token}], posts
        assert "cookie" not in posts[0][1], posts[0][1]
        for r in stub.requests:
            assert token not in r["path"] and all(token not in v for v in r["headers"].values()), r

        # The same link again, and an expired one.
        s.open_link(d, stub.link("verify", token))
        s.click(d, "submit")
        s.wait_status(d, "error", "does not work any more")
        s.open_link(d, stub.link("verify", stub.issue("verify", expired=True)))
        s.click(d, "submit")
        s.wait_status(d, "error", "has expired")
        s.assert_clean_console(d)


def test_verify_page_without_a_token():
    with s.Authd() as authd, s.browser() as d:
        d.get(authd.base + "/verify-email#other=1")
        s.wait_status(d, "error", "holds no token")
        assert not d.find_element(By.ID, "form").is_displayed()
        s.assert_clean_console(d)


if __name__ == "__main__":
    s.run_tests(globals())
