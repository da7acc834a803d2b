//! The terminology service (CodeSystem/$lookup, CodeSystem/$subsumes, ValueSet/$expand,
//! ValueSet/$validate-code) on both backends: held R4 and program terminology, stored
//! CodeSystem/ValueSet resources, GET and POST forms, paging, and 4xx for bad arguments.
mod common;
use common::auth::*;
use common::*;

const WF: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-workflow";
const GENDER: &str = "http://hl7.org/fhir/ValueSet/administrative-gender";

fn param<'a>(p: &'a Value, name: &str) -> Vec<&'a Value> {
    p["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["name"] == name)
        .collect()
}

fn codes(vs: &Value) -> Vec<String> {
    vs["expansion"]["contains"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["code"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

backend_tests!(lookup, |s| {
    let r = s.get(&format!(
        "CodeSystem/$lookup?system={WF}&code=transition-follow-up"
    ));
    r.expect(200);
    let p = r.json();
    assert_eq!(p["resourceType"], "Parameters");
    assert_eq!(param(&p, "name")[0]["valueString"], "ICMWorkflow");
    assert_eq!(
        param(&p, "display")[0]["valueString"],
        "Follow-up contact after discharge"
    );
    let props = param(&p, "property");
    assert_eq!(props.len(), 1);
    assert_eq!(props[0]["part"][0]["valueCode"], "parent");
    assert_eq!(props[0]["part"][1]["valueCode"], "transition-of-care");
    // The parent lists its three children.
    let p = s
        .get(&format!(
            "CodeSystem/$lookup?system={WF}&code=transition-of-care"
        ))
        .json();
    let children: Vec<&Value> = param(&p, "property")
        .into_iter()
        .filter(|x| x["part"][0]["valueCode"] == "child")
        .map(|x| &x["part"][1]["valueCode"])
        .collect();
    assert_eq!(
        children,
        [
            "medication-reconciliation",
            "post-discharge-visit",
            "transition-follow-up"
        ]
    );
    // HL7's R4 code systems are held whole, with displays and their hierarchy.
    let p = s
        .get("CodeSystem/$lookup?system=http://hl7.org/fhir/task-status&code=ready")
        .json();
    assert_eq!(param(&p, "display")[0]["valueString"], "Ready");
    let act = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
    let p = s
        .get(&format!(
            "CodeSystem/$lookup?system={act}&code=ACCTRECEIVABLE"
        ))
        .json();
    assert_eq!(param(&p, "name")[0]["valueString"], "v3.ActCode");
    let props = param(&p, "property");
    assert_eq!(props[0]["part"][0]["valueCode"], "parent");
    assert_eq!(props[0]["part"][1]["valueCode"], "_ActAccountCode");
    // A v2 table is not case-sensitive: the code is found as the table spells it.
    let p = s
        .get("CodeSystem/$lookup?system=http://terminology.hl7.org/CodeSystem/v2-0203&code=mr")
        .json();
    assert_eq!(
        param(&p, "display")[0]["valueString"],
        "Medical record number"
    );
    // A v3 system is: a code in another case is not there.
    s.get(&format!(
        "CodeSystem/$lookup?system={act}&code=acctreceivable"
    ))
    .expect_outcome(404, "not-found");
    // POST with a Coding.
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "coding", "valueCoding": {"system": WF, "code": "outreach"}}]});
    let r = s.post("CodeSystem/$lookup", &body);
    r.expect(200);
    assert_eq!(
        param(&r.json(), "display")[0]["valueString"],
        "Recurring outreach contact"
    );
    // Instance level on the embedded CodeSystem.
    let p = s
        .get("CodeSystem/icm-workflow/$lookup?code=outreach")
        .json();
    assert_eq!(
        param(&p, "display")[0]["valueString"],
        "Recurring outreach contact"
    );
    // Errors: unknown code, unknown system, nothing to look up, a body that is not Parameters.
    s.get(&format!("CodeSystem/$lookup?system={WF}&code=nope"))
        .expect_outcome(404, "not-found");
    s.get("CodeSystem/$lookup?system=http://snomed.info/sct&code=1")
        .expect_outcome(404, "not-found");
    s.get(&format!("CodeSystem/$lookup?system={WF}"))
        .expect(400);
    s.get("CodeSystem/$lookup?code=outreach").expect(400);
    s.post("CodeSystem/$lookup", &json!({"resourceType": "Patient"}))
        .expect(400);
});

