//! FHIR search (http://hl7.org/fhir/R4/search.html) on both backends: each parameter type and
//! modifier pinned to its exact matching set.
mod common;
use common::search::*;
use common::*;

fn patients(s: &TestServer) {
    put(
        s,
        json!({"resourceType": "Patient", "id": "zoe", "name": [{"family": "Müller", "given": ["Zoë"]}],
        "gender": "female", "birthDate": "1950-06-15", "address": [{"city": "Genève"}],
        "identifier": [{"system": "urn:mrn", "value": "100"}], "telecom": [{"system": "email", "value": "zoe@example.org"}],
        "meta": {"tag": [{"system": "urn:tags", "code": "vip"}], "profile": ["http://example.org/fhir/StructureDefinition/icm-patient"]}}),
    );
    put(
        s,
        json!({"resourceType": "Patient", "id": "zoey", "name": [{"family": "MULLERSON", "given": ["Zoey"]}],
        "gender": "female", "birthDate": "1950-12-31", "identifier": [{"system": "urn:other", "value": "100"}]}),
    );
    put(
        s,
        json!({"resourceType": "Patient", "id": "bob", "name": [{"family": "Smith", "given": ["Bob", "Robert"], "text": "Bob Smith"}],
        "gender": "male", "birthDate": "1951", "identifier": [{"value": "100"}], "address": [{"city": "Geneva"}]}),
    );
    put(
        s,
        json!({"resourceType": "Patient", "id": "nobirth", "name": [{"family": "Doe"}]}),
    );
}

search_tests!(string_parameters, |s| {
    patients(s);
    check(s, "Patient?name=zoe", &["zoe", "zoey"]);
    check(s, "Patient?name=ZOË", &["zoe", "zoey"]);
    check(s, "Patient?family=muller", &["zoe", "zoey"]);
    check(s, "Patient?family:exact=Müller", &["zoe"]);
    check(s, "Patient?family:exact=muller", &[]);
    check(s, "Patient?family:contains=LLER", &["zoe", "zoey"]);
    check(s, "Patient?name:contains=obe", &["bob"]);
    check(s, "Patient?given=rob", &["bob"]);
    check(s, "Patient?name=bob%20sm", &["bob"]);
    check(s, "Patient?address-city=gen", &["zoe", "bob"]);
    check(s, "Patient?address-city=geneve", &["zoe"]);
    // comma = OR, repeated = AND
    check(s, "Patient?family=smith,doe", &["bob", "nobirth"]);
    check(s, "Patient?name=zoe&name=mullers", &["zoey"]);
    // a literal comma is escaped
    check(s, "Patient?family=smith%5C,doe", &[]);
});

