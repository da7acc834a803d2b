//! Tests of the assessments: the shipped Questionnaires, scoring, validation of responses.
use super::*;
use crate::fhir::validate::validate;

const PHQ_ANSWERS: [&str; 4] = ["LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9"];
const FREQUENCY: [&str; 5] = [
    "LA6270-8",
    "LA10066-1",
    "LA10082-8",
    "LA16644-9",
    "LA6482-9",
];

fn q(id: &str) -> &'static Value {
    by_canonical(&format!("Questionnaire/{id}")).unwrap()
}

fn response(id: &str, items: Value) -> Value {
    json!({
        "resourceType": "QuestionnaireResponse",
        "questionnaire": format!("{QUESTIONNAIRE_BASE}{id}"),
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "authored": "2024-03-01T10:00:00Z",
        "item": items
    })
}

fn loinc(code: &str) -> Value {
    json!({"valueCoding": {"system": LOINC, "code": code}})
}

fn reply(link: &str, answers: Value) -> Value {
    json!({"linkId": link, "answer": answers})
}

fn phq9_response(scores: [usize; 9]) -> Value {
    let items = scores
        .iter()
        .enumerate()
        .map(|(i, &s)| reply(&format!("phq9-{}", i + 1), json!([loinc(PHQ_ANSWERS[s])])))
        .collect();
    response("icm-phq9", Value::Array(items))
}

/// A social-needs response; `safety` indexes FREQUENCY (ordinal = index + 1).
fn sn_response(
    living: &str,
    problems: &[&str],
    food: [&str; 2],
    transport: &str,
    utilities: &str,
    safety: [usize; 4],
    help: Option<bool>,
) -> Value {
    let problems: Vec<Value> = problems.iter().map(|c| loinc(c)).collect();
    let safety_items: Vec<Value> = ["hurt", "insult", "threaten", "scream"]
        .iter()
        .zip(safety)
        .map(|(k, s)| reply(&format!("sn-safety-{k}"), json!([loinc(FREQUENCY[s])])))
        .collect();
    let mut items = vec![
        json!({"linkId": "housing", "item": [
            reply("sn-living-situation", json!([loinc(living)])),
            reply("sn-housing-problems", Value::Array(problems)),
        ]}),
        json!({"linkId": "food", "item": [
            reply("sn-food-worry", json!([loinc(food[0])])),
            reply("sn-food-last", json!([loinc(food[1])])),
        ]}),
        json!({"linkId": "transportation", "item": [
            reply("sn-transportation", json!([loinc(transport)])),
        ]}),
        json!({"linkId": "utilities", "item": [reply("sn-utilities", json!([loinc(utilities)]))]}),
        json!({"linkId": "safety", "item": safety_items}),
    ];
    if let Some(h) = help {
        items.push(reply("sn-help-wanted", json!([{ "valueBoolean": h }])));
    }
    response("icm-social-needs", Value::Array(items))
}

const NEVER: &str = "LA28398-8";
const SOMETIMES: &str = "LA6729-3";
const YES: &str = "LA33-6";
const NO: &str = "LA32-8";
const STEADY: &str = "LA31993-1";
const NONE_OF_THESE: &str = "LA9-3";

fn sn_negative() -> Value {
    sn_response(
        STEADY,
        &[NONE_OF_THESE],
        [NEVER, NEVER],
        NO,
        NO,
        [0; 4],
        None,
    )
}

fn functional_response() -> Value {
    let group = |link: &str, keys: &[&str]| {
        let items: Vec<Value> = keys
            .iter()
            .map(|k| {
                reply(
                    &format!("{link}-{k}"),
                    json!([{"valueCoding": {"system": "http://snomed.info/sct", "code": "371153006"}}]),
                )
            })
            .collect();
        json!({"linkId": link, "item": items})
    };
    response(
        "icm-functional-status",
        json!([
            group(
                "adl",
                &[
                    "bathing",
                    "dressing",
                    "toileting",
                    "transferring",
                    "continence",
                    "feeding"
                ]
            ),
            group(
                "iadl",
                &[
                    "telephone",
                    "shopping",
                    "food-preparation",
                    "housekeeping",
                    "laundry",
                    "transportation",
                    "medications",
                    "finances"
                ]
            ),
        ]),
    )
}

fn intake_response(lives_alone: bool, support: Option<&str>) -> Value {
    let mut items = vec![
        reply(
            "living-situation",
            json!([{"valueString": "Own home or apartment"}]),
        ),
        reply("lives-alone", json!([{ "valueBoolean": lives_alone }])),
    ];
    if let Some(s) = support {
        items.push(reply("support-person", json!([{ "valueString": s }])));
    }
    items.extend([
        reply("primary-language", json!([{"valueString": "Spanish"}])),
        reply("goals", json!([{"valueString": "Walk to the market again"}, {"valueString": "Fewer trips to the ER"}])),
        reply("preferred-contact", json!([{"valueCoding": {"system": "http://hl7.org/fhir/contact-point-system", "code": "sms"}}])),
        reply("consent-community-sharing", json!([{"valueBoolean": true}])),
    ]);
    response("icm-intake", Value::Array(items))
}

