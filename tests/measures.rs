//! `$icm-metrics` on both backends: every measure on hand-built cases with exact counts (day 30
//! vs 31 readmissions, a patient enrolled mid-period, exclusions, most-recent semantics,
//! business days over a weekend), the individual report, the pre/post comparison, the
//! caller's access, malformed parameters, and the Measure resources served.
mod common;
use std::collections::BTreeMap;

use common::auth::*;
use common::*;

const PROGRAM: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-program";
const ACT: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";
const WORKFLOW: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-workflow";
const EXPERIENCE: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-experience";

/// (measure id, group code) → ([initial, denominator, exclusion, numerator], score).
type Results = BTreeMap<(String, String), ([i64; 4], Option<f64>)>;

fn results(b: &Value) -> Results {
    assert_eq!(b["resourceType"], "Bundle", "{b}");
    assert_eq!(b["type"], "collection");
    let mut out = Results::new();
    for e in b["entry"].as_array().unwrap() {
        let r = &e["resource"];
        assert_eq!(r["resourceType"], "MeasureReport");
        assert_eq!(r["status"], "complete");
        let m = r["measure"]
            .as_str()
            .unwrap()
            .strip_prefix("http://icm-fhir.org/fhir/Measure/")
            .unwrap()
            .to_string();
        for g in r["group"].as_array().unwrap() {
            let code = g["code"]["coding"][0]["code"].as_str().unwrap().to_string();
            let pops: Vec<(&str, i64)> = g["population"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["code"]["coding"][0]["code"].as_str().unwrap(),
                        p["count"].as_i64().unwrap(),
                    )
                })
                .collect();
            let names: Vec<&str> = pops.iter().map(|p| p.0).collect();
            assert_eq!(
                names,
                [
                    "initial-population",
                    "denominator",
                    "denominator-exclusion",
                    "numerator"
                ]
            );
            let counts = [pops[0].1, pops[1].1, pops[2].1, pops[3].1];
            let score = g["measureScore"]["value"].as_f64();
            out.insert((m.clone(), code), (counts, score));
        }
    }
    out
}

/// Every fact kind read from its stored facts (`measure_facts`, written with each resource)
/// equals the same kind computed from the search index tables at read time — the stored facts
/// are a faithful copy, on this world's data, through creates, updates and deletes.
fn stored_facts_match_index(s: &TestServer) {
    use icm_fhir::store::search::facts::{facts, kinds, Fact};
    use icm_fhir::store::visibility::Everything;
    assert!(!kinds().is_empty(), "the fact kinds are installed");
    let store = icm_fhir::store::Store::new(&s.database_url, 1, std::time::Duration::from_secs(10))
        .unwrap();
    let mut conn = store.conn().unwrap();
    let key = |f: &Fact| format!("{f:?}");
    let mut stored_total = 0;
    for kind in kinds() {
        let mut stored = facts(&mut conn, &Everything, kind).unwrap();
        let mut computed = facts(
            &mut conn,
            &Everything,
            &icm_fhir::store::search::facts::FactQuery {
                kind: None,
                ..kind.clone()
            },
        )
        .unwrap();
        stored.sort_by_key(key);
        computed.sort_by_key(key);
        assert_eq!(stored, computed, "kind {:?}", kind.kind);
        // The same facts read for a list of patients (the narrowed reports' path).
        let mut patients: Vec<String> = computed.iter().map(|f| f.patient.clone()).collect();
        patients.dedup();
        let narrowed = icm_fhir::store::search::facts::FactQuery {
            patients: Some(patients),
            ..kind.clone()
        };
        let mut listed = facts(&mut conn, &Everything, &narrowed).unwrap();
        listed.sort_by_key(key);
        assert_eq!(listed, computed, "kind {:?} by patient", kind.kind);
        stored_total += stored.len();
    }
    assert!(stored_total > 0, "the world has facts");
}

/// Run one statement on the test server's database.
fn execute_sql(s: &TestServer, q: &str) {
    use diesel::{Connection, RunQueryDsl};
    match s.database_url.strip_prefix("sqlite://") {
        Some(path) => {
            let mut c = diesel::SqliteConnection::establish(path).unwrap();
            diesel::sql_query(q).execute(&mut c).unwrap();
        }
        None => {
            let mut c = diesel::PgConnection::establish(&s.database_url).unwrap();
            diesel::sql_query(q).execute(&mut c).unwrap();
        }
    };
}

fn metrics(s: &TestServer, token: Option<&str>, query: &str) -> Value {
    let r = s.as_token(token, "GET", &format!("$icm-metrics?{query}"), None);
    assert_eq!(r.status, 200, "{query}: {}", r.body);
    r.json()
}

fn get(res: &Results, m: &str, g: &str) -> ([i64; 4], Option<f64>) {
    *res.get(&(m.to_string(), g.to_string()))
        .unwrap_or_else(|| panic!("no group {m}/{g} in {res:?}"))
}

#[track_caller]
fn close(a: Option<f64>, b: f64) {
    let a = a.expect("a score");
    assert!((a - b).abs() < 5e-7, "score {a} != {b}");
}

fn put(s: &TestServer, body: Value) {
    let path = format!(
        "{}/{}",
        body["resourceType"].as_str().unwrap(),
        body["id"].as_str().unwrap()
    );
    let r = s.put(&path, &body);
    assert!(r.status == 201 || r.status == 200, "{path}: {}", r.body);
}

fn patient(s: &TestServer, id: &str) {
    put(s, json!({"resourceType": "Patient", "id": id}));
}

fn practitioner(s: &TestServer, id: &str) {
    put(s, json!({"resourceType": "Practitioner", "id": id}));
}

/// An enrollment of `p` (status active unless it has an end).
fn episode(s: &TestServer, id: &str, p: &str, start: &str, end: Option<&str>, manager: &str) {
    let mut e = json!({"resourceType": "EpisodeOfCare", "id": id,
        "status": if end.is_some() { "finished" } else { "active" },
        "type": [{"coding": [{"system": PROGRAM, "code": "chronic-disease"}]}],
        "patient": {"reference": format!("Patient/{p}")},
        "period": {"start": start},
        "careManager": {"reference": manager}});
    if let Some(x) = end {
        e["period"]["end"] = json!(x);
    }
    put(s, e);
}

