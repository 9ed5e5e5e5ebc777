//! Configuration: hiding passwords in database and Redis URLs.

/// Hides a password in a database or Redis URL (`scheme://user:pass@host` ->
/// `scheme://user:***@host`, and a `password=` query parameter), for `check-config`, logs and
/// error messages. The user info ends at the last `@` before the query (or, when no `@`
/// comes before a `?`, at the last `@` of all), so a password holding an unencoded `@`, `/`
/// or `?` is hidden whole.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let before_query = rest.split('?').next().unwrap_or(rest);
    let at = if before_query.contains('@') {
        before_query.rfind('@')
    } else {
        rest.rfind('@')
    };
    let rest = match at.map(|i| rest.split_at(i)) {
        Some((creds, host)) if creds.contains(':') => {
            let user = creds.split(':').next().unwrap_or("");
            format!("{user}:***{host}")
        }
        _ => rest.to_string(),
    };
    let redacted = match rest.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => rest,
    };
    format!("{scheme}://{redacted}")
}