backend_tests!(subsumes, |s| {
    let out = |a: &str, b: &str| {
        let r = s.get(&format!(
            "CodeSystem/$subsumes?system={WF}&codeA={a}&codeB={b}"
        ));
        r.expect(200);
        param(&r.json(), "outcome")[0]["valueCode"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        out("transition-of-care", "transition-follow-up"),
        "subsumes"
    );
    assert_eq!(
        out("transition-follow-up", "transition-of-care"),
        "subsumed-by"
    );
    assert_eq!(out("outreach", "outreach"), "equivalent");
    assert_eq!(out("outreach", "transition-follow-up"), "not-subsumed");
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "codingA", "valueCoding": {"system": WF, "code": "transition-of-care"}},
        {"name": "codingB", "valueCoding": {"system": WF, "code": "post-discharge-visit"}}]});
    let r = s.post("CodeSystem/$subsumes", &body);
    r.expect(200);
    assert_eq!(param(&r.json(), "outcome")[0]["valueCode"], "subsumes");
    s.get(&format!(
        "CodeSystem/$subsumes?system={WF}&codeA=outreach&codeB=bogus"
    ))
    .expect(400);
    s.get(&format!("CodeSystem/$subsumes?system={WF}&codeA=outreach"))
        .expect(400);
    let mixed = json!({"resourceType": "Parameters", "parameter": [
        {"name": "codingA", "valueCoding": {"system": WF, "code": "outreach"}},
        {"name": "codingB", "valueCoding": {"system": "http://hl7.org/fhir/task-status", "code": "ready"}}]});
    s.post("CodeSystem/$subsumes", &mixed).expect(400);
    // On an HL7 hierarchy (v3 ActCode).
    let act = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
    let r = s
        .get(&format!(
            "CodeSystem/$subsumes?system={act}&codeA=_ActAccountCode&codeB=ACCTRECEIVABLE"
        ))
        .json();
    assert_eq!(param(&r, "outcome")[0]["valueCode"], "subsumes");
});

