//! What the client libraries that CI drives (`.ci/clients`: fhirpy, fhir-kit-client) send,
//! checked request by request on both backends, so a regression shows up in `cargo test` and not
//! only in the end-to-end run.
mod common;
use common::*;

fn patient(mrn: &str) -> Value {
    json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": mrn}], "name": [{"family": "Client"}]})
}

fn total(s: &TestServer, q: &str) -> u64 {
    let r = s.get(q);
    r.expect(200);
    r.json()["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("{q}: no total in {}", r.body))
}

// fhirpy's SearchSet.get_or_create() and Resource.create(**criteria) send the criteria in the URL
// of the POST (`POST Patient?identifier=…`), which R4 does not define (conditional create is
// If-None-Exist). Ignoring them made a duplicate Patient on every call: they are a 400 now,
// nothing is written, and the R4 form still works.
backend_tests!(criteria_in_a_create_url_are_refused, |s| {
    s.create(patient("m1"));
    let oo = s
        .post("Patient?identifier=urn:mrn|m1", &patient("m1"))
        .expect_outcome(400, "invalid");
    let msg = oo["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(
        msg.contains("'identifier'") && msg.contains("If-None-Exist"),
        "{msg}"
    );
    assert_eq!(total(s, "Patient?identifier=urn:mrn|m1"), 1, "no duplicate");
    // also when the criteria would not match anything
    s.post("Patient?identifier=urn:mrn|m2", &patient("m2"))
        .expect_outcome(400, "invalid");
    assert_eq!(total(s, "Patient?identifier=urn:mrn|m2"), 0);
    // _format and _pretty are part of every interaction's URL
    s.post("Patient?_format=json&_pretty=true", &patient("m3"))
        .expect(201);
    // the R4 conditional create
    let body = patient("m1").to_string();
    let r = s.request(
        "POST",
        "Patient",
        &[
            ("Content-Type", "application/json"),
            ("If-None-Exist", "identifier=urn:mrn|m1"),
        ],
        Some(&body),
    );
    r.expect(200);
    assert_eq!(total(s, "Patient?identifier=urn:mrn|m1"), 1);
});

// fhirpy's count() sends `_count=0&_totalMethod=count` (an Aidbox parameter): the unknown
// parameter is ignored (reported in an outcome entry) and the total is the real one.
backend_tests!(count_with_fhirpy_total_method_gives_the_total, |s| {
    for m in ["c1", "c2", "c3"] {
        s.create(patient(m));
    }
    let r = s.get("Patient?name=client&_count=0&_totalMethod=count");
    r.expect(200);
    let b = r.json();
    assert_eq!(b["total"], 3, "{b}");
    let entries = b["entry"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1, "only the outcome entry: {b}");
    assert_eq!(entries[0]["search"]["mode"], "outcome");
});

// fhirpy's Resource.refresh() sends If-None-Match with the bare versionId (`1`, not `W/"1"`).
backend_tests!(refresh_with_bare_version_if_none_match, |s| {
    let p = s.create(patient("r1"));
    let id = p["id"].as_str().unwrap();
    let r = s.request(
        "GET",
        &format!("Patient/{id}"),
        &[("If-None-Match", "1")],
        None,
    );
    r.expect(304);
    s.put(&format!("Patient/{id}"), &p).expect(200);
    let r = s.request(
        "GET",
        &format!("Patient/{id}"),
        &[("If-None-Match", "1")],
        None,
    );
    r.expect(200);
    assert_eq!(r.json()["meta"]["versionId"], "2");
});
