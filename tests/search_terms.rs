//! Composite parameters and the token and reference modifiers that need the server's own
//! knowledge (R4 search §3.1.1.5 and §3.1.1.4): `:in`, `:not-in`, `:below`, `:above`,
//! `:of-type`, `:identifier`. Exact matching sets on both backends, through GET, POST
//! `_search` and Bundle entries, and the index rebuilt for data stored before these existed.
mod common;
use common::search::*;
use common::*;
use diesel::prelude::*;

const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
const WF: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-workflow";
const V2: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";

/// A malformed value is a 400 naming the parameter, never a filter silently dropped.
#[track_caller]
fn refused(s: &TestServer, q: &str, names: &str) {
    let r = s.get(q);
    assert_eq!(r.status, 400, "{q}: {}", r.body);
    assert!(r.body.contains(names), "{q}: {}", r.body);
}

fn qty(v: f64, unit: &str) -> Value {
    json!({"value": v, "unit": unit, "system": UCUM, "code": unit})
}

fn bp(id: &str, sys: f64, dia: f64) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
    "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
    "subject": {"reference": "Patient/p"},
    "component": [
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": qty(sys, "mm[Hg]")},
        {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}, "valueQuantity": qty(dia, "mm[Hg]")}
    ]})
}

fn a1c(id: &str, v: f64) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "4548-4"}]},
        "subject": {"reference": "Patient/p"}, "valueQuantity": qty(v, "%")})
}

fn observations(s: &TestServer) {
    put(s, bp("bp-high-sys", 150.0, 85.0));
    put(s, bp("bp-high-dia", 120.0, 95.0));
    put(s, a1c("a1c-poor", 9.1));
    put(s, a1c("a1c-ok", 7.2));
    put(
        s,
        json!({"resourceType": "Observation", "id": "smoker", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "72166-2"}]},
        "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "449868002"}]}}),
    );
    put(
        s,
        json!({"resourceType": "Observation", "id": "onset", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "11368-8"}]}, "valueDateTime": "2024-05-01"}),
    );
    put(
        s,
        json!({"resourceType": "Observation", "id": "note", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "comment"}]}, "valueString": "Lives alone, daughter visits weekly"}),
    );
}