backend_tests!(expand, |s| {
    let r = s.get(&format!("ValueSet/$expand?url={GENDER}"));
    r.expect(200);
    let vs = r.json();
    assert_eq!(vs["resourceType"], "ValueSet");
    assert_eq!(vs["url"], GENDER);
    assert_eq!(vs["expansion"]["total"], 4);
    assert_eq!(codes(&vs), ["female", "male", "other", "unknown"]);
    assert!(vs["expansion"]["identifier"]
        .as_str()
        .unwrap()
        .starts_with("urn:uuid:"));
    assert!(vs["expansion"]["timestamp"].is_string());
    // A versioned canonical is the same value set.
    assert_eq!(
        codes(
            &s.get(&format!("ValueSet/$expand?url={GENDER}|4.0.1"))
                .json()
        )
        .len(),
        4
    );
    // filter, then paging: total counts every match, contains holds the page.
    assert_eq!(
        codes(
            &s.get(&format!("ValueSet/$expand?url={GENDER}&filter=FEM"))
                .json()
        ),
        ["female"]
    );
    let page = s
        .get(&format!("ValueSet/$expand?url={GENDER}&offset=1&count=2"))
        .json();
    assert_eq!(page["expansion"]["total"], 4);
    assert_eq!(page["expansion"]["offset"], 1);
    assert_eq!(codes(&page), ["male", "other"]);
    // The program's own value set, by URL and by id, with displays.
    let p = s.get("ValueSet/icm-program/$expand").json();
    assert!(!codes(&p).is_empty());
    assert!(p["expansion"]["contains"][0]["display"].is_string());
    // A ValueSet sent in a POST: an is-a filter on the held hierarchy, minus one code.
    let body = json!({"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource": {
        "resourceType": "ValueSet", "status": "active", "compose": {
            "include": [{"system": WF, "filter": [{"property": "concept", "op": "is-a", "value": "transition-of-care"}]}],
            "exclude": [{"system": WF, "concept": [{"code": "medication-reconciliation"}]}]}}}]});
    let r = s.post("ValueSet/$expand", &body);
    r.expect(200);
    assert_eq!(
        codes(&r.json()),
        [
            "post-discharge-visit",
            "transition-follow-up",
            "transition-of-care"
        ]
    );
    // A whole HL7 code system, and an is-a filter on its hierarchy.
    let ms = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus";
    let body = json!({"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource": {
        "resourceType": "ValueSet", "status": "active", "compose": {"include": [{"system": ms}]}}}]});
    let vs = s.post("ValueSet/$expand", &body).json();
    assert_eq!(vs["expansion"]["total"], 10);
    let married = vs["expansion"]["contains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == "M")
        .unwrap();
    assert_eq!(married["display"], "Married");
    let act = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
    let body = json!({"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource": {
        "resourceType": "ValueSet", "status": "active", "compose": {"include": [{"system": act,
            "filter": [{"property": "concept", "op": "is-a", "value": "_ActAccountCode"}]}]}}}]});
    let got = codes(&s.post("ValueSet/$expand", &body).json());
    assert!(got.contains(&"ACCTRECEIVABLE".to_string()), "{got:?}");
    assert!(got.contains(&"_ActAccountCode".to_string()), "{got:?}");
    assert!(
        !got.contains(&"_ActCoverageTypeCode".to_string()),
        "{got:?}"
    );
    // An extensible R4 value set expandable from held systems is held too.
    let vs = s
        .get("ValueSet/$expand?url=http://hl7.org/fhir/ValueSet/marital-status")
        .json();
    assert_eq!(vs["expansion"]["total"], 11);
    // Errors.
    s.get("ValueSet/$expand?url=http://example.org/ValueSet/none")
        .expect_outcome(404, "not-found");
    s.get("ValueSet/$expand").expect(400);
    s.get(&format!("ValueSet/$expand?url={GENDER}&count=-1"))
        .expect(400);
    let unheld = json!({"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource": {
        "resourceType": "ValueSet", "compose": {"include": [{"system": "http://snomed.info/sct"}]}}}]});
    s.post("ValueSet/$expand", &unheld).expect(400);
    s.get("ValueSet/no-such-set/$expand").expect(404);
});

