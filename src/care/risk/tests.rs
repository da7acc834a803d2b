//! Tests of the risk rules: recognition of the inputs, the Charlson and LACE tables, the program
//! score on hand-built patients, thresholds, determinism and the RiskAssessment.
use serde_json::{json, Value};

use super::*;

const NOW: &str = "2025-06-15T12:00:00Z";
const ICD: &str = "http://hl7.org/fhir/sid/icd-10-cm";
const SCT: &str = "http://snomed.info/sct";

fn now() -> i64 {
    parse_lower_bound(NOW).unwrap()
}

fn patient(birth: &str) -> Value {
    json!({"resourceType": "Patient", "id": "p1", "birthDate": birth})
}

fn condition(id: &str, system: &str, code: &str) -> Value {
    json!({"resourceType": "Condition", "id": id,
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": "Patient/p1"}})
}

fn encounter(id: &str, class: &str, start: &str, end: &str) -> Value {
    json!({"resourceType": "Encounter", "id": id, "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": class},
        "period": {"start": start, "end": end}})
}

fn obs(id: &str, code: &str, value: f64, when: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "effectiveDateTime": when, "valueQuantity": {"value": value}})
}

fn bp(id: &str, systolic: f64, diastolic: f64, when: &str) -> Value {
    let component = |code: &str, v: f64| {
        json!({"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueQuantity": {"value": v, "unit": "mm[Hg]"}})
    };
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "effectiveDateTime": when,
        "component": [component("8480-6", systolic), component("8462-4", diastolic)]})
}

fn social(id: &str, count: u32, when: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": SOCIAL_NEED_SYSTEM, "code": SOCIAL_NEED_COUNT}]},
        "effectiveDateTime": when, "valueInteger": count})
}

fn gather(p: &Value, conditions: &[Value], encounters: &[Value], observations: &[Value]) -> Inputs {
    inputs(p, conditions, encounters, observations, now())
}

fn score(
    p: &Value,
    conditions: &[Value],
    encounters: &[Value],
    observations: &[Value],
) -> Stratification {
    stratify(
        &gather(p, conditions, encounters, observations),
        load_config(),
    )
}

fn factors(s: &Stratification) -> Vec<(&'static str, f64)> {
    s.contributions
        .iter()
        .map(|c| (c.factor, c.points))
        .collect()
}

fn points_of(s: &Stratification, factor: &str) -> f64 {
    s.contributions
        .iter()
        .find(|c| c.factor == factor)
        .map_or(0.0, |c| c.points)
}

/// A patient at 82 with diabetes, heart failure and hypertension, an emergent 5-day stay three
/// weeks ago (reached through the ED), an earlier ED visit, PHQ-9 12 and two social needs.
fn high_patient() -> (Value, Vec<Value>, Vec<Value>, Vec<Value>) {
    let conditions = vec![
        condition("dm", ICD, "E11.9"),
        condition("hf", ICD, "I50.9"),
        condition("htn", ICD, "I10"),
    ];
    let encounters = vec![
        encounter(
            "ed0",
            "EMER",
            "2025-03-10T10:00:00Z",
            "2025-03-10T14:00:00Z",
        ),
        encounter(
            "ed1",
            "EMER",
            "2025-05-20T02:00:00Z",
            "2025-05-20T07:00:00Z",
        ),
        encounter("imp", "IMP", "2025-05-20T08:00:00Z", "2025-05-25T10:00:00Z"),
        encounter("amb", "AMB", "2025-06-01T10:00:00Z", "2025-06-01T10:30:00Z"),
    ];
    let observations = vec![
        obs("phq", "44261-6", 12.0, "2025-06-01"),
        social("sn", 2, "2025-06-01"),
        obs("a1c", "4548-4", 7.2, "2025-06-01"),
        bp("bp", 132.0, 84.0, "2025-06-01"),
    ];
    (patient("1943-01-10"), conditions, encounters, observations)
}

// --- LACE ---------------------------------------------------------------------------------