search_tests!(composite_parameters, |s| {
    observations(s);
    // The code and the value of one component.
    check(
        s,
        "Observation?component-code-value-quantity=http://loinc.org|8480-6$gt140",
        &["bp-high-sys"],
    );
    check(
        s,
        "Observation?component-code-value-quantity=8462-4$gt90",
        &["bp-high-dia"],
    );
    // Never one component's code with another's value: both panels have a component below
    // 100 (the diastolic one), but no systolic reading is below 100.
    check(
        s,
        "Observation?component-code-value-quantity=8480-6$lt100",
        &[],
    );
    check(
        s,
        "Observation?component-code-value-quantity=8480-6$ge120|http://unitsofmeasure.org|mm[Hg]",
        &["bp-high-dia", "bp-high-sys"],
    );
    // Prefixes on the value part; values OR'ed; the HbA1c thresholds of the program.
    check(
        s,
        "Observation?code-value-quantity=http://loinc.org|4548-4$gt8",
        &["a1c-poor"],
    );
    check(
        s,
        "Observation?code-value-quantity=4548-4$lt8.0",
        &["a1c-ok"],
    );
    check(
        s,
        "Observation?code-value-quantity=4548-4$gt9,4548-4$lt7.5",
        &["a1c-ok", "a1c-poor"],
    );
    check(s, "Observation?code-value-quantity=8480-6$gt1", &[]);
    // combo-: the observation itself or any component.
    check(
        s,
        "Observation?combo-code-value-quantity=8480-6$gt140",
        &["bp-high-sys"],
    );
    check(
        s,
        "Observation?combo-code-value-quantity=4548-4$ge9.1",
        &["a1c-poor"],
    );
    check(
        s,
        "Observation?code-value-concept=http://loinc.org|72166-2$http://snomed.info/sct|449868002",
        &["smoker"],
    );
    check(s, "Observation?code-value-concept=72166-2$266919005", &[]);
    check(
        s,
        "Observation?code-value-date=11368-8$ge2024-01-01",
        &["onset"],
    );
    check(s, "Observation?code-value-date=11368-8$lt2024", &[]);
    check(s, "Observation?code-value-string=comment$lives", &["note"]);
    // AND with another parameter; `_summary=count` counts the same set.
    check(
        s,
        "Observation?component-code-value-quantity=8480-6$gt100&code=85354-9&_id=bp-high-dia",
        &["bp-high-dia"],
    );
    let r = s.get("Observation?component-code-value-quantity=8480-6$gt100&_summary=count");
    assert_eq!(r.json()["total"], 2);
    // POST _search and a Bundle GET entry go through the same search.
    let r = s.request(
        "POST",
        "Observation/_search",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some("code-value-quantity=4548-4%24gt8"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(sorted(match_ids(&r.json())), ["a1c-poor"]);
    let r = s.post(
        "",
        &json!({"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET",
            "url": "Observation?component-code-value-quantity=8480-6$gt140"}}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        sorted(match_ids(&r.json()["entry"][0]["resource"])),
        ["bp-high-sys"]
    );
    // Malformed: the wrong number of parts, a value that does not parse, a modifier.
    refused(
        s,
        "Observation?code-value-quantity=4548-4",
        "code-value-quantity",
    );
    refused(
        s,
        "Observation?code-value-quantity=4548-4$gtabc",
        "code-value-quantity",
    );
    refused(
        s,
        "Observation?code-value-quantity=4548-4$1$2",
        "code-value-quantity",
    );
    refused(
        s,
        "Observation?code-value-quantity:exact=4548-4$1",
        "code-value-quantity",
    );
});

search_tests!(composite_in_the_capability_statement, |s| {
    let cs = s.get("metadata").json();
    let obs = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Observation")
        .unwrap()
        .clone();
    let names: Vec<&str> = obs["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "composite")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for want in [
        "code-value-quantity",
        "code-value-concept",
        "code-value-date",
        "code-value-string",
        "component-code-value-quantity",
        "component-code-value-concept",
        "combo-code-value-quantity",
        "combo-code-value-concept",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
});

search_tests!(token_in_and_not_in, |s| {
    for (id, g) in [("f", Some("female")), ("m", Some("male")), ("none", None)] {
        let mut p = json!({"resourceType": "Patient", "id": id});
        if let Some(g) = g {
            p["gender"] = json!(g);
        }
        put(s, p);
    }
    let gender = "http://hl7.org/fhir/ValueSet/administrative-gender";
    // A `code` element has its value set's system implicitly.
    check(s, &format!("Patient?gender:in={gender}"), &["f", "m"]);
    check(s, &format!("Patient?gender:in={gender}|4.0.1"), &["f", "m"]);
    check(s, &format!("Patient?gender:not-in={gender}"), &["none"]);
    // Codings must carry the value set's system.
    let role = "http://icm-fhir.org/fhir/CodeSystem/icm-care-team-role";
    let roles: Vec<String> = {
        let cs = s.get("CodeSystem/icm-care-team-role");
        let v = if cs.status == 200 {
            cs.json()
        } else {
            serde_json::from_str(include_str!(
                "../fhir-profiles/icm/CodeSystem-icm-care-team-role.json"
            ))
            .unwrap()
        };
        v["concept"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["code"].as_str().unwrap().to_string())
            .collect()
    };
    let team = |id: &str, system: &str, code: &str| {
        json!({"resourceType": "PractitionerRole", "id": id, "active": true,
            "code": [{"coding": [{"system": system, "code": code}]}],
            "practitioner": {"reference": "Practitioner/x"}})
    };
    put(s, team("ours", role, &roles[0]));
    put(
        s,
        team(
            "same-code-other-system",
            "http://snomed.info/sct",
            &roles[0],
        ),
    );
    put(s, team("snomed", "http://snomed.info/sct", "224535009"));
    let vs = "http://icm-fhir.org/fhir/ValueSet/icm-care-team-role";
    check(s, &format!("PractitionerRole?role:in={vs}"), &["ours"]);
    check(
        s,
        &format!("PractitionerRole?role:not-in={vs}"),
        &["same-code-other-system", "snomed"],
    );
    refused(
        s,
        "Patient?gender:in=http://example.org/ValueSet/unknown",
        "not held",
    );
    refused(
        s,
        "Patient?name:in=http://hl7.org/fhir/ValueSet/administrative-gender",
        "name",
    );
});

search_tests!(token_below_and_above, |s| {
    let task = |id: &str, code: &str| {
        json!({"resourceType": "Task", "id": id, "status": "requested", "intent": "order",
            "code": {"coding": [{"system": WF, "code": code}]}})
    };
    put(s, task("follow-up", "transition-follow-up"));
    put(s, task("med-rec", "medication-reconciliation"));
    put(s, task("group", "transition-of-care"));
    put(s, task("outreach", "outreach"));
    check(
        s,
        &format!("Task?code:below={WF}|transition-of-care"),
        &["follow-up", "group", "med-rec"],
    );
    check(
        s,
        &format!("Task?code:above={WF}|transition-follow-up"),
        &["follow-up", "group"],
    );
    check(s, &format!("Task?code:below={WF}|outreach"), &["outreach"]);
    check(s, &format!("Task?code:above={WF}|outreach"), &["outreach"]);
    // A code system without a hierarchy the server holds is refused, not guessed.
    refused(s, "Task?code:below=http://loinc.org|4548-4", "not held");
    refused(s, "Task?code:below=transition-of-care", "system|code");
});

search_tests!(identifier_of_type, |s| {
    let id = |code: &str, value: &str| json!({"type": {"coding": [{"system": V2, "code": code}]}, "system": "urn:ids", "value": value});
    put(
        s,
        json!({"resourceType": "Patient", "id": "mr111", "identifier": [id("MR", "111")]}),
    );
    put(
        s,
        json!({"resourceType": "Patient", "id": "ss111", "identifier": [id("SS", "111")]}),
    );
    // MR and 111, but in different identifiers.
    put(
        s,
        json!({"resourceType": "Patient", "id": "split", "identifier": [id("MR", "222"), id("SS", "111")]}),
    );
    check(
        s,
        &format!("Patient?identifier:of-type={V2}|MR|111"),
        &["mr111"],
    );
    check(
        s,
        &format!("Patient?identifier:of-type={V2}|SS|111"),
        &["split", "ss111"],
    );
    check(
        s,
        &format!("Patient?identifier:of-type={V2}|MR|222,{V2}|MR|111"),
        &["mr111", "split"],
    );
    check(s, &format!("Patient?identifier:of-type={V2}|DL|111"), &[]);
    // Plain identifier search still finds every one.
    check(
        s,
        "Patient?identifier=urn:ids|111",
        &["mr111", "split", "ss111"],
    );
    refused(
        s,
        "Patient?identifier:of-type=MR|111",
        "typeSystem|typeCode|value",
    );
    refused(s, "Patient?gender:of-type=a|b|c", "of-type");
});

search_tests!(reference_identifier, |s| {
    let obs = |id: &str, subject: Value| {
        json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "x"},
            "subject": subject})
    };
    put(
        s,
        obs(
            "by-mrn",
            json!({"identifier": {"system": "urn:mrn", "value": "A1"}}),
        ),
    );
    put(
        s,
        obs(
            "by-both",
            json!({"reference": "Patient/p2", "identifier": {"system": "urn:mrn", "value": "A2"}}),
        ),
    );
    put(s, obs("by-ref", json!({"reference": "Patient/p3"})));
    check(s, "Observation?subject:identifier=urn:mrn|A1", &["by-mrn"]);
    check(s, "Observation?patient:identifier=urn:mrn|A2", &["by-both"]);
    check(
        s,
        "Observation?subject:identifier=A1,A2",
        &["by-both", "by-mrn"],
    );
    check(s, "Observation?subject:identifier=urn:other|A1", &[]);
    check(s, "Observation?subject=Patient/p2", &["by-both"]);
    refused(s, "Observation?code:identifier=x", "identifier");
});

