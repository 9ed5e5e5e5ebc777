"""Helpers for authd's real-browser tests (`.ci/browser/*_test.py`, run by `.ci/browser.sh`).

Everything a test needs, with nothing but Debian's `python3`, `python3-selenium`, `chromium` and
`chromium-driver` (installed by `.ci/browser/install.sh`):

- `Authd`: a throwaway `authd serve` (the debug binary) on a free loopback port, with a temporary
  SQLite database, the landing pages on, and the `file` mail transport writing `.eml` files into a
  temporary directory; `api()` calls it over HTTP, `wait_for_link()` reads its mail.
- `chromium()`: headless Chromium through chromedriver, one fresh profile per call.
- `add_virtual_authenticator()` / `virtual_credentials()`: a virtual WebAuthn authenticator
  through the DevTools protocol's WebAuthn domain (CTAP2, resident keys, user verification), for
  `navigator.credentials.create()` / `get()` in headless Chromium.
- `StaticSite`: serves a few files (a test's own page) on `http://localhost:<port>`.
- `run_tests()`: runs a module's `test_*` functions, one line each, exit status 1 on a failure.

`AUTHD_BROWSER_STUB=1` (`.ci/browser.sh --stub`) makes the page tests talk to the stub API of
`stub_api.py` instead of authd's real reset, verification and email-change routes.
"""

import base64
import contextlib
import email
import email.policy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("AUTHD_BIN", os.path.join(ROOT, "target", "debug", "authd"))
STUB = os.environ.get("AUTHD_BROWSER_STUB") == "1"

# A password that meets authd's default policy, and one that does not.
PASSWORD = "Old-password-1"
NEW_PASSWORD = "Brand-new-pass-7"
WEAK_PASSWORD = "short"


def free_port():
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Reply:
    """An HTTP answer: `status`, `headers` (lower-case names) and `body` (parsed JSON or None)."""

    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.raw = raw
        try:
            self.body = json.loads(raw) if raw else None
        except ValueError:
            self.body = None

    def __repr__(self):
        return f"<{self.status} {self.raw[:300]!r}>"


def http(method, url, body=None, headers=None, timeout=30):
    """One request without cookies or redirects; `body` (a dict) is sent as JSON."""
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, dict(e.headers), e.read())


