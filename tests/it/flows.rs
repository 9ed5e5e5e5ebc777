//! Register, login, profile, refresh rotation, logout: the main paths over HTTP.

use serde_json::json;

use crate::support::*;

#[test]
fn register_login_profile_refresh_logout() {
    let s = TestServer::start();
    let email = unique_email("flow");
    let reg = s.post_json(
        "/api/auth/register",
        json!({"email": email.to_uppercase(), "password": PASSWORD, "name": "  Flow  "}),
    );
    assert_eq!(reg.status, 201, "{}", reg.text);
    let data = &reg.body["data"];
    assert_eq!(data["user"]["email"], email);
    assert_eq!(data["user"]["name"], "Flow");
    assert_eq!(data["user"]["role"], "user");
    assert!(data["user"]["lastLoginAt"].is_null());
    assert!(data["user"].get("passwordHash").is_none() && !reg.text.contains("$2b$"));
    assert_eq!(data["tokenType"], "Bearer");
    assert_eq!(data["expiresIn"], 900);
    let cookie = reg.cookie("authd_refresh").expect("refresh cookie");
    assert_eq!(
        cookie_value(&cookie),
        data["refreshToken"].as_str().unwrap()
    );
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/api/auth",
        "Max-Age=604800",
    ] {
        assert!(cookie.contains(attr), "{attr} missing from {cookie}");
    }

    let login = s.login(&email);
    assert!(login["user"]["lastLoginAt"].is_string());
    let access = login["accessToken"].as_str().unwrap();
    let profile = s.get_auth("/api/auth/profile", access);
    assert_eq!(profile.status, 200);
    assert_eq!(profile.body["data"]["user"]["email"], email);
    assert_eq!(profile.header("cache-control"), Some("no-store"));

    let rotated = s.refresh(login["refreshToken"].as_str().unwrap());
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let new_refresh = rotated.body["data"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_refresh, login["refreshToken"].as_str().unwrap());
    assert!(rotated.cookie("authd_refresh").is_some());

    let out = s.post_json("/api/auth/logout", json!({ "refreshToken": new_refresh }));
    assert_eq!(out.status, 200, "{}", out.text);
    assert!(out.cookie("authd_refresh").unwrap().contains("Max-Age=0"));
    s.refresh(&new_refresh).assert_error(401, "TOKEN_REVOKED");
    let new_access = rotated.body["data"]["accessToken"].as_str().unwrap();
    let after = s.get_auth("/api/auth/profile", new_access);
    after.assert_error(401, "TOKEN_REVOKED");
    assert!(after
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
}
