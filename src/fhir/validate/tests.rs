//! Unit tests of the base validator: one per rule, plus every official example.
use super::*;
use serde_json::json;

fn exprs(v: Value) -> Vec<String> {
    validate(&v)
        .issues
        .iter()
        .flat_map(|i| i.expression.clone())
        .collect()
}

fn codes(v: Value) -> Vec<(String, &'static str)> {
    validate(&v)
        .issues
        .iter()
        .map(|i| (i.expression.join(","), i.code.as_str()))
        .collect()
}

#[test]
fn a_good_patient_is_valid() {
    let p = json!({
        "resourceType": "Patient", "id": "p1",
        "meta": {"profile": ["http://example.org/p"]},
        "identifier": [{"system": "urn:mrn", "value": "1"}],
        "name": [{"family": "Nguyen", "given": ["Lan", "T"]}],
        "gender": "female", "birthDate": "1952-03-04",
        "_birthDate": {"extension": [{"url": "http://example.org/t", "valueTime": "10:00:00"}]},
        "telecom": [{"system": "phone", "value": "555"}],
        "deceasedBoolean": false,
        "extension": [{"url": "http://example.org/x", "valueString": "y"}]
    });
    // Only the two extensions the server does not hold draw (warning) issues.
    let issues = validate(&p).issues;
    assert!(
        issues.iter().all(|i| i.severity == Severity::Warning),
        "{issues:?}"
    );
    assert_eq!(issues.len(), 2);
}

#[test]
fn unknown_elements_are_reported_everywhere() {
    let e = exprs(
        json!({"resourceType": "Patient", "foo": 1, "name": [{"family": "X", "bar": "y"}], "_gender": {"baz": 1}}),
    );
    assert!(e.contains(&"Patient.foo".to_string()), "{e:?}");
    assert!(e.contains(&"Patient.name[0].bar".to_string()), "{e:?}");
    assert!(e.contains(&"Patient.gender.baz".to_string()), "{e:?}");
}

#[test]
fn cardinality_and_shape() {
    let c = codes(json!({"resourceType": "Task", "status": "draft"}));
    assert!(c.contains(&("Task.intent".into(), "required")), "{c:?}");
    let c = codes(
        json!({"resourceType": "Patient", "name": {"family": "X"}, "gender": ["male"], "birthDate": "2000-01-01", "active": "true"}),
    );
    assert!(c.contains(&("Patient.name".into(), "structure")), "{c:?}");
    assert!(c.contains(&("Patient.gender".into(), "structure")), "{c:?}");
    assert!(c.contains(&("Patient.active".into(), "value")), "{c:?}");
    let c = codes(json!({"resourceType": "Patient", "name": [], "contact": ["x"]}));
    assert!(c.contains(&("Patient.name".into(), "structure")), "{c:?}");
    assert!(
        c.contains(&("Patient.contact[0]".into(), "structure")),
        "{c:?}"
    );
    let c = codes(json!({"resourceType": "Patient", "name": [{"given": "Lan"}]}));
    assert!(
        c.contains(&("Patient.name[0].given".into(), "structure")),
        "{c:?}"
    );
}

#[test]
fn every_problem_with_precise_expressions() {
    let cp = json!({
        "resourceType": "CarePlan", "status": "active", "intent": "plan",
        "subject": {"reference": "Patient/1"},
        "activity": [{}, {}, {"detail": {"status": "bogus"}}]
    });
    let c = codes(cp);
    assert!(
        c.contains(&("CarePlan.activity[2].detail.status".into(), "code-invalid")),
        "{c:?}"
    );
    let e = exprs(
        json!({"resourceType": "Patient", "name": [{"given": ["a", ""]}], "birthDate": "1990-02-30", "gender": "f"}),
    );
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e.contains(&"Patient.name[0].given[1]".to_string()));
    assert!(e.contains(&"Patient.birthDate".to_string()));
    assert!(e.contains(&"Patient.gender".to_string()));
}

#[test]
fn choice_types() {
    let base = || json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
    let mut o = base();
    o["valueQuantity"] = json!({"value": 1});
    o["valueString"] = json!("x");
    let c = codes(o);
    assert!(
        c.contains(&("Observation.value".into(), "structure")),
        "{c:?}"
    );
    let mut o = base();
    o["valueFoo"] = json!("x");
    assert_eq!(exprs(o), vec!["Observation.valueFoo"]);
    let mut o = base();
    o["valueQuantity"] = json!({"value": "1"});
    assert_eq!(exprs(o), vec!["Observation.value.ofType(Quantity).value"]);
}

