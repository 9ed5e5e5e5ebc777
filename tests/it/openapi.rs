//! The OpenAPI spec, the route table and the live server describe the same API.

use std::collections::BTreeSet;

use crate::support::*;

const SPEC: &str = include_str!("../../docs/openapi.yaml");
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// (METHOD, path) pairs under `paths:` in the spec (2-space path keys, 4-space method keys).
fn spec_routes() -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    let mut in_paths = false;
    let mut path: Option<String> = None;
    for line in SPEC.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if !line.starts_with(' ') {
            in_paths = line.trim_end() == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(key) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) {
            path = Some(
                key.trim_end()
                    .trim_end_matches(':')
                    .trim_matches(['"', '\''])
                    .to_string(),
            );
        } else if let Some(key) = line.strip_prefix("    ").filter(|l| !l.starts_with(' ')) {
            let method = key.trim_end().trim_end_matches(':').to_uppercase();
            if METHODS.contains(&method.as_str()) {
                routes.insert((method, path.clone().expect("a method under a path")));
            }
        }
    }
    routes
}

fn server_routes() -> BTreeSet<(String, String)> {
    authd::http::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect()
}

fn concrete(template: &str) -> String {
    template.replace("{id}", &uuid::Uuid::new_v4().to_string())
}

#[test]
fn the_spec_lists_exactly_the_routes_the_server_has() {
    let spec = spec_routes();
    assert!(spec.len() >= 12, "parsed too few routes: {spec:?}");
    assert_eq!(
        spec,
        server_routes(),
        "docs/openapi.yaml vs authd::http::ROUTES"
    );
}

#[test]
fn every_route_is_served_and_nothing_else_is() {
    // The landing pages are routes only when `pages.enabled` (tests/it/pages.rs: 404 when off).
    // Passkey routes likewise only with `[webauthn]` (tests/it/passkeys.rs: 404 when off).
    let s = TestServer::with(&[
        ("AUTHD_PAGES__ENABLED", "true"),
        ("AUTHD_WEBAUTHN__RP_ID", "localhost"),
        ("AUTHD_WEBAUTHN__ORIGINS", "http://localhost:8080"),
    ]);
    let routes = server_routes();
    let client = &s.client;
    for (method, template) in &routes {
        let url = s.url(&concrete(template));
        let r = send(client.request(method.parse().unwrap(), &url));
        assert!(
            r.status != 404 && r.status != 405,
            "{method} {template} is in ROUTES but the server answered {}: {}",
            r.status,
            r.text
        );
    }
    let paths: BTreeSet<&String> = routes.iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in METHODS {
            if routes.contains(&(method.to_string(), path.clone())) {
                continue;
            }
            let r = send(client.request(method.parse().unwrap(), s.url(&concrete(path))));
            r.assert_error(405, "METHOD_NOT_ALLOWED");
        }
    }
    for other in [
        "/",
        "/api",
        "/api/auth/users",
        "/admin",
        "/openapi.json",
        "/.well-known/openid-configuration",
    ] {
        send(s.get(other)).assert_error(404, "NOT_FOUND");
    }
}

#[test]
fn the_served_spec_is_the_documented_file() {
    let s = TestServer::start();
    let r = send(s.get("/openapi.yaml"));
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/yaml"));
    assert_eq!(r.text, SPEC);
    assert!(SPEC.starts_with("openapi: 3.1") || SPEC.contains("\nopenapi: 3.1"));
}
