//! FHIRPath Patch over HTTP on both backends: instance PATCH, conditional PATCH, PATCH entries
//! of transaction and batch Bundles, and the CapabilityStatement's patch formats.
mod common;
use common::*;

fn op(ty: &str, path: &str, more: &[Value]) -> Value {
    let mut parts = vec![
        json!({"name": "type", "valueCode": ty}),
        json!({"name": "path", "valueString": path}),
    ];
    parts.extend_from_slice(more);
    json!({"name": "operation", "part": parts})
}

fn params(ops: Vec<Value>) -> Value {
    json!({"resourceType": "Parameters", "parameter": ops})
}

fn fhirpath_patch(s: &TestServer, path: &str, body: &Value, extra: &[(&str, &str)]) -> Resp {
    let mut h = vec![("Content-Type", "application/fhir+json")];
    h.extend_from_slice(extra);
    s.request("PATCH", path, &h, Some(&body.to_string()))
}

fn count(s: &TestServer, ty: &str) -> u64 {
    s.get(&format!("{ty}?_summary=count")).json()["total"]
        .as_u64()
        .unwrap()
}

backend_tests!(fhirpath_patch_instance, |s| {
    s.put(
        "Patient/p1",
        &json!({"resourceType": "Patient", "id": "p1", "gender": "male",
            "identifier": [{"system": "http://example.org", "value": "1"}, {"system": "http://example.org", "value": "2"}],
            "telecom": [{"system": "phone", "value": "555"}, {"system": "email", "value": "a@example.org"}]}),
    )
    .expect(201);
    // The two examples of the R4 page, then one of each other operation.
    let body = params(vec![
        op(
            "add",
            "Patient",
            &[
                json!({"name": "name", "valueString": "birthDate"}),
                json!({"name": "value", "valueDate": "1930-01-01"}),
            ],
        ),
        op(
            "add",
            "Patient",
            &[
                json!({"name": "name", "valueString": "contact"}),
                json!({"name": "value", "part": [{"name": "name", "valueHumanName": {"text": "a name"}}]}),
            ],
        ),
        op(
            "replace",
            "Patient.gender",
            &[json!({"name": "value", "valueCode": "female"})],
        ),
        op(
            "insert",
            "Patient.identifier",
            &[
                json!({"name": "index", "valueInteger": 0}),
                json!({"name": "value", "valueIdentifier": {"system": "http://example.org", "value": "0"}}),
            ],
        ),
        op(
            "move",
            "Patient.identifier",
            &[
                json!({"name": "source", "valueInteger": 2}),
                json!({"name": "destination", "valueInteger": 0}),
            ],
        ),
        op("delete", "Patient.telecom.where(system = 'email')", &[]),
        op("delete", "Patient.deceased", &[]),
    ]);
    let r = fhirpath_patch(s, "Patient/p1", &body, &[("If-Match", "W/\"1\"")]);
    r.expect(200);
    let p = r.json();
    assert_eq!(p["birthDate"], "1930-01-01");
    assert_eq!(p["contact"], json!([{"name": {"text": "a name"}}]));
    assert_eq!(p["gender"], "female");
    let ids: Vec<&str> = p["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["value"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["2", "0", "1"]);
    assert_eq!(p["telecom"], json!([{"system": "phone", "value": "555"}]));
    assert_eq!(p["meta"]["versionId"], "2");
    // The patch is stored (and indexed) like an update.
    assert_eq!(s.get("Patient/p1").json()["birthDate"], "1930-01-01");
    assert_eq!(
        s.get("Patient?birthdate=1930-01-01").json()["total"],
        json!(1)
    );
    let h = s.get("Patient/p1/_history").json();
    assert_eq!(h["entry"][0]["request"]["method"], "PATCH");
    // application/json is read as FHIR JSON too.
    let r = s.request(
        "PATCH",
        "Patient/p1",
        &[("Content-Type", "application/json")],
        Some(
            &params(vec![op(
                "replace",
                "Patient.birthDate",
                &[json!({"name": "value", "valueDate": "1931-02-03"})],
            )])
            .to_string(),
        ),
    );
    r.expect(200);
    assert_eq!(r.json()["birthDate"], "1931-02-03");
    assert_eq!(r.json()["meta"]["versionId"], "3");
});

backend_tests!(fhirpath_patch_errors, |s| {
    s.put(
        "Patient/p1",
        &json!({"resourceType": "Patient", "id": "p1", "gender": "male", "name": [{"family": "A"}, {"family": "B"}]}),
    )
    .expect(201);
    // Several elements where one is needed: 422, naming the operation.
    let oo = fhirpath_patch(
        s,
        "Patient/p1",
        &params(vec![op(
            "replace",
            "Patient.name.family",
            &[json!({"name": "value", "valueString": "C"})],
        )]),
        &[],
    )
    .expect_outcome(422, "processing");
    let d = oo["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(d.contains("selects 2 elements"), "{d}");
    assert!(d.contains("Patient.name.family"), "{d}");
    // Index out of range, adding below nothing, a wrong type.
    for (o, msg) in [
        (
            op(
                "insert",
                "Patient.name",
                &[
                    json!({"name": "index", "valueInteger": 5}),
                    json!({"name": "value", "valueHumanName": {"family": "Z"}}),
                ],
            ),
            "index 5 is out of range",
        ),
        (
            op(
                "add",
                "Patient.maritalStatus",
                &[
                    json!({"name": "name", "valueString": "text"}),
                    json!({"name": "value", "valueString": "x"}),
                ],
            ),
            "selects no element",
        ),
        (
            op(
                "replace",
                "Patient.gender",
                &[json!({"name": "value", "valueBoolean": true})],
            ),
            "takes code, not boolean",
        ),
    ] {
        let oo = fhirpath_patch(s, "Patient/p1", &params(vec![o]), &[])
            .expect_outcome(422, "processing");
        let d = oo["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(d.contains(msg), "{d}");
    }
    // A result that is not a valid Patient is refused by validation, like any update.
    let oo = fhirpath_patch(
        s,
        "Patient/p1",
        &params(vec![op(
            "replace",
            "Patient.gender",
            &[json!({"name": "value", "valueCode": "robot"})],
        )]),
        &[],
    )
    .expect(422)
    .json();
    assert!(oo.to_string().contains("gender"), "{oo}");
    // Malformed patches: 400.
    for bad in [
        json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [{"name": "type", "valueCode": "frob"}, {"name": "path", "valueString": "Patient"}]}]}),
        json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [{"name": "type", "valueCode": "delete"}]}]}),
        params(vec![op("delete", "Patient.name[", &[])]),
        json!({"resourceType": "Patient", "gender": "female"}),
        json!([{"op": "remove", "path": "/gender"}]),
    ] {
        fhirpath_patch(s, "Patient/p1", &bad, &[]).expect_outcome(400, "invalid");
    }
    fhirpath_patch(s, "Patient/p1", &params(vec![]), &[("If-Match", "W/\"9\"")]).expect(412);
    s.request(
        "PATCH",
        "Patient/p1",
        &[("Content-Type", "text/plain")],
        Some("x"),
    )
    .expect(415);
    fhirpath_patch(s, "Patient/nobody", &params(vec![]), &[]).expect(404);
    // Nothing was changed by any of these.
    assert_eq!(s.get("Patient/p1").json()["meta"]["versionId"], "1");
    // Deleting what is not there is not an error: a new version, same content.
    let r = fhirpath_patch(
        s,
        "Patient/p1",
        &params(vec![op("delete", "Patient.birthDate", &[])]),
        &[],
    );
    r.expect(200);
    assert_eq!(r.json()["gender"], "male");
});

