//! The REST interactions of FHIR R4 (http://hl7.org/fhir/R4/http.html) on both backends.
mod common;
use common::*;

fn patient() -> Value {
    json!({"resourceType": "Patient", "name": [{"family": "Nguyen", "given": ["Lan"]}], "gender": "female", "birthDate": "1952-03-04"})
}

backend_tests!(create_then_read, |s| {
    let r = s.post("Patient", &patient());
    r.expect(201);
    let body = r.json();
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(body["meta"]["versionId"], "1");
    assert!(body["meta"]["lastUpdated"].as_str().unwrap().ends_with('Z'));
    assert_eq!(r.header("etag"), Some("W/\"1\""));
    assert!(r.header("last-modified").is_some());
    let loc = r.header("location").unwrap();
    assert!(
        loc.ends_with(&format!("/fhir/Patient/{id}/_history/1")),
        "{loc}"
    );
    assert!(loc.starts_with("http://"), "{loc}");
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/fhir+json"));
    let g = s.get(&format!("Patient/{id}"));
    g.expect(200);
    assert_eq!(g.json(), body);
    assert_eq!(g.header("etag"), Some("W/\"1\""));
});

backend_tests!(create_ignores_client_id_and_meta, |s| {
    let mut p = patient();
    p["id"] = json!("client-chosen");
    p["meta"] = json!({"versionId": "77", "lastUpdated": "2000-01-01T00:00:00Z", "tag": [{"system": "urn:t", "code": "x"}]});
    let b = s.create(p);
    assert_ne!(b["id"], "client-chosen");
    assert_eq!(b["meta"]["versionId"], "1");
    assert_ne!(b["meta"]["lastUpdated"], "2000-01-01T00:00:00Z");
    assert_eq!(
        b["meta"]["tag"][0]["code"], "x",
        "client meta elements are kept"
    );
});

