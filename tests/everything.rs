//! Patient/$everything parameters on both backends: `start`/`end` (care dates), `_since`,
//! `_type`, `_count` and keyset paging, pinned to the exact members of a hand-built patient.
mod common;
use common::search::*;
use common::*;

/// `Type/id` of every entry of every page, following `next` links; also the totals seen.
fn all_pages(s: &TestServer, path: &str) -> (Vec<String>, Vec<u64>, usize) {
    let mut out = vec![];
    let mut totals = vec![];
    let mut pages = 0;
    let mut url = s.url(path);
    loop {
        let r = s.get(&url);
        r.expect(200);
        let b = r.json();
        pages += 1;
        totals.push(b["total"].as_u64().unwrap());
        out.extend(entries(&b));
        match link(&b, "next") {
            Some(n) => url = n,
            None => return (out, totals, pages),
        }
    }
}

fn entries(b: &Value) -> Vec<String> {
    b["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap(),
                e["resource"]["id"].as_str().unwrap()
            )
        })
        .collect()
}

/// The entries of one $everything request (one page of at most 100).
#[track_caller]
fn everything(s: &TestServer, query: &str) -> Vec<String> {
    let r = s.get(&format!("Patient/pe/$everything?_count=100&{query}"));
    r.expect(200);
    let b = r.json();
    let got = entries(&b);
    assert_eq!(b["total"].as_u64(), Some(got.len() as u64), "{query}");
    got
}

fn obs(id: &str, patient: &str, extra: Value) -> Value {
    let mut v = json!({"resourceType": "Observation", "id": id, "status": "final",
        "code": {"text": "weight"}, "subject": {"reference": format!("Patient/{patient}")}});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

/// Patient `pe` with care dated in 2020–2024 and undated, what it references, and another
/// patient's record.
fn record(s: &TestServer) {
    for id in ["dr-a", "dr-b", "dr-c"] {
        put(s, json!({"resourceType": "Practitioner", "id": id}));
    }
    put(
        s,
        json!({"resourceType": "Organization", "id": "org", "name": "Org"}),
    );
    put(
        s,
        json!({"resourceType": "Patient", "id": "pe",
        "generalPractitioner": [{"reference": "Practitioner/dr-a"}],
        "managingOrganization": {"reference": "Organization/org"}}),
    );
    put(s, json!({"resourceType": "Patient", "id": "other"}));
    put(
        s,
        obs(
            "o-2023",
            "pe",
            json!({"effectiveDateTime": "2023-06-01", "performer": [{"reference": "Practitioner/dr-b"}]}),
        ),
    );
    put(
        s,
        obs(
            "o-2024",
            "pe",
            json!({"effectiveDateTime": "2024-03-15T10:00:00Z"}),
        ),
    );
    put(s, obs("o-none", "pe", json!({})));
    put(
        s,
        obs(
            "o-period",
            "pe",
            json!({"effectivePeriod": {"start": "2023-12-20", "end": "2024-01-10"}}),
        ),
    );
    put(
        s,
        obs(
            "o-other",
            "other",
            json!({"effectiveDateTime": "2024-03-15"}),
        ),
    );
    let class =
        json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"});
    put(
        s,
        json!({"resourceType": "Encounter", "id": "e-2024", "status": "finished", "class": class,
        "subject": {"reference": "Patient/pe"}, "period": {"start": "2024-02-01", "end": "2024-02-03"},
        "participant": [{"individual": {"reference": "Practitioner/dr-c"}}]}),
    );
    put(
        s,
        json!({"resourceType": "Encounter", "id": "e-open", "status": "in-progress", "class": class,
        "subject": {"reference": "Patient/pe"}, "period": {"start": "2022-01-01"}}),
    );
    put(
        s,
        json!({"resourceType": "Condition", "id": "c-onset", "subject": {"reference": "Patient/pe"},
        "onsetDateTime": "2020-05-01", "recordedDate": "2024-01-05"}),
    );
    put(
        s,
        json!({"resourceType": "Condition", "id": "c-recorded", "subject": {"reference": "Patient/pe"},
        "recordedDate": "2024-04-01"}),
    );
    put(
        s,
        json!({"resourceType": "Condition", "id": "c-nodate", "subject": {"reference": "Patient/pe"}}),
    );
    put(
        s,
        json!({"resourceType": "Task", "id": "t-2024", "status": "requested", "intent": "order",
        "for": {"reference": "Patient/pe"}, "authoredOn": "2024-05-05"}),
    );
    put(
        s,
        json!({"resourceType": "Task", "id": "t-2022", "status": "requested", "intent": "order",
        "for": {"reference": "Patient/pe"}, "authoredOn": "2022-01-01"}),
    );
    put(
        s,
        json!({"resourceType": "MedicationRequest", "id": "mr", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"text": "metformin"}, "subject": {"reference": "Patient/pe"},
        "authoredOn": "2023-02-02"}),
    );
    put(
        s,
        json!({"resourceType": "Coverage", "id": "cov", "status": "active",
        "beneficiary": {"reference": "Patient/pe"}, "payor": [{"reference": "Organization/org"}]}),
    );
}

