//! The OpenAPI document: served at /openapi.json, identical to the committed openapi/openapi.json,
//! covering every route the server has; Swagger UI served offline at /docs.
mod common;
use common::*;

const REGENERATE: &str = "cargo run -- openapi > openapi/openapi.json";

#[test]
fn committed_document_is_current() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json is committed");
    let generated =
        icm_fhir::http::openapi::committed_text(icm_fhir::fhir::registry::Registry::get());
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date with the code; regenerate it with: {REGENERATE}"
    );
}

#[test]
fn served_document_matches_and_covers_routes() {
    let s = start(Backend::Sqlite).unwrap();
    let r = s.get("/openapi.json");
    r.expect(200);
    let served = r.json();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        served, committed,
        "served /openapi.json differs from openapi/openapi.json; run {REGENERATE}"
    );
    assert_eq!(served["info"]["title"], "icm-fhir");
    let paths = served["paths"].as_object().unwrap();
    // Every supported type has its instance and type paths, with the interactions the server serves.
    let cs = s.get("metadata").json();
    for res in cs["rest"][0]["resource"].as_array().unwrap() {
        let ty = res["type"].as_str().unwrap();
        let has = |code: &str| {
            res["interaction"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["code"] == code)
        };
        let inst = &paths[&format!("/fhir/{ty}/{{id}}")];
        assert!(inst.get("get").is_some() && has("read"), "{ty}");
        // Documented exactly when advertised (AuditEvent: read side only).
        assert_eq!(inst.get("put").is_some(), has("update"), "{ty}");
        assert_eq!(inst.get("delete").is_some(), has("delete"), "{ty}");
        assert_eq!(
            paths[&format!("/fhir/{ty}")].get("post").is_some(),
            has("create"),
            "{ty}"
        );
        assert!(has("update") || ty == "AuditEvent", "{ty}");
        assert!(
            paths.contains_key(&format!("/fhir/{ty}/{{id}}/_history/{{vid}}")),
            "{ty}"
        );
        assert!(served["components"]["schemas"].get(ty).is_some(), "{ty}");
    }
    // Each documented GET path without parameters answers (no phantom routes).
    for p in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/fhir/metadata",
        "/fhir/_history",
    ] {
        assert!(paths.contains_key(p), "{p}");
        s.get(p).expect(200);
    }
    assert_eq!(
        served["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let task = &served["components"]["schemas"]["Task"]["properties"];
    assert!(task.get("status").is_some() && task.get("for").is_some());
    let obs = &served["components"]["schemas"]["Observation"]["properties"];
    assert!(
        obs.get("valueQuantity").is_some() && obs.get("valueString").is_some(),
        "choice types expanded"
    );
}

#[test]
fn swagger_ui_is_served_offline() {
    let s = start(Backend::Sqlite).unwrap();
    let r = s.get("/docs/");
    r.expect(200);
    assert!(
        r.body.contains("swagger-ui"),
        "{}",
        &r.body[..r.body.len().min(400)]
    );
    assert!(!r.body.contains("cdn."), "no CDN assets");
    // The API's strict CSP (default-src 'none') would stop the page's own scripts.
    let csp = r.header("content-security-policy").unwrap_or("");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let init = s.get("/docs/swagger-initializer.js");
    init.expect(200);
    assert!(init.body.contains("/docs/openapi.json"), "{}", init.body);
    s.get("/docs/swagger-ui-bundle.js").expect(200);
    s.get("/docs/swagger-ui.css").expect(200);
}

/// Swagger UI loads a lighter document: the same paths and operations, resource schemas down to
/// their top-level elements, no data type or backbone components (the full one is for generators).
#[test]
fn swagger_ui_document_has_the_same_paths_and_shallow_schemas() {
    let s = start(Backend::Sqlite).unwrap();
    let full = s.get("/openapi.json");
    full.expect(200);
    let light = s.get("/docs/openapi.json");
    light.expect(200);
    assert!(
        light.body.len() * 2 < full.body.len(),
        "light {} bytes, full {} bytes",
        light.body.len(),
        full.body.len()
    );
    let (full, light) = (full.json(), light.json());
    assert_eq!(light["paths"], full["paths"], "same paths and operations");
    assert!(light["paths"].get("/docs/openapi.json").is_some());
    let ls = light["components"]["schemas"].as_object().unwrap();
    let fs = full["components"]["schemas"].as_object().unwrap();
    for name in ["HumanName", "Patient_Contact", "Resource"] {
        assert!(fs.contains_key(name) && !ls.contains_key(name), "{name}");
    }
    // Every schema a path refers to is there, as an object with the type's top-level elements.
    let paths_text = light["paths"].to_string();
    for name in fs.keys() {
        if paths_text.contains(&format!("\"#/components/schemas/{name}\"")) {
            assert!(ls.contains_key(name), "{name}");
        }
    }
    let p = &ls["Patient"]["properties"];
    assert_eq!(p["resourceType"]["const"], "Patient");
    assert_eq!(p["name"]["items"]["type"], "object");
    assert_eq!(
        full["components"]["schemas"]["Patient"]["properties"]["name"]["items"]["$ref"],
        "#/components/schemas/HumanName"
    );
}