fn encounter(s: &TestServer, id: &str, p: &str, class: &str, start: &str, end: Option<&str>) {
    let mut e = json!({"resourceType": "Encounter", "id": id,
        "status": if end.is_some() { "finished" } else { "in-progress" },
        "class": {"system": ACT, "code": class},
        "subject": {"reference": format!("Patient/{p}")},
        "period": {"start": start}});
    if let Some(x) = end {
        e["period"]["end"] = json!(x);
    }
    put(s, e);
}

fn condition(s: &TestServer, id: &str, p: &str, system: &str, code: &str, clinical: &str) {
    put(
        s,
        json!({"resourceType": "Condition", "id": id,
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical}]},
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": format!("Patient/{p}")}}),
    );
}

fn observation(s: &TestServer, id: &str, p: &str, code: &str, when: &str, value: f64) {
    put(
        s,
        json!({"resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": format!("Patient/{p}")},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": "%"}}),
    );
}

fn bp_panel(s: &TestServer, id: &str, p: &str, when: &str, sys: f64, dia: f64, status: &str) {
    let comp = |code: &str, v: f64| json!({"code": {"coding": [{"system": LOINC, "code": code}]}, "valueQuantity": {"value": v, "unit": "mm[Hg]"}});
    put(
        s,
        json!({"resourceType": "Observation", "id": id, "status": status,
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "subject": {"reference": format!("Patient/{p}")},
        "effectiveDateTime": when,
        "component": [comp("8480-6", sys), comp("8462-4", dia)]}),
    );
}

// ---- readmissions, ED visits, cost

fn utilisation_world(s: &TestServer) {
    practitioner(s, "m1");
    put(
        s,
        json!({"resourceType": "Organization", "id": "payer", "name": "Payer"}),
    );
    for p in ["a", "b", "c", "d", "e"] {
        patient(s, p);
    }
    put(
        s,
        json!({"resourceType": "Coverage", "id": "cov", "status": "active",
        "beneficiary": {"reference": "Patient/a"}, "payor": [{"reference": "Organization/payer"}]}),
    );
    episode(s, "ea", "a", "2025-01-01", None, "Practitioner/m1");
    episode(
        s,
        "eb",
        "b",
        "2025-01-01",
        Some("2025-12-31"),
        "Practitioner/m1",
    );
    // c is enrolled mid-period.
    episode(s, "ec", "c", "2025-02-15", None, "Practitioner/m1");
    // e's only episode is planned: not enrolled.
    let mut planned = json!({"resourceType": "EpisodeOfCare", "id": "ee", "status": "planned",
        "type": [{"coding": [{"system": PROGRAM, "code": "chronic-disease"}]}],
        "patient": {"reference": "Patient/e"}, "period": {"start": "2025-01-01"}});
    put(s, planned.take());
    // a: readmitted on day 30; b: on day 31.
    encounter(s, "a1", "a", "IMP", "2025-01-05", Some("2025-01-10"));
    encounter(s, "a2", "a", "IMP", "2025-02-09", Some("2025-02-12"));
    encounter(
        s,
        "b1",
        "b",
        "IMP",
        "2025-01-05T08:00:00Z",
        Some("2025-01-10T11:00:00Z"),
    );
    encounter(
        s,
        "b2",
        "b",
        "IMP",
        "2025-02-10T09:00:00Z",
        Some("2025-02-12T10:00:00Z"),
    );
    // c: discharged before enrollment (no index), then left against medical advice
    // (excluded), then an index discharge without readmission.
    encounter(s, "c1", "c", "IMP", "2025-02-01", Some("2025-02-05"));
    let mut c2 = json!({"resourceType": "Encounter", "id": "c2", "status": "finished",
        "class": {"system": ACT, "code": "IMP"}, "subject": {"reference": "Patient/c"},
        "period": {"start": "2025-03-01", "end": "2025-03-04"},
        "hospitalization": {"dischargeDisposition": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/discharge-disposition", "code": "aadvice"}]}}});
    put(s, c2.take());
    encounter(s, "c3", "c", "IMP", "2025-03-10", Some("2025-03-12"));
    // ED visits: a on 03-01; c before enrollment and after; an ambulatory visit is none.
    encounter(
        s,
        "a3",
        "a",
        "EMER",
        "2025-03-01T22:00:00Z",
        Some("2025-03-02T03:00:00Z"),
    );
    encounter(s, "c4", "c", "EMER", "2025-02-10", Some("2025-02-10"));
    encounter(s, "c5", "c", "EMER", "2025-02-20", Some("2025-02-20"));
    encounter(s, "a4", "a", "AMB", "2025-03-05", Some("2025-03-05"));
    // d is not enrolled; e only planned.
    encounter(s, "d1", "d", "IMP", "2025-01-05", Some("2025-01-10"));
    encounter(s, "d2", "d", "EMER", "2025-01-20", Some("2025-01-20"));
    encounter(s, "e1", "e", "EMER", "2025-01-20", Some("2025-01-20"));
    let claim = |id: &str, p: &str, created: &str, status: &str, total: f64| {
        json!({"resourceType": "Claim", "id": id, "status": status,
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "institutional"}]},
            "use": "claim", "patient": {"reference": format!("Patient/{p}")}, "created": created,
            "provider": {"reference": "Organization/payer"},
            "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
            "insurance": [{"sequence": 1, "focal": true, "coverage": {"reference": "Coverage/cov"}}],
            "total": {"value": total, "currency": "USD"}})
    };
    put(s, claim("k1", "a", "2025-02-01", "active", 100.5));
    put(s, claim("k2", "c", "2025-02-01", "active", 50.0));
    put(s, claim("k3", "b", "2025-03-01", "cancelled", 70.0));
    put(s, claim("k4", "a", "2025-04-01", "active", 30.0));
    put(s, claim("k5", "b", "2025-03-15T10:00:00Z", "active", 19.25));
}

backend_tests!(readmissions_ed_visits_and_cost, |s| {
    utilisation_world(s);
    let q = "period-start=2025-01-01&period-end=2025-03-31&measure=readmission-30d,ed-visits,cost-proxy";
    let r = results(&metrics(s, None, q));
    assert_eq!(r.len(), 5);
    // Index discharges a1 a2 b1 b2 c2 c3; c2 excluded; a1 readmitted on day 30 (b1 on day 31 is
    // not).
    let (c, score) = get(&r, "readmission-30d", "readmission-30d");
    assert_eq!(c, [6, 6, 1, 1]);
    close(score, 0.2);
    // Patient-days: a 90, b 90, c 45 (from 02-15). ED visits: a3, c5.
    let (c, score) = get(&r, "ed-visits", "ed-visits");
    assert_eq!(c, [3, 225, 0, 2]);
    close(score, 2.0 * 30.4375 * 1000.0 / 225.0);
    // Inpatient days: a1 5, a2 3, b1 5, b2 2, c1 0 (before enrollment), c2 3, c3 2.
    let (c, score) = get(&r, "cost-proxy", "inpatient-days");
    assert_eq!(c, [3, 225, 0, 20]);
    close(score, 20.0 * 30.4375 / 225.0);
    let (c, _) = get(&r, "cost-proxy", "cost-ed-visits");
    assert_eq!(c, [3, 225, 0, 2]);
    // Claims: k1 (100.50) and k5 (19.25); k2 before c's enrollment, k3 cancelled, k4 after.
    let (c, score) = get(&r, "cost-proxy", "claim-total");
    assert_eq!(c, [3, 225, 0, 2]);
    close(score, 119.75 * 30.4375 / 225.0);
    let b = metrics(s, None, q);
    let cost = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["measure"] == "http://icm-fhir.org/fhir/Measure/cost-proxy")
        .unwrap();
    assert_eq!(
        cost["resource"]["group"][2]["extension"][0],
        json!({"url": "http://icm-fhir.org/fhir/StructureDefinition/measure-amount", "valueDecimal": 119.75})
    );
    assert_eq!(
        cost["resource"]["period"],
        json!({"start": "2025-01-01", "end": "2025-03-31"})
    );
    // A period of one month: only January (a and b enrolled, 31 days each).
    let r = results(&metrics(
        s,
        None,
        "period-start=2025-01&period-end=2025-01&measure=readmission-30d,ed-visits",
    ));
    assert_eq!(
        get(&r, "readmission-30d", "readmission-30d").0,
        [2, 2, 0, 1]
    );
    assert_eq!(get(&r, "ed-visits", "ed-visits").0, [2, 62, 0, 0]);
    // The same through the care manager's filter; nobody for another care manager.
    let r = results(&metrics(
        s,
        None,
        &format!("{q}&care-manager=Practitioner/m1"),
    ));
    assert_eq!(
        get(&r, "readmission-30d", "readmission-30d").0,
        [6, 6, 1, 1]
    );
    let r = results(&metrics(
        s,
        None,
        &format!("{q}&care-manager=Practitioner/nobody"),
    ));
    assert_eq!(
        get(&r, "readmission-30d", "readmission-30d"),
        ([0; 4], None)
    );
    assert_eq!(get(&r, "ed-visits", "ed-visits"), ([0; 4], None));
    // Individual reports.
    let b = metrics(s, None, &format!("{q}&subject=Patient/a"));
    for e in b["entry"].as_array().unwrap() {
        assert_eq!(e["resource"]["type"], "individual");
        assert_eq!(e["resource"]["subject"]["reference"], "Patient/a");
    }
    let r = results(&b);
    assert_eq!(
        get(&r, "readmission-30d", "readmission-30d").0,
        [2, 2, 0, 1]
    );
    assert_eq!(get(&r, "ed-visits", "ed-visits").0, [1, 90, 0, 1]);
    assert_eq!(get(&r, "cost-proxy", "inpatient-days").0, [1, 90, 0, 8]);
    let r = results(&metrics(
        s,
        None,
        "period-start=2025-01-01&period-end=2025-03-31&subject=Patient/d",
    ));
    assert_eq!(get(&r, "ed-visits", "ed-visits"), ([0; 4], None));
    assert!(
        !r.keys().any(|(m, _)| m == "caseload-size"),
        "no individual caseload"
    );
    s.get("$icm-metrics?period-start=2025&period-end=2025&subject=Patient/ghost")
        .expect_outcome(404, "not-found");
    stored_facts_match_index(s);
});