/// A database indexed before these rows existed is reindexed when the server starts on it, so a
/// composite or `:of-type` search does not silently miss what is already stored.
fn simulate_old_index(url: &str) {
    let stmts = [
        "DELETE FROM index_meta",
        "DELETE FROM search_token WHERE param LIKE '%$%' OR param LIKE '%:of-type'",
        "DELETE FROM search_quantity WHERE param LIKE '%$%'",
        "UPDATE search_token SET grp = 0",
    ];
    if let Some(path) = url.strip_prefix("sqlite://") {
        let mut c = diesel::SqliteConnection::establish(path).unwrap();
        for q in stmts {
            diesel::sql_query(q).execute(&mut c).unwrap();
        }
    } else {
        let mut c = diesel::PgConnection::establish(url).unwrap();
        for q in stmts {
            diesel::sql_query(q).execute(&mut c).unwrap();
        }
    }
}

search_tests!(older_index_is_rebuilt_at_start, |s| {
    observations(s);
    put(
        s,
        json!({"resourceType": "Patient", "id": "mr", "identifier": [{"type": {"coding": [{"system": V2, "code": "MR"}]}, "value": "9"}]}),
    );
    simulate_old_index(&s.database_url);
    check(s, "Observation?code-value-quantity=4548-4$gt8", &[]);
    check(s, &format!("Patient?identifier:of-type={V2}|MR|9"), &[]);
    let store = icm_fhir::store::Store::new(&s.database_url, 1, std::time::Duration::from_secs(10))
        .unwrap();
    store.migrate().unwrap();
    check(
        s,
        "Observation?code-value-quantity=4548-4$gt8",
        &["a1c-poor"],
    );
    check(s, &format!("Patient?identifier:of-type={V2}|MR|9"), &["mr"]);
    // Once current, a start does not reindex again.
    assert_eq!(icm_fhir::store::index::ensure_current(&store).unwrap(), 0);
});