fn list(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

const IN_2024: &[&str] = &[
    "Patient/pe",
    "Condition/c-nodate",
    "Condition/c-recorded",
    "Coverage/cov",
    "Encounter/e-2024",
    "Encounter/e-open",
    "Observation/o-2024",
    "Observation/o-none",
    "Observation/o-period",
    "Organization/org",
    "Practitioner/dr-a",
    "Practitioner/dr-c",
    "Task/t-2024",
];

backend_tests!(everything_care_dates, |s| {
    record(s);
    assert_eq!(
        everything(s, ""),
        list(&[
            "Patient/pe",
            "Condition/c-nodate",
            "Condition/c-onset",
            "Condition/c-recorded",
            "Coverage/cov",
            "Encounter/e-2024",
            "Encounter/e-open",
            "MedicationRequest/mr",
            "Observation/o-2023",
            "Observation/o-2024",
            "Observation/o-none",
            "Observation/o-period",
            "Organization/org",
            "Practitioner/dr-a",
            "Practitioner/dr-b",
            "Practitioner/dr-c",
            "Task/t-2022",
            "Task/t-2024",
        ])
    );
    // 2024: overlapping periods and open-ended ones count, a Condition's onset wins over its
    // recorded date, undated resources stay, and dr-b (only on a 2023 Observation) goes.
    assert_eq!(everything(s, "start=2024&end=2024"), list(IN_2024));
    assert_eq!(
        everything(s, "start=2024-01-01&end=2024-12-31T23:59:59Z"),
        list(IN_2024)
    );
    // Open on one side.
    assert_eq!(
        everything(s, "start=2024-03"),
        list(&[
            "Patient/pe",
            "Condition/c-nodate",
            "Condition/c-recorded",
            "Coverage/cov",
            "Encounter/e-open",
            "Observation/o-2024",
            "Observation/o-none",
            "Organization/org",
            "Practitioner/dr-a",
            "Task/t-2024",
        ])
    );
    assert_eq!(
        everything(s, "end=2022"),
        list(&[
            "Patient/pe",
            "Condition/c-nodate",
            "Condition/c-onset",
            "Coverage/cov",
            "Encounter/e-open",
            "Observation/o-none",
            "Organization/org",
            "Practitioner/dr-a",
            "Task/t-2022",
        ])
    );
    // Day precision; a dateTime value falls within its day.
    assert_eq!(
        everything(s, "start=2024-03-15&end=2024-03-15"),
        list(&[
            "Patient/pe",
            "Condition/c-nodate",
            "Coverage/cov",
            "Encounter/e-open",
            "Observation/o-2024",
            "Observation/o-none",
            "Organization/org",
            "Practitioner/dr-a",
        ])
    );
    // With _type: referenced types come from the members in range; repeated _type adds up.
    assert_eq!(
        everything(s, "start=2024&end=2024&_type=Observation,Practitioner"),
        list(&[
            "Observation/o-2024",
            "Observation/o-none",
            "Observation/o-period",
            "Practitioner/dr-a",
            "Practitioner/dr-c",
        ])
    );
    assert_eq!(
        everything(s, "start=2024&end=2024&_type=Observation&_type=Task"),
        list(&[
            "Observation/o-2024",
            "Observation/o-none",
            "Observation/o-period",
            "Task/t-2024",
        ])
    );
    assert_eq!(
        everything(s, "_type=Condition&end=2023"),
        list(&["Condition/c-nodate", "Condition/c-onset"])
    );
    // Another patient's resources never appear; a deleted one neither.
    s.delete("Task/t-2024").expect(204);
    let mut without: Vec<String> = list(IN_2024);
    without.retain(|x| x != "Task/t-2024");
    assert_eq!(everything(s, "start=2024&end=2024"), without);
    // Malformed or contradictory dates are a 400 naming the parameter.
    for (q, name) in [
        ("start=2024-13", "start"),
        ("end=soon", "end"),
        ("start=2024-02-30", "start"),
        ("start=2025&end=2024", "start"),
        ("start=", "start"),
    ] {
        let v = s
            .get(&format!("Patient/pe/$everything?{q}"))
            .expect_outcome(400, "invalid");
        assert!(v.to_string().contains(name), "{q}: {v}");
    }
});

backend_tests!(everything_paging_since_and_count, |s| {
    record(s);
    // Pages of 4 across the date filter: every member exactly once, in order, same total.
    let (seen, totals, pages) = all_pages(s, "Patient/pe/$everything?start=2024&end=2024&_count=4");
    assert_eq!(seen, list(IN_2024));
    assert_eq!(pages, 4);
    assert!(totals.iter().all(|t| *t == 13), "{totals:?}");
    // The links carry the filter; `previous` goes back one page.
    let first = s
        .get("Patient/pe/$everything?start=2024&end=2024&_count=4")
        .json();
    let next = link(&first, "next").unwrap();
    assert!(next.contains("start=2024") && next.contains("end=2024") && next.contains("_count=4"));
    let second = s.get(&next).json();
    assert_eq!(entries(&second), list(&IN_2024[4..8]));
    let back = s.get(&link(&second, "previous").unwrap()).json();
    assert_eq!(entries(&back), list(&IN_2024[..4]));
    // Data written between pages: the next page still starts after the last entry shown.
    put(
        s,
        obs("o-aaa", "pe", json!({"effectiveDateTime": "2024-07-01"})),
    );
    let second_again = s.get(&next).json();
    assert_eq!(
        entries(&second_again),
        list(&[
            "Encounter/e-2024",
            "Encounter/e-open",
            "Observation/o-2024",
            "Observation/o-aaa",
        ])
    );
    // _count=0: the total only.
    let b = s
        .get("Patient/pe/$everything?start=2024&end=2024&_count=0")
        .json();
    assert_eq!(b["total"], 14);
    assert!(b.get("entry").is_none());
    assert!(link(&b, "next").is_none());
    // _since: last updated at or after the instant, combined with the dates and _type.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let o = put(
        s,
        obs("o-none", "pe", json!({"note": [{"text": "re-weighed"}]})),
    );
    let since = o["meta"]["lastUpdated"].as_str().unwrap().to_string();
    put(
        s,
        obs(
            "o-2023",
            "pe",
            json!({"effectiveDateTime": "2023-06-01", "note": [{"text": "corrected"}]}),
        ),
    );
    let enc = since.replace('+', "%2B");
    assert_eq!(
        everything(s, &format!("_since={enc}")),
        list(&["Observation/o-2023", "Observation/o-none"])
    );
    assert_eq!(
        everything(s, &format!("_since={enc}&start=2024&end=2024")),
        list(&["Observation/o-none"])
    );
    assert_eq!(
        everything(s, &format!("_since={enc}&start=2024&_type=Observation")),
        list(&["Observation/o-none"])
    );
    assert_eq!(
        everything(s, &format!("_since={enc}&_type=Practitioner")),
        Vec::<String>::new()
    );
    s.get("Patient/pe/$everything?_since=2024-99")
        .expect_outcome(400, "invalid");
    s.get("Patient/pe/$everything?_type=Observation,Nope")
        .expect_outcome(400, "invalid");
});

backend_tests!(everything_parameters_are_documented, |s| {
    let cs = s.get("metadata").json();
    let patient = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Patient")
        .unwrap()
        .clone();
    let op = patient["operation"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "everything")
        .unwrap()
        .clone();
    let doc = op["documentation"].as_str().unwrap();
    for p in [
        "`start`", "`end`", "`_since`", "`_type`", "`_count`", "`_page`",
    ] {
        assert!(doc.contains(p), "{p} missing from {doc}");
    }
    let api = s.get("/openapi.json").json();
    let names: Vec<&str> = api["paths"]["/fhir/Patient/{id}/$everything"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for p in ["start", "end", "_since", "_type", "_count", "_page"] {
        assert!(names.contains(&p), "{p} missing from {names:?}");
    }
});