backend_tests!(unknown_elements_and_precision_preserved, |s| {
    let text = r#"{"resourceType":"Observation","status":"final","code":{"text":"A1C"},"valueQuantity":{"value":7.10,"unit":"%"},"extension":[{"url":"http://example.org/x","valueDecimal":1.000}],"_status":{"extension":[{"url":"http://example.org/y","valueString":"z"}]}}"#;
    let r = s.request(
        "POST",
        "Observation",
        &[("Content-Type", "application/fhir+json")],
        Some(text),
    );
    r.expect(201);
    assert!(
        r.body
            .contains(r#""valueQuantity":{"value":7.10,"unit":"%"}"#),
        "{}",
        r.body
    );
    assert!(r.body.contains(r#""valueDecimal":1.000"#), "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let g = s.get(&format!("Observation/{id}"));
    assert!(g.body.contains(r#""value":7.10"#), "{}", g.body);
    assert!(g.body.contains(r#""_status":{"extension""#), "{}", g.body);
});

backend_tests!(read_unknown_is_404, |s| {
    s.get("Patient/does-not-exist")
        .expect_outcome(404, "not-found");
    s.get("Patient/bad_id!").expect_outcome(400, "invalid");
});

backend_tests!(update_versions_and_vread, |s| {
    let b = s.create(patient());
    let id = b["id"].as_str().unwrap();
    let mut p2 = b.clone();
    p2["gender"] = json!("other");
    let r = s.put(&format!("Patient/{id}"), &p2);
    r.expect(200);
    assert_eq!(r.json()["meta"]["versionId"], "2");
    assert_eq!(r.header("etag"), Some("W/\"2\""));
    assert!(r.header("location").unwrap().ends_with("/_history/2"));
    let v1 = s.get(&format!("Patient/{id}/_history/1"));
    v1.expect(200);
    assert_eq!(v1.json()["gender"], "female");
    assert_eq!(v1.header("etag"), Some("W/\"1\""));
    let v2 = s.get(&format!("Patient/{id}/_history/2"));
    assert_eq!(v2.json()["gender"], "other");
    s.get(&format!("Patient/{id}/_history/3"))
        .expect_outcome(404, "not-found");
    s.get(&format!("Patient/{id}/_history/abc"))
        .expect_outcome(404, "not-found");
    assert_eq!(s.get(&format!("Patient/{id}")).json()["gender"], "other");
});

backend_tests!(update_if_match, |s| {
    let b = s.create(patient());
    let id = b["id"].as_str().unwrap();
    let path = format!("Patient/{id}");
    let body = b.to_string();
    let ct = ("Content-Type", "application/fhir+json");
    s.request("PUT", &path, &[ct, ("If-Match", "W/\"2\"")], Some(&body))
        .expect_outcome(412, "conflict");
    s.request("PUT", &path, &[ct, ("If-Match", "W/\"1\"")], Some(&body))
        .expect(200);
    s.request("PUT", &path, &[ct, ("If-Match", "W/\"1\"")], Some(&body))
        .expect(412);
    s.request("PUT", &path, &[ct, ("If-Match", "\"2\"")], Some(&body))
        .expect(200);
    s.request("PUT", &path, &[ct, ("If-Match", "garbage")], Some(&body))
        .expect_outcome(400, "invalid");
    assert_eq!(s.get(&path).json()["meta"]["versionId"], "3");
});

backend_tests!(update_as_create_and_id_rules, |s| {
    let mut p = patient();
    p["id"] = json!("mrn-1001");
    let r = s.put("Patient/mrn-1001", &p);
    r.expect(201);
    assert_eq!(r.json()["id"], "mrn-1001");
    assert!(r
        .header("location")
        .unwrap()
        .ends_with("/Patient/mrn-1001/_history/1"));
    // body id differs from URL id
    p["id"] = json!("other");
    s.put("Patient/mrn-1001", &p).expect_outcome(400, "invalid");
    // body without id
    s.put("Patient/mrn-1001", &patient())
        .expect_outcome(400, "invalid");
    // resourceType mismatch
    let mut t =
        json!({"resourceType": "Task", "id": "mrn-1001", "status": "draft", "intent": "order"});
    s.put("Patient/mrn-1001", &t).expect_outcome(400, "invalid");
    t["id"] = json!("t1");
    s.put("Task/t1", &t).expect(201);
});

backend_tests!(delete_then_gone_and_idempotent, |s| {
    let b = s.create(patient());
    let id = b["id"].as_str().unwrap();
    let path = format!("Patient/{id}");
    let d = s.delete(&path);
    assert!(d.status == 200 || d.status == 204, "{}", d.status);
    s.get(&path).expect_outcome(410, "deleted");
    let d2 = s.delete(&path);
    assert!(d2.status == 200 || d2.status == 204);
    let d3 = s.delete("Patient/never-existed");
    assert!(d3.status == 200 || d3.status == 204);
    // the deleted version is in the history; version 1 is still readable
    let h = s.get(&format!("{path}/_history")).json();
    assert_eq!(h["total"], 2);
    assert_eq!(h["entry"][0]["request"]["method"], "DELETE");
    assert!(h["entry"][0].get("resource").is_none());
    s.get(&format!("{path}/_history/1")).expect(200);
    s.get(&format!("{path}/_history/2")).expect(410);
    // re-create by update after delete
    let mut again = b.clone();
    again["gender"] = json!("male");
    let r = s.put(&path, &again);
    r.expect(201);
    assert_eq!(r.json()["meta"]["versionId"], "3");
    s.get(&path).expect(200);
});

backend_tests!(history_levels_and_paging, |s| {
    let a = s.create(patient());
    let aid = a["id"].as_str().unwrap().to_string();
    for g in ["male", "other", "unknown"] {
        let mut u = s.get(&format!("Patient/{aid}")).json();
        u["gender"] = json!(g);
        s.put(&format!("Patient/{aid}"), &u).expect(200);
    }
    s.create(json!({"resourceType": "Task", "status": "requested", "intent": "order"}));
    // instance: newest first
    let h = s.get(&format!("Patient/{aid}/_history")).json();
    assert_eq!(h["type"], "history");
    assert_eq!(h["total"], 4);
    let versions: Vec<&str> = h["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["meta"]["versionId"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["4", "3", "2", "1"]);
    assert_eq!(h["entry"][3]["request"]["method"], "POST");
    assert_eq!(h["entry"][0]["request"]["method"], "PUT");
    assert_eq!(h["entry"][0]["response"]["etag"], "W/\"4\"");
    // type level only has Patients
    let t = s.get("Patient/_history").json();
    assert_eq!(t["entry"].as_array().unwrap().len(), 4);
    // system level has everything: these five versions (newest first) after the shipped
    // conformance resources stored at start (one version each)
    let shipped = icm_fhir::fhir::validate::profiles::RESOURCES.len();
    let sys = s.get("_history?_count=1000").json();
    assert_eq!(sys["entry"].as_array().unwrap().len(), 5 + shipped);
    assert_eq!(sys["entry"][0]["resource"]["resourceType"], "Task");
    assert!(sys["entry"].as_array().unwrap()[1..5]
        .iter()
        .all(|e| e["resource"]["resourceType"] == "Patient"));
    // paging with _count: walk next links and back
    let p1 = s.get(&format!("Patient/{aid}/_history?_count=3")).json();
    assert_eq!(p1["entry"].as_array().unwrap().len(), 3);
    let next = link(&p1, "next").expect("next link");
    assert!(link(&p1, "previous").is_none());
    let p2 = s.get(&next).json();
    let v: Vec<&str> = p2["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["meta"]["versionId"].as_str().unwrap())
        .collect();
    assert_eq!(v, ["1"]);
    assert!(link(&p2, "next").is_none());
    let prev = link(&p2, "previous").expect("previous link");
    let back = s.get(&prev).json();
    let v: Vec<&str> = back["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["meta"]["versionId"].as_str().unwrap())
        .collect();
    assert_eq!(v, ["4", "3", "2"]);
    // _since filters by lastUpdated
    let last = s.get(&format!("Patient/{aid}")).json()["meta"]["lastUpdated"]
        .as_str()
        .unwrap()
        .to_string();
    let since = s
        .get(&format!(
            "Patient/{aid}/_history?_since={}",
            last.replace('+', "%2B")
        ))
        .json();
    assert_eq!(since["entry"].as_array().unwrap().len(), 1);
    s.get("Patient/_history?_since=yesterday")
        .expect_outcome(400, "invalid");
    s.get("_history?_count=abc").expect_outcome(400, "invalid");
    s.get("Patient/nope/_history")
        .expect_outcome(404, "not-found");
});

fn link(bundle: &Value, rel: &str) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == rel)
        .map(|l| l["url"].as_str().unwrap().to_string())
}

backend_tests!(prefer_return, |s| {
    let ct = ("Content-Type", "application/fhir+json");
    let body = patient().to_string();
    let r = s.request(
        "POST",
        "Patient",
        &[ct, ("Prefer", "return=minimal")],
        Some(&body),
    );
    r.expect(201);
    assert!(r.body.is_empty());
    assert!(r.header("location").is_some());
    let r = s.request(
        "POST",
        "Patient",
        &[ct, ("Prefer", "return=OperationOutcome")],
        Some(&body),
    );
    r.expect(201);
    assert_eq!(r.json()["resourceType"], "OperationOutcome");
    let r = s.request(
        "POST",
        "Patient",
        &[ct, ("Prefer", "return=representation")],
        Some(&body),
    );
    assert_eq!(r.json()["resourceType"], "Patient");
});

backend_tests!(format_and_pretty, |s| {
    let b = s.create(patient());
    let id = b["id"].as_str().unwrap();
    let r = s.get(&format!("Patient/{id}?_format=json&_pretty=true"));
    r.expect(200);
    assert!(r.body.contains("\n  \"id\""), "{}", r.body);
    s.get(&format!("Patient/{id}?_format=xml"))
        .expect_outcome(406, "not-supported");
    s.request(
        "GET",
        &format!("Patient/{id}"),
        &[("Accept", "application/fhir+xml")],
        None,
    )
    .expect_outcome(406, "not-supported");
    s.request(
        "GET",
        &format!("Patient/{id}"),
        &[("Accept", "application/json")],
        None,
    )
    .expect(200);
    let nm = s.request(
        "GET",
        &format!("Patient/{id}"),
        &[("If-None-Match", "W/\"1\"")],
        None,
    );
    nm.expect(304);
});

backend_tests!(error_cases, |s| {
    let bad = s.request(
        "POST",
        "Patient",
        &[("Content-Type", "application/fhir+json")],
        Some("{\"resourceType\": \"Patient\",\n \"name\": [}"),
    );
    let oo = bad.expect_outcome(400, "structure");
    assert!(
        oo["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("line 2"),
        "{oo}"
    );
    s.request(
        "POST",
        "Patient",
        &[("Content-Type", "application/fhir+json")],
        Some(""),
    )
    .expect(400);
    s.request(
        "POST",
        "Patient",
        &[("Content-Type", "application/fhir+json")],
        Some("[1,2]"),
    )
    .expect(400);
    s.post(
        "Patient",
        &json!({"resourceType": "Observation", "status": "final"}),
    )
    .expect_outcome(400, "invalid");
    s.post("Patient", &json!({"name": []}))
        .expect_outcome(400, "invalid");
    s.post("Foo", &json!({"resourceType": "Foo"}))
        .expect_outcome(404, "not-found");
    s.get("Foo/1").expect_outcome(404, "not-found");
    s.request(
        "POST",
        "Patient",
        &[("Content-Type", "application/fhir+xml")],
        Some("<Patient/>"),
    )
    .expect_outcome(415, "not-supported");
    s.request("PATCH", "metadata", &[], None)
        .expect_outcome(405, "not-supported");
    s.request(
        "POST",
        "Patient/123",
        &[("Content-Type", "application/fhir+json")],
        Some("{}"),
    )
    .expect_outcome(405, "not-supported");
    s.get("Patient/1/_history/1/extra/segments").expect(404);
});

#[test]
fn body_limit_413() {
    let s = start_with(Backend::Sqlite, |c| c.max_body = 1024).unwrap();
    let mut p = patient();
    p["text"] = json!({"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{}</div>", "x".repeat(4000))});
    s.post("Patient", &p).expect_outcome(413, "too-long");
    s.post("Patient", &patient()).expect(201);
}

#[test]
fn database_down_is_503() {
    // A PostgreSQL URL on a closed port: every FHIR request must answer 503 quickly.
    let mut config = icm_fhir::config::Config::for_database("postgres://postgres@127.0.0.1:1/none");
    config.db_timeout = 1;
    let state = icm_fhir::build_state(config).unwrap();
    state
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let sys = actix_web::rt::System::new();
        let srv = sys
            .block_on(async { icm_fhir::server(state, listener) })
            .unwrap();
        let _ = sys.block_on(srv);
    });
    let started = std::time::Instant::now();
    let r = ureq::get(&format!("http://127.0.0.1:{port}/fhir/Patient/1")).call();
    let resp = match r {
        Err(ureq::Error::Status(503, resp)) => resp,
        other => panic!("expected 503, got {other:?}"),
    };
    assert!(resp.header("retry-after").is_some());
    let body: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    assert_eq!(body["issue"][0]["code"], "transient");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let ready = ureq::get(&format!("http://127.0.0.1:{port}/readyz")).call();
    assert!(matches!(ready, Err(ureq::Error::Status(503, _))));
    let health = ureq::get(&format!("http://127.0.0.1:{port}/healthz"))
        .call()
        .unwrap();
    assert_eq!(health.status(), 200);
}

backend_tests!(capability_statement, |s| {
    let r = s.get("metadata");
    r.expect(200);
    let cs = r.json();
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    assert!(cs["format"].as_array().unwrap().iter().any(|f| f == "json"));
    let res = cs["rest"][0]["resource"].as_array().unwrap();
    assert_eq!(res.len(), 147);
    let task = res.iter().find(|r| r["type"] == "Task").unwrap();
    let codes: Vec<&str> = task["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    for c in [
        "read",
        "vread",
        "update",
        "delete",
        "history-instance",
        "history-type",
        "create",
    ] {
        assert!(codes.contains(&c), "{c} missing");
    }
    s.get("/healthz").expect(200);
    s.get("/readyz").expect(200);
});

backend_tests!(every_registered_type_round_trips, |s| {
    let cs = s.get("metadata").json();
    for r in cs["rest"][0]["resource"].as_array().unwrap() {
        let ty = r["type"].as_str().unwrap();
        if ty == "AuditEvent" {
            // The audit trail is written by the server only (tests/security.rs).
            s.put(
                &format!("{ty}/x1"),
                &json!({"resourceType": ty, "id": "x1"}),
            )
            .expect_outcome(403, "forbidden");
            continue;
        }
        // The smallest instance the R4 definition of the type allows (many types have
        // required elements, so `{"resourceType": ty, "id": "x1"}` alone is invalid).
        let mut body = icm_fhir::fhir::validate::minimal::instance(ty).unwrap();
        body["id"] = json!("x1");
        if ty == "Subscription" {
            // Subscriptions must name criteria and a channel the server serves (tests/subscriptions.rs).
            body["criteria"] = json!("Patient");
            body["channel"] = json!({"type": "websocket"});
        }
        let b = s.put(&format!("{ty}/x1"), &body);
        assert_eq!(b.status, 201, "{ty}: {}", b.body);
        s.get(&format!("{ty}/x1")).expect(200);
    }
});

backend_tests!(concurrent_updates_keep_every_version, |s| {
    let b = s.create(patient());
    let id = b["id"].as_str().unwrap().to_string();
    std::thread::scope(|scope| {
        for i in 0..8 {
            let (s, id, b) = (&s, id.clone(), b.clone());
            scope.spawn(move || {
                let mut p = b.clone();
                p["name"][0]["given"] = json!([format!("n{i}")]);
                s.put(&format!("Patient/{id}"), &p).expect(200);
            });
        }
    });
    let h = s.get(&format!("Patient/{id}/_history?_count=100")).json();
    assert_eq!(h["total"], 9);
    assert_eq!(
        s.get(&format!("Patient/{id}")).json()["meta"]["versionId"],
        "9"
    );
});

backend_tests!(metrics_and_request_id, |s| {
    s.create(patient());
    s.get("Patient/missing").expect(404);
    let r = s.request("GET", "metadata", &[("X-Request-Id", "abc-123")], None);
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    let generated = s.get("metadata");
    assert_eq!(generated.header("x-request-id").unwrap().len(), 36);
    let m = s.get("/metrics");
    m.expect(200);
    assert!(
        m.body.contains(
            "icm_http_requests_total{interaction=\"create\",type=\"Patient\",status=\"201\"} 1"
        ),
        "{}",
        m.body
    );
    assert!(
        m.body.contains(
            "icm_http_requests_total{interaction=\"read\",type=\"Patient\",status=\"404\"} 1"
        ),
        "{}",
        m.body
    );
    assert!(m.body.contains("icm_db_pool_connections{state=\"idle\"}"));
});

backend_tests!(unencoded_plus_in_query, |s| {
    let b = s.create(patient());
    let id = b["id"].as_str().unwrap();
    // testers type these straight into curl or a browser: `+` decodes to a space
    s.get(&format!("Patient/{id}?_format=application/fhir+json"))
        .expect(200);
    let h = s
        .get(&format!(
            "Patient/{id}/_history?_since=2000-01-01T00:00:00+01:00"
        ))
        .json();
    assert_eq!(h["total"], 1);
});