backend_tests!(validate_code, |s| {
    let result = |r: &Resp| {
        param(&r.json(), "result")[0]["valueBoolean"]
            .as_bool()
            .unwrap()
    };
    let g = "http://hl7.org/fhir/administrative-gender";
    let r = s.get(&format!(
        "ValueSet/$validate-code?url={GENDER}&system={g}&code=male"
    ));
    r.expect(200);
    assert!(result(&r));
    let r = s.get(&format!(
        "ValueSet/$validate-code?url={GENDER}&system={g}&code=bogus"
    ));
    r.expect(200);
    assert!(!result(&r));
    assert!(param(&r.json(), "message")[0]["valueString"]
        .as_str()
        .unwrap()
        .contains("bogus"));
    // An extensible R4 value set over HL7 systems: the code and its display from the system.
    let ms = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus";
    let r = s.get(&format!(
        "ValueSet/$validate-code?url=http://hl7.org/fhir/ValueSet/marital-status&system={ms}&code=M"
    ));
    assert!(result(&r));
    assert_eq!(param(&r.json(), "display")[0]["valueString"], "Married");
    assert!(!result(&s.get(&format!(
        "ValueSet/$validate-code?url=http://hl7.org/fhir/ValueSet/marital-status&system={ms}&code=X"
    ))));
    // The right code from another system is not in the value set.
    assert!(!result(&s.get(&format!(
        "ValueSet/$validate-code?url={GENDER}&system=http://example.org&code=male"
    ))));
    // A CodeableConcept: valid when any coding is.
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUri": "http://icm-fhir.org/fhir/ValueSet/icm-program"},
        {"name": "codeableConcept", "valueCodeableConcept": {"coding": [
            {"system": "http://example.org", "code": "x"}]}}]});
    assert!(!result(&s.post("ValueSet/$validate-code", &body)));
    let prog = s.get("ValueSet/icm-program/$expand").json();
    let first = &prog["expansion"]["contains"][0];
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUri": "http://icm-fhir.org/fhir/ValueSet/icm-program"},
        {"name": "codeableConcept", "valueCodeableConcept": {"coding": [
            {"system": "http://example.org", "code": "x"},
            {"system": first["system"], "code": first["code"]}]}}]});
    let r = s.post("ValueSet/$validate-code", &body);
    assert!(result(&r));
    assert_eq!(
        param(&r.json(), "display")[0]["valueString"],
        first["display"]
    );
    // A wrong display of a known code is not valid.
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "coding", "valueCoding": {"system": first["system"], "code": first["code"], "display": "Something else"}}]});
    let r = s.post("ValueSet/icm-program/$validate-code", &body);
    assert!(!result(&r));
    assert!(param(&r.json(), "message")[0]["valueString"]
        .as_str()
        .unwrap()
        .contains("display"));
    s.get(&format!("ValueSet/$validate-code?url={GENDER}"))
        .expect(400);
});

backend_tests!(stored_resources, |s| {
    s.create(
        json!({"resourceType": "CodeSystem", "id": "local", "url": "http://example.org/cs/local",
        "name": "Local", "status": "active", "content": "complete", "concept": [
            {"code": "a", "display": "Alpha", "concept": [{"code": "a1", "display": "Alpha one"}]},
            {"code": "b", "display": "Beta"}]}),
    );
    let cs = s.get("CodeSystem?url=http://example.org/cs/local").json();
    let id = cs["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let p = s.get(&format!("CodeSystem/{id}/$lookup?code=a1")).json();
    assert_eq!(param(&p, "name")[0]["valueString"], "Local");
    assert_eq!(param(&p, "display")[0]["valueString"], "Alpha one");
    let r = s.get(&format!("CodeSystem/{id}/$subsumes?codeA=a&codeB=a1"));
    assert_eq!(param(&r.json(), "outcome")[0]["valueCode"], "subsumes");
    let vs = s.create(json!({"resourceType": "ValueSet", "url": "http://example.org/vs/local",
        "status": "active", "compose": {"include": [
            {"system": "http://example.org/cs/local", "concept": [{"code": "a", "display": "Alpha"}, {"code": "b"}]},
            {"valueSet": [GENDER]}]}}));
    let vid = vs["id"].as_str().unwrap();
    let e = s.get(&format!("ValueSet/{vid}/$expand")).json();
    assert_eq!(e["expansion"]["total"], 6);
    assert_eq!(codes(&e)[..2], ["a", "b"]);
    assert_eq!(e["expansion"]["contains"][0]["display"], "Alpha");
    let r = s.get(&format!(
        "ValueSet/{vid}/$validate-code?system=http://example.org/cs/local&code=b"
    ));
    assert_eq!(param(&r.json(), "result")[0]["valueBoolean"], true);
    // A deleted ValueSet is gone for its operations too.
    s.delete(&format!("ValueSet/{vid}")).expect(204);
    s.get(&format!("ValueSet/{vid}/$expand")).expect(410);
});

secure_tests!(needs_a_token, |s| {
    let path = format!("ValueSet/$expand?url={GENDER}");
    s.as_token(None, "GET", &path, None).expect(401);
    let t = mint(&claims("u1", "user/*.rs", json!({})));
    s.as_token(Some(&t), "GET", &path, None).expect(200);
});