class Authd:
    """`authd serve` from `BIN` on a free loopback port, in a temporary directory (SQLite database,
    `file` mail transport into `<dir>/mail`, landing pages on, no rate limits, bcrypt cost 10).
    `env` adds or overrides `AUTHD_*` variables. Use as a context manager."""

    def __init__(self, env=None):
        self.extra_env = dict(env or {})
        self.dir = tempfile.mkdtemp(prefix="authd-browser.")
        self.mail_dir = os.path.join(self.dir, "mail")
        self.proc = None
        self.port = None

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        # The port is chosen before the start (email.link_base must name it); another process
        # may take it meanwhile, so a start that fails to bind is tried again on another port.
        for _ in range(5):
            self.port = free_port()
            if self._start():
                return self
        raise RuntimeError(f"authd did not start; its log:\n{self.log()}")

    def __exit__(self, *exc):
        self.stop()

    def _start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHD_")}
        env.update(
            {
                "AUTHD_SERVER__BIND": f"127.0.0.1:{self.port}",
                "AUTHD_DATABASE__URL": f"sqlite://{self.dir}/authd.db",
                "AUTHD_PAGES__ENABLED": "true",
                "AUTHD_EMAIL__TRANSPORT": "file",
                "AUTHD_EMAIL__FILE_DIR": self.mail_dir,
                "AUTHD_EMAIL__LINK_BASE": self.base,
                "AUTHD_EMAIL__FROM": "authd <authd@example.com>",
                "AUTHD_RATE_LIMIT__ENABLED": "false",
                "AUTHD_PASSWORD__BCRYPT_COST": "10",
                "AUTHD_COOKIE__SECURE": "false",
                "AUTHD_LOG__LEVEL": "warn,authd::cli::serve=info",
            }
        )
        env.update(self.extra_env)
        self.log_path = os.path.join(self.dir, "authd.log")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [BIN, "serve"], cwd=self.dir, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if http("GET", self.base + "/healthz", timeout=2).status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        self.stop(keep_dir=True)
        return False

    def log(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return "(no log)"

    def stop(self, keep_dir=False):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def api(self, method, path, body=None, headers=None):
        return http(method, self.base + path, body, headers)

    def register(self, address, password=PASSWORD):
        r = self.api("POST", "/api/auth/register", {"email": address, "password": password})
        assert r.status in (201, 202), f"register {address}: {r}"
        return r

    def login(self, address, password):
        return self.api("POST", "/api/auth/login", {"email": address, "password": password})

    def mails(self):
        """Every delivered message (`email.message.EmailMessage`), oldest first."""
        if not os.path.isdir(self.mail_dir):
            return []
        names = sorted(
            (n for n in os.listdir(self.mail_dir) if n.endswith(".eml")),
            key=lambda n: os.stat(os.path.join(self.mail_dir, n)).st_mtime_ns,
        )
        out = []
        for n in names:
            with open(os.path.join(self.mail_dir, n), "rb") as f:
                out.append(email.message_from_binary_file(f, policy=email.policy.default))
        return out

    def wait_for_link(self, to, path, timeout=60, seen=()):
        """The first link `<email.link_base><path>#token=...` in a mail to `to` that is not in
        `seen`, waiting for the outbox worker to deliver it."""
        pattern = re.compile(re.escape(self.base + path) + r"#token=[A-Za-z0-9_\-]+")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in self.mails():
                if to.lower() not in str(msg.get("To", "")).lower():
                    continue
                for link in pattern.findall(mail_text(msg)):
                    if link not in seen:
                        return link
            time.sleep(0.2)
        raise AssertionError(
            f"no mail to {to} with a {path} link within {timeout}s; mails: "
            f"{[(m.get('To'), m.get('Subject')) for m in self.mails()]}; log:\n{self.log()}"
        )


def mail_text(msg):
    """The decoded text of every text part of `msg`."""
    parts = []
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            parts.append(part.get_content())
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# The browser.

def chromium():
    """Headless Chromium (Debian's `chromium`, through `chromedriver`) with a fresh profile. The
    caller quits it (`with contextlib.closing(...)`, or `driver.quit()`)."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="authd-chromium.")
    for arg in (
        "--headless=new",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--window-size=1024,768",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    if os.geteuid() == 0:
        opts.add_argument("--no-sandbox")  # Chromium refuses to run as root with its sandbox.
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(30)
    quit_ = driver.quit

    def quit_and_clean():
        try:
            quit_()
        finally:
            shutil.rmtree(profile, ignore_errors=True)

    driver.quit = quit_and_clean
    return driver


@contextlib.contextmanager
def browser():
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


def console_problems(driver):
    """Console messages of level SEVERE (script errors, CSP violations, failed loads) since
    the last call (reading the log empties it)."""
    # Chromium logs every 4xx answer of a fetch too: an API error the page expects is not one.
    expected = re.compile(r"/api/auth/\S* - Failed to load resource: the server responded "
                          r"with a status of 4\d\d")
    return [e["message"] for e in driver.get_log("browser")
            if e.get("level") == "SEVERE" and not expected.search(e["message"])]


def assert_clean_console(driver):
    problems = console_problems(driver)
    assert problems == [], f"console errors: {problems}"


def wait_until(driver, what, condition, timeout=15):
    """Waits for `condition(driver)` to be truthy; fails naming `what` and the page's status."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except Exception:
        raise AssertionError(f"timed out waiting for {what}; status: {page_status(driver)}")


def page_status(driver):
    """(class, text) of a landing page's live region, ('', '') when it is hidden."""
    el = driver.find_element(By.ID, "status")
    if not el.is_displayed():
        return ("", "")
    return (el.get_attribute("class") or "", el.text)


def wait_status(driver, kind, contains, timeout=15):
    """Waits until the live region shows a `kind` message holding `contains`; returns the text."""
    def shown(d):
        cls, text = page_status(d)
        return text if cls == kind and contains.lower() in text.lower() else None
    return wait_until(driver, f"a {kind} message with {contains!r}", shown, timeout)


def focused_id(driver):
    return driver.execute_script("return document.activeElement && document.activeElement.id")


def assert_accessible_form(driver):
    """Every visible input has a `<label for>`, and the live region is `aria-live`."""
    status = driver.find_element(By.ID, "status")
    assert status.get_attribute("aria-live") == "polite", "status is not a live region"
    assert status.get_attribute("role") == "status"
    for field in driver.find_elements(By.CSS_SELECTOR, "input"):
        if not field.is_displayed():
            continue
        fid = field.get_attribute("id")
        labels = driver.find_elements(By.CSS_SELECTOR, f'label[for="{fid}"]')
        assert labels and labels[0].text.strip(), f"input #{fid} has no label"


def open_link(driver, link):
    """Opens a mailed link and checks what every landing page does on load: the token is gone
    from the address bar, and the form is accessible."""
    # From a blank page: the same page with another fragment would be a same-document
    # navigation, and the page would not load again (a mail client opens a new tab).
    driver.get("about:blank")
    driver.get(link)
    wait_until(driver, "the page's script", lambda d: d.execute_script(
        "return document.readyState === 'complete'"))
    current = driver.current_url
    assert "#" not in current and "token" not in current, f"token left in the URL: {current}"
    assert_accessible_form(driver)


def fill(driver, element_id, value):
    el = driver.find_element(By.ID, element_id)
    el.clear()
    el.send_keys(value)


def click(driver, element_id):
    driver.find_element(By.ID, element_id).click()


# ---------------------------------------------------------------------------------------------
# WebAuthn: a virtual authenticator through the DevTools protocol (Chromium only).

def add_virtual_authenticator(driver, resident_key=True, user_verification=True,
                              user_verified=True, transport="internal"):
    """Enables the DevTools WebAuthn domain and adds a virtual CTAP2 authenticator (platform,
    `transport` "internal"), with resident keys (discoverable credentials) and user
    verification, that answers every ceremony at once (presence and verification simulated).
    Returns its id, for `virtual_credentials()` and `remove_virtual_authenticator()`."""
    driver.execute_cdp_cmd("WebAuthn.enable", {"enableUI": False})
    r = driver.execute_cdp_cmd(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "ctap2Version": "ctap2_1",
                "transport": transport,
                "hasResidentKey": resident_key,
                "hasUserVerification": user_verification,
                "isUserVerified": user_verified,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return r["authenticatorId"]


def virtual_credentials(driver, authenticator_id):
    """The credentials the virtual authenticator holds: dicts with `credentialId` (base64),
    `isResidentCredential`, `rpId`, `userHandle` (base64), `signCount`, `privateKey`."""
    return driver.execute_cdp_cmd(
        "WebAuthn.getCredentials", {"authenticatorId": authenticator_id}
    )["credentials"]


def set_user_verified(driver, authenticator_id, verified):
    """Whether the next ceremonies pass user verification (a wrong fingerprint when False)."""
    driver.execute_cdp_cmd(
        "WebAuthn.setUserVerified",
        {"authenticatorId": authenticator_id, "isUserVerified": verified},
    )


def remove_virtual_authenticator(driver, authenticator_id):
    driver.execute_cdp_cmd(
        "WebAuthn.removeVirtualAuthenticator", {"authenticatorId": authenticator_id}
    )


# The browser's own JSON forms (WebAuthn Level 3): options in as
# `PublicKeyCredentialCreationOptionsJSON` / `...RequestOptionsJSON` (binary fields base64url),
# credential out as `RegistrationResponseJSON` / `AuthenticationResponseJSON` (`toJSON()`), the
# shapes authd's passkey routes send and accept. Errors come back as {"error": "<name>: <msg>"}.
_CEREMONY_JS = """
const [kind, options, done] = arguments;
(async () => {
  const parse = kind === "create" ? PublicKeyCredential.parseCreationOptionsFromJSON
                                  : PublicKeyCredential.parseRequestOptionsFromJSON;
  const publicKey = parse(options);
  const credential = await navigator.credentials[kind]({publicKey});
  return credential.toJSON();
})().then(done, (e) => done({error: e.name + ": " + e.message}));
"""


def webauthn_create(driver, options_json):
    """`navigator.credentials.create()` on the current page with `options_json` (a
    `PublicKeyCredentialCreationOptionsJSON` dict, e.g. the `publicKey` of authd's register
    options); returns the `RegistrationResponseJSON` dict, or {"error": ...}."""
    return driver.execute_async_script(_CEREMONY_JS, "create", options_json)


def webauthn_get(driver, options_json):
    """`navigator.credentials.get()` on the current page with `options_json` (a
    `PublicKeyCredentialRequestOptionsJSON` dict; an empty `allowCredentials` asks for a
    discoverable credential); returns the `AuthenticationResponseJSON` dict, or {"error": ...}."""
    return driver.execute_async_script(_CEREMONY_JS, "get", options_json)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def authenticator_flags(authenticator_data_b64url):
    """The flags byte of authenticator data (WebAuthn 6.1) as a dict: up (user present), uv
    (user verified), be/bs (backup eligible/state), at (attested credential data)."""
    flags = b64url_decode(authenticator_data_b64url)[32]
    return {"up": bool(flags & 0x01), "uv": bool(flags & 0x04), "be": bool(flags & 0x08),
            "bs": bool(flags & 0x10), "at": bool(flags & 0x40)}


class StaticSite:
    """Serves `files` ({"/path": (content_type, text)}) on 127.0.0.1 at a free port, to be
    opened as `http://localhost:<port>/...` (a secure context, as WebAuthn needs, without TLS).
    Use as a context manager; `url(path)` gives the address."""

    def __init__(self, files):
        self.files = {p: (t, c.encode() if isinstance(c, str) else c) for p, (t, c) in files.items()}
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                found = site.files.get(self.path.split("?", 1)[0])
                if found is None:
                    self.send_error(404)
                    return
                content_type, body = found
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path="/"):
        return f"http://localhost:{self.port}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------------------
# Running a test file.

def real_only(fn):
    """Marks a test that needs authd's real routes (run without `--stub`)."""
    fn.mode = "real"
    return fn


def stub_only(fn):
    """Marks a test that talks to `stub_api.StubApi` (run with `--stub`)."""
    fn.mode = "stub"
    return fn


def run_tests(namespace):
    """Runs the module's `test_*` functions of this mode (unmarked ones run in both), in file
    order, printing one line each; exits 1 when one failed. Each test sets up what it needs."""
    wanted = "stub" if STUB else "real"
    tests = [(n, f) for n, f in namespace.items()
             if n.startswith("test_") and callable(f) and getattr(f, "mode", wanted) == wanted]
    mode = "stub API" if STUB else "real API"
    module = os.path.basename(namespace.get("__file__", "?"))
    failed = 0
    for name, fn in tests:
        start = time.monotonic()
        try:
            fn()
        except Exception:
            failed += 1
            print(f"FAIL {module}::{name} ({mode}, {time.monotonic() - start:.1f}s)", flush=True)
            traceback.print_exc()
        else:
            print(f"ok   {module}::{name} ({mode}, {time.monotonic() - start:.1f}s)", flush=True)
    sys.exit(1 if failed else 0)