#[test]
fn primitive_extension_siblings() {
    let ok = json!({"resourceType": "Patient", "name": [{"given": ["A", null], "_given": [null, {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier", "valueCode": "IN"}]}]}]});
    assert_eq!(validate(&ok).issues, vec![]);
    let bad = json!({"resourceType": "Patient", "name": [{"given": ["A", null]}], "_birthDate": "x", "_name": {}});
    let e = exprs(bad);
    assert!(e.contains(&"Patient.name[0].given[1]".to_string()), "{e:?}");
    assert!(e.contains(&"Patient.birthDate".to_string()), "{e:?}");
    assert!(e.contains(&"Patient._name".to_string()), "{e:?}");
    // Only an extension, no value: the element is present.
    let t = json!({"resourceType": "Task", "_status": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]}, "intent": "order"});
    assert_eq!(validate(&t).issues, vec![]);
}

#[test]
fn extensions_need_url_and_exactly_one_of_value_or_extension() {
    let e = codes(
        json!({"resourceType": "Patient", "extension": [{"valueString": "x"}, {"url": "http://x"}, {"url": "http://x", "valueString": "x", "extension": [{"url": "y", "valueBoolean": true}]}]}),
    );
    assert!(
        e.contains(&("Patient.extension[0].url".into(), "required")),
        "{e:?}"
    );
    assert!(
        e.contains(&("Patient.extension[1]".into(), "invariant")),
        "{e:?}"
    );
    assert!(
        e.contains(&("Patient.extension[2]".into(), "invariant")),
        "{e:?}"
    );
}

#[test]
fn required_bindings() {
    let c = codes(json!({"resourceType": "Task", "status": "started", "intent": "order"}));
    assert_eq!(c, vec![("Task.status".into(), "code-invalid")]);
    let c = codes(
        json!({"resourceType": "Patient", "gender": "F", "telecom": [{"system": "pager", "value": "1"}, {"system": "beeper", "value": "2"}]}),
    );
    assert_eq!(
        c,
        vec![
            ("Patient.gender".into(), "code-invalid"),
            ("Patient.telecom[1].system".into(), "code-invalid")
        ]
    );
    // CodeableConcept with a required binding (AllergyIntolerance.clinicalStatus).
    let c = codes(
        json!({"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/1"},
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "gone"}]}}),
    );
    assert_eq!(
        c,
        vec![(
            "AllergyIntolerance.clinicalStatus.coding[0].code".into(),
            "code-invalid"
        )]
    );
}

#[test]
fn reference_targets() {
    let cp = |r: &str| json!({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": r}});
    assert_eq!(validate(&cp("Patient/1")).issues, vec![]);
    assert_eq!(validate(&cp("Group/g")).issues, vec![]);
    assert_eq!(
        validate(&cp("http://other.org/fhir/Patient/1")).issues,
        vec![]
    );
    assert_eq!(
        validate(&cp("urn:uuid:c757873d-ec9a-4326-a141-556f43239520")).issues,
        vec![]
    );
    assert_eq!(
        exprs(cp("Practitioner/1")),
        vec!["CarePlan.subject.reference"]
    );
    assert_eq!(exprs(cp("Patient/1/_history/2")), Vec::<String>::new());
    assert_eq!(exprs(cp("Patient/a_b")), vec!["CarePlan.subject.reference"]);
    assert_eq!(exprs(cp("Nope/1")), vec!["CarePlan.subject.reference"]);
    let r = validate(&cp("Patient/1"));
    assert_eq!(
        r.references,
        vec![LocalRef {
            ty: "Patient".into(),
            id: "1".into(),
            expression: "CarePlan.subject.reference".into()
        }]
    );
    let mut typed = cp("Patient/1");
    typed["subject"]["type"] = json!("Group");
    assert_eq!(exprs(typed), vec!["CarePlan.subject.type"]);
}

#[test]
fn contained_resources() {
    let cp = json!({"resourceType": "CarePlan", "status": "active", "intent": "plan",
        "contained": [{"resourceType": "Practitioner", "id": "pr"}, {"resourceType": "Patient", "id": "pt", "gender": "x"}],
        "subject": {"reference": "#pr"}, "author": {"reference": "#missing"}});
    let c = codes(cp);
    assert!(
        c.contains(&("CarePlan.subject.reference".into(), "invalid")),
        "{c:?}"
    );
    assert!(
        // ref-1, reported on the Reference element like every invariant.
        c.contains(&("CarePlan.author".into(), "invariant")),
        "{c:?}"
    );
    assert!(
        c.contains(&("CarePlan.contained[1].gender".into(), "code-invalid")),
        "{c:?}"
    );
    let nested = json!({"resourceType": "Patient", "contained": [{"resourceType": "Patient", "id": "a", "contained": [{"resourceType": "Patient", "id": "b"}]}, {"resourceType": "Nope"}]});
    let c = codes(nested);
    assert!(c.contains(&("Patient".into(), "invariant")), "dom-2: {c:?}");
    assert!(
        c.contains(&("Patient.contained[1]".into(), "invalid")),
        "{c:?}"
    );
}

#[test]
fn periods_and_invariants() {
    let c = codes(
        json!({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/1"},
        "period": {"start": "2024-05-01", "end": "2024-04-01"}}),
    );
    assert_eq!(c, vec![("CarePlan.period".into(), "invariant")]);
    let c = codes(json!({"resourceType": "Patient", "contact": [{"gender": "male"}]}));
    assert_eq!(c, vec![("Patient.contact[0]".into(), "invariant")], "pat-1");
    let c = codes(
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "valueQuantity": {"value": 1, "code": "mg"}}),
    );
    assert_eq!(
        c,
        vec![("Observation.value.ofType(Quantity)".into(), "invariant")],
        "qty-3"
    );
}

