//! The Bundle rules (bdl-*, fullUrl form and agreement, single link relations, references
//! inside a document) on every door: a stored Bundle (create), `$validate`, and transaction /
//! batch processing — on both backends, each invalid case pinned to its path.
mod common;
use common::*;

const P1: &str = "urn:uuid:0b6f3a52-8d0e-4c4e-9a52-1f0e6a7d0001";
const C1: &str = "urn:uuid:0b6f3a52-8d0e-4c4e-9a52-1f0e6a7d0002";

fn document() -> Value {
    json!({"resourceType": "Bundle", "type": "document",
    "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0b6f3a52-8d0e-4c4e-9a52-1f0e6a7d0009"},
    "timestamp": "2026-11-30T10:00:00Z",
    "entry": [
        {"fullUrl": C1, "resource": {"resourceType": "Composition", "status": "final",
            "type": {"coding": [{"system": "http://loinc.org", "code": "18842-5"}]},
            "subject": {"reference": P1}, "date": "2026-11-30", "title": "Discharge summary",
            "author": [{"reference": P1}]}},
        {"fullUrl": P1, "resource": {"resourceType": "Patient", "name": [{"family": "Doe"}]}}
    ]})
}

/// The issues of a 422 (or a $validate outcome) as (expression, diagnostics) pairs.
fn issues(v: &Value) -> Vec<(String, String)> {
    v["issue"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["severity"] == "error")
        .map(|i| {
            (
                i["expression"][0].as_str().unwrap_or_default().to_string(),
                i["diagnostics"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[track_caller]
fn rejects(s: &TestServer, b: &Value, path: &str, words: &str) {
    let r = s.post("Bundle", b);
    assert_eq!(r.status, 422, "{}", r.body);
    let found = issues(&r.json());
    assert!(
        found.iter().any(|(p, d)| p == path && d.contains(words)),
        "expected '{words}' at {path}, got {found:?}"
    );
    // $validate reports the same problem.
    let v = s.post("Bundle/$validate", b);
    v.expect(200);
    assert!(issues(&v.json())
        .iter()
        .any(|(p, d)| p == path && d.contains(words)));
}

backend_tests!(document_rules, |s| {
    s.post("Bundle", &document()).expect(201);
    let v = s.post("Bundle/$validate", &document());
    v.expect(200);
    assert!(issues(&v.json()).is_empty(), "{}", v.body);

    let mut b = document();
    b["identifier"] = json!({"value": "x"});
    rejects(s, &b, "Bundle.identifier", "bdl-9");
    let mut b = document();
    b.as_object_mut().unwrap().remove("timestamp");
    rejects(s, &b, "Bundle.timestamp", "bdl-10");
    let mut b = document();
    b["entry"].as_array_mut().unwrap().reverse();
    rejects(s, &b, "Bundle.entry[0]", "bdl-11");
    // A reference that resolves to no entry of the document.
    let mut b = document();
    b["entry"][0]["resource"]["author"][0]["reference"] = json!("Practitioner/nowhere");
    rejects(
        s,
        &b,
        "Bundle.entry[0].resource.author[0].reference",
        "does not resolve",
    );
    let mut b = document();
    b["entry"][0]["resource"]["subject"]["reference"] =
        json!("urn:uuid:0b6f3a52-8d0e-4c4e-9a52-1f0e6a7d0077");
    rejects(
        s,
        &b,
        "Bundle.entry[0].resource.subject.reference",
        "does not resolve",
    );
    // Type/id references resolve against the entries' ids.
    let mut b = document();
    b["entry"][1] = json!({"fullUrl": "http://example.org/fhir/Patient/p9",
        "resource": {"resourceType": "Patient", "id": "p9"}});
    b["entry"][0]["resource"]["subject"]["reference"] = json!("Patient/p9");
    b["entry"][0]["resource"]["author"][0]["reference"] =
        json!("http://example.org/fhir/Patient/p9");
    s.post("Bundle", &b).expect(201);
});

backend_tests!(entry_rules, |s| {
    let coll =
        |entries: Value| json!({"resourceType": "Bundle", "type": "collection", "entry": entries});
    rejects(
        s,
        &coll(json!([{"fullUrl": P1}])),
        "Bundle.entry[0]",
        "bdl-5",
    );
    rejects(
        s,
        &coll(
            json!([{"fullUrl": P1, "resource": {"resourceType": "Patient"},
        "request": {"method": "POST", "url": "Patient"}}]),
        ),
        "Bundle.entry[0].request",
        "bdl-3",
    );
    rejects(
        s,
        &coll(json!([{"resource": {"resourceType": "Patient"}, "search": {"mode": "match"}}])),
        "Bundle.entry[0].search",
        "bdl-2",
    );
    rejects(
        s,
        &json!({"resourceType": "Bundle", "type": "collection", "total": 1}),
        "Bundle.total",
        "bdl-1",
    );
    rejects(
        s,
        &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": P1, "resource": {"resourceType": "Patient"}}]}),
        "Bundle.entry[0].request",
        "bdl-3",
    );
    rejects(
        s,
        &json!({"resourceType": "Bundle", "type": "transaction-response", "entry": [
        {"resource": {"resourceType": "Patient"}}]}),
        "Bundle.entry[0].response",
        "bdl-4",
    );
    rejects(
        s,
        &json!({"resourceType": "Bundle", "type": "message", "entry": [
        {"fullUrl": P1, "resource": {"resourceType": "Patient"}}]}),
        "Bundle.entry[0]",
        "bdl-12",
    );
    // fullUrl: unique (bdl-7), not version-specific (bdl-8), absolute, valid urn, agreeing.
    rejects(
        s,
        &coll(
            json!([{"fullUrl": P1, "resource": {"resourceType": "Patient"}},
        {"fullUrl": P1, "resource": {"resourceType": "Patient"}}]),
        ),
        "Bundle.entry[1].fullUrl",
        "bdl-7",
    );
    s.post("Bundle", &coll(json!([
        {"fullUrl": "http://x.org/fhir/Patient/a", "resource": {"resourceType": "Patient", "id": "a", "meta": {"versionId": "1"}}},
        {"fullUrl": "http://x.org/fhir/Patient/a", "resource": {"resourceType": "Patient", "id": "a", "meta": {"versionId": "2"}}}])))
        .expect(201);
    rejects(
        s,
        &coll(json!([{"fullUrl": "http://x.org/fhir/Patient/a/_history/1",
        "resource": {"resourceType": "Patient", "id": "a"}}])),
        "Bundle.entry[0].fullUrl",
        "bdl-8",
    );
    rejects(
        s,
        &coll(
            json!([{"fullUrl": "Patient/a", "resource": {"resourceType": "Patient", "id": "a"}}]),
        ),
        "Bundle.entry[0].fullUrl",
        "absolute",
    );
    rejects(
        s,
        &coll(json!([{"fullUrl": "urn:uuid:NOT-A-UUID", "resource": {"resourceType": "Patient"}}])),
        "Bundle.entry[0].fullUrl",
        "urn:uuid",
    );
    rejects(
        s,
        &coll(json!([{"fullUrl": "urn:oid:1.02.3", "resource": {"resourceType": "Patient"}}])),
        "Bundle.entry[0].fullUrl",
        "urn:oid",
    );
    rejects(
        s,
        &coll(
            json!([{"fullUrl": "http://x.org/fhir/Patient/a", "resource": {"resourceType": "Patient", "id": "b"}}]),
        ),
        "Bundle.entry[0].fullUrl",
        "disagrees",
    );
    rejects(
        s,
        &coll(
            json!([{"fullUrl": "http://x.org/fhir/Observation/a", "resource": {"resourceType": "Patient", "id": "a"}}]),
        ),
        "Bundle.entry[0].fullUrl",
        "names a Observation",
    );
    // Single link relations.
    let mut b = coll(json!([]));
    b["link"] = json!([{"relation": "self", "url": "http://x.org/a"}, {"relation": "self", "url": "http://x.org/b"}]);
    rejects(s, &b, "Bundle.link", "'self'");
    // A Bundle inside a Bundle is checked too.
    rejects(
        s,
        &coll(
            json!([{"fullUrl": P1, "resource": {"resourceType": "Bundle", "type": "collection", "total": 3}}]),
        ),
        "Bundle.entry[0].resource.total",
        "bdl-1",
    );
});

backend_tests!(transaction_doors, |s| {
    let tx =
        |entries: Value| json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    let post = |full: &str| {
        json!({"fullUrl": full, "resource": {"resourceType": "Patient"},
        "request": {"method": "POST", "url": "Patient"}})
    };
    // Duplicate fullUrls make references ambiguous: the whole transaction is refused, nothing written.
    let before = s.get("Patient?_summary=count").json()["total"]
        .as_i64()
        .unwrap();
    let r = s.post("", &tx(json!([post(P1), post(P1)])));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("bdl-7"));
    assert_eq!(
        s.get("Patient?_summary=count").json()["total"]
            .as_i64()
            .unwrap(),
        before
    );
    let r = s.post(
        "",
        &tx(json!([post("http://x.org/fhir/Patient/a/_history/2")])),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("bdl-8"));
    let r = s.post("", &tx(json!([post("Patient/relative")])));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("absolute"));
    // A batch answers the duplicate entry alone.
    let r = s.post(
        "",
        &json!({"resourceType": "Bundle", "type": "batch", "entry": [post(P1), post(P1)]}),
    );
    r.expect(200);
    let b = r.json();
    assert!(b["entry"][0]["response"]["status"]
        .as_str()
        .unwrap()
        .starts_with("201"));
    assert!(b["entry"][1]["response"]["status"]
        .as_str()
        .unwrap()
        .starts_with("400"));
    // Distinct urn:uuid fullUrls still work.
    s.post("", &tx(json!([post(P1), post(C1)]))).expect(200);
});

// Canonical and URI rules: absolute CodeSystem/ValueSet urls and compose systems, absolute
// Coding.system, urn:uuid / urn:oid forms in uri elements.
backend_tests!(canonical_rules, |s| {
    #[track_caller]
    fn refuses(s: &TestServer, ty: &str, b: &Value, path: &str, words: &str) {
        let r = s.post(ty, b);
        assert_eq!(r.status, 422, "{}", r.body);
        let found = issues(&r.json());
        assert!(
            found.iter().any(|(p, d)| p == path && d.contains(words)),
            "expected '{words}' at {path}, got {found:?}"
        );
    }
    refuses(
        s,
        "CodeSystem",
        &json!({"resourceType": "CodeSystem", "url": "local-codes",
        "status": "active", "content": "complete"}),
        "CodeSystem.url",
        "absolute",
    );
    refuses(
        s,
        "ValueSet",
        &json!({"resourceType": "ValueSet", "url": "http://x.org/vs", "status": "active",
        "compose": {"include": [{"system": "my-system"}]}}),
        "ValueSet.compose.include[0].system",
        "absolute",
    );
    refuses(
        s,
        "Observation",
        &json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "loinc", "code": "4548-4"}]}}),
        "Observation.code.coding[0].system",
        "absolute",
    );
    refuses(
        s,
        "Patient",
        &json!({"resourceType": "Patient",
        "identifier": [{"system": "urn:uuid:ABC", "value": "1"}]}),
        "Patient.identifier[0].system",
        "urn:uuid",
    );
    refuses(
        s,
        "Patient",
        &json!({"resourceType": "Patient",
        "identifier": [{"system": "urn:oid:3.1.2", "value": "1"}]}),
        "Patient.identifier[0].system",
        "urn:oid",
    );
    s.post(
        "Patient",
        &json!({"resourceType": "Patient", "identifier": [
        {"system": "urn:oid:2.16.840.1.113883.4.1", "value": "1"},
        {"system": "urn:uuid:0b6f3a52-8d0e-4c4e-9a52-1f0e6a7d0001", "value": "2"}]}),
    )
    .expect(201);
});