backend_tests!(fhirpath_patch_conditional, |s| {
    let ident = |v: &str| json!([{"system": "http://example.org/mrn", "value": v}]);
    s.create(json!({"resourceType": "Patient", "identifier": ident("1"), "active": true}));
    s.create(json!({"resourceType": "Patient", "identifier": ident("2")}));
    s.create(json!({"resourceType": "Patient", "identifier": ident("2")}));
    let body = params(vec![op(
        "replace",
        "Patient.active",
        &[json!({"name": "value", "valueBoolean": false})],
    )]);
    let r = fhirpath_patch(s, "Patient?identifier=http://example.org/mrn|1", &body, &[]);
    r.expect(200);
    assert_eq!(r.json()["active"], false);
    assert_eq!(r.json()["meta"]["versionId"], "2");
    fhirpath_patch(s, "Patient?identifier=http://example.org/mrn|9", &body, &[])
        .expect_outcome(404, "not-found");
    fhirpath_patch(s, "Patient?identifier=http://example.org/mrn|2", &body, &[])
        .expect_outcome(412, "conflict");
    fhirpath_patch(s, "Patient", &body, &[]).expect(405);
    // JSON Patch works conditionally too.
    let r = s.request(
        "PATCH",
        "Patient?identifier=http://example.org/mrn|1",
        &[("Content-Type", "application/json-patch+json")],
        Some(r#"[{"op": "add", "path": "/gender", "value": "other"}]"#),
    );
    r.expect(200);
    assert_eq!(r.json()["gender"], "other");
    assert_eq!(r.json()["meta"]["versionId"], "3");
});

backend_tests!(fhirpath_patch_in_bundles, |s| {
    s.put(
        "Patient/p1",
        &json!({"resourceType": "Patient", "id": "p1", "identifier": [{"system": "http://example.org/mrn", "value": "1"}]}),
    )
    .expect(201);
    s.put(
        "Patient/p2",
        &json!({"resourceType": "Patient", "id": "p2", "active": true}),
    )
    .expect(201);
    // A transaction: an instance PATCH whose value references a new Organization by urn:uuid,
    // and a conditional PATCH.
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:5b2d6ad6-55a3-4f47-9f51-3d64d3b0b8d1",
         "resource": {"resourceType": "Organization", "name": "Clinic"},
         "request": {"method": "POST", "url": "Organization"}},
        {"resource": params(vec![op("add", "Patient", &[
            json!({"name": "name", "valueString": "managingOrganization"}),
            json!({"name": "value", "valueReference": {"reference": "urn:uuid:5b2d6ad6-55a3-4f47-9f51-3d64d3b0b8d1"}})])]),
         "request": {"method": "PATCH", "url": "Patient/p2"}},
        {"resource": params(vec![op("add", "Patient", &[
            json!({"name": "name", "valueString": "gender"}),
            json!({"name": "value", "valueCode": "female"})])]),
         "request": {"method": "PATCH", "url": "Patient?identifier=http://example.org/mrn|1"}},
    ]});
    let r = s.post("", &b);
    r.expect(200);
    let out = r.json();
    let e = out["entry"].as_array().unwrap();
    assert_eq!(e[1]["response"]["status"], "200 OK", "{}", e[1]);
    assert_eq!(e[2]["response"]["status"], "200 OK", "{}", e[2]);
    let org = e[0]["resource"]["id"].as_str().unwrap();
    let p2 = s.get("Patient/p2").json();
    assert_eq!(
        p2["managingOrganization"]["reference"],
        format!("Organization/{org}")
    );
    assert_eq!(p2["meta"]["versionId"], "2");
    assert_eq!(s.get("Patient/p1").json()["gender"], "female");
    // A failing FHIRPath Patch entry rolls the whole transaction back.
    let before = count(s, "Organization");
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Organization", "name": "Other"},
         "request": {"method": "POST", "url": "Organization"}},
        {"resource": params(vec![op("replace", "Patient.birthDate", &[
            json!({"name": "value", "valueDate": "2000-01-01"})])]),
         "request": {"method": "PATCH", "url": "Patient/p1"}},
    ]});
    let oo = s.post("", &b).expect_outcome(422, "processing");
    let d = oo["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(d.starts_with("Bundle.entry[1] (PATCH Patient/p1)"), "{d}");
    assert_eq!(count(s, "Organization"), before);
    // A batch answers each PATCH entry on its own; a Binary still carries a JSON Patch and,
    // with its contentType, a JSON Merge Patch.
    let merge = base64_of(r#"{"active": null}"#);
    let b = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": params(vec![op("delete", "Patient.identifier", &[])]),
         "request": {"method": "PATCH", "url": "Patient/p1"}},
        {"resource": params(vec![op("frob", "Patient", &[])]),
         "request": {"method": "PATCH", "url": "Patient/p1"}},
        {"resource": {"resourceType": "Binary", "contentType": "application/merge-patch+json", "data": merge},
         "request": {"method": "PATCH", "url": "Patient/p2"}},
        {"resource": {"resourceType": "Patient"},
         "request": {"method": "PATCH", "url": "Patient/p2"}},
    ]});
    let r = s.post("", &b);
    r.expect(200);
    let e = r.json()["entry"].as_array().unwrap().clone();
    assert_eq!(e[0]["response"]["status"], "200 OK", "{}", e[0]);
    assert_eq!(e[1]["response"]["status"], "400 Bad Request", "{}", e[1]);
    assert_eq!(e[2]["response"]["status"], "200 OK", "{}", e[2]);
    assert_eq!(e[3]["response"]["status"], "400 Bad Request", "{}", e[3]);
    assert!(s.get("Patient/p1").json().get("identifier").is_none());
    let p2 = s.get("Patient/p2").json();
    assert!(p2.get("active").is_none(), "{p2}");
    assert_eq!(p2["meta"]["versionId"], "3");
});

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

backend_tests!(capability_statement_lists_patch_formats, |s| {
    let cs = s.get("metadata").json();
    assert_eq!(
        cs["patchFormat"],
        json!([
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/fhir+json"
        ])
    );
});
