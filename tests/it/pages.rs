//! The landing pages of the mailed links (`pages.enabled`): 404 while off; when on, the three
//! pages and their script and style sheet with their media types, their own CSP (no inline
//! script or style, nothing from another origin), `Referrer-Policy: no-referrer` and
//! `Cache-Control: no-store`; the markup loads only those assets and labels every field. What
//! the pages do in a browser is tested in headless Chromium (`.ci/browser/`).

use crate::support::*;

const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                        connect-src 'self'; form-action 'none'; frame-ancestors 'none'; \
                        base-uri 'none'";
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const PAGES: [&str; 3] = ["/reset-password", "/verify-email", "/confirm-email-change"];
const ASSETS: [(&str, &str); 5] = [
    ("/reset-password", HTML),
    ("/verify-email", HTML),
    ("/confirm-email-change", HTML),
    ("/_authd/pages.js", "text/javascript; charset=utf-8"),
    ("/_authd/pages.css", "text/css; charset=utf-8"),
];

fn pages_on(extra: &[(&str, &str)]) -> TestServer {
    let mut vars = vec![("AUTHD_PAGES__ENABLED", "true")];
    vars.extend_from_slice(extra);
    TestServer::with(&vars)
}

/// The values of every `name="..."` attribute in `html`.
fn attribute_values<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let needle = format!(" {name}=\"");
    html.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            &rest[..rest.find('"').expect("a closed attribute")]
        })
        .collect()
}

#[test]
fn pages_are_not_served_by_default() {
    let s = TestServer::start();
    for (path, _) in ASSETS {
        let r = send(s.get(path));
        r.assert_error(404, "NOT_FOUND");
        assert_eq!(r.header("content-security-policy"), Some(API_CSP), "{path}");
        // Not 405 either: while off, the path is unknown whatever the method.
        send(s.post(path)).assert_error(404, "NOT_FOUND");
    }
}

#[test]
fn pages_and_assets_are_served_with_their_headers() {
    let s = pages_on(&[]);
    for (path, content_type) in ASSETS {
        let r = send(s.get(path));
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(r.header("content-type"), Some(content_type), "{path}");
        let csp: Vec<_> = r
            .headers
            .get_all("content-security-policy")
            .iter()
            .collect();
        assert_eq!(csp, [PAGE_CSP], "{path}: exactly the page CSP");
        for (name, value) in [
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("cross-origin-resource-policy", "same-origin"),
            ("cross-origin-opener-policy", "same-origin"),
        ] {
            assert_eq!(r.header(name), Some(value), "{name} on {path}");
        }
        assert!(r.header("set-cookie").is_none(), "{path} sets a cookie");
        assert!(!r.text.is_empty(), "{path} is empty");
    }
    // A known page path with another method: 405 naming GET; below a page: 404.
    let r = send(s.post("/reset-password"));
    r.assert_error(405, "METHOD_NOT_ALLOWED");
    assert_eq!(r.header("allow"), Some("GET"));
    send(s.get("/reset-password/x")).assert_error(404, "NOT_FOUND");
    send(s.get("/_authd/other.js")).assert_error(404, "NOT_FOUND");
    // Every other response keeps the API's policy.
    let r = send(s.get("/healthz"));
    assert_eq!(r.header("content-security-policy"), Some(API_CSP));
    send(s.get("/nothing-here")).assert_error(404, "NOT_FOUND");
}

#[test]
fn pages_load_only_their_own_script_and_style_sheet() {
    let s = pages_on(&[]);
    for path in PAGES {
        let html = send(s.get(path)).text;
        let lower = html.to_ascii_lowercase();
        // Nothing inline that the CSP would block, and nothing from another origin.
        assert!(!lower.contains("<style"), "{path}: inline style element");
        assert!(!lower.contains(" style="), "{path}: style attribute");
        assert_eq!(
            attribute_handlers(&lower),
            0,
            "{path}: an inline event handler"
        );
        assert!(!lower.contains("http:") && !lower.contains("https:") && !lower.contains("//"));
        assert_eq!(lower.matches("<script").count(), 1, "{path}: one script");
        assert_eq!(
            attribute_values(&html, "src"),
            ["/_authd/pages.js"],
            "{path}: the script is the served file"
        );
        assert!(lower.contains("<script src=\"/_authd/pages.js\" defer></script>"));
        assert_eq!(
            attribute_values(&html, "href"),
            ["/_authd/pages.css"],
            "{path}"
        );
        // Accessible: a live region for results, a label for every field.
        assert!(
            html.contains("aria-live=\"polite\""),
            "{path}: no live region"
        );
        assert!(html.contains("<html lang=\"en\">"), "{path}: no language");
        for id in attribute_values(&html, "id") {
            if html.contains(&format!("<input id=\"{id}\"")) {
                assert!(
                    html.contains(&format!("<label for=\"{id}\">")),
                    "{path}: input {id} has no label"
                );
            }
        }
    }
    let reset = send(s.get("/reset-password")).text;
    assert_eq!(
        reset.matches("<input ").count(),
        2,
        "new password and its confirmation"
    );
    assert_eq!(reset.matches("autocomplete=\"new-password\"").count(), 2);
    // The script talks only to authd's own API, without cookies, and reads the fragment.
    let js = send(s.get("/_authd/pages.js")).text;
    for needle in [
        "\"/api/auth/password-reset/confirm\"",
        "\"/api/auth/verify-email\"",
        "\"/api/auth/email/confirm\"",
        "window.location.hash",
        "credentials: \"omit\"",
        "\"Content-Type\": \"application/json\"",
    ] {
        assert!(js.contains(needle), "pages.js lacks {needle}");
    }
    for banned in [
        "innerHTML",
        "eval(",
        "http:",
        "https:",
        "localStorage",
        "document.cookie",
    ] {
        assert!(!js.contains(banned), "pages.js uses {banned}");
    }
}

/// How many `on<event>="` attributes `html` holds.
fn attribute_handlers(html: &str) -> usize {
    html.match_indices(" on")
        .filter(|(i, _)| {
            let rest = &html[i + 3..];
            let name_len = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            name_len > 0 && rest[name_len..].starts_with("=\"")
        })
        .count()
}

#[test]
fn the_reset_page_states_the_configured_minimum_length() {
    let s = pages_on(&[("AUTHD_PASSWORD__MIN_LENGTH", "12")]);
    let html = send(s.get("/reset-password")).text;
    assert!(html.contains("At least 12 characters"), "{html}");
    assert!(!html.contains("{min_length}"));
}

#[test]
fn page_requests_are_counted_under_their_route() {
    let s = pages_on(&[]);
    assert_eq!(send(s.get("/verify-email")).status, 200);
    let metrics = send(s.get("/metrics")).text;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("authd_http_requests_total{")
                && l.contains("route=\"/verify-email\"")
                && l.contains("status=\"200\"")),
        "{metrics}"
    );
}
