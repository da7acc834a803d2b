//! Instructions per validation (load-independent), for comparing builds on a shared machine:
//! `valgrind --tool=callgrind target/release/examples/validate_cost N` and divide by N.
use icm_fhir::fhir::validate::{profiles, validate};
use serde_json::{json, Value};

fn patient() -> Value {
    json!({"resourceType": "Patient", "id": "p1",
        "meta": {"profile": ["http://icm-fhir.org/fhir/StructureDefinition/icm-patient"]},
        "identifier": [{"use": "usual", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
            "system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345", "period": {"start": "2001-05-06"}}],
        "active": true,
        "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]}, {"use": "usual", "given": ["Jim"]}],
        "telecom": [{"system": "phone", "value": "(03) 5555 6473", "use": "work", "rank": 1}, {"system": "email", "value": "p@example.org"}],
        "gender": "male", "birthDate": "1974-12-25",
        "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
        "address": [{"use": "home", "type": "both", "line": ["534 Erewhon St"], "city": "PleasantVille", "state": "Vic", "postalCode": "3999",
            "period": {"start": "1974-12-25"}}],
        "contact": [{"relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N"}]}],
            "name": {"family": "du Marché", "given": ["Bénédicte"]}, "telecom": [{"system": "phone", "value": "+33 (237) 998327"}], "gender": "female"}],
        "managingOrganization": {"reference": "Organization/1"}})
}

fn careplan() -> Value {
    json!({"resourceType": "CarePlan", "id": "cp1",
        "meta": {"profile": ["http://icm-fhir.org/fhir/StructureDefinition/icm-careplan"]},
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Diabetes care plan</div>"},
        "identifier": [{"system": "urn:icm:careplan", "value": "cp-2024-001"}],
        "status": "active", "intent": "plan",
        "category": [{"coding": [{"system": "http://icm-fhir.org/fhir/CodeSystem/icm-program", "code": "chronic-disease"}]}],
        "title": "Type 2 diabetes management",
        "subject": {"reference": "Patient/p1", "display": "Peter Chalmers"},
        "period": {"start": "2024-01-15", "end": "2024-12-31"},
        "created": "2024-01-10T09:30:00Z",
        "author": {"reference": "Practitioner/dr1"},
        "careTeam": [{"reference": "CareTeam/team1"}],
        "addresses": [{"reference": "Condition/dm2", "display": "Type 2 diabetes"}],
        "goal": [{"reference": "Goal/a1c"}, {"reference": "Goal/weight"}],
        "activity": [
            {"detail": {"kind": "Appointment", "code": {"coding": [{"system": "http://snomed.info/sct", "code": "698360004", "display": "Diabetes self management plan"}]},
                "status": "scheduled", "doNotPerform": false,
                "scheduledTiming": {"repeat": {"frequency": 1, "period": 3, "periodUnit": "mo"}},
                "performer": [{"reference": "Practitioner/dr1"}], "description": "Quarterly review"}},
            {"detail": {"kind": "ServiceRequest", "code": {"text": "HbA1c test"}, "status": "in-progress",
                "scheduledPeriod": {"start": "2024-02-01", "end": "2024-02-15"}}},
            {"reference": {"reference": "Task/t1"}}
        ],
        "note": [{"authorReference": {"reference": "Practitioner/dr1"}, "time": "2024-01-10T09:30:00Z", "text": "Patient motivated."}]})
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let which = std::env::args().nth(2).unwrap_or_default();
    let r = if which == "careplan" {
        careplan()
    } else {
        patient()
    };
    // Load the definitions outside the loop.
    assert!(!validate(&r).has_errors());
    let mut errors = 0;
    for _ in 0..n {
        errors += validate(std::hint::black_box(&r)).issues.len();
        errors += profiles::check(std::hint::black_box(&r), &[]).len();
    }
    println!("{errors}");
}