/// The issue of `code` naming `link`, which must carry an expression into the response.
fn expect<'a>(issues: &'a [Issue], link: &str, code: IssueType) -> &'a Issue {
    let i = issues
        .iter()
        .find(|i| i.code == code && i.diagnostics.contains(&format!("'{link}'")))
        .unwrap_or_else(|| panic!("no {code:?} issue naming '{link}' in {issues:#?}"));
    assert_eq!(i.expression.len(), 1, "{i:?}");
    assert!(
        i.expression[0].starts_with("QuestionnaireResponse"),
        "{i:?}"
    );
    i
}

fn total(results: &[DerivedObservation]) -> Option<(i64, &str)> {
    results
        .iter()
        .find(|d| d.code.code == PHQ9_TOTAL)
        .map(|d| match d.value {
            DerivedValue::Integer(n) => (n, d.interpretation.as_ref().unwrap().text.as_str()),
            _ => panic!("total is an integer"),
        })
}

fn suicide_flag(results: &[DerivedObservation]) -> Option<&DerivedObservation> {
    results.iter().find(|d| d.code.code == PHQ9_ITEMS[8])
}

fn scored_phq9(scores: [usize; 9]) -> Vec<DerivedObservation> {
    score(q("icm-phq9"), &phq9_response(scores))
}

// ---- the shipped files

#[test]
fn shipped_files_are_valid_r4() {
    assert_eq!(questionnaires().len(), 5);
    for (id, text) in questionnaires() {
        let v: Value = serde_json::from_str(text).unwrap();
        let report = validate(&v);
        assert!(!report.has_errors(), "{id}: {:#?}", report.issues);
        assert_eq!(str_at(&v, "id"), Some(*id));
        assert_eq!(
            str_at(&v, "url"),
            Some(format!("{QUESTIONNAIRE_BASE}{id}").as_str())
        );
        assert_eq!(str_at(&v, "version"), Some("0.1.0"));
        assert_eq!(str_at(&v, "status"), Some("active"));
        assert_eq!(v["subjectType"], json!(["Patient"]));
    }
    // The validator does look inside the items: a bad item type is an error.
    let mut broken = q("icm-phq9").clone();
    broken["item"][1]["type"] = json!("choise");
    assert!(validate(&broken).has_errors());
    let cs: Value = serde_json::from_str(include_str!(
        "../../../fhir-profiles/icm/CodeSystem-icm-social-need.json"
    ))
    .unwrap();
    let report = validate(&cs);
    assert!(!report.has_errors(), "{:#?}", report.issues);
    assert_eq!(str_at(&cs, "url"), Some(SOCIAL_NEED));
}