// ---- HbA1c and blood pressure

backend_tests!(clinical_control, |s| {
    practitioner(s, "m1");
    for p in [
        "h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8", "p1", "p2", "p3", "p4", "p5",
    ] {
        patient(s, p);
        if p != "h8" {
            episode(
                s,
                &format!("e{p}"),
                p,
                "2024-06-01",
                None,
                "Practitioner/m1",
            );
        }
    }
    // Diabetes by SNOMED CT, ICD-10-CM with a dot, ICD-10 without one.
    condition(s, "ch1", "h1", SNOMED, "44054006", "active");
    condition(
        s,
        "ch2",
        "h2",
        "http://hl7.org/fhir/sid/icd-10-cm",
        "E11.9",
        "active",
    );
    condition(
        s,
        "ch3",
        "h3",
        "http://hl7.org/fhir/sid/icd-10",
        "E119",
        "recurrence",
    );
    condition(s, "ch4", "h4", SNOMED, "44054006", "resolved");
    condition(s, "ch5", "h5", SNOMED, "44054006", "active");
    condition(s, "ch6", "h6", SNOMED, "73211009", "active");
    let mut refuted = json!({"resourceType": "Condition", "id": "ch7",
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "refuted"}]},
        "code": {"coding": [{"system": SNOMED, "code": "44054006"}]}, "subject": {"reference": "Patient/h7"}});
    put(s, refuted.take());
    condition(s, "ch8", "h8", SNOMED, "44054006", "active");
    put(
        s,
        json!({"resourceType": "Patient", "id": "h5", "deceasedDateTime": "2025-05-01"}),
    );
    // Most recent in the period decides.
    observation(s, "o1", "h1", "4548-4", "2025-03-01", 9.5);
    observation(s, "o2", "h1", "4548-4", "2025-06-01", 7.2);
    observation(s, "o3", "h1", "4548-4", "2026-01-05", 10.0);
    observation(s, "o4", "h2", "4548-4", "2025-02-01", 7.0);
    observation(s, "o5", "h2", "4548-4", "2025-11-01T09:00:00Z", 9.4);
    observation(s, "o6", "h3", "4548-4", "2024-12-15", 6.0);
    observation(s, "o7", "h4", "4548-4", "2025-05-01", 6.0);
    observation(s, "o8", "h5", "4548-4", "2025-04-01", 6.0);
    // Two results at the same instant: the higher one counts.
    observation(s, "o9", "h6", "4548-4", "2025-09-01T10:00:00Z", 7.9);
    observation(s, "o10", "h6", "4548-4", "2025-09-01T10:00:00Z", 8.5);
    observation(s, "o11", "h8", "4548-4", "2025-09-01", 6.0);
    // Hypertension.
    condition(s, "cp1", "p1", SNOMED, "59621000", "active");
    condition(
        s,
        "cp2",
        "p2",
        "http://hl7.org/fhir/sid/icd-10-cm",
        "I10",
        "active",
    );
    condition(s, "cp3", "p3", SNOMED, "38341003", "active");
    condition(s, "cp4", "p4", SNOMED, "38341003", "active");
    condition(s, "cp5", "p5", SNOMED, "38341003", "active");
    put(
        s,
        json!({"resourceType": "Patient", "id": "p5", "deceasedBoolean": true}),
    );
    // p1: the panel of 04-01 is the latest day with both values (10-01 has a systolic alone).
    bp_panel(s, "b1", "p1", "2025-04-01", 135.0, 85.0, "final");
    observation(s, "b2", "p1", "8480-6", "2025-10-01", 150.0);
    // p2: a panel, then separate values on one later day: 138/92.
    bp_panel(s, "b3", "p2", "2025-05-01", 130.0, 80.0, "final");
    observation(s, "b4", "p2", "8480-6", "2025-08-01T08:00:00Z", 138.0);
    observation(s, "b5", "p2", "8462-4", "2025-08-01T08:05:00Z", 92.0);
    // p3: two panels the same day: lowest systolic 132, lowest diastolic 85.
    bp_panel(s, "b6", "p3", "2025-07-01T08:00:00Z", 150.0, 85.0, "final");
    bp_panel(s, "b7", "p3", "2025-07-01T09:00:00Z", 132.0, 95.0, "final");
    // p4: only a preliminary reading.
    bp_panel(s, "b8", "p4", "2025-07-01", 120.0, 70.0, "preliminary");
    bp_panel(s, "b9", "p5", "2025-07-01", 120.0, 70.0, "final");
    let r = results(&metrics(
        s,
        None,
        "period-start=2025-01-01&period-end=2025-12-31&measure=hba1c-control,bp-control",
    ));
    assert_eq!(get(&r, "hba1c-control", "hba1c-control").0, [5, 5, 1, 1]);
    close(get(&r, "hba1c-control", "hba1c-control").1, 0.25);
    assert_eq!(
        get(&r, "hba1c-control", "hba1c-poor-control").0,
        [5, 5, 1, 1]
    );
    assert_eq!(get(&r, "hba1c-control", "hba1c-untested").0, [5, 5, 1, 1]);
    let (c, score) = get(&r, "bp-control", "bp-control");
    assert_eq!(c, [5, 5, 1, 2]);
    close(score, 0.5);
    // Before h5's death the period does not exclude it: its 04-01 result is controlled.
    let r = results(&metrics(
        s,
        None,
        "period-start=2025-01-01&period-end=2025-04-30&measure=hba1c-control",
    ));
    // h1: 03-01 9.5 (poor); h2: 02-01 7.0; h3, h6: untested; h5: 6.0.
    assert_eq!(get(&r, "hba1c-control", "hba1c-control").0, [5, 5, 0, 2]);
    assert_eq!(
        get(&r, "hba1c-control", "hba1c-poor-control").0,
        [5, 5, 0, 1]
    );
    assert_eq!(get(&r, "hba1c-control", "hba1c-untested").0, [5, 5, 0, 2]);
    stored_facts_match_index(s);
});

