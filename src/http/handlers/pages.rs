//! HTTP layer: the landing pages of the mailed links (`pages.enabled`). Three plain HTML pages
//! (`/reset-password`, `/verify-email`, `/confirm-email-change`, the default `*_link_path`s of
//! section 10) and their one script and style sheet (`/_authd/pages.js`, `/_authd/pages.css`),
//! embedded in the binary. The pages read the token from the URL fragment and POST it as JSON
//! to `/api/auth/...`; nothing here reads a token or touches a service.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use warp::reply::Response;

const RESET_PASSWORD_HTML: &str = include_str!("../pages/reset-password.html");
const VERIFY_EMAIL_HTML: &str = include_str!("../pages/verify-email.html");
const CONFIRM_EMAIL_CHANGE_HTML: &str = include_str!("../pages/confirm-email-change.html");
const PAGES_JS: &str = include_str!("../pages/pages.js");
const PAGES_CSS: &str = include_str!("../pages/pages.css");

/// The `Content-Security-Policy` of the pages and their assets: scripts, styles and `fetch`
/// only from authd's own origin, no inline script or style, no form submission (the script
/// sends the JSON itself), never framed, no `<base>`.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// One landing page or asset: its path under the server root, its media type and its body.
#[derive(Clone)]
pub struct Asset {
    /// The request path that serves it, e.g. `/reset-password`.
    pub path: &'static str,
    /// Its `Content-Type` (with `charset=utf-8`).
    pub content_type: &'static str,
    /// The rendered body, shared by every response.
    body: Bytes,
}

/// Every landing page and asset, rendered once at start: the reset page names the
/// configured `password.min_length`.
pub fn assets(min_password_length: usize) -> Vec<Asset> {
    let html = "text/html; charset=utf-8";
    let page = |path, content_type, body: String| Asset {
        path,
        content_type,
        body: Bytes::from(body),
    };
    vec![
        page(
            "/reset-password",
            html,
            RESET_PASSWORD_HTML.replace("{min_length}", &min_password_length.to_string()),
        ),
        page("/verify-email", html, VERIFY_EMAIL_HTML.to_string()),
        page(
            "/confirm-email-change",
            html,
            CONFIRM_EMAIL_CHANGE_HTML.to_string(),
        ),
        page(
            "/_authd/pages.js",
            "text/javascript; charset=utf-8",
            PAGES_JS.to_string(),
        ),
        page(
            "/_authd/pages.css",
            "text/css; charset=utf-8",
            PAGES_CSS.to_string(),
        ),
    ]
}

/// `GET` of a page or asset: 200 with its body, `Cache-Control: no-store` (a page is never
/// kept: the next version of authd may pair it with another script), `PAGE_CSP`, and
/// `Cross-Origin-Opener-Policy: same-origin`. The server's `decorate` adds the other security
/// headers and keeps this CSP.
pub fn serve(asset: &Asset) -> Response {
    let mut resp = Response::new(asset.body.clone().into());
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    resp
}