#[test]
fn lace_length_of_stay_boundaries() {
    for (days, l) in [
        (0, 0),
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 4),
        (6, 4),
        (7, 5),
        (13, 5),
        (14, 7),
        (40, 7),
    ] {
        assert_eq!(lace_l(days), l, "{days} days");
    }
    assert_eq!(
        length_of_stay("2025-05-20T08:00:00Z", "2025-05-20T20:00:00Z"),
        Some(0)
    );
    assert_eq!(
        length_of_stay("2025-05-20T23:00:00+02:00", "2025-05-21T01:00:00+02:00"),
        Some(1),
        "a midnight passed counts as a day"
    );
    assert_eq!(length_of_stay("2025-05-20", "2025-06-03"), Some(14));
}

#[test]
fn lace_comorbidity_and_ed_tables() {
    let c: Vec<u32> = (0..=7).map(lace_c).collect();
    assert_eq!(c, [0, 1, 2, 3, 5, 5, 5, 5]);
    let e: Vec<u32> = (0..=6).map(lace_e).collect();
    assert_eq!(e, [0, 1, 2, 3, 4, 4, 4]);
}

#[test]
fn lace_worked_example_emergent_five_day_stay() {
    let (p, conditions, encounters, _) = high_patient();
    let i = gather(&p, &conditions, &encounters, &[]);
    assert_eq!(charlson(&i), 2, "CHF + diabetes without complications");
    let stay = i.index_stay.as_ref().unwrap();
    assert_eq!(stay.length_of_stay_days, 5);
    assert_eq!(
        stay.emergent,
        Some("emergency department visit before admission")
    );
    assert_eq!(stay.basis, ["Encounter/ed1", "Encounter/imp"]);
    assert_eq!(
        i.ed_visits_6m.basis,
        ["Encounter/ed0"],
        "the ED visit of the admission itself is not counted"
    );
    assert_eq!(
        lace(&i),
        Lace {
            l: 4,
            a: 3,
            c: 2,
            e: 1,
            total: 10
        }
    );
}

#[test]
fn lace_elective_same_day_without_comorbidity() {
    let encounters = [encounter(
        "imp",
        "IMP",
        "2025-05-20T08:00:00Z",
        "2025-05-20T18:00:00Z",
    )];
    let i = gather(&patient("1970-01-01"), &[], &encounters, &[]);
    assert_eq!(i.index_stay.as_ref().unwrap().emergent, None);
    assert_eq!(lace(&i), Lace::default());
}

#[test]
fn lace_long_stay_with_metastases_and_frequent_ed() {
    let conditions = [
        condition("met", ICD, "C78.7"),
        condition("colon", ICD, "C18.9"),
    ];
    let mut encounters: Vec<Value> = [
        "2025-01-10",
        "2025-02-10",
        "2025-03-10",
        "2025-04-10",
        "2025-04-20",
    ]
    .iter()
    .enumerate()
    .map(|(n, d)| {
        encounter(
            &format!("ed{n}"),
            "EMER",
            &format!("{d}T10:00:00Z"),
            &format!("{d}T12:00:00Z"),
        )
    })
    .collect();
    encounters.push(encounter(
        "old-ed",
        "EMER",
        "2024-10-01T10:00:00Z",
        "2024-10-01T12:00:00Z",
    ));
    encounters.push(encounter(
        "imp",
        "IMP",
        "2025-05-01T09:00:00Z",
        "2025-05-15T09:00:00Z",
    ));
    let i = gather(&patient("1950-01-01"), &conditions, &encounters, &[]);
    assert_eq!(
        charlson(&i),
        6,
        "metastatic tumour 6; the primary tumour is not added"
    );
    assert_eq!(
        i.ed_visits_6m.value, 5,
        "the visit 7 months before admission is outside"
    );
    assert_eq!(
        lace(&i),
        Lace {
            l: 7,
            a: 0,
            c: 5,
            e: 4,
            total: 16
        }
    );

    let emergent = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActPriority", "code": "EM"}]});
    encounters.last_mut().unwrap()["priority"] = emergent;
    let i = gather(&patient("1950-01-01"), &conditions, &encounters, &[]);
    assert_eq!(
        i.index_stay.as_ref().unwrap().emergent,
        Some("emergency or urgent priority")
    );
    assert_eq!(lace(&i).total, 19);
}