// ---- care process and experience

/// Move a Task to completed with a completion instant of our choosing.
fn complete(s: &TestServer, id: &str, end: &str) {
    for status in ["accepted", "in-progress", "completed"] {
        let mut t = s.get(&format!("Task/{id}")).json();
        t["status"] = json!(status);
        match status {
            "in-progress" => t["executionPeriod"] = json!({"start": end}),
            "completed" => t["executionPeriod"]["end"] = json!(end),
            _ => {}
        }
        s.put(&format!("Task/{id}"), &t).expect(200);
    }
}

/// The transition follow-up Task the server created for a discharge.
fn follow_up_of(s: &TestServer, encounter: &str) -> String {
    let b = s
        .get(&format!(
            "Task?focus=Encounter/{encounter}&code={WORKFLOW}|transition-follow-up"
        ))
        .json();
    assert_eq!(b["total"], 1, "{b}");
    b["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn risk(s: &TestServer, id: &str, p: &str, when: &str, tier: &str) {
    put(
        s,
        json!({"resourceType": "RiskAssessment", "id": id, "status": "final",
        "subject": {"reference": format!("Patient/{p}")},
        "occurrenceDateTime": when,
        "method": {"coding": [{"system": "http://icm-fhir.org/fhir/CodeSystem/icm-risk-method", "code": "icm-program-score"}]},
        "prediction": [{"qualitativeRisk": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/risk-probability", "code": tier}]}}]}),
    );
}

fn satisfaction(
    s: &TestServer,
    id: &str,
    p: &str,
    authored: &str,
    answers: [&str; 5],
    status: &str,
) {
    let items: Vec<Value> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| json!({"linkId": format!("satisfaction-{}", i + 1), "answer": [{"valueCoding": {"system": EXPERIENCE, "code": a}}]}))
        .collect();
    put(
        s,
        json!({"resourceType": "QuestionnaireResponse", "id": id, "status": status,
        "questionnaire": "http://icm-fhir.org/fhir/Questionnaire/icm-satisfaction",
        "subject": {"reference": format!("Patient/{p}")}, "authored": authored, "item": items}),
    );
}

backend_tests!(care_process_measures, |s| {
    practitioner(s, "m1");
    practitioner(s, "m2");
    for p in ["f1", "f2", "f3", "f4", "r1", "r2", "r3", "x"] {
        patient(s, p);
    }
    for p in ["f1", "f2", "f3", "f4"] {
        episode(
            s,
            &format!("e{p}"),
            p,
            "2024-12-01",
            None,
            "Practitioner/m1",
        );
    }
    // Discharges of enrolled patients: the server creates the transition Tasks.
    // Friday 01-10 → due Tuesday 01-14: done on the Tuesday.
    encounter(
        s,
        "d1",
        "f1",
        "IMP",
        "2025-01-08",
        Some("2025-01-10T15:00:00Z"),
    );
    // Friday 01-17 → due Tuesday 01-21: done on the Wednesday, late.
    encounter(
        s,
        "d2",
        "f2",
        "IMP",
        "2025-01-15",
        Some("2025-01-17T10:00:00Z"),
    );
    // Monday 01-20: cancelled (excluded).
    encounter(
        s,
        "d3",
        "f3",
        "IMP",
        "2025-01-18",
        Some("2025-01-20T10:00:00Z"),
    );
    // Saturday 01-25 → due Tuesday 01-28: done then.
    encounter(
        s,
        "d4",
        "f4",
        "IMP",
        "2025-01-22",
        Some("2025-01-25T10:00:00Z"),
    );
    complete(s, &follow_up_of(s, "d1"), "2025-01-14T16:00:00Z");
    complete(s, &follow_up_of(s, "d2"), "2025-01-22T09:00:00Z");
    let mut t = s.get(&format!("Task/{}", follow_up_of(s, "d3"))).json();
    t["status"] = json!("cancelled");
    s.put(&format!("Task/{}", t["id"].as_str().unwrap()), &t)
        .expect(200);
    complete(s, &follow_up_of(s, "d4"), "2025-01-28T23:00:00Z");
    // A Task of our own, due 02-10, done the day before; one of a patient never enrolled.
    put(
        s,
        json!({"resourceType": "Task", "id": "own", "status": "completed", "intent": "order",
        "for": {"reference": "Patient/f1"}, "restriction": {"period": {"end": "2025-02-10"}},
        "executionPeriod": {"end": "2025-02-09T12:00:00Z"}}),
    );
    put(
        s,
        json!({"resourceType": "Task", "id": "other", "status": "completed", "intent": "order",
        "for": {"reference": "Patient/x"}, "restriction": {"period": {"end": "2025-02-10"}},
        "executionPeriod": {"end": "2025-02-09T12:00:00Z"}}),
    );
    // Referrals: r1 10 days, r2 31 days, r3 none.
    let referral = |id: &str, p: &str, authored: &str| {
        json!({"resourceType": "ServiceRequest", "id": id, "status": "completed", "intent": "order",
            "subject": {"reference": format!("Patient/{p}")}, "authoredOn": authored})
    };
    put(s, referral("sr1", "r1", "2025-01-10T09:00:00Z"));
    put(s, referral("sr2", "r2", "2025-01-01"));
    for (p, start, sr, cm) in [
        ("r1", "2025-01-20", Some("sr1"), "Practitioner/m2"),
        ("r2", "2025-02-01", Some("sr2"), "Practitioner/m2"),
        ("r3", "2025-01-15", None, "Practitioner/m1"),
    ] {
        let mut e = json!({"resourceType": "EpisodeOfCare", "id": format!("e{p}"), "status": "active",
            "type": [{"coding": [{"system": PROGRAM, "code": "social-needs"}]}],
            "patient": {"reference": format!("Patient/{p}")}, "period": {"start": start},
            "careManager": {"reference": cm}});
        if let Some(sr) = sr {
            e["referralRequest"] = json!([{"reference": format!("ServiceRequest/{sr}")}]);
        }
        put(s, e);
    }
    // Risk tiers as of 02-28: f1 high, f2 high then low, f3 high, r1 moderate.
    risk(s, "ra1", "f1", "2025-01-05", "high");
    risk(s, "ra2", "f2", "2025-01-05", "high");
    risk(s, "ra3", "f2", "2025-02-01", "low");
    risk(s, "ra4", "f3", "2025-02-10", "high");
    risk(s, "ra5", "r1", "2025-02-10", "moderate");
    // f3 also low at the very instant it was high: a tie counts as high. f1 low after the
    // period: its tier on 02-28 is still high. (Stored facts are read narrowed to each patient's
    // latest high one on or before the period's last day; these keep that honest.)
    risk(s, "ra6", "f3", "2025-02-10", "low");
    risk(s, "ra7", "f1", "2025-03-05", "low");
    // Contacts: f1 a call on 02-20; f3 a visit on 01-15, before the last 30 days.
    put(
        s,
        json!({"resourceType": "Communication", "id": "call", "status": "completed",
        "subject": {"reference": "Patient/f1"}, "sent": "2025-02-20T10:00:00Z"}),
    );
    encounter(s, "v3", "f3", "AMB", "2025-01-15", Some("2025-01-15"));
    // Patient experience: 20 and 15 in the period; one before it; one not completed.
    satisfaction(
        s,
        "q1",
        "f1",
        "2025-02-05",
        ["strongly-agree", "agree", "agree", "agree", "agree"],
        "completed",
    );
    satisfaction(
        s,
        "q2",
        "f2",
        "2025-02-06",
        ["neutral", "neutral", "neutral", "neutral", "neutral"],
        "completed",
    );
    satisfaction(
        s,
        "q3",
        "f1",
        "2024-12-30",
        ["agree", "agree", "agree", "agree", "agree"],
        "completed",
    );
    satisfaction(
        s,
        "q4",
        "f3",
        "2025-02-07",
        ["agree", "agree", "agree", "agree", "agree"],
        "in-progress",
    );
    let q = "period-start=2025-01-01&period-end=2025-02-28";
    let b = metrics(s, None, q);
    let r = results(&b);
    assert_eq!(r.len(), 15, "every measure: {r:?}");
    let (c, score) = get(&r, "transition-follow-up", "transition-follow-up");
    assert_eq!(c, [4, 4, 1, 2]);
    close(score, 2.0 / 3.0);
    // Three transition Tasks per discharge (all due in the period) and our own Task: 13, one
    // cancelled; on time: two follow-ups and ours.
    let (c, _) = get(&r, "tasks-on-time", "tasks-on-time");
    assert_eq!(c, [13, 13, 1, 3]);
    let (c, score) = get(&r, "referral-to-enrollment", "referral-to-enrollment");
    assert_eq!(c, [3, 3, 1, 41]);
    close(score, 20.5);
    let (c, score) = get(&r, "caseload-size", "caseload-size");
    assert_eq!(c, [2, 2, 0, 7]);
    close(score, 3.5);
    let caseload = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["measure"] == "http://icm-fhir.org/fhir/Measure/caseload-size")
        .unwrap();
    let strata: Vec<(String, i64)> = caseload["resource"]["group"][0]["stratifier"][0]["stratum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["value"]["text"].as_str().unwrap().to_string(),
                s["population"][3]["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        strata,
        [
            ("Practitioner/m1".to_string(), 5),
            ("Practitioner/m2".to_string(), 2)
        ]
    );
    let (c, score) = get(&r, "high-risk-contact", "high-risk-contact");
    assert_eq!(c, [2, 2, 0, 1]);
    close(score, 0.5);
    // 5 + 4 × 4 = 21 and 5 × 3 = 15.
    let (c, score) = get(&r, "patient-experience", "patient-experience");
    assert_eq!(c, [2, 2, 0, 36]);
    close(score, 18.0);
    // The care manager m2's view: only r1 and r2.
    let r = results(&metrics(
        s,
        None,
        &format!("{q}&care-manager=Practitioner/m2"),
    ));
    assert_eq!(
        get(&r, "referral-to-enrollment", "referral-to-enrollment").0,
        [2, 2, 0, 41]
    );
    assert_eq!(get(&r, "caseload-size", "caseload-size").0, [1, 1, 0, 2]);
    assert_eq!(
        get(&r, "transition-follow-up", "transition-follow-up").0,
        [0; 4]
    );
    // f1 alone.
    let r = results(&metrics(s, None, &format!("{q}&subject=Patient/f1")));
    assert_eq!(
        get(&r, "transition-follow-up", "transition-follow-up").0,
        [1, 1, 0, 1]
    );
    assert_eq!(get(&r, "tasks-on-time", "tasks-on-time").0, [4, 4, 0, 2]);
    assert_eq!(
        get(&r, "high-risk-contact", "high-risk-contact").0,
        [1, 1, 0, 1]
    );
    assert_eq!(
        get(&r, "patient-experience", "patient-experience").0,
        [1, 1, 0, 21]
    );
    stored_facts_match_index(s);
});

// ---- pre/post

// Follow-up Tasks are counted on their Encounter's discharge day, and a population report reads
// only those whose Encounter ended on the days it counts (`Narrow::linked_ends`): discharges just
// either side of the period's first and last days keep that bound exact, for the population
// read (one grouped join) and for one patient (a probe per Task).
backend_tests!(follow_up_counted_on_discharge_day_at_period_edges, |s| {
    practitioner(s, "m1");
    patient(s, "e1");
    episode(s, "ee1", "e1", "2024-06-01", None, "Practitioner/m1");
    for (id, start, end) in [
        ("before", "2024-12-30", "2024-12-31T23:30:00Z"),
        ("first", "2024-12-31", "2025-01-01T00:30:00Z"),
        ("last", "2025-02-27", "2025-02-28T23:30:00Z"),
        ("after", "2025-02-28", "2025-03-01T00:30:00Z"),
    ] {
        encounter(s, id, "e1", "IMP", start, Some(end));
    }
    complete(s, &follow_up_of(s, "first"), "2025-01-02T10:00:00Z");
    complete(s, &follow_up_of(s, "before"), "2025-01-02T10:00:00Z");
    let q = "period-start=2025-01-01&period-end=2025-02-28&measure=transition-follow-up";
    for query in [q.to_string(), format!("{q}&subject=Patient/e1")] {
        let r = results(&metrics(s, None, &query));
        let (c, score) = get(&r, "transition-follow-up", "transition-follow-up");
        assert_eq!(c, [2, 2, 0, 1], "{query}");
        close(score, 0.5);
    }
});

backend_tests!(pre_post_comparison, |s| {
    practitioner(s, "m1");
    for p in ["p", "q", "z"] {
        patient(s, p);
    }
    condition(s, "dp", "p", SNOMED, "44054006", "active");
    // p: enrolled 2023-03-01 (pre: 2022-03-01 .. 2023-02-28; post: .. 2024-02-28).
    episode(s, "ep", "p", "2023-03-01", None, "Practitioner/m1");
    // q: enrolled 2023-06-01 to 2023-12-31 (214 days of post).
    episode(
        s,
        "eq",
        "q",
        "2023-06-01",
        Some("2023-12-31"),
        "Practitioner/m1",
    );
    // z: first enrolled before the period: not in the cohort.
    episode(s, "ez", "z", "2022-01-01", None, "Practitioner/m1");
    // Before: two stays 15 days apart, an ED visit, HbA1c 9.5.
    encounter(s, "p1", "p", "IMP", "2022-06-01", Some("2022-06-05"));
    encounter(s, "p2", "p", "IMP", "2022-06-20", Some("2022-06-22"));
    encounter(s, "p3", "p", "EMER", "2022-09-01", Some("2022-09-01"));
    observation(s, "hp1", "p", "4548-4", "2022-10-01", 9.5);
    encounter(s, "q1", "q", "EMER", "2023-01-10", Some("2023-01-10"));
    // After: one ED visit, HbA1c 7.0; q's visit after its disenrollment is not counted.
    encounter(s, "p4", "p", "EMER", "2023-04-01", Some("2023-04-01"));
    observation(s, "hp2", "p", "4548-4", "2023-05-01", 7.0);
    encounter(s, "q2", "q", "EMER", "2024-01-15", Some("2024-01-15"));
    encounter(s, "z1", "z", "EMER", "2023-04-01", Some("2023-04-01"));
    let b = metrics(
        s,
        None,
        "period-start=2023-01-01&period-end=2023-12-31&compare=pre-post",
    );
    let entries = b["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 10, "five measures, pre and post");
    let window = |e: &Value| {
        e["resource"]["extension"][0]["valueCode"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut pre = Results::new();
    let mut post = Results::new();
    for e in entries {
        assert_eq!(
            e["resource"]["extension"][0]["url"],
            "http://icm-fhir.org/fhir/StructureDefinition/measure-window"
        );
        let one = results(&json!({"resourceType": "Bundle", "type": "collection", "entry": [e]}));
        match window(e).as_str() {
            "pre" => {
                assert_eq!(
                    e["resource"]["period"],
                    json!({"start": "2022-03-01", "end": "2023-05-31"})
                );
                pre.extend(one)
            }
            _ => {
                assert_eq!(
                    e["resource"]["period"],
                    json!({"start": "2023-03-01", "end": "2024-05-30"})
                );
                post.extend(one)
            }
        }
    }
    // Patient-days: pre 365 + 365; post 365 + 214.
    assert_eq!(get(&pre, "ed-visits", "ed-visits").0, [2, 730, 0, 2]);
    assert_eq!(get(&post, "ed-visits", "ed-visits").0, [2, 579, 0, 1]);
    close(
        get(&post, "ed-visits", "ed-visits").1,
        30.4375 * 1000.0 / 579.0,
    );
    assert_eq!(
        get(&pre, "readmission-30d", "readmission-30d").0,
        [2, 2, 0, 1]
    );
    assert_eq!(get(&post, "readmission-30d", "readmission-30d").0, [0; 4]);
    assert_eq!(get(&pre, "hba1c-control", "hba1c-control").0, [1, 1, 0, 0]);
    assert_eq!(
        get(&pre, "hba1c-control", "hba1c-poor-control").0,
        [1, 1, 0, 1]
    );
    assert_eq!(get(&post, "hba1c-control", "hba1c-control").0, [1, 1, 0, 1]);
    assert_eq!(get(&pre, "cost-proxy", "inpatient-days").0, [2, 730, 0, 6]);
    assert_eq!(get(&post, "cost-proxy", "inpatient-days").0, [2, 579, 0, 0]);
    assert_eq!(get(&pre, "bp-control", "bp-control").0, [0; 4]);
    // One patient's comparison: q's ED visit before, none while enrolled after.
    let b = metrics(
        s,
        None,
        "period-start=2023-01-01&period-end=2023-12-31&compare=pre-post&subject=Patient/q&measure=ed-visits",
    );
    let e = b["entry"].as_array().unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(window(&e[0]), "pre");
    assert_eq!(e[0]["resource"]["type"], "individual");
    let counts = |e: &Value| -> Vec<i64> {
        e["resource"]["group"][0]["population"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["count"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(counts(&e[0]), [1, 365, 0, 1]);
    assert_eq!(window(&e[1]), "post");
    assert_eq!(counts(&e[1]), [1, 214, 0, 0]);
    stored_facts_match_index(s);
});

// ---- malformed parameters

backend_tests!(malformed_parameters, |s| {
    for (q, at) in [
        ("period-end=2025", "period-start"),
        ("period-start=2025", "period-end"),
        ("period-start=2025-13-01&period-end=2025", "period-start"),
        ("period-start=yesterday&period-end=2025", "period-start"),
        ("period-start=2025-06&period-end=2025-01", "period-start"),
        (
            "period-start=2025&period-start=2024&period-end=2025",
            "period-start",
        ),
        (
            "period-start=2025&period-end=2025&compare=before",
            "compare",
        ),
        (
            "period-start=2025&period-end=2025&care-manager=Patient/1",
            "care-manager",
        ),
        (
            "period-start=2025&period-end=2025&care-manager=Practitioner/",
            "care-manager",
        ),
        (
            "period-start=2025&period-end=2025&organization=Practitioner/1",
            "organization",
        ),
        (
            "period-start=2025&period-end=2025&subject=Patient/a%20b",
            "subject",
        ),
        ("period-start=2025&period-end=2025&measure=nope", "measure"),
        (
            "period-start=2025&period-end=2025&compare=pre-post&measure=caseload-size",
            "measure",
        ),
        (
            "period-start=2025&period-end=2025&subject=Patient/x&measure=caseload-size",
            "measure",
        ),
        ("period-start=2025&period-end=2025&_count=3", "_count"),
    ] {
        let r = s.get(&format!("$icm-metrics?{q}"));
        let oo = r.expect_outcome(400, "invalid");
        assert_eq!(oo["issue"][0]["expression"][0], at, "{q}: {oo}");
    }
    s.request("POST", "$icm-metrics", &[], Some("{}"))
        .expect_outcome(405, "not-supported");
    // A year-long period of an empty server: every measure, all zero, no score.
    let r = results(&metrics(s, None, "period-start=2025&period-end=2025"));
    assert_eq!(r.len(), 15);
    assert!(
        r.values().all(|(c, sc)| *c == [0; 4] && sc.is_none()),
        "{r:?}"
    );
});

// ---- served definitions

backend_tests!(measures_are_served, |s| {
    for id in [
        "readmission-30d",
        "ed-visits",
        "hba1c-control",
        "bp-control",
        "transition-follow-up",
        "tasks-on-time",
        "referral-to-enrollment",
        "caseload-size",
        "high-risk-contact",
        "patient-experience",
        "cost-proxy",
    ] {
        let m = s.get(&format!("Measure/{id}")).json();
        assert_eq!(m["url"], format!("http://icm-fhir.org/fhir/Measure/{id}"));
    }
    let q = s.get("Questionnaire/icm-satisfaction").json();
    assert_eq!(q["item"].as_array().unwrap().len(), 8);
    assert_eq!(
        s.get("SearchParameter/Task-due").json()["expression"],
        "Task.restriction.period.end"
    );
    assert_eq!(s.get("CodeSystem/icm-measure").json()["id"], "icm-measure");
    let cap = s.get("metadata").json();
    let ops: Vec<&str> = cap["rest"][0]["operation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["enroll", "export", "icm-metrics"]);
    // The program's search parameters work like any other.
    patient(s, "t");
    put(
        s,
        json!({"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order",
        "for": {"reference": "Patient/t"}, "restriction": {"period": {"end": "2025-02-10"}}}),
    );
    assert_eq!(s.get("Task?due=2025-02-10").json()["total"], 1);
    assert_eq!(s.get("Task?due=lt2025-02").json()["total"], 0);
});

// ---- access

secure_tests!(a_care_manager_counts_only_their_patients, |s| {
    let system = mint(&claims("backend", "system/*.cruds", json!({})));
    let sys = Some(system.as_str());
    let mk = |body: Value| {
        let path = format!(
            "{}/{}",
            body["resourceType"].as_str().unwrap(),
            body["id"].as_str().unwrap()
        );
        let r = s.as_token(sys, "PUT", &path, Some(&body));
        assert!(r.status == 201 || r.status == 200, "{path}: {}", r.body);
    };
    for m in ["m1", "m2"] {
        mk(json!({"resourceType": "Practitioner", "id": m}));
    }
    for (p, m) in [("a", "m1"), ("b", "m2"), ("c", "m2")] {
        mk(json!({"resourceType": "Patient", "id": p}));
        mk(
            json!({"resourceType": "CareTeam", "id": format!("t{p}"), "status": "active",
            "subject": {"reference": format!("Patient/{p}")},
            "participant": [{"member": {"reference": format!("Practitioner/{m}")}}]}),
        );
        mk(
            json!({"resourceType": "EpisodeOfCare", "id": format!("e{p}"), "status": "finished",
            "type": [{"coding": [{"system": PROGRAM, "code": "chronic-disease"}]}],
            "patient": {"reference": format!("Patient/{p}")},
            "period": {"start": "2025-01-01", "end": "2025-12-31"},
            "careManager": {"reference": format!("Practitioner/{m}")}}),
        );
        mk(
            json!({"resourceType": "Encounter", "id": format!("ed{p}"), "status": "finished",
            "class": {"system": ACT, "code": "EMER"}, "subject": {"reference": format!("Patient/{p}")},
            "period": {"start": "2025-03-01", "end": "2025-03-01"}}),
        );
    }
    let tok = |m: &str| {
        mint(&claims(
            m,
            "user/*.cruds",
            json!({"fhirUser": format!("Practitioner/{m}")}),
        ))
    };
    let (t1, t2) = (tok("m1"), tok("m2"));
    let q = "period-start=2025-01-01&period-end=2025-12-31&measure=ed-visits,caseload-size";
    let q_ed = "period-start=2025-01-01&period-end=2025-12-31&measure=ed-visits";
    let all = results(&metrics(s, sys, q));
    assert_eq!(get(&all, "ed-visits", "ed-visits").0, [3, 1095, 0, 3]);
    assert_eq!(get(&all, "caseload-size", "caseload-size").0, [2, 2, 0, 3]);
    let one = results(&metrics(s, Some(&t1), q));
    assert_eq!(get(&one, "ed-visits", "ed-visits").0, [1, 365, 0, 1]);
    assert_eq!(get(&one, "caseload-size", "caseload-size").0, [1, 1, 0, 1]);
    let two = results(&metrics(s, Some(&t2), q));
    assert_eq!(get(&two, "ed-visits", "ed-visits").0, [2, 730, 0, 2]);
    // Asking for the other team's care manager shows nothing of it.
    let other = results(&metrics(
        s,
        Some(&t1),
        &format!("{q}&care-manager=Practitioner/m2"),
    ));
    assert_eq!(get(&other, "ed-visits", "ed-visits").0, [0; 4]);
    assert_eq!(get(&other, "caseload-size", "caseload-size").0, [0; 4]);
    // Another team's patient is unknown; the same as a patient that never existed.
    for p in ["b", "ghost"] {
        let r = s.as_token(
            Some(&t1),
            "GET",
            &format!("$icm-metrics?{q_ed}&subject=Patient/{p}"),
            None,
        );
        assert_eq!(r.status, 404, "{}", r.body);
    }
    // A patient's own app sees its own counts.
    let pt = mint(&claims("pa", "patient/*.rs", json!({"patient": "a"})));
    let mine = results(&metrics(s, Some(&pt), q));
    assert_eq!(get(&mine, "ed-visits", "ed-visits").0, [1, 365, 0, 1]);
    // No token: 401.
    assert_eq!(
        s.as_token(None, "GET", &format!("$icm-metrics?{q}"), None)
            .status,
        401
    );
});

// Stored facts derived under other fact kinds (an older version of the definitions: here a
// recorded fingerprint that is not the current one, and facts lost) are derived anew when the
// next server starts on the database, and the reports are the same as before.
backend_tests!(facts_rebuilt_at_start, |s| {
    utilisation_world(s);
    let q = "period-start=2025-01-01&period-end=2025-03-31";
    let before = results(&metrics(s, None, q));
    execute_sql(s, "DELETE FROM measure_facts");
    execute_sql(
        s,
        "UPDATE index_meta SET value = 'older' WHERE key = 'facts_version'",
    );
    let again = s.another(|_| {});
    stored_facts_match_index(&again);
    assert_eq!(results(&metrics(&again, None, q)), before);
});

// An update that changes a fact (an inpatient stay becomes an emergency visit) and deletes (a
// stay, a blood-pressure panel) replace and remove the stored facts with the index rows: the
// stored kinds still equal the kinds computed from the index tables.
backend_tests!(stored_facts_follow_updates_and_deletes, |s| {
    utilisation_world(s);
    bp_panel(s, "bp-x", "a", "2025-02-01", 150.0, 95.0, "final");
    encounter(s, "x1", "b", "IMP", "2025-03-01", Some("2025-03-03"));
    stored_facts_match_index(s);
    encounter(s, "a2", "a", "EMER", "2025-02-09", Some("2025-02-12"));
    for path in ["Encounter/x1", "Observation/bp-x"] {
        let r = s.delete(path);
        assert!(r.status == 200 || r.status == 204, "{path}: {}", r.status);
    }
    stored_facts_match_index(s);
    let r = results(&metrics(
        s,
        None,
        "period-start=2025-01-01&period-end=2025-03-31&measure=ed-visits",
    ));
    // a2 now counts as an ED visit (a3 and c5 did before).
    assert_eq!(get(&r, "ed-visits", "ed-visits").0[3], 3);
});
