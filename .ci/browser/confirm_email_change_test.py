"""The email-change landing page (`/confirm-email-change`) in headless Chromium: both mailed
links (the new address's and the old one's) confirmed in the browser, then the new address logs
in and the old one does not; against the stub API (`--stub`), the two answers (`complete`
false, then true), the exact request, and a change refused because the address was taken."""

import support as s
from selenium.webdriver.common.by import By
from stub_api import StubApi


@s.real_only
def test_email_change_from_both_mailed_links():
    old, new = "change-old@example.com", "change-new@example.com"
    with s.Authd() as authd, s.browser() as d:
        access = authd.register(old).body["data"]["accessToken"]
        r = authd.api("POST", "/api/auth/email", {"newEmail": new, "currentPassword": s.PASSWORD},
                      headers={"Authorization": f"Bearer {access}"})
        assert r.status == 202 and r.body["data"]["pendingEmail"] == new, r
        to_new = authd.wait_for_link(new, "/confirm-email-change")
        to_old = authd.wait_for_link(old, "/confirm-email-change")

        s.open_link(d, to_new)
        s.click(d, "submit")
        s.wait_status(d, "success", "completes once the link sent to the other address")
        # Until the last confirmation the old address still logs in.
        assert authd.login(old, s.PASSWORD).status == 200
        assert authd.login(new, s.PASSWORD).status == 401

        s.open_link(d, to_old)
        s.click(d, "submit")
        s.wait_status(d, "success", f"now {new}")
        assert s.focused_id(d) == "status"
        assert authd.login(new, s.PASSWORD).status == 200
        assert authd.login(old, s.PASSWORD).status == 401
        s.assert_clean_console(d)


@s.stub_only
def test_email_change_page_both_steps():
    with s.Authd() as authd, StubApi(authd.base) as stub, s.browser() as d:
        first = stub.issue("change", email="old@example.com", complete=False)
        last = stub.issue("change", email="new@example.com", complete=True)
        s.open_link(d, stub.link("change", first))
        d.add_cookie({"name": "authd_refresh", "value": "planted", "path": "/"})
        s.click(d, "submit")
        s.wait_status(d, "success", "completes once the link sent to the other address")
        s.open_link(d, stub.link("change", last))
        s.click(d, "submit")
        s.wait_status(d, "success", "now new@example.com")
        assert not d.find_element(By.ID, "form").is_displayed()
        posts = stub.posts("change")
        assert [b for b, _ in posts] == [{"token": first}, {"token": last}], posts
        assert all("cookie" not in h for _, h in posts), posts
        for r in stub.requests:
            for t in (first, last):
                assert t not in r["path"] and all(t not in v for v in r["headers"].values()), r
        s.assert_clean_console(d)


@s.stub_only
def test_email_change_page_address_taken_meanwhile():
    """409 `EMAIL_TAKEN` from the confirmation: the stub answers it for a token marked so."""
    with s.Authd() as authd, StubApi(authd.base) as stub, s.browser() as d:
        token = stub.issue("change", taken=True)
        s.open_link(d, stub.link("change", token))
        s.click(d, "submit")
        s.wait_status(d, "error", "another account uses that address")
        assert s.focused_id(d) == "status"
        assert not d.find_element(By.ID, "form").is_displayed()
        s.assert_clean_console(d)


if __name__ == "__main__":
    s.run_tests(globals())