#[test]
fn phq9_questionnaire_shape() {
    let q = q("icm-phq9");
    assert!(has_code(q, LOINC, PHQ9_PANEL));
    let scored: Vec<&Value> = list(q, "item")
        .iter()
        .filter(|i| i["type"] == "choice")
        .collect();
    assert_eq!(scored.len(), 9);
    for (item, code) in scored.iter().zip(PHQ9_ITEMS) {
        assert!(has_code(item, LOINC, code), "{code}");
        assert_eq!(item["required"], json!(true));
        let ordinals: Vec<(&str, f64)> = list(item, "answerOption")
            .iter()
            .map(|o| {
                let c = &o["valueCoding"];
                (
                    str_at(c, "code").unwrap(),
                    extension(c, ORDINAL_VALUE).unwrap().as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ordinals,
            PHQ_ANSWERS
                .iter()
                .copied()
                .zip([0.0, 1.0, 2.0, 3.0])
                .collect::<Vec<_>>()
        );
    }
    let total = list(q, "item")
        .iter()
        .find(|i| i["linkId"] == "phq9-total")
        .unwrap();
    assert!(has_code(total, LOINC, PHQ9_TOTAL));
    assert_eq!(
        (total["type"].as_str(), total["readOnly"].as_bool()),
        (Some("decimal"), Some(true))
    );
    assert_ne!(total["required"], json!(true));
}

#[test]
fn by_canonical_forms() {
    for (id, _) in questionnaires() {
        let url = format!("{QUESTIONNAIRE_BASE}{id}");
        assert_eq!(str_at(by_canonical(&url).unwrap(), "id"), Some(*id));
        assert!(by_canonical(&format!("{url}|0.1.0")).is_some());
        assert!(by_canonical(&format!("Questionnaire/{id}")).is_some());
        assert!(by_canonical(&format!("{url}|9.9.9")).is_none());
    }
    assert!(by_canonical("Questionnaire/nope").is_none());
    assert!(by_canonical("http://example.org/Questionnaire/icm-phq9").is_none());
    assert!(std::ptr::eq(q("icm-phq9"), q("icm-phq9")), "parsed once");
}

// ---- PHQ-9 scoring

#[test]
fn phq9_all_zeros_is_minimal() {
    let r = scored_phq9([0; 9]);
    assert_eq!(total(&r), Some((0, "minimal")));
    assert!(suicide_flag(&r).is_none());
    assert_eq!(r.len(), 1);
}

#[test]
fn phq9_mixed_case_is_ten_moderate() {
    // 1+2+0+3+1+0+2+1+0 = 10
    let r = scored_phq9([1, 2, 0, 3, 1, 0, 2, 1, 0]);
    assert_eq!(total(&r), Some((10, "moderate")));
    assert!(suicide_flag(&r).is_none());
}

#[test]
fn phq9_all_threes_is_27_severe_with_flag() {
    let r = scored_phq9([3; 9]);
    assert_eq!(total(&r), Some((27, "severe")));
    let flag = suicide_flag(&r).unwrap();
    assert!(flag.urgent);
    assert_eq!(
        flag.value,
        DerivedValue::Coding(Code::new(LOINC, "LA6571-9", "Nearly every day"))
    );
}

#[test]
fn phq9_item9_flags_suicide_risk_even_with_low_total() {
    // 1+0+0+1+0+0+0+0+1 = 3
    let r = scored_phq9([1, 0, 0, 1, 0, 0, 0, 0, 1]);
    assert_eq!(total(&r), Some((3, "minimal")));
    let flag = suicide_flag(&r).unwrap();
    assert!(flag.urgent);
    assert_eq!(
        flag.interpretation
            .as_ref()
            .unwrap()
            .coding
            .as_ref()
            .unwrap()
            .code,
        "POS"
    );
    assert_eq!(
        flag.value,
        DerivedValue::Coding(Code::new(LOINC, "LA6569-3", "Several days"))
    );
}

#[test]
fn phq9_band_boundaries() {
    for (t, band) in [
        (4, "minimal"),
        (5, "mild"),
        (9, "mild"),
        (10, "moderate"),
        (14, "moderate"),
        (15, "moderately severe"),
        (19, "moderately severe"),
        (20, "severe"),
    ] {
        // Fill items 1-8 with 3s up to the total; item 9 stays 0.
        let mut s = [0usize; 9];
        let mut left = t;
        for x in s.iter_mut().take(8) {
            *x = left.min(3);
            left -= *x;
        }
        assert_eq!(left, 0);
        assert_eq!(total(&scored_phq9(s)), Some((t as i64, band)), "total {t}");
        assert_eq!(phq9_band(t as i64), band);
    }
}

#[test]
fn phq9_incomplete_has_no_total_but_keeps_the_flag() {
    let mut qr = phq9_response([0, 0, 0, 0, 0, 0, 0, 0, 2]);
    qr["item"].as_array_mut().unwrap().remove(0);
    let r = score(q("icm-phq9"), &qr);
    assert!(total(&r).is_none());
    assert!(suicide_flag(&r).is_some());
}

// ---- social needs scoring

fn positive_domains(r: &[DerivedObservation]) -> (i64, Vec<&str>) {
    let count = match r[0].value {
        DerivedValue::Integer(n) if r[0].code.code == "positive-domains" => n,
        _ => panic!("first result is the count: {r:?}"),
    };
    let each = r[1..]
        .iter()
        .inspect(|d| assert_eq!(d.value, DerivedValue::Boolean(true)))
        .map(|d| d.code.code.as_str())
        .collect();
    (count, each)
}

#[test]
fn social_needs_none_positive() {
    let r = score(q("icm-social-needs"), &sn_negative());
    assert_eq!(positive_domains(&r), (0, vec![]));
}

#[test]
fn social_needs_one_positive() {
    let qr = sn_response(
        STEADY,
        &[NONE_OF_THESE],
        [SOMETIMES, NEVER],
        NO,
        NO,
        [0; 4],
        Some(true),
    );
    let r = score(q("icm-social-needs"), &qr);
    assert_eq!(positive_domains(&r), (1, vec!["food"]));
    assert_eq!(r[1].code.system, SOCIAL_NEED);
    assert_eq!(r[1].code.display, "Food insecurity");
}

#[test]
fn social_needs_three_positive_with_safety_threshold() {
    // Safety ordinals 3+3+3+2 = 11: more than 10 is positive.
    let qr = sn_response(
        STEADY,
        &["LA28580-1"],
        [NEVER, NEVER],
        YES,
        NO,
        [2, 2, 2, 1],
        Some(false),
    );
    let r = score(q("icm-social-needs"), &qr);
    assert_eq!(
        positive_domains(&r),
        (3, vec!["housing", "transportation", "safety"])
    );
    // 3+3+3+1 = 10 is not.
    let qr = sn_response(
        STEADY,
        &["LA28580-1"],
        [NEVER, NEVER],
        YES,
        NO,
        [2, 2, 2, 0],
        Some(false),
    );
    let r = score(q("icm-social-needs"), &qr);
    assert_eq!(positive_domains(&r), (2, vec!["housing", "transportation"]));
}

#[test]
fn other_questionnaires_score_nothing() {
    assert!(score(q("icm-functional-status"), &functional_response()).is_empty());
    assert!(score(q("icm-intake"), &intake_response(true, None)).is_empty());
}

// ---- derived Observations

#[test]
fn derived_observations_are_valid_r4() {
    let mut all = Vec::new();
    let phq = phq9_response([3, 2, 1, 0, 3, 2, 1, 0, 1]);
    all.extend(
        score(q("icm-phq9"), &phq)
            .into_iter()
            .map(|d| (phq.clone(), d)),
    );
    let mut sn = sn_response(
        "LA31995-6",
        &[NONE_OF_THESE],
        [NEVER, NEVER],
        YES,
        "LA32002-0",
        [4; 4],
        Some(true),
    );
    sn.as_object_mut().unwrap().remove("authored");
    all.extend(
        score(q("icm-social-needs"), &sn)
            .into_iter()
            .map(|d| (sn.clone(), d)),
    );
    assert_eq!(all.len(), 2 + 1 + 4);
    for (qr, d) in &all {
        let o = derived_observation(qr, "QuestionnaireResponse/r1", d, "2024-05-06T07:08:09Z");
        let report = validate(&o);
        assert!(!report.has_errors(), "{o:#}\n{:#?}", report.issues);
        assert_eq!(o["status"], "final");
        assert_eq!(o["category"][0]["coding"][0]["code"], "survey");
        assert_eq!(o["subject"], json!({"reference": "Patient/p1"}));
        assert_eq!(
            o["derivedFrom"],
            json!([{"reference": "QuestionnaireResponse/r1"}])
        );
        assert_eq!(o["code"]["coding"][0]["code"], d.code.code.as_str());
    }
    let first = derived_observation(&all[0].0, "QuestionnaireResponse/r1", &all[0].1, "x");
    assert_eq!(first["effectiveDateTime"], "2024-03-01T10:00:00Z");
    assert_eq!(first["valueInteger"], json!(13));
    assert_eq!(first["interpretation"][0]["text"], "moderate");
    let last = derived_observation(
        &all[6].0,
        "QuestionnaireResponse/r1",
        &all[6].1,
        "2024-05-06T07:08:09Z",
    );
    assert_eq!(
        last["effectiveDateTime"], "2024-05-06T07:08:09Z",
        "no authored: now"
    );
    assert_eq!(last["valueBoolean"], json!(true));
    assert_eq!(last["interpretation"][0]["coding"][0]["code"], "POS");
}

// ---- validation: valid responses

#[test]
fn valid_responses_have_no_issues() {
    let mut phq = phq9_response([1, 2, 0, 3, 1, 0, 2, 1, 0]);
    phq["item"]
        .as_array_mut()
        .unwrap()
        .push(reply("phq9-total", json!([{"valueDecimal": 10}])));
    let cases = [
        ("icm-phq9", phq),
        ("icm-social-needs", sn_negative()),
        (
            "icm-social-needs",
            sn_response(
                "LA31994-9",
                &["LA31996-4", "LA32001-2"],
                [SOMETIMES, "LA28397-0"],
                YES,
                "LA32002-0",
                [1, 2, 3, 4],
                Some(true),
            ),
        ),
        ("icm-functional-status", functional_response()),
        ("icm-intake", intake_response(false, Some("My daughter"))),
        ("icm-intake", intake_response(true, None)),
    ];
    for (id, qr) in &cases {
        let issues = validate_response(q(id), qr);
        assert!(issues.is_empty(), "{id}: {issues:#?}");
        assert!(
            !validate(qr).has_errors(),
            "{id}: {:#?}",
            validate(qr).issues
        );
    }
}

// ---- validation: each kind of problem

#[test]
fn unknown_and_misplaced_link_ids() {
    let mut qr = phq9_response([0; 9]);
    qr["item"]
        .as_array_mut()
        .unwrap()
        .push(reply("nope", json!([{"valueString": "x"}])));
    let issues = validate_response(q("icm-phq9"), &qr);
    let i = expect(&issues, "nope", IssueType::Invalid);
    assert_eq!(i.expression[0], "QuestionnaireResponse.item[9]");
    assert_eq!(issues.len(), 1);

    let mut qr = sn_negative();
    qr["item"]
        .as_array_mut()
        .unwrap()
        .push(reply("sn-food-worry", json!([loinc(NEVER)])));
    let issues = validate_response(q("icm-social-needs"), &qr);
    let i = expect(&issues, "sn-food-worry", IssueType::Structure);
    assert_eq!(i.expression[0], "QuestionnaireResponse.item[5]");
}

#[test]
fn required_item_missing() {
    let mut qr = phq9_response([0; 9]);
    qr["item"].as_array_mut().unwrap().remove(2);
    let issues = validate_response(q("icm-phq9"), &qr);
    let i = expect(&issues, "phq9-3", IssueType::Required);
    assert_eq!(
        i.expression[0],
        "QuestionnaireResponse.item.where(linkId='phq9-3')"
    );
    assert_eq!(issues.len(), 1);
    // A required group absent; a required child missing inside a present group.
    let mut qr = functional_response();
    qr["item"].as_array_mut().unwrap().remove(0);
    qr["item"][0]["item"].as_array_mut().unwrap().remove(7);
    let issues = validate_response(q("icm-functional-status"), &qr);
    expect(&issues, "adl", IssueType::Required);
    let i = expect(&issues, "iadl-finances", IssueType::Required);
    assert_eq!(
        i.expression[0],
        "QuestionnaireResponse.item[0].item.where(linkId='iadl-finances')"
    );
}

#[test]
fn required_item_without_answer() {
    let mut qr = phq9_response([0; 9]);
    qr["item"][2]["answer"] = json!([]);
    qr["item"][4]["answer"] = json!([{}]);
    let issues = validate_response(q("icm-phq9"), &qr);
    let i = expect(&issues, "phq9-3", IssueType::Required);
    assert_eq!(i.expression[0], "QuestionnaireResponse.item[2]");
    let valueless: Vec<&Issue> = issues
        .iter()
        .filter(|i| i.diagnostics.contains("'phq9-5'"))
        .collect();
    assert_eq!(
        valueless.len(),
        2,
        "no value, and so no answer: {issues:#?}"
    );
    assert_eq!(
        valueless[0].expression[0],
        "QuestionnaireResponse.item[4].answer[0]"
    );
}

#[test]
fn required_only_when_enabled() {
    // All negative: the help question is disabled, so not required (see the valid cases).
    // One positive answer enables it, and it is required.
    let qr = sn_response(
        STEADY,
        &[NONE_OF_THESE],
        [NEVER, NEVER],
        YES,
        NO,
        [0; 4],
        None,
    );
    let issues = validate_response(q("icm-social-needs"), &qr);
    expect(&issues, "sn-help-wanted", IssueType::Required);
    assert_eq!(issues.len(), 1);
}

#[test]
fn answer_to_disabled_item() {
    let qr = sn_response(
        STEADY,
        &[NONE_OF_THESE],
        [NEVER, NEVER],
        NO,
        NO,
        [0; 4],
        Some(true),
    );
    let issues = validate_response(q("icm-social-needs"), &qr);
    let i = expect(&issues, "sn-help-wanted", IssueType::BusinessRule);
    assert_eq!(i.expression[0], "QuestionnaireResponse.item[5]");
    let issues = validate_response(q("icm-intake"), &intake_response(true, Some("Neighbour")));
    let i = expect(&issues, "support-person", IssueType::BusinessRule);
    assert_eq!(i.expression[0], "QuestionnaireResponse.item[2]");
    assert_eq!(issues.len(), 1);
}

#[test]
fn answer_of_the_wrong_type() {
    let options = json!([{"valueCoding": {"system": "http://x", "code": "a"}}]);
    let q = json!({"resourceType": "Questionnaire", "status": "active", "item": [
        {"linkId": "b", "type": "boolean"}, {"linkId": "dec", "type": "decimal"},
        {"linkId": "int", "type": "integer"}, {"linkId": "d", "type": "date"},
        {"linkId": "dt", "type": "dateTime"}, {"linkId": "t", "type": "time"},
        {"linkId": "s", "type": "string"}, {"linkId": "txt", "type": "text"},
        {"linkId": "u", "type": "url"}, {"linkId": "c", "type": "choice", "answerOption": options},
        {"linkId": "oc", "type": "open-choice", "answerOption": options},
        {"linkId": "qty", "type": "quantity"}, {"linkId": "r", "type": "reference"},
        {"linkId": "att", "type": "attachment"}
    ]});
    let coding = json!({"valueCoding": {"system": "http://x", "code": "a"}});
    let cases = [
        (
            "b",
            json!({"valueBoolean": true}),
            json!({"valueString": "yes"}),
        ),
        (
            "dec",
            json!({"valueDecimal": 1.5}),
            json!({"valueInteger": 1}),
        ),
        (
            "int",
            json!({"valueInteger": 2}),
            json!({"valueDecimal": 2.0}),
        ),
        (
            "d",
            json!({"valueDate": "2024-01-02"}),
            json!({"valueDateTime": "2024-01-02T00:00:00Z"}),
        ),
        (
            "dt",
            json!({"valueDateTime": "2024-01-02T03:04:05Z"}),
            json!({"valueDate": "2024-01-02"}),
        ),
        (
            "t",
            json!({"valueTime": "10:00:00"}),
            json!({"valueString": "10am"}),
        ),
        ("s", json!({"valueString": "x"}), json!({"valueInteger": 1})),
        ("txt", json!({"valueString": "long"}), coding.clone()),
        (
            "u",
            json!({"valueUri": "http://x.org"}),
            json!({"valueString": "http://x.org"}),
        ),
        ("c", coding.clone(), json!({"valueString": "a"})),
        (
            "oc",
            json!({"valueString": "free text"}),
            json!({"valueInteger": 1}),
        ),
        ("oc", coding.clone(), json!({"valueBoolean": true})),
        (
            "qty",
            json!({"valueQuantity": {"value": 1, "unit": "kg"}}),
            json!({"valueDecimal": 1}),
        ),
        (
            "r",
            json!({"valueReference": {"reference": "Patient/p1"}}),
            json!({"valueString": "Patient/p1"}),
        ),
        (
            "att",
            json!({"valueAttachment": {"url": "http://x.org/a.pdf"}}),
            json!({"valueUri": "http://x.org/a.pdf"}),
        ),
    ];
    for (link, good, bad) in cases {
        let ok = response("t", json!([reply(link, json!([good]))]));
        assert!(
            validate_response(&q, &ok).is_empty(),
            "{link}: {:#?}",
            validate_response(&q, &ok)
        );
        let wrong = response("t", json!([reply(link, json!([bad]))]));
        let issues = validate_response(&q, &wrong);
        let key = bad.as_object().unwrap().keys().next().unwrap().clone();
        let i = expect(&issues, link, IssueType::Value);
        assert_eq!(
            i.expression[0],
            format!("QuestionnaireResponse.item[0].answer[0].{key}")
        );
        assert_eq!(issues.len(), 1, "{link}: {issues:#?}");
    }
}

#[test]
fn several_answers_to_a_non_repeating_item() {
    let mut qr = phq9_response([0; 9]);
    qr["item"][0]["answer"] = json!([loinc(PHQ_ANSWERS[0]), loinc(PHQ_ANSWERS[1])]);
    let issues = validate_response(q("icm-phq9"), &qr);
    let i = expect(&issues, "phq9-1", IssueType::Structure);
    assert_eq!(i.expression[0], "QuestionnaireResponse.item[0].answer[1]");
    assert_eq!(issues.len(), 1);
    // The same non-repeating item twice.
    let mut qr = phq9_response([0; 9]);
    qr["item"]
        .as_array_mut()
        .unwrap()
        .push(reply("phq9-2", json!([loinc(PHQ_ANSWERS[0])])));
    let issues = validate_response(q("icm-phq9"), &qr);
    let i = expect(&issues, "phq9-2", IssueType::Structure);
    assert_eq!(i.expression[0], "QuestionnaireResponse.item[9]");
    // A repeating item may have several (see the valid cases: housing problems, goals).
}

#[test]
fn answer_not_among_the_options() {
    let mut qr = phq9_response([0; 9]);
    qr["item"][1]["answer"] = json!([loinc("LA33-6")]);
    qr["item"][2]["answer"] =
        json!([{"valueCoding": {"system": "http://snomed.info/sct", "code": "LA6568-5"}}]);
    let issues = validate_response(q("icm-phq9"), &qr);
    let i = expect(&issues, "phq9-2", IssueType::CodeInvalid);
    assert_eq!(
        i.expression[0],
        "QuestionnaireResponse.item[1].answer[0].valueCoding"
    );
    assert!(
        i.diagnostics.contains("http://loinc.org|LA33-6"),
        "{}",
        i.diagnostics
    );
    expect(&issues, "phq9-3", IssueType::CodeInvalid);
    assert_eq!(issues.len(), 2);
    // A choice whose options are strings.
    let mut qr = intake_response(true, None);
    qr["item"][0]["answer"] = json!([{"valueString": "Castle"}]);
    let issues = validate_response(q("icm-intake"), &qr);
    expect(&issues, "living-situation", IssueType::CodeInvalid);
}

#[test]
fn answers_to_display_and_group_items() {
    let mut qr = phq9_response([0; 9]);
    qr["item"]
        .as_array_mut()
        .unwrap()
        .push(reply("phq9-intro", json!([{"valueString": "ok"}])));
    let issues = validate_response(q("icm-phq9"), &qr);
    let i = expect(&issues, "phq9-intro", IssueType::Structure);
    assert_eq!(i.expression[0], "QuestionnaireResponse.item[9].answer");
    assert_eq!(issues.len(), 1);
    let mut qr = sn_negative();
    qr["item"][1]["answer"] = json!([{"valueBoolean": true}]);
    let issues = validate_response(q("icm-social-needs"), &qr);
    let i = expect(&issues, "food", IssueType::Structure);
    assert_eq!(i.expression[0], "QuestionnaireResponse.item[1].answer");
}

#[test]
fn nested_items_are_checked() {
    // Group children.
    let mut qr = sn_negative();
    qr["item"][1]["item"][0]["answer"] = json!([loinc(YES)]);
    qr["item"][1]["item"]
        .as_array_mut()
        .unwrap()
        .push(reply("sn-extra", json!([])));
    let issues = validate_response(q("icm-social-needs"), &qr);
    let i = expect(&issues, "sn-food-worry", IssueType::CodeInvalid);
    assert_eq!(
        i.expression[0],
        "QuestionnaireResponse.item[1].item[0].answer[0].valueCoding"
    );
    let i = expect(&issues, "sn-extra", IssueType::Invalid);
    assert_eq!(i.expression[0], "QuestionnaireResponse.item[1].item[2]");
    // Items nested under an answer.
    let q = json!({"resourceType": "Questionnaire", "status": "active", "item": [
        {"linkId": "smoker", "type": "boolean", "item": [
            {"linkId": "packs", "type": "integer", "required": true}
        ]}
    ]});
    let qr = response(
        "t",
        json!([{"linkId": "smoker", "answer": [
            {"valueBoolean": true, "item": [reply("packs", json!([{"valueString": "two"}]))]}
        ]}]),
    );
    let issues = validate_response(&q, &qr);
    let i = expect(&issues, "packs", IssueType::Value);
    assert_eq!(
        i.expression[0],
        "QuestionnaireResponse.item[0].answer[0].item[0].answer[0].valueString"
    );
    let qr = response(
        "t",
        json!([{"linkId": "smoker", "answer": [{"valueBoolean": true}]}]),
    );
    let issues = validate_response(&q, &qr);
    let i = expect(&issues, "packs", IssueType::Required);
    assert_eq!(
        i.expression[0],
        "QuestionnaireResponse.item[0].answer[0].item.where(linkId='packs')"
    );
}

// ---- enableWhen

/// Whether `dep` is enabled when the source item (of `ty`) is answered with `given`.
fn enabled_with(ty: &str, given: Option<Value>, condition: Value) -> bool {
    let mut cond = condition;
    cond["question"] = json!("src");
    let q = json!({"resourceType": "Questionnaire", "status": "active", "item": [
        {"linkId": "src", "type": ty},
        {"linkId": "dep", "type": "string", "enableWhen": [cond]}
    ]});
    let items = match given {
        Some(v) => json!([reply("src", json!([v]))]),
        None => json!([]),
    };
    let qr = response("t", items);
    Ctx::new(&q, &qr).enabled("dep")
}

#[test]
fn enable_when_operators_and_types() {
    let c = |s: &str, c: &str| json!({"system": s, "code": c});
    let cases: Vec<(&str, Value, &str, Value, bool)> = vec![
        (
            "boolean",
            json!({"valueBoolean": true}),
            "=",
            json!({"answerBoolean": true}),
            true,
        ),
        (
            "boolean",
            json!({"valueBoolean": false}),
            "=",
            json!({"answerBoolean": true}),
            false,
        ),
        (
            "boolean",
            json!({"valueBoolean": false}),
            "!=",
            json!({"answerBoolean": true}),
            true,
        ),
        (
            "decimal",
            json!({"valueDecimal": 2.5}),
            ">",
            json!({"answerDecimal": 2}),
            true,
        ),
        (
            "decimal",
            json!({"valueDecimal": 2.5}),
            "<",
            json!({"answerDecimal": 2}),
            false,
        ),
        (
            "decimal",
            json!({"valueDecimal": 2.5}),
            ">=",
            json!({"answerDecimal": 2.5}),
            true,
        ),
        (
            "decimal",
            json!({"valueDecimal": 2.5}),
            "<=",
            json!({"answerDecimal": 2.4}),
            false,
        ),
        (
            "integer",
            json!({"valueInteger": 3}),
            "<",
            json!({"answerInteger": 5}),
            true,
        ),
        (
            "integer",
            json!({"valueInteger": 3}),
            ">=",
            json!({"answerInteger": 4}),
            false,
        ),
        (
            "integer",
            json!({"valueInteger": 3}),
            "<=",
            json!({"answerInteger": 3}),
            true,
        ),
        (
            "integer",
            json!({"valueInteger": 3}),
            "!=",
            json!({"answerInteger": 3}),
            false,
        ),
        (
            "date",
            json!({"valueDate": "2024-03-01"}),
            ">",
            json!({"answerDate": "2024-02-29"}),
            true,
        ),
        (
            "date",
            json!({"valueDate": "2024-03-01"}),
            "<=",
            json!({"answerDate": "2024-02-29"}),
            false,
        ),
        (
            "date",
            json!({"valueDate": "2024-03-01"}),
            "=",
            json!({"answerDate": "2024-03-01"}),
            true,
        ),
        (
            "dateTime",
            json!({"valueDateTime": "2024-03-01T10:00:00Z"}),
            "<",
            json!({"answerDateTime": "2024-03-01T12:00:00+01:00"}),
            true,
        ),
        (
            "dateTime",
            json!({"valueDateTime": "2024-03-01T10:00:00Z"}),
            "=",
            json!({"answerDateTime": "2024-03-01T11:00:00+01:00"}),
            true,
        ),
        (
            "string",
            json!({"valueString": "abc"}),
            "=",
            json!({"answerString": "abc"}),
            true,
        ),
        (
            "string",
            json!({"valueString": "abc"}),
            "!=",
            json!({"answerString": "abc"}),
            false,
        ),
        (
            "string",
            json!({"valueString": "abc"}),
            "<",
            json!({"answerString": "abd"}),
            true,
        ),
        (
            "choice",
            json!({"valueCoding": c("http://x", "a")}),
            "=",
            json!({"answerCoding": c("http://x", "a")}),
            true,
        ),
        (
            "choice",
            json!({"valueCoding": c("http://y", "a")}),
            "=",
            json!({"answerCoding": c("http://x", "a")}),
            false,
        ),
        (
            "choice",
            json!({"valueCoding": c("http://x", "a")}),
            "!=",
            json!({"answerCoding": c("http://x", "b")}),
            true,
        ),
        (
            "choice",
            json!({"valueCoding": c("http://x", "a")}),
            "=",
            json!({"answerCoding": {"code": "a"}}),
            true,
        ),
        (
            "string",
            json!({"valueString": "abc"}),
            "exists",
            json!({"answerBoolean": true}),
            true,
        ),
        (
            "string",
            json!({"valueString": "abc"}),
            "exists",
            json!({"answerBoolean": false}),
            false,
        ),
    ];
    for (ty, given, op, answer, want) in cases {
        let mut cond = answer.clone();
        cond["operator"] = json!(op);
        assert_eq!(
            enabled_with(ty, Some(given.clone()), cond),
            want,
            "{ty} {given} {op} {answer}"
        );
    }
    // Unanswered: exists false holds; every comparison fails.
    assert!(enabled_with(
        "string",
        None,
        json!({"operator": "exists", "answerBoolean": false})
    ));
    assert!(!enabled_with(
        "string",
        None,
        json!({"operator": "exists", "answerBoolean": true})
    ));
    assert!(!enabled_with(
        "string",
        None,
        json!({"operator": "!=", "answerString": "x"})
    ));
}

#[test]
fn enable_behavior_ancestors_and_chains() {
    let q = json!({"resourceType": "Questionnaire", "status": "active", "item": [
        {"linkId": "b", "type": "boolean"},
        {"linkId": "n", "type": "integer"},
        {"linkId": "all", "type": "string", "enableBehavior": "all", "enableWhen": [
            {"question": "b", "operator": "=", "answerBoolean": true},
            {"question": "n", "operator": ">", "answerInteger": 5}]},
        {"linkId": "any", "type": "string", "enableBehavior": "any", "enableWhen": [
            {"question": "b", "operator": "=", "answerBoolean": true},
            {"question": "n", "operator": ">", "answerInteger": 5}]},
        {"linkId": "g", "type": "group", "enableWhen": [
            {"question": "n", "operator": "<", "answerInteger": 0}], "item": [
            {"linkId": "child", "type": "string"}]},
        {"linkId": "chain", "type": "string", "enableWhen": [
            {"question": "all", "operator": "exists", "answerBoolean": true}]}
    ]});
    let qr = response(
        "t",
        json!([
            reply("b", json!([{"valueBoolean": true}])),
            reply("n", json!([{"valueInteger": 3}])),
            reply("all", json!([{"valueString": "given while disabled"}])),
            {"linkId": "g", "item": [reply("child", json!([{"valueString": "x"}]))]},
        ]),
    );
    let ctx = Ctx::new(&q, &qr);
    assert!(!ctx.enabled("all"));
    assert!(ctx.enabled("any"));
    assert!(
        !ctx.enabled("child"),
        "a disabled group disables its children"
    );
    assert!(
        !ctx.enabled("chain"),
        "a disabled question counts as unanswered"
    );
    let issues = validate_response(&q, &qr);
    expect(&issues, "all", IssueType::BusinessRule);
    let i = expect(&issues, "child", IssueType::BusinessRule);
    assert_eq!(i.expression[0], "QuestionnaireResponse.item[3].item[0]");
    assert_eq!(issues.len(), 2, "{issues:#?}");
}

#[test]
fn enable_when_cycle_terminates() {
    let q = json!({"resourceType": "Questionnaire", "status": "active", "item": [
        {"linkId": "a", "type": "string", "enableWhen": [{"question": "b", "operator": "exists", "answerBoolean": false}]},
        {"linkId": "b", "type": "string", "enableWhen": [{"question": "a", "operator": "exists", "answerBoolean": false}]}
    ]});
    let qr = response("t", json!([]));
    let ctx = Ctx::new(&q, &qr);
    let _ = (ctx.enabled("a"), ctx.enabled("b"));
}

// ---- patient experience

fn satisfaction_response(answers: &[&str]) -> Value {
    let items = answers
        .iter()
        .enumerate()
        .map(|(i, a)| {
            reply(
                &format!("satisfaction-{}", i + 1),
                json!([{"valueCoding": {"system": EXPERIENCE, "code": a}}]),
            )
        })
        .collect();
    response("icm-satisfaction", Value::Array(items))
}

#[test]
fn satisfaction_total_is_the_sum_of_the_five_scores() {
    let qr = satisfaction_response(&[
        "strongly-agree",
        "agree",
        "neutral",
        "disagree",
        "strongly-disagree",
    ]);
    assert!(validate_response(q("icm-satisfaction"), &qr).is_empty());
    let d = score(q("icm-satisfaction"), &qr);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].code.code, SATISFACTION_TOTAL);
    assert_eq!(d[0].value, DerivedValue::Score(15));
    let o = derived_observation(&qr, "QuestionnaireResponse/s1", &d[0], "x");
    assert!(!validate(&o).has_errors(), "{o:#}");
    assert_eq!(
        o["valueQuantity"],
        json!({"value": 15, "unit": "{score}", "system": "http://unitsofmeasure.org", "code": "{score}"})
    );
    // Four statements answered: no total (and the response is refused as incomplete).
    let part = satisfaction_response(&["agree", "agree", "agree", "agree"]);
    assert!(score(q("icm-satisfaction"), &part).is_empty());
    let issues = validate_response(q("icm-satisfaction"), &part);
    assert_eq!(issues.len(), 1, "{issues:?}");
    // An answer outside the scale is refused.
    let bad = satisfaction_response(&["agree", "agree", "agree", "agree", "very"]);
    assert_eq!(validate_response(q("icm-satisfaction"), &bad).len(), 1);
}
