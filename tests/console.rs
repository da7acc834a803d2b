//! The console (/console): its embedded static files (content types, CSP, offline) and the
//! development sign-in (/auth/dev/…), served only with ICM_DEV_CONSOLE on a loopback bind.
//! The console's screens themselves are checked in headless Chromium by .ci/console-check.
mod common;
use common::auth::*;
use common::*;

fn decode_claims(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn console_files_are_embedded_with_their_types_and_policy() {
    let Some(s) = start(Backend::Sqlite) else {
        return;
    };
    let r = ureq::AgentBuilder::new()
        .redirects(0)
        .build()
        .get(&s.url("/console"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.header("location"), Some("/console/"));
    let r = s.get("/console/");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.body.contains(r#"<script type="module" src="app.js">"#));
    let csp = r.header("content-security-policy").unwrap().to_string();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    // Every module the page loads, and every module they import, is served as JavaScript.
    let mut todo = vec!["app.js".to_string()];
    let mut seen = std::collections::HashSet::new();
    while let Some(f) = todo.pop() {
        if !seen.insert(f.clone()) {
            continue;
        }
        let r = s.get(&format!("/console/{f}"));
        assert_eq!(r.status, 200, "{f}");
        assert_eq!(
            r.header("content-type"),
            Some("text/javascript; charset=utf-8"),
            "{f}"
        );
        for line in r.body.lines().filter(|l| l.starts_with("import ")) {
            let target = line.rsplit_once("from \"./").unwrap().1;
            todo.push(target.trim_end_matches("\";").to_string());
        }
        // Offline: nothing is loaded from another origin.
        assert!(!r.body.contains("https://"), "{f} refers to another origin");
    }
    assert!(seen.len() >= 4, "{seen:?}");
    let r = s.get("/console/style.css");
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    assert!(!r.body.contains("url(http"));
    let r = s.get("/console/favicon.svg");
    assert_eq!(r.header("content-type"), Some("image/svg+xml"));
    assert_eq!(s.get("/console/nope.js").status, 404);
    assert_eq!(s.get("/console/../Cargo.toml").status, 404);
    // The API keeps its own strict policy.
    let r = s.get("/fhir/metadata");
    assert_eq!(
        r.header("content-security-policy"),
        Some("default-src 'none'; frame-ancestors 'none'")
    );
}

fn dev_server(tweak: impl FnOnce(&mut icm_fhir::config::Config)) -> Option<TestServer> {
    start_secure_with(Backend::Sqlite, |c| {
        c.dev_console = "on".into();
        tweak(c);
    })
}

fn practitioner(s: &TestServer, family: &str) -> String {
    let system = mint(&claims("backend", "system/*.cruds", json!({})));
    let r = s.as_token(
        Some(&system),
        "POST",
        "Practitioner",
        Some(&json!({"resourceType": "Practitioner", "name": [{"given": ["Casey"], "family": family}]})),
    );
    r.expect(201);
    r.json()["id"].as_str().unwrap().to_string()
}

fn post_json(s: &TestServer, path: &str, body: &str) -> Resp {
    s.request(
        "POST",
        path,
        &[("Content-Type", "application/json")],
        Some(body),
    )
}

#[test]
fn dev_sign_in_mints_a_short_lived_practitioner_token() {
    let Some(s) = dev_server(|_| {}) else {
        return;
    };
    let id = practitioner(&s, "Manager");
    let r = s.get("/auth/dev/practitioners");
    assert_eq!(r.status, 200, "{}", r.body);
    let list = r.json();
    assert_eq!(list["practitioners"][0]["id"], id.as_str());
    assert_eq!(list["practitioners"][0]["name"], "Casey Manager");

    let r = post_json(
        &s,
        "/auth/dev/token",
        &json!({"practitioner": id}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let t = r.json();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 1800);
    let token = t["access_token"].as_str().unwrap();
    let c = decode_claims(token);
    assert_eq!(c["fhirUser"], format!("Practitioner/{id}"));
    assert_eq!(c["scope"], "user/*.cruds");
    assert_eq!(c["aud"], TEST_AUDIENCE);
    assert_eq!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
        1800
    );
    // The token works on the API: the practitioner's own worklist and record.
    let r = s.as_token(
        Some(token),
        "GET",
        &format!("Practitioner/{id}/$worklist"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Bad requests: not JSON, not an id, an unknown practitioner.
    assert_eq!(post_json(&s, "/auth/dev/token", "nope").status, 400);
    let r = post_json(&s, "/auth/dev/token", r#"{"practitioner": "a/../b"}"#);
    assert_eq!(r.status, 400);
    r.expect_outcome(400, "invalid");
    let r = post_json(&s, "/auth/dev/token", r#"{"practitioner": "no-such-one"}"#);
    assert_eq!(r.status, 404);
    assert_eq!(s.get("/auth/dev/token").status, 405);
}

#[test]
fn dev_sign_in_is_off_by_default() {
    let Some(s) = start_secure(Backend::Sqlite) else {
        return;
    };
    let id = practitioner(&s, "Manager");
    assert_eq!(s.get("/auth/dev/practitioners").status, 404);
    let r = post_json(
        &s,
        "/auth/dev/token",
        &json!({"practitioner": id}).to_string(),
    );
    r.expect_outcome(404, "not-found");
    assert!(!r.body.contains("access_token"));
}

#[test]
fn dev_sign_in_is_refused_on_a_non_loopback_bind() {
    // The flag is on, but the server is configured to listen on every interface.
    let Some(s) = dev_server(|c| c.bind = "0.0.0.0:8080".into()) else {
        return;
    };
    let id = practitioner(&s, "Manager");
    assert_eq!(s.get("/auth/dev/practitioners").status, 404);
    let r = post_json(
        &s,
        "/auth/dev/token",
        &json!({"practitioner": id}).to_string(),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(!r.body.contains("access_token"));
}

#[test]
fn dev_sign_in_is_refused_without_authentication() {
    let Some(s) = start_with(Backend::Sqlite, |c| c.dev_console = "on".into()) else {
        return;
    };
    assert_eq!(s.get("/auth/dev/practitioners").status, 404);
    assert_eq!(
        post_json(&s, "/auth/dev/token", r#"{"practitioner": "x"}"#).status,
        404
    );
}