#[test]
fn admitted_from_the_emergency_department_is_emergent() {
    let mut stay = encounter("imp", "IMP", "2025-05-01T09:00:00Z", "2025-05-03T09:00:00Z");
    stay["hospitalization"] = json!({"admitSource": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/admit-source", "code": "emd"}]}});
    let i = gather(&patient("1950-01-01"), &[], &[stay], &[]);
    assert_eq!(lace(&i).a, 3);
    // An ED visit two days before an admission does not make it emergent.
    let encounters = [
        encounter("ed", "EMER", "2025-04-29T08:00:00Z", "2025-04-29T12:00:00Z"),
        encounter("imp", "IMP", "2025-05-01T09:00:00Z", "2025-05-03T09:00:00Z"),
    ];
    let i = gather(&patient("1950-01-01"), &[], &encounters, &[]);
    assert_eq!(
        lace(&i),
        Lace {
            l: 2,
            a: 0,
            c: 0,
            e: 1,
            total: 3
        }
    );
}

// --- Charlson and conditions ----------------------------------------------------------------

#[test]
fn icd10_entries_match_prefixes_and_ranges() {
    assert!(icd10_matches("I25.2", "I25.2"));
    assert!(!icd10_matches("I25.2", "I25.10"));
    assert!(icd10_matches("I60-I69", "I63.9"));
    assert!(!icd10_matches("I60-I69", "I70.0"));
    assert!(
        !icd10_matches("C77-C80", "C7A.0"),
        "ranges cover letter + two digits only"
    );
    assert!(icd10_matches("E11.9", "E119"), "dots ignored");
    assert!(icd10_matches("I50", "i50.9"), "case ignored");
}

#[test]
fn charlson_groups_counted_once_with_hierarchy() {
    let mut resolved = condition("dem", SCT, "26929004");
    resolved["clinicalStatus"]["coding"][0]["code"] = json!("resolved");
    let mut mistaken = condition("copd", ICD, "J44.9");
    mistaken["verificationStatus"] = json!({"coding": [{"code": "entered-in-error"}]});
    let mut no_status = condition("mi", "http://hl7.org/fhir/sid/icd-10", "I21.4");
    no_status.as_object_mut().unwrap().remove("clinicalStatus");
    let conditions = [
        condition("hf1", ICD, "I50.9"),
        condition("hf2", SCT, "88805009"),
        condition("dm1", ICD, "E11.9"),
        condition("dm2", ICD, "E11.22"),
        condition("liver1", ICD, "K74.60"),
        condition("liver2", ICD, "I85.00"),
        condition("pharyngitis", SCT, "195662009"),
        condition("ckd2", SCT, "431856006"),
        resolved,
        mistaken,
        no_status,
    ];
    let i = gather(&patient("1950-01-01"), &conditions, &[], &[]);
    let groups: Vec<(&str, u32)> = i.charlson.iter().map(|g| (g.group, g.weight)).collect();
    assert_eq!(
        groups,
        [
            ("myocardial-infarction", 1),
            ("congestive-heart-failure", 1),
            ("diabetes-complicated", 2),
            ("moderate-severe-liver-disease", 3)
        ]
    );
    assert_eq!(i.charlson[1].basis, ["Condition/hf1", "Condition/hf2"]);
    assert_eq!(charlson(&i), 7);
    let chronic: Vec<&str> = i.chronic.iter().map(|g| g.group).collect();
    assert_eq!(
        chronic,
        [
            "diabetes",
            "heart-failure",
            "ckd",
            "coronary-artery-disease"
        ]
    );

    let stage3 = gather(
        &patient("1950-01-01"),
        &[condition("ckd3", SCT, "433144002")],
        &[],
        &[],
    );
    assert_eq!(stage3.charlson[0].group, "renal-disease");
    assert_eq!(
        charlson(&stage3),
        2,
        "CKD from stage 3 is moderate renal disease"
    );
}

// --- recognition ----------------------------------------------------------------------------

#[test]
fn encounters_recognised_by_class_status_and_window() {
    let mut cancelled = encounter(
        "ed-x",
        "EMER",
        "2025-05-01T10:00:00Z",
        "2025-05-01T11:00:00Z",
    );
    cancelled["status"] = json!("cancelled");
    let mut ongoing = encounter(
        "imp-now",
        "IMP",
        "2025-06-14T10:00:00Z",
        "2025-06-20T10:00:00Z",
    );
    ongoing["status"] = json!("in-progress");
    let mut other_system = encounter(
        "ed-y",
        "EMER",
        "2025-05-02T10:00:00Z",
        "2025-05-02T11:00:00Z",
    );
    other_system["class"]["system"] = json!("http://example.org/classes");
    let encounters = [
        cancelled,
        ongoing,
        other_system,
        encounter(
            "ed-old",
            "EMER",
            "2024-05-01T10:00:00Z",
            "2024-05-01T11:00:00Z",
        ),
        encounter("ed", "EMER", "2025-01-01T10:00:00Z", "2025-01-01T11:00:00Z"),
        encounter("amb", "AMB", "2025-02-01T10:00:00Z", "2025-02-01T11:00:00Z"),
        encounter(
            "imp-jan",
            "IMP",
            "2025-01-05T10:00:00Z",
            "2025-01-08T10:00:00Z",
        ),
        encounter(
            "imp-2023",
            "IMP",
            "2023-01-05T10:00:00Z",
            "2023-01-08T10:00:00Z",
        ),
    ];
    let i = gather(&patient("1950-01-01"), &[], &encounters, &[]);
    assert_eq!(
        i.admissions_12m.basis,
        ["Encounter/imp-jan", "Encounter/imp-now"]
    );
    assert_eq!(i.ed_visits_12m.basis, ["Encounter/ed"]);
    let stay = i.index_stay.unwrap();
    assert_eq!(
        stay.basis,
        ["Encounter/imp-jan"],
        "the latest finished stay"
    );
    assert_eq!(stay.length_of_stay_days, 3);
}

#[test]
fn latest_usable_observation_wins() {
    let mut void = obs("a1c-void", "4548-4", 11.0, "2025-05-01");
    void["status"] = json!("entered-in-error");
    let observations = [
        obs("a1c-old", "4548-4", 9.0, "2025-01-01"),
        obs("a1c-new", "4548-4", 7.5, "2025-04-01T09:00:00Z"),
        obs("a1c-future", "4548-4", 10.0, "2025-07-01"),
        void,
        obs("sys", "8480-6", 150.0, "2025-05-01"),
        bp("bp-old", 120.0, 95.0, "2025-03-01"),
        json!({"resourceType": "Observation", "id": "phq", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6"}]},
            "effectivePeriod": {"start": "2025-05-01"}, "valueInteger": 16}),
        social("sn", 4, "2025-02-01"),
    ];
    let i = gather(&patient("1950-01-01"), &[], &[], &observations);
    assert_eq!(
        i.hba1c,
        Some(Evidence::new(7.5, ["Observation/a1c-new".to_string()]))
    );
    assert_eq!(i.systolic.unwrap().basis, ["Observation/sys"]);
    assert_eq!(
        i.diastolic.unwrap().value,
        95.0,
        "each side is the latest of its own"
    );
    assert_eq!(i.phq9.unwrap().value, 16);
    assert_eq!(i.social_needs.unwrap().value, 4);
    assert_eq!(i.age.unwrap().basis, ["Patient/p1"]);
}

// --- program score --------------------------------------------------------------------------

#[test]
fn program_score_high_patient() {
    let (p, c, e, o) = high_patient();
    let s = score(&p, &c, &e, &o);
    assert_eq!(
        factors(&s),
        [
            ("chronic-conditions", 3.0),
            ("admissions-12m", 2.0),
            ("ed-visits-12m", 2.0),
            ("phq9", 1.0),
            ("social-needs", 2.0),
            ("age", 2.0),
            ("lace", 3.0)
        ]
    );
    assert_eq!(s.score, 15.0);
    assert_eq!(s.tier, Tier::High);
    assert_eq!(s.lace.unwrap().total, 10);
    assert_eq!(
        s.contributions[0].detail,
        "3 chronic condition(s): diabetes, heart failure, hypertension"
    );
    assert_eq!(s.contributions[3].detail, "PHQ-9 12, moderate");
    assert_eq!(
        s.contributions[6].basis,
        [
            "Condition/dm",
            "Condition/hf",
            "Encounter/ed0",
            "Encounter/ed1",
            "Encounter/imp"
        ]
    );
    assert_eq!(contact_frequency(s.tier), "P7D");
}

#[test]
fn program_score_moderate_patient() {
    let conditions = [
        condition("dm", SCT, "44054006"),
        condition("htn", SCT, "38341003"),
    ];
    let observations = [
        obs("a1c", "4548-4", 8.4, "2025-05-01"),
        bp("bp", 128.0, 78.0, "2025-05-01"),
    ];
    let s = score(&patient("1955-03-01"), &conditions, &[], &observations);
    assert_eq!(
        factors(&s),
        [("chronic-conditions", 2.0), ("hba1c", 2.0), ("age", 1.0)]
    );
    assert_eq!(s.score, 5.0);
    assert_eq!(s.tier, Tier::Moderate);
    assert_eq!(s.lace, None);
    assert_eq!(contact_frequency(s.tier), "P1M");
}

#[test]
fn program_score_low_patient() {
    let observations = [
        bp("bp", 130.0, 80.0, "2025-05-01"),
        obs("phq", "44261-6", 6.0, "2025-05-01"),
    ];
    let s = score(
        &patient("1975-06-16"),
        &[condition("htn", ICD, "I10")],
        &[],
        &observations,
    );
    assert_eq!(factors(&s), [("chronic-conditions", 1.0)]);
    assert_eq!(s.tier, Tier::Low);
    assert_eq!(contact_frequency(s.tier), "P3M");
}

#[test]
fn hba1c_threshold() {
    let p = patient("1990-01-01");
    for (value, points) in [(7.9, 0.0), (8.0, 2.0), (8.1, 2.0)] {
        let s = score(&p, &[], &[], &[obs("a1c", "4548-4", value, "2025-05-01")]);
        assert_eq!(points_of(&s, "hba1c"), points, "HbA1c {value}");
    }
}

#[test]
fn blood_pressure_threshold() {
    let p = patient("1990-01-01");
    for (sys, dia, points) in [
        (139.0, 89.0, 0.0),
        (141.0, 85.0, 1.0),
        (130.0, 92.0, 1.0),
        (140.0, 80.0, 1.0),
    ] {
        let s = score(&p, &[], &[], &[bp("bp", sys, dia, "2025-05-01")]);
        assert_eq!(points_of(&s, "blood-pressure"), points, "{sys}/{dia}");
    }
    let separate = [
        obs("s", "8480-6", 145.0, "2025-05-01"),
        obs("d", "8462-4", 80.0, "2025-05-01"),
    ];
    let s = score(&p, &[], &[], &separate);
    let c = s
        .contributions
        .iter()
        .find(|c| c.factor == "blood-pressure")
        .unwrap();
    assert_eq!(
        c.detail,
        "blood pressure 145/80 mm[Hg] (uncontrolled from 140/90)"
    );
    assert_eq!(c.basis, ["Observation/d", "Observation/s"]);
}

#[test]
fn age_boundaries() {
    for (birth, age, points) in [
        ("1960-06-16", 64, 0.0),
        ("1960-06-15", 65, 1.0),
        ("1960", 65, 1.0),
        ("1945-06-16", 79, 1.0),
        ("1945-06-15", 80, 2.0),
    ] {
        let s = score(&patient(birth), &[], &[], &[]);
        assert_eq!(
            gather(&patient(birth), &[], &[], &[]).age.unwrap().value,
            age,
            "{birth}"
        );
        assert_eq!(points_of(&s, "age"), points, "{birth}");
    }
}

#[test]
fn phq9_bands_and_points() {
    let p = patient("1990-01-01");
    for (total, band, points) in [
        (4, "minimal", 0.0),
        (9, "mild", 0.0),
        (10, "moderate", 1.0),
        (14, "moderate", 1.0),
        (15, "moderately severe", 2.0),
        (19, "moderately severe", 2.0),
        (20, "severe", 3.0),
        (27, "severe", 3.0),
    ] {
        assert_eq!(phq9_band(total), band);
        let s = score(
            &p,
            &[],
            &[],
            &[obs("phq", "44261-6", total.into(), "2025-05-01")],
        );
        assert_eq!(points_of(&s, "phq9"), points, "PHQ-9 {total}");
    }
}

#[test]
fn chronic_and_social_points_are_capped() {
    let conditions: Vec<Value> = [
        "E11.9", "I50.9", "J44.9", "F32.9", "N18.2", "I10", "J45.909",
    ]
    .iter()
    .enumerate()
    .map(|(n, code)| condition(&format!("c{n}"), ICD, code))
    .collect();
    let s = score(
        &patient("1990-01-01"),
        &conditions,
        &[],
        &[social("sn", 5, "2025-05-01")],
    );
    assert_eq!(points_of(&s, "chronic-conditions"), 5.0);
    assert!(s.contributions[0]
        .detail
        .starts_with("7 chronic condition(s)"));
    assert!(s.contributions[0].detail.ends_with(", capped at 5"));
    assert_eq!(points_of(&s, "social-needs"), 3.0);
}

#[test]
fn same_inputs_same_output() {
    let (p, mut c, mut e, mut o) = high_patient();
    let first = score(&p, &c, &e, &o);
    assert_eq!(score(&p, &c, &e, &o), first);
    c.reverse();
    e.reverse();
    o.reverse();
    let shuffled = score(&p, &c, &e, &o);
    assert_eq!(shuffled, first, "resource order does not matter");
    assert_eq!(
        risk_assessment("p1", &shuffled, "m", NOW, None),
        risk_assessment("p1", &first, "m", NOW, None)
    );
}

// --- RiskAssessment and data files ----------------------------------------------------------

#[test]
fn risk_assessment_is_valid_r4() {
    let (p, c, e, o) = high_patient();
    let s = score(&p, &c, &e, &o);
    let ra = risk_assessment(
        "p1",
        &s,
        "ICM program score 0.1.0",
        NOW,
        Some("RiskAssessment/ra0"),
    );
    let report = crate::fhir::validate::validate(&ra);
    assert!(!report.has_errors(), "{:?}", report.issues);
    assert_eq!(ra["status"], "final");
    assert_eq!(ra["subject"]["reference"], "Patient/p1");
    assert_eq!(ra["parent"]["reference"], "RiskAssessment/ra0");
    assert_eq!(ra["method"]["coding"][0]["code"], METHOD_CODE);
    let prediction = &ra["prediction"][0];
    assert_eq!(prediction["qualitativeRisk"]["coding"][0]["code"], "high");
    assert_eq!(prediction["extension"][0]["url"], RISK_SCORE_URL);
    assert_eq!(
        prediction["extension"][0]["valueDecimal"].as_f64(),
        Some(15.0)
    );
    assert_eq!(
        prediction["extension"][1],
        json!({"url": LACE_SCORE_URL, "valueInteger": 10})
    );
    let contributions = &prediction["extension"].as_array().unwrap()[2..];
    assert_eq!(contributions.len(), s.contributions.len());
    assert_eq!(
        contributions[3]["extension"][0],
        json!({"url": "factor", "valueCode": "phq9"})
    );
    assert_eq!(
        contributions[3]["extension"][3]["valueReference"]["reference"],
        "Observation/phq"
    );
    let notes: Vec<&str> = ra["note"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["text"].as_str().unwrap())
        .collect();
    assert_eq!(notes[3], "PHQ-9 12, moderate (+1)");
    assert_eq!(notes.len(), 7);
    let basis: Vec<&str> = ra["basis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["reference"].as_str().unwrap())
        .collect();
    assert_eq!(basis.len(), 9);
    assert!(basis.contains(&"Patient/p1") && basis.contains(&"Encounter/imp"));
    assert!(!basis.contains(&"Encounter/amb") && !basis.contains(&"Observation/a1c"));

    let empty = stratify(&Inputs::default(), load_config());
    let ra = risk_assessment("p2", &empty, "", "2025-06-15", None);
    let report = crate::fhir::validate::validate(&ra);
    assert!(!report.has_errors(), "{:?}", report.issues);
    assert_eq!(
        ra["prediction"][0]["qualitativeRisk"]["coding"][0]["code"],
        "low"
    );
    assert!(ra.get("basis").is_none() && ra.get("note").is_none() && ra.get("parent").is_none());
}

#[test]
fn configuration_and_code_list_are_consistent() {
    let config = load_config();
    assert_eq!(config.version, "0.1.0");
    let list = code_list();
    for g in &config.chronic_conditions.groups {
        assert!(
            list.chronic.iter().any(|c| &c.group == g),
            "unknown chronic group {g}"
        );
    }
    for [hi, lo] in &list.charlson_hierarchy {
        assert!(
            list.charlson.iter().any(|c| &c.group == hi)
                && list.charlson.iter().any(|c| &c.group == lo)
        );
    }
    for g in &list.charlson {
        assert!(
            [1, 2, 3, 6].contains(&g.weight),
            "{} weight {}",
            g.group,
            g.weight
        );
    }
    let ids: BTreeSet<&str> = list
        .charlson
        .iter()
        .chain(&list.chronic)
        .map(|g| g.group.as_str())
        .collect();
    assert_eq!(
        ids.len(),
        list.charlson.len() + list.chronic.len(),
        "group ids are distinct"
    );
    for bands in [&config.admissions_12m, &config.ed_visits_12m, &config.age] {
        assert!(
            bands.windows(2).all(|w| w[0].from < w[1].from),
            "bands ascend"
        );
    }
    assert!(config.tiers.high > config.tiers.moderate);

    let cs: Value = serde_json::from_str(include_str!(
        "../../../fhir-profiles/icm/CodeSystem-icm-risk-method.json"
    ))
    .unwrap();
    let report = crate::fhir::validate::validate(&cs);
    assert!(!report.has_errors(), "{:?}", report.issues);
    assert_eq!(cs["url"], METHOD_SYSTEM);
    assert_eq!(cs["concept"][0]["code"], METHOD_CODE);
}

#[test]
fn chronic_code_patterns_for_index_lookups() {
    let d = chronic_code_patterns("diabetes");
    let icd: Vec<&str> = d
        .iter()
        .filter(|(s, _, _)| *s == "http://hl7.org/fhir/sid/icd-10-cm")
        .map(|(_, c, p)| {
            assert!(*p);
            c.as_str()
        })
        .collect();
    assert_eq!(icd, ["E08", "E09", "E10", "E11", "E12", "E13", "E14"]);
    assert!(d.contains(&("http://snomed.info/sct", "44054006".to_string(), false)));
    let h = chronic_code_patterns("heart-failure");
    let icd: Vec<&str> = h
        .iter()
        .filter(|(s, _, _)| *s == "http://hl7.org/fhir/sid/icd-10")
        .map(|(_, c, _)| c.as_str())
        .collect();
    assert_eq!(
        icd,
        ["I11.0", "I110", "I13.0", "I130", "I13.2", "I132", "I50"]
    );
    assert!(chronic_code_patterns("nope").is_empty());
}