#[test]
fn recursive_elements_via_content_reference() {
    let q = json!({"resourceType": "Questionnaire", "status": "active", "item": [{"linkId": "1", "type": "group",
        "item": [{"linkId": "1.1", "type": "string"}, {"type": "nope"}]}]});
    let c = codes(q);
    assert!(
        c.contains(&("Questionnaire.item[0].item[1].linkId".into(), "required")),
        "{c:?}"
    );
    assert!(
        c.contains(&("Questionnaire.item[0].item[1].type".into(), "code-invalid")),
        "{c:?}"
    );
}

#[test]
fn bundles_validate_their_entries() {
    let b = json!({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient", "gender": "x"}}]});
    assert_eq!(exprs(b), vec!["Bundle.entry[0].resource.gender"]);
}

/// Official examples that the spec itself gets wrong (file, reason).
/// Both are rejected by our validator and by the R4 definitions themselves.
pub const KNOWN_BAD_EXAMPLES: &[(&str, &str)] = &[
    (
        "Observation/observation-example-clinical-gender.json",
        "performer refers to an Encounter; R4 Observation.performer allows Practitioner, PractitionerRole, Organization, CareTeam, Patient, RelatedPerson",
    ),
    (
        "MedicationRequest/medicationrequest0301.json",
        "dispenseRequest.performer refers to a Practitioner; R4 allows only Organization",
    ),
    (
        "Questionnaire/questionnaire-zika-virus-exposure-assessment.json",
        "text.div holds only an empty <pre>: txt-2 requires some non-whitespace content",
    ),
];

#[test]
fn every_official_example_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/examples");
    let mut n = 0;
    let mut failures = Vec::new();
    for ty in std::fs::read_dir(&dir).unwrap() {
        let ty = ty.unwrap().path();
        for f in std::fs::read_dir(&ty).unwrap() {
            let f = f.unwrap().path();
            let name = format!(
                "{}/{}",
                ty.file_name().unwrap().to_string_lossy(),
                f.file_name().unwrap().to_string_lossy()
            );
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            n += 1;
            let r = validate(&v);
            if r.has_errors() && !KNOWN_BAD_EXAMPLES.iter().any(|(k, _)| *k == name) {
                failures.push(format!(
                    "{name}: {:?}",
                    r.issues
                        .iter()
                        .map(|i| format!("{} {}", i.expression.join(","), i.diagnostics))
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    assert!(n > 290, "{n} examples");
    assert!(
        failures.is_empty(),
        "{} of {n} rejected:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn empty_elements_are_refused() {
    let c = codes(json!({"resourceType": "Patient", "name": [{}], "maritalStatus": {"id": "a"}}));
    assert_eq!(
        c,
        vec![
            ("Patient.name[0]".into(), "structure"),
            ("Patient.maritalStatus".into(), "structure")
        ]
    );
}

#[test]
fn known_bad_examples_are_really_rejected() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/examples");
    for (name, why) in KNOWN_BAD_EXAMPLES {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap();
        assert!(
            validate(&v).has_errors(),
            "{name} ({why}) is no longer rejected: update the list"
        );
    }
}

#[test]
fn attachments_agree_with_their_data() {
    // "hello" = aGVsbG8=, 5 bytes, SHA-1 base64 qvTGHdzF6KLavt4PO0gs2a6pQ00=
    let doc = |att: Value| {
        json!({"resourceType": "DocumentReference", "status": "current",
            "content": [{"attachment": att}]})
    };
    let issues = |att: Value| {
        validate(&doc(att))
            .issues
            .iter()
            .map(|i| (i.expression.join(","), i.diagnostics.clone()))
            .collect::<Vec<_>>()
    };
    assert!(issues(
        json!({"contentType": "text/plain; charset=utf-8", "data": "aGVsbG8=",
        "size": 5, "hash": "qvTGHdzF6KLavt4PO0gs2a6pQ00="})
    )
    .is_empty());
    let wrong = issues(
        json!({"contentType": "text/plain", "data": "aGVsbG8=", "size": 6,
        "hash": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="}),
    );
    assert_eq!(wrong.len(), 2, "{wrong:?}");
    assert_eq!(wrong[0].0, "DocumentReference.content[0].attachment.size");
    assert_eq!(wrong[1].0, "DocumentReference.content[0].attachment.hash");
    let bad_type = issues(json!({"contentType": "not a mime type", "url": "http://x"}));
    assert_eq!(bad_type.len(), 1, "{bad_type:?}");
    assert_eq!(
        bad_type[0].0,
        "DocumentReference.content[0].attachment.contentType"
    );
    let not_b64 = issues(json!({"contentType": "text/plain", "data": "***"}));
    assert_eq!(not_b64.len(), 1, "{not_b64:?}");
    assert_eq!(not_b64[0].0, "DocumentReference.content[0].attachment.data");
}