search_tests!(token_parameters, |s| {
    patients(s);
    check(s, "Patient?gender=female", &["zoe", "zoey"]);
    check(s, "Patient?gender=female,male", &["zoe", "zoey", "bob"]);
    check(s, "Patient?gender:not=female", &["bob", "nobirth"]);
    check(s, "Patient?identifier=100", &["zoe", "zoey", "bob"]);
    check(s, "Patient?identifier=urn:mrn%7C100", &["zoe"]);
    check(s, "Patient?identifier=%7C100", &["bob"]);
    check(s, "Patient?identifier=urn:other%7C", &["zoey"]);
    check(s, "Patient?identifier=urn:mrn%7C999", &[]);
    check(s, "Patient?email=zoe@example.org", &["zoe"]);
    check(s, "Patient?telecom=zoe@example.org", &["zoe"]);
    check(s, "Patient?_tag=urn:tags%7Cvip", &["zoe"]);
    check(s, "Patient?_tag=vip", &["zoe"]);
    check(s, "Patient?_id=zoe,bob", &["zoe", "bob"]);
    check(s, "Patient?_id:not=zoe", &["zoey", "bob", "nobirth"]);
    s.create(json!({"resourceType": "Condition", "id": "x", "subject": {"reference": "Patient/zoe"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes mellitus type 2"}], "text": "Type 2 diabetes"}}));
    let c = ids(s, "Condition?code:text=diabetes");
    assert_eq!(c.len(), 1);
    assert_eq!(ids(s, "Condition?code:text=type%202").len(), 1);
    assert_eq!(
        ids(s, "Condition?code=http://snomed.info/sct%7C44054006").len(),
        1
    );
    assert_eq!(
        ids(s, "Condition?code=http://loinc.org%7C44054006").len(),
        0
    );
});

search_tests!(date_parameters, |s| {
    patients(s);
    check(s, "Patient?birthdate=1950", &["zoe", "zoey"]);
    check(s, "Patient?birthdate=1950-06", &["zoe"]);
    check(s, "Patient?birthdate=1950-06-15", &["zoe"]);
    check(s, "Patient?birthdate=eq1950-06-14", &[]);
    check(s, "Patient?birthdate=ne1950", &["bob"]);
    // gt/lt: the target range extends beyond the search range
    check(s, "Patient?birthdate=gt1950-06-15", &["zoey", "bob"]);
    check(s, "Patient?birthdate=lt1950-12-31", &["zoe"]);
    check(s, "Patient?birthdate=ge1950-12-31", &["zoey", "bob"]);
    check(s, "Patient?birthdate=le1950-06-15", &["zoe"]);
    // 1951 (a year) overlaps 1951-06: ge/le intersect, eq does not contain
    check(s, "Patient?birthdate=le1951-06", &["zoe", "zoey", "bob"]);
    check(s, "Patient?birthdate=eq1951-06", &[]);
    check(s, "Patient?birthdate=sa1950-06-15", &["zoey", "bob"]);
    check(s, "Patient?birthdate=eb1951", &["zoe", "zoey"]);
    check(
        s,
        "Patient?birthdate=ge1950&birthdate=lt1951",
        &["zoe", "zoey"],
    );

    // Instants around midnight UTC, written with offsets.
    let task = |id: &str, authored: &str| json!({"resourceType": "Task", "id": id, "status": "requested", "intent": "order", "authoredOn": authored});
    put(s, task("late", "2026-01-01T23:30:00Z"));
    put(s, task("early-plus", "2026-01-02T00:30:00+01:00")); // = 2026-01-01T23:30Z
    put(s, task("next", "2026-01-02T00:00:00Z"));
    put(s, task("minus", "2026-01-01T20:00:00-05:00")); // = 2026-01-02T01:00Z
    check(s, "Task?authored-on=2026-01-01", &["late", "early-plus"]);
    check(s, "Task?authored-on=2026-01-02", &["next", "minus"]);
    check(
        s,
        "Task?authored-on=lt2026-01-02T00:00:00Z",
        &["late", "early-plus"],
    );
    check(
        s,
        "Task?authored-on=ge2026-01-02T00:00:00%2B00:00",
        &["next", "minus"],
    );
    check(s, "Task?authored-on=2026-01-02T01:00:00%2B01:00", &["next"]);
    check(
        s,
        "Task?authored-on=2026-01",
        &["late", "early-plus", "next", "minus"],
    );

    // Periods: an open end is unbounded.
    let per = |id: &str, p: Value| json!({"resourceType": "Task", "id": id, "status": "in-progress", "intent": "order", "executionPeriod": p});
    put(s, per("open", json!({"start": "2026-03-01"})));
    put(
        s,
        per("march", json!({"start": "2026-03-01", "end": "2026-03-31"})),
    );
    put(
        s,
        per(
            "feb",
            json!({"start": "2026-02-10T08:00:00Z", "end": "2026-02-20T08:00:00Z"}),
        ),
    );
    check(s, "Task?period=2026-03", &["march"]);
    check(s, "Task?period=ge2027", &["open"]);
    check(s, "Task?period=gt2026-03-15", &["open", "march"]);
    check(s, "Task?period=lt2026-03-01", &["feb"]);
    check(s, "Task?period=sa2026-02-28", &["open", "march"]);
    check(s, "Task?period=eb2026-03-01", &["feb"]);
    check(s, "Task?period=2026-02-15", &[]);
    check(s, "Task?period=le2026-02-15", &["feb"]);
    // _lastUpdated is an instant
    let all = ids(s, "Task?_lastUpdated=gt2000-01-01");
    assert_eq!(all.len(), 7);
    check(s, "Task?_lastUpdated=lt2000-01-01", &[]);
});

search_tests!(reference_parameters, |s| {
    patients(s);
    put(
        s,
        json!({"resourceType": "Practitioner", "id": "dr", "name": [{"family": "House"}]}),
    );
    let cp = |id: &str, subj: &str| json!({"resourceType": "CarePlan", "id": id, "status": "active", "intent": "plan", "subject": {"reference": subj}});
    put(s, cp("c1", "Patient/zoe"));
    put(s, cp("c2", "Patient/bob"));
    put(s, cp("c3", "Group/zoe"));
    put(s, cp("c4", &format!("{}/Patient/zoe", s.base)));
    put(s, cp("c5", "http://elsewhere.org/fhir/Patient/zoe"));
    check(s, "CarePlan?subject=Patient/zoe", &["c1"]);
    check(s, "CarePlan?patient=Patient/zoe", &["c1"]);
    check(s, "CarePlan?subject=zoe", &["c1", "c3"]);
    check(s, "CarePlan?subject:Patient=zoe", &["c1"]);
    check(s, "CarePlan?patient=zoe", &["c1"]);
    check(s, "CarePlan?subject=Patient/zoe,Patient/bob", &["c1", "c2"]);
    check(
        s,
        "CarePlan?subject=http://elsewhere.org/fhir/Patient/zoe",
        &["c5"],
    );
    let abs = format!("CarePlan?subject={}/Patient/bob", s.base);
    check(s, &abs, &["c2"]);
    let abs_url = format!("{}/Patient/zoe", s.base);
    // An absolute URL on this server matches the relative and the absolute reference.
    check(s, &format!("CarePlan?subject={abs_url}"), &["c1", "c4"]);
    put(
        s,
        json!({"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order",
        "for": {"reference": "Patient/zoe"}, "owner": {"reference": "Practitioner/dr"},
        "basedOn": [{"reference": "CarePlan/c1"}], "focus": {"reference": "CarePlan/c1"}}),
    );
    check(s, "Task?owner=Practitioner/dr", &["t1"]);
    check(s, "Task?patient=zoe", &["t1"]);
    check(s, "Task?based-on=CarePlan/c1", &["t1"]);
    check(s, "Task?focus=CarePlan/c1", &["t1"]);
    check(s, "Patient?general-practitioner=dr", &[]);
});

search_tests!(number_quantity_uri, |s| {
    let obs = |id: &str, v: &str, code: &str| {
        let body = format!(
            r#"{{"resourceType":"Observation","id":"{id}","status":"final","code":{{"text":"w"}},"valueQuantity":{{"value":{v},"system":"http://unitsofmeasure.org","code":"{code}","unit":"{code}"}}}}"#
        );
        serde_json::from_str::<Value>(&body).unwrap()
    };
    put(s, obs("o1", "5.4", "mg"));
    put(s, obs("o2", "100", "mg"));
    put(s, obs("o3", "100.4", "g"));
    check(s, "Observation?value-quantity=5.4", &["o1"]);
    check(s, "Observation?value-quantity=5", &["o1"]); // [4.5, 5.5)
    check(s, "Observation?value-quantity=100", &["o2", "o3"]);
    check(s, "Observation?value-quantity=100.0", &["o2"]);
    check(s, "Observation?value-quantity=gt99%7C%7Cmg", &["o2"]);
    check(
        s,
        "Observation?value-quantity=100%7Chttp://unitsofmeasure.org%7Cg",
        &["o3"],
    );
    check(s, "Observation?value-quantity=lt100", &["o1"]);
    check(s, "Observation?value-quantity=le100", &["o1", "o2"]);
    check(s, "Observation?value-quantity=ap100", &["o2", "o3"]);
    check(s, "Observation?value-quantity=ne100", &["o1"]);
    let ra = |id: &str, p: &str| {
        serde_json::from_str::<Value>(&format!(r#"{{"resourceType":"RiskAssessment","id":"{id}","status":"final","subject":{{"reference":"Patient/x"}},"prediction":[{{"probabilityDecimal":{p}}}]}}"#)).unwrap()
    };
    put(s, ra("r1", "0.25"));
    put(s, ra("r2", "0.8"));
    check(s, "RiskAssessment?probability=gt0.5", &["r2"]);
    check(s, "RiskAssessment?probability=0.25", &["r1"]);
    check(s, "RiskAssessment?probability=le0.8", &["r1", "r2"]);
    patients(s);
    check(
        s,
        "Patient?_profile=http://example.org/fhir/StructureDefinition/icm-patient",
        &["zoe"],
    );
    check(
        s,
        "Patient?_profile=http://example.org/fhir/StructureDefinition",
        &[],
    );
    check(
        s,
        "Patient?_profile:below=http://example.org/fhir/",
        &["zoe"],
    );
});

search_tests!(missing_modifier, |s| {
    patients(s);
    check(s, "Patient?birthdate:missing=true", &["nobirth"]);
    check(
        s,
        "Patient?birthdate:missing=false",
        &["zoe", "zoey", "bob"],
    );
    check(s, "Patient?gender:missing=true", &["nobirth"]);
    check(s, "Patient?address-city:missing=false", &["zoe", "bob"]);
    check(
        s,
        "Patient?general-practitioner:missing=true",
        &["zoe", "zoey", "bob", "nobirth"],
    );
    check(s, "Patient?_id:missing=true", &[]);
});

search_tests!(deleted_and_old_versions_never_match, |s| {
    patients(s);
    // Old version name Müller; the current one is Meyer.
    put(
        s,
        json!({"resourceType": "Patient", "id": "zoe", "name": [{"family": "Meyer"}], "gender": "female"}),
    );
    check(s, "Patient?family=muller", &["zoey"]);
    check(s, "Patient?family=meyer", &["zoe"]);
    check(s, "Patient?birthdate=1950-06-15", &[]);
    s.delete("Patient/zoey").expect(204);
    check(s, "Patient?family=muller", &[]);
    check(s, "Patient?gender=female", &["zoe"]);
    check(s, "Patient?_id=zoey", &[]);
    // Recreated after delete: matches again.
    put(
        s,
        json!({"resourceType": "Patient", "id": "zoey", "name": [{"family": "Mullerson"}]}),
    );
    check(s, "Patient?family=muller", &["zoey"]);
});

search_tests!(sorting_and_paging, |s| {
    // Ties on the first key are broken by the second key, then by creation order.
    let t = |id: &str, prio: &str, start: &str| {
        json!({"resourceType": "Task", "id": id, "status": "requested", "intent": "order", "priority": prio,
            "executionPeriod": {"start": start}})
    };
    put(s, t("a", "routine", "2026-01-03"));
    put(s, t("b", "urgent", "2026-01-01"));
    put(s, t("c", "routine", "2026-01-01"));
    put(s, t("d", "urgent", "2026-01-01"));
    put(s, t("e", "asap", "2026-01-02"));
    put(
        s,
        json!({"resourceType": "Task", "id": "f", "status": "requested", "intent": "order"}),
    );
    assert_eq!(
        ids(s, "Task?_sort=period&_count=100"),
        vec!["b", "c", "d", "e", "a", "f"]
    );
    assert_eq!(
        ids(s, "Task?_sort=-period&_count=100"),
        vec!["a", "e", "b", "c", "d", "f"]
    );
    assert_eq!(
        ids(s, "Task?_sort=priority,-period"),
        vec!["e", "a", "c", "b", "d", "f"]
    );
    assert_eq!(
        ids(s, "Task?_sort=-_id"),
        vec!["f", "e", "d", "c", "b", "a"]
    );
    // The same orders, two per page, following next links.
    assert_eq!(
        ids(s, "Task?_sort=period&_count=2"),
        vec!["b", "c", "d", "e", "a", "f"]
    );
    assert_eq!(
        ids(s, "Task?_sort=priority,-period&_count=2"),
        vec!["e", "a", "c", "b", "d", "f"]
    );
    assert_eq!(ids(s, "Task?_count=4"), vec!["a", "b", "c", "d", "e", "f"]);

    // Links: self/next, then previous from the second page; the last page has no next.
    let p1 = s.get("Task?_sort=period&_count=4").json();
    assert_eq!(p1["total"], Value::Null);
    assert!(link(&p1, "previous").is_none());
    let next = link(&p1, "next").unwrap();
    assert!(
        next.contains("_sort=period") && next.contains("_count=4"),
        "{next}"
    );
    // Data changes between pages: a new task sorting before the boundary does not shift page 2.
    put(s, t("early", "routine", "2025-01-01"));
    let p2 = s.get(&next).json();
    let got: Vec<&str> = p2["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec!["a", "f"]);
    assert!(link(&p2, "next").is_none());
    let prev = link(&p2, "previous").unwrap();
    let p0 = s.get(&prev).json();
    let got: Vec<&str> = p0["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec!["b", "c", "d", "e"]);
    // ... and that page has a previous page again (the new task).
    let pp = s.get(&link(&p0, "previous").unwrap()).json();
    assert_eq!(pp["entry"][0]["resource"]["id"], "early");
    // Paging past the end: an empty page.
    let r = s.get("Task?_count=0").json();
    assert!(r["entry"].is_null());
    // A malformed page token is a 400.
    s.get("Task?_page=zzz").expect_outcome(400, "invalid");
});

search_tests!(totals_summary_elements, |s| {
    patients(s);
    let b = s
        .get("Patient?gender=female&_total=accurate&_count=1")
        .json();
    assert_eq!(b["total"], 2);
    assert_eq!(b["entry"].as_array().unwrap().len(), 1);
    let b = s.get("Patient?gender=female&_total=none").json();
    assert!(b["total"].is_null());
    let b = s.get("Patient?gender=female").json();
    assert_eq!(
        b["total"], 2,
        "a first page holding every match reports its total"
    );
    let b = s.get("Patient?_summary=count").json();
    assert_eq!(b["total"], 4);
    assert!(b["entry"].is_null());
    let b = s.get("Patient?_id=zoe&_elements=gender").json();
    let r = &b["entry"][0]["resource"];
    assert_eq!(r["gender"], "female");
    assert!(r["name"].is_null() && r["birthDate"].is_null());
    assert_eq!(r["id"], "zoe");
    assert!(r["meta"]["tag"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["code"] == "SUBSETTED"));
    let b = s.get("Patient?_id=zoe&_summary=true").json();
    let r = &b["entry"][0]["resource"];
    assert_eq!(r["birthDate"], "1950-06-15");
    assert!(r["telecom"].is_array()); // telecom is a summary element of Patient
    let b = s.get("Patient?_id=zoe&_summary=data").json();
    assert!(b["entry"][0]["resource"]["text"].is_null());
    assert_eq!(b["entry"][0]["fullUrl"], format!("{}/Patient/zoe", s.base));
});

search_tests!(unknown_parameters_reported_or_strict, |s| {
    patients(s);
    // A malformed value of a known parameter is refused, whatever the handling preference:
    // dropping it would answer with more than was asked for.
    for bad in [
        "birthdate=notadate",
        "birthdate=2024-02-30",
        "birthdate=xx2024",
        "gender:nonsense=male",
    ] {
        for prefer in ["handling=lenient", "handling=strict"] {
            let r = s.request(
                "GET",
                &format!("Patient?gender=male&{bad}"),
                &[("Prefer", prefer)],
                None,
            );
            let oo = r.expect_outcome(400, "invalid");
            let param = bad.split(['=', ':']).next().unwrap();
            assert!(oo.to_string().contains(param), "{bad}: {oo}");
        }
    }
    let r = s.get("Patient?gender=male&foo=bar&_unknown=1");
    r.expect(200);
    let b = r.json();
    let entries = b["entry"].as_array().unwrap();
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["search"]["mode"] == "match")
            .count(),
        1
    );
    let oo = entries
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .unwrap();
    assert_eq!(oo["resource"]["resourceType"], "OperationOutcome");
    assert_eq!(oo["resource"]["issue"].as_array().unwrap().len(), 2);
    let selfl = link(&b, "self").unwrap();
    assert!(
        selfl.contains("gender=male") && !selfl.contains("foo") && !selfl.contains("_unknown"),
        "{selfl}"
    );
    s.request(
        "GET",
        "Patient?gender=male&foo=bar",
        &[("Prefer", "handling=strict")],
        None,
    )
    .expect_outcome(400, "invalid");
    s.request(
        "GET",
        "Patient?gender=male",
        &[("Prefer", "handling=strict")],
        None,
    )
    .expect(200);
    s.get("Foo?x=1").expect_outcome(404, "not-found");
});

search_tests!(post_search_equals_get, |s| {
    patients(s);
    let get = ids(s, "Patient?gender=female&name=zoe");
    let r = s.request(
        "POST",
        "Patient/_search?gender=female",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some("name=zo%C3%AB"),
    );
    r.expect(200);
    let b = r.json();
    let mut post: Vec<String> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    post.sort();
    assert_eq!(sorted(get), post);
    s.request(
        "POST",
        "Patient/_search",
        &[("Content-Type", "application/fhir+json")],
        Some("{}"),
    )
    .expect_outcome(415, "not-supported");
});

fn care_graph(s: &TestServer) {
    patients(s);
    put(
        s,
        json!({"resourceType": "Practitioner", "id": "dr", "name": [{"family": "House"}]}),
    );
    put(
        s,
        json!({"resourceType": "CareTeam", "id": "team", "status": "active", "subject": {"reference": "Patient/zoe"},
        "participant": [{"member": {"reference": "Practitioner/dr"}}]}),
    );
    put(
        s,
        json!({"resourceType": "Condition", "id": "dm", "subject": {"reference": "Patient/zoe"}, "code": {"text": "diabetes"}}),
    );
    put(
        s,
        json!({"resourceType": "Goal", "id": "g1", "lifecycleStatus": "active", "description": {"text": "HbA1c < 7"},
        "subject": {"reference": "Patient/zoe"}, "addresses": [{"reference": "Condition/dm"}]}),
    );
    put(
        s,
        json!({"resourceType": "CarePlan", "id": "cp-zoe", "status": "active", "intent": "plan",
        "subject": {"reference": "Patient/zoe"}, "careTeam": [{"reference": "CareTeam/team"}],
        "goal": [{"reference": "Goal/g1"}], "addresses": [{"reference": "Condition/dm"}]}),
    );
    put(
        s,
        json!({"resourceType": "CarePlan", "id": "cp-bob", "status": "completed", "intent": "plan",
        "subject": {"reference": "Patient/bob"}}),
    );
    put(
        s,
        json!({"resourceType": "Task", "id": "t-zoe", "status": "requested", "intent": "order",
        "for": {"reference": "Patient/zoe"}, "owner": {"reference": "Practitioner/dr"}, "basedOn": [{"reference": "CarePlan/cp-zoe"}]}),
    );
    put(
        s,
        json!({"resourceType": "Task", "id": "t-bob", "status": "completed", "intent": "order",
        "for": {"reference": "Patient/bob"}, "basedOn": [{"reference": "CarePlan/cp-bob"}]}),
    );
}

search_tests!(chaining_and_reverse_chaining, |s| {
    care_graph(s);
    check(s, "CarePlan?subject:Patient.name=zoe", &["cp-zoe"]);
    check(s, "CarePlan?subject.family=smith", &["cp-bob"]);
    check(s, "Task?patient.birthdate=1950", &["t-zoe"]);
    check(s, "Task?patient.birthdate=1951", &["t-bob"]);
    check(s, "Task?owner:Practitioner.name=house", &["t-zoe"]);
    check(
        s,
        "CarePlan?care-team=team&goal=g1&condition=dm",
        &["cp-zoe"],
    );
    check(s, "Patient?_has:CarePlan:subject:status=active", &["zoe"]);
    check(
        s,
        "Patient?_has:CarePlan:subject:status=completed",
        &["bob"],
    );
    check(
        s,
        "Patient?_has:Task:patient:status=requested,completed",
        &["zoe", "bob"],
    );
    check(s, "Practitioner?_has:Task:owner:status=requested", &["dr"]);
    check(s, "Patient?_has:Task:patient:status=cancelled", &[]);
    // A deleted referrer no longer counts.
    s.delete("CarePlan/cp-bob").expect(204);
    check(s, "Patient?_has:CarePlan:subject:status=completed", &[]);
    check(s, "CarePlan?subject.family=smith", &[]);
});

fn modes(b: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["search"]["mode"].as_str().unwrap().to_string(),
                format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str().unwrap(),
                    e["resource"]["id"].as_str().unwrap_or("-")
                ),
            )
        })
        .collect();
    v.sort();
    v
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

search_tests!(include_and_revinclude, |s| {
    care_graph(s);
    let b = s
        .get("Task?_id=t-zoe&_include=Task:owner&_include=Task:patient")
        .json();
    assert_eq!(
        modes(&b),
        pairs(&[
            ("include", "Patient/zoe"),
            ("include", "Practitioner/dr"),
            ("match", "Task/t-zoe")
        ])
    );
    let b = s.get("Task?_id=t-zoe&_include=Task:*").json();
    assert!(modes(&b).contains(&("include".into(), "CarePlan/cp-zoe".into())));
    let b = s
        .get("Patient?_id=zoe&_revinclude=CarePlan:subject&_revinclude=Task:patient")
        .json();
    assert_eq!(
        modes(&b),
        pairs(&[
            ("include", "CarePlan/cp-zoe"),
            ("include", "Task/t-zoe"),
            ("match", "Patient/zoe")
        ])
    );
    // :iterate follows the included care plan to its goal and condition.
    let b = s.get("Patient?_id=zoe&_revinclude=CarePlan:subject&_include:iterate=CarePlan:goal&_include:iterate=CarePlan:condition").json();
    assert_eq!(
        modes(&b),
        pairs(&[
            ("include", "CarePlan/cp-zoe"),
            ("include", "Condition/dm"),
            ("include", "Goal/g1"),
            ("match", "Patient/zoe")
        ])
    );
    // Without :iterate, an include from another type is reported, not applied.
    let b = s.get("Patient?_id=zoe&_include=CarePlan:goal").json();
    assert!(b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["search"]["mode"] == "outcome"));
    // The total counts matches only.
    let b = s
        .get("Patient?_id=zoe&_revinclude=Task:patient&_total=accurate")
        .json();
    assert_eq!(b["total"], 1);
});

search_tests!(store_api_find_ids_referrers_compartment, |s| {
    care_graph(s);
    let store =
        icm_fhir::store::Store::new(&s.database_url, 2, std::time::Duration::from_secs(5)).unwrap();
    let mut conn = store.conn().unwrap();
    use icm_fhir::store::search::{find_ids, search};
    use icm_fhir::store::visibility::{Everything, Rows, Visibility};
    /// A caller restricted to some patients' compartments (as a patient token is).
    struct Only(std::collections::BTreeSet<String>);
    impl Visibility for Only {
        fn rows(&self, _ty: &str) -> Rows<'_> {
            Rows::Patients(&self.0)
        }
    }
    let only = |ids: &[&str]| Only(ids.iter().map(|s| s.to_string()).collect());
    assert_eq!(
        find_ids(&mut conn, "Patient", "identifier=urn:mrn|100", &Everything).unwrap(),
        vec!["zoe"]
    );
    assert_eq!(
        find_ids(&mut conn, "Task", "status=requested,completed", &Everything)
            .unwrap()
            .len(),
        2
    );
    assert!(find_ids(&mut conn, "Task", "nonsense=1", &Everything).is_err());
    assert_eq!(
        icm_fhir::store::references::referrers(&mut conn, &Everything, "Practitioner", "dr", 10)
            .unwrap()
            .visible,
        vec![
            ("CareTeam".to_string(), "team".to_string()),
            ("Task".to_string(), "t-zoe".to_string())
        ]
    );
    // Compartment: a token for bob sees only bob's data, even through _revinclude and _has.
    let q = icm_fhir::fhir::search::SearchQuery::parse(
        "Task",
        "_include=Task:patient&_revinclude:iterate=CarePlan:subject",
    )
    .unwrap();
    let page = search(&mut conn, &q, 50, &only(&["bob"])).unwrap();
    let m: Vec<&str> = page.matches.iter().map(|f| f.res_id.as_str()).collect();
    assert_eq!(m, vec!["t-bob"]);
    let inc: Vec<String> = page
        .included
        .iter()
        .map(|f| format!("{}/{}", f.res_type, f.res_id))
        .collect();
    assert_eq!(inc, vec!["Patient/bob", "CarePlan/cp-bob"]);
    let q =
        icm_fhir::fhir::search::SearchQuery::parse("Patient", "_revinclude=Task:patient").unwrap();
    let page = search(&mut conn, &q, 50, &only(&["bob"])).unwrap();
    assert_eq!(page.matches.len(), 1);
    assert!(page.included.iter().all(|f| f.res_id.contains("bob")));
    // Chains and _has cannot probe another patient's data: zoe's task owner also owns a task
    // for bob, and bob's token must not learn anything about zoe's tasks through it.
    put(
        s,
        json!({"resourceType": "Task", "id": "t-bob2", "status": "requested", "intent": "order",
        "for": {"reference": "Patient/bob"}, "owner": {"reference": "Practitioner/dr"}}),
    );
    let probe = "owner._has:Task:owner:patient=zoe";
    let q = icm_fhir::fhir::search::SearchQuery::parse("Task", probe).unwrap();
    assert!(q.issues.is_empty(), "{:?}", q.issues);
    let open: Vec<String> = search(&mut conn, &q, 50, &Everything)
        .unwrap()
        .matches
        .into_iter()
        .map(|f| f.res_id)
        .collect();
    assert_eq!(open, vec!["t-zoe", "t-bob2"]);
    assert!(search(&mut conn, &q, 50, &only(&["bob"]))
        .unwrap()
        .matches
        .is_empty());
    let q =
        icm_fhir::fhir::search::SearchQuery::parse("Patient", "_has:Task:patient:status=requested")
            .unwrap();
    assert_eq!(
        search(&mut conn, &q, 50, &only(&["bob", "zoe"]))
            .unwrap()
            .matches
            .len(),
        2
    ); // zoe (t-zoe) and bob (t-bob2)
    let q =
        icm_fhir::fhir::search::SearchQuery::parse("Practitioner", "_has:Task:owner:patient=zoe")
            .unwrap();
    // The _has reaches zoe's Task, which bob may not see.
    assert!(search(&mut conn, &q, 50, &only(&["bob"]))
        .unwrap()
        .matches
        .is_empty());
    let q =
        icm_fhir::fhir::search::SearchQuery::parse("Practitioner", "_has:Task:owner:patient=zoe")
            .unwrap();
    assert_eq!(
        search(&mut conn, &q, 50, &Everything)
            .unwrap()
            .matches
            .len(),
        1
    );
    // Types outside the Patient compartment are not patient data: visible to bob's token.
    let q = icm_fhir::fhir::search::SearchQuery::parse("Practitioner", "").unwrap();
    assert_eq!(
        search(&mut conn, &q, 50, &only(&["bob"]))
            .unwrap()
            .matches
            .len(),
        1
    );
});

backend_tests!(capability_statement_lists_search, |s| {
    let cs = s.get("metadata").json();
    let task = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Task")
        .unwrap()
        .clone();
    assert!(task["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["code"] == "search-type"));
    let sp = task["searchParam"].as_array().unwrap();
    let owner = sp.iter().find(|p| p["name"] == "owner").unwrap();
    assert_eq!(owner["type"], "reference");
    assert_eq!(
        owner["definition"],
        "http://hl7.org/fhir/SearchParameter/Task-owner"
    );
    for name in [
        "_id",
        "_lastUpdated",
        "_tag",
        "_profile",
        "_security",
        "patient",
        "period",
        "status",
    ] {
        assert!(sp.iter().any(|p| p["name"] == name), "{name}");
    }
    // Full-text parameters are advertised (tests/fulltext.rs checks every type).
    assert!(sp.iter().any(|p| p["name"] == "_text"));
    assert!(sp.iter().any(|p| p["name"] == "_content"));
});

backend_tests!(reindex_rebuilds_rows, |s| {
    patients(s);
    let store =
        icm_fhir::store::Store::new(&s.database_url, 2, std::time::Duration::from_secs(5)).unwrap();
    {
        let mut conn = store.conn().unwrap();
        let mut q = icm_fhir::store::sql::Sql::new();
        q.push("DELETE FROM search_string");
        icm_fhir::store::sql::execute(&mut conn, &q).unwrap();
    }
    check(s, "Patient?family=muller", &[]);
    s.delete("Patient/bob").expect(204);
    let n = icm_fhir::store::index::reindex(&store, None, 2).unwrap();
    // Every row, deleted ones included (they get no index rows): the four patients and the
    // shipped conformance resources the server stored at start.
    assert_eq!(
        n,
        4 + icm_fhir::fhir::validate::profiles::RESOURCES.len() as u64
    );
    check(s, "Patient?family=muller", &["zoe", "zoey"]);
    check(s, "Patient?family=smith", &[]);
});

backend_tests!(meta_parameters_and_text_summary, |s| {
    put(
        s,
        json!({"resourceType": "Task", "id": "s1", "status": "requested", "intent": "order",
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
                 "source": "http://ehr.example.org/feed"},
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">call patient</div>"},
        "description": "call patient"}),
    );
    put(
        s,
        json!({"resourceType": "Task", "id": "s2", "status": "requested", "intent": "order"}),
    );
    check(
        s,
        "Task?_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality%7CR",
        &["s1"],
    );
    check(s, "Task?_security:not=R", &["s2"]);
    check(s, "Task?_source=http://ehr.example.org/feed", &["s1"]);
    check(s, "Task?_security:missing=true", &["s2"]);
    let b = s.get("Task?_id=s1&_summary=text").json();
    let r = &b["entry"][0]["resource"];
    assert!(r["text"].is_object());
    assert_eq!(r["status"], "requested"); // mandatory
    assert!(r["description"].is_null());
    // POST and GET give the same order and links.
    let g = s.get("Task?_sort=-_id&_count=1").json();
    let p = s
        .request(
            "POST",
            "Task/_search",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some("_sort=-_id&_count=1"),
        )
        .json();
    assert_eq!(g["entry"][0]["resource"]["id"], "s2");
    assert_eq!(p["entry"][0]["resource"]["id"], "s2");
    assert_eq!(link(&g, "next"), link(&p, "next"));
});

backend_tests!(malformed_input_never_500, |s| {
    patients(s);
    for q in [
        "Patient?birthdate=ge",
        "Patient?birthdate=xx2020",
        "Patient?_sort=",
        "Patient?_sort=-",
        "Patient?_count=abc",
        "Patient?_count=-1",
        "Patient?_count=99999999999999999999",
        "Patient?_include=bad",
        "Patient?_include=Patient:nope",
        "Patient?name:exact=",
        "Patient?name=",
        "Patient?_has:Bad:x:y=1",
        "Patient?_has:CarePlan:subject=1",
        "Patient?general-practitioner.name.family=x",
        "Patient?general-practitioner:Nope.name=x",
        "Patient?_page=a[1]",
        "Patient?_page=a[%22x%22,1]",
        "Patient?_sort=birthdate&_page=a[null,1]",
        "Patient?_sort=birthdate&_page=b[1,2]",
        "Patient?identifier=%7C",
        "Patient?identifier=a%7Cb%7Cc",
        "Patient?_id=",
        "Patient?_lastUpdated=ap2020",
        "Patient?birthdate=ap1900",
        "Observation?value-quantity=abc%7C%7Cmg",
        "Observation?value-quantity=1e400",
        "Patient?name=%00",
        "Patient?name=%27%3B%20DROP%20TABLE%20resources%3B--",
        "Patient?_summary=maybe&_total=perhaps&_elements=",
        "Patient?link=Patient/",
        "Patient?organization=Foo/1",
        "Task?focus.name=x",
    ] {
        let r = s.get(q);
        assert!(r.status < 500, "{q}: {} {}", r.status, r.body);
    }
    check(
        s,
        "Patient?name=%27%3B%20DROP%20TABLE%20resources%3B--",
        &[],
    );
    check(s, "Patient?family=smith", &["bob"]);
});

search_tests!(total_estimate_and_none, |s| {
    patients(s);
    let exact = s.get("Patient?_total=accurate").json()["total"]
        .as_u64()
        .unwrap();
    let b = s.get("Patient?_total=estimate").json();
    let est = b["total"].as_u64().expect("an estimate is a number");
    if s.backend == Backend::Sqlite {
        // SQLite's planner gives no row estimate: the exact count.
        assert_eq!(est, exact);
    } else {
        // PostgreSQL's planner estimate: a number in the right range on a tiny table.
        assert!(est <= exact.max(1) * 1000, "{est} vs {exact}");
    }
    // With paging, no total unless asked for; _total=none never counts.
    let b = s.get("Patient?_count=1&_total=none").json();
    assert!(b.get("total").is_none(), "{b}");
});
