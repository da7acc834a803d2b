//! Validation on the write path (422), $validate, ICM profiles and referential integrity, on both backends.
mod common;
use common::*;

/// Like `backend_tests!`, with a configuration tweak.
macro_rules! config_tests {
    ($name:ident, $tweak:expr, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn sqlite() {
                let s = start_with(Backend::Sqlite, $tweak).unwrap();
                let f: &dyn Fn(&TestServer) = &$body;
                f(&s);
            }
            #[test]
            fn postgres() {
                if let Some(s) = start_with(Backend::Postgres, $tweak) {
                    let f: &dyn Fn(&TestServer) = &$body;
                    f(&s);
                }
            }
        }
    };
}

const MR: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
const PROGRAM: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-program";
const ROLE: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-care-team-role";

fn patient() -> Value {
    json!({"resourceType": "Patient",
        "identifier": [{"type": {"coding": [{"system": MR, "code": "MR"}]}, "system": "urn:mrn", "value": "1001"}],
        "name": [{"family": "Nguyen", "given": ["Lan"]}], "gender": "female", "birthDate": "1952-03-04"})
}

/// (expression, code) of every issue of an OperationOutcome.
fn issues(oo: &Value) -> Vec<(String, String)> {
    oo["issue"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["severity"] == "error")
        .map(|i| {
            (
                i["expression"][0].as_str().unwrap_or("").to_string(),
                i["code"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// How many versions of `ty` the server holds.
fn stored(s: &TestServer, ty: &str) -> usize {
    s.get(&format!("{ty}/_history")).expect(200).json()["entry"]
        .as_array()
        .map_or(0, Vec::len)
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

backend_tests!(invalid_resources_get_422_with_every_problem, |s| {
    let pid = id_of(&s.create(patient()));
    let bad = json!({"resourceType": "CarePlan", "status": "active", "intent": "plan",
        "subject": {"reference": format!("Patient/{pid}")},
        "period": {"start": "2024-05-01", "end": "2024-04-01"},
        "created": "yesterday", "foo": 1,
        "activity": [{"detail": {"status": "scheduled"}}, {}, {"detail": {"status": "bogus"}}]});
    let r = s.post("CarePlan", &bad);
    r.expect(422);
    let got = issues(&r.json());
    for want in [
        ("CarePlan.period", "invariant"),
        ("CarePlan.created", "value"),
        ("CarePlan.foo", "structure"),
        ("CarePlan.activity[1]", "structure"),
        ("CarePlan.activity[2].detail.status", "code-invalid"),
    ] {
        assert!(
            got.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} in {got:?}"
        );
    }
    assert_eq!(got.len(), 5, "{got:?}");
    // Nothing was stored.
    assert_eq!(stored(s, "CarePlan"), 0);
    // Updates are validated too.
    let mut p = patient();
    p["id"] = json!(pid);
    p["gender"] = json!("F");
    s.put(&format!("Patient/{pid}"), &p).expect(422);
    let t = json!({"resourceType": "Task", "status": "started", "intent": "order"});
    let oo = s.post("Task", &t).expect_outcome(422, "code-invalid");
    assert_eq!(oo["issue"][0]["expression"][0], "Task.status");
});

backend_tests!(references_must_resolve_to_allowed_types, |s| {
    let cp = |r: &str| json!({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": r}});
    let oo = s
        .post("CarePlan", &cp("Patient/nobody"))
        .expect_outcome(422, "not-found");
    assert_eq!(
        oo["issue"][0]["expression"][0],
        "CarePlan.subject.reference"
    );
    let prac = id_of(&s.create(json!({"resourceType": "Practitioner", "name": [{"family": "P"}]})));
    let oo = s
        .post("CarePlan", &cp(&format!("Practitioner/{prac}")))
        .expect_outcome(422, "invalid");
    assert_eq!(
        oo["issue"][0]["expression"][0],
        "CarePlan.subject.reference"
    );
    let pid = id_of(&s.create(patient()));
    s.post("CarePlan", &cp(&format!("Patient/{pid}")))
        .expect(201);
    // Absolute and contained references are not looked up; bundle-style urn:uuid neither.
    s.post("CarePlan", &cp("http://elsewhere.org/fhir/Patient/9"))
        .expect(201);
    let other = id_of(&s.create(patient()));
    s.delete(&format!("Patient/{other}")).expect(204);
    let oo = s
        .post("CarePlan", &cp(&format!("Patient/{other}")))
        .expect_outcome(422, "not-found");
    assert!(oo["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("deleted"));
    // A resource may refer to itself on create-by-update.
    let mut p = patient();
    p["id"] = json!("self1");
    p["link"] = json!([{"other": {"reference": "Patient/self1"}, "type": "seealso"}]);
    s.put("Patient/self1", &p).expect(201);
});

config_tests!(
    referential_integrity_can_be_switched_off,
    |c| c.referential_integrity = "off".into(),
    |s| {
        let cp = json!({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/later"}});
        s.post("CarePlan", &cp).expect(201);
        // The type of the target is still checked: that needs no database.
        let cp = json!({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Device/later"}});
        s.post("CarePlan", &cp).expect(422);
    }
);

backend_tests!(validate_operation_stores_nothing, |s| {
    let ok = s.post("Patient/$validate", &patient());
    ok.expect(200);
    let oo = ok.json();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert_eq!(oo["issue"][0]["severity"], "information");
    let bad = s.post(
        "Patient/$validate",
        &json!({"resourceType": "Patient", "gender": "x", "birthDate": "1990-13-01"}),
    );
    bad.expect(200);
    let got = issues(&bad.json());
    assert_eq!(
        got,
        vec![
            ("Patient.gender".to_string(), "code-invalid".to_string()),
            ("Patient.birthDate".to_string(), "value".to_string())
        ]
    );
    assert_eq!(stored(s, "Patient"), 0, "nothing stored");
    // Parameters with resource, mode and profile.
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "Patient", "name": [{"family": "X"}]}},
        {"name": "mode", "valueCode": "create"},
        {"name": "profile", "valueUri": "http://icm-fhir.org/fhir/StructureDefinition/icm-patient"}]});
    let got = issues(&s.post("Patient/$validate", &params).json());
    assert_eq!(
        got,
        vec![
            ("Patient".to_string(), "invariant".to_string()),
            ("Patient.identifier".to_string(), "required".to_string()),
            ("Patient.gender".to_string(), "required".to_string()),
            ("Patient.birthDate".to_string(), "required".to_string()),
        ]
    );
    // Instance level: the id must match; references are checked.
    let mut p = patient();
    p["id"] = json!("a1");
    let got = issues(&s.post("Patient/b2/$validate", &p).json());
    assert_eq!(got, vec![("id".to_string(), "invalid".to_string())]);
    let cp = json!({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/zz"}});
    let got = issues(&s.post("CarePlan/$validate", &cp).json());
    assert_eq!(
        got,
        vec![(
            "CarePlan.subject.reference".to_string(),
            "not-found".to_string()
        )]
    );
    s.post(
        "Patient/$validate",
        &json!({"resourceType": "Task", "status": "draft", "intent": "order"}),
    )
    .expect(200);
    s.post("Foo/$validate", &patient()).expect(404);
    s.post("Patient/$validate", &json!({"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "nonsense"}]})).expect(400);
    assert_eq!(stored(s, "Patient"), 0, "nothing stored");
});

backend_tests!(profiles_are_served_and_listed, |s| {
    for id in ["icm-patient", "icm-careteam", "icm-careplan", "icm-task"] {
        let sd = s
            .get(&format!("StructureDefinition/{id}"))
            .expect(200)
            .json();
        assert_eq!(sd["resourceType"], "StructureDefinition");
        assert_eq!(
            sd["url"],
            format!("http://icm-fhir.org/fhir/StructureDefinition/{id}")
        );
        assert_eq!(sd["derivation"], "constraint");
    }
    s.get("ValueSet/icm-program").expect(200);
    s.get("CodeSystem/icm-program").expect(200);
    s.get("StructureDefinition/nope").expect(404);
    let cs = s.get("metadata").json();
    let res = cs["rest"][0]["resource"].as_array().unwrap();
    let cp = res.iter().find(|r| r["type"] == "CarePlan").unwrap();
    assert_eq!(
        cp["supportedProfile"][0],
        "http://icm-fhir.org/fhir/StructureDefinition/icm-careplan"
    );
    assert_eq!(cp["operation"][0]["name"], "validate");
    assert!(res
        .iter()
        .find(|r| r["type"] == "Observation")
        .unwrap()
        .get("supportedProfile")
        .is_none());
});

fn careplan_for(s: &TestServer, pid: &str) -> Value {
    let ct = s.create(json!({"resourceType": "CareTeam", "status": "active", "subject": {"reference": format!("Patient/{pid}")},
        "participant": [{"role": [{"coding": [{"system": ROLE, "code": "care-manager"}]}], "member": {"reference": format!("Patient/{pid}")}}]}));
    let goal = s.create(json!({"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "A1C < 7"}, "subject": {"reference": format!("Patient/{pid}")}}));
    let cond = s.create(json!({"resourceType": "Condition", "subject": {"reference": format!("Patient/{pid}")}, "code": {"text": "Diabetes"}}));
    json!({"resourceType": "CarePlan", "meta": {"profile": ["http://icm-fhir.org/fhir/StructureDefinition/icm-careplan"]},
        "status": "active", "intent": "plan", "subject": {"reference": format!("Patient/{pid}")},
        "category": [{"coding": [{"system": PROGRAM, "code": "chronic-disease"}]}],
        "period": {"start": "2024-01-01"}, "careTeam": [{"reference": format!("CareTeam/{}", id_of(&ct))}],
        "goal": [{"reference": format!("Goal/{}", id_of(&goal))}], "addresses": [{"reference": format!("Condition/{}", id_of(&cond))}]})
}

backend_tests!(claimed_profiles_are_enforced, |s| {
    let pid = id_of(&s.create(patient()));
    let cp = careplan_for(s, &pid);
    s.post("CarePlan", &cp).expect(201);
    let mut bad = cp.clone();
    bad.as_object_mut().unwrap().remove("goal");
    bad["category"] = json!([{"text": "dental"}]);
    let got = issues(&s.post("CarePlan", &bad).expect(422).json());
    assert_eq!(
        got,
        vec![
            ("CarePlan".to_string(), "invariant".to_string()),
            (
                "CarePlan.category[0]".to_string(),
                "code-invalid".to_string()
            )
        ]
    );
    // Without the claim (and without ICM_ENFORCE_PROFILES) only the base rules apply.
    bad.as_object_mut().unwrap().remove("meta");
    s.post("CarePlan", &bad).expect(201);
    s.post(
        "Patient",
        &json!({"resourceType": "Patient", "name": [{"family": "X"}]}),
    )
    .expect(201);
});

config_tests!(
    enforced_profiles_apply_without_a_claim,
    |c| c.enforce_profiles = "Patient,Task".into(),
    |s| {
        let got = issues(
            &s.post(
                "Patient",
                &json!({"resourceType": "Patient", "name": [{"family": "X"}]}),
            )
            .expect(422)
            .json(),
        );
        assert_eq!(got.len(), 4, "{got:?}");
        let pid = id_of(&s.create(patient()));
        let task = json!({"resourceType": "Task", "status": "requested", "intent": "order", "for": {"reference": format!("Patient/{pid}")}});
        let got = issues(&s.post("Task", &task).expect(422).json());
        assert_eq!(
            got,
            vec![
                ("Task".to_string(), "invariant".to_string()),
                ("Task".to_string(), "invariant".to_string()),
                ("Task.priority".to_string(), "required".to_string()),
            ]
        );
        // CarePlan is not in the list.
        let cp = json!({"resourceType": "CarePlan", "status": "draft", "intent": "plan", "subject": {"reference": format!("Patient/{pid}")}});
        s.post("CarePlan", &cp).expect(201);
    }
);

backend_tests!(referenced_resources_cannot_be_deleted, |s| {
    let pid = id_of(&s.create(patient()));
    let cp = json!({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": format!("Patient/{pid}")}});
    let cp_id = id_of(&s.create(cp.clone()));
    let task = json!({"resourceType": "Task", "status": "requested", "intent": "order",
        "for": {"reference": format!("Patient/{pid}")}, "basedOn": [{"reference": format!("CarePlan/{cp_id}")}]});
    let task_id = id_of(&s.create(task));
    let oo = s
        .delete(&format!("Patient/{pid}"))
        .expect_outcome(409, "conflict");
    let msg = oo["issue"][0]["diagnostics"].as_str().unwrap();
    // $validate in mode delete predicts the same answer, without deleting.
    let mode_delete = json!({"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "delete"}]});
    let v = s
        .post(&format!("Patient/{pid}/$validate"), &mode_delete)
        .expect(200)
        .json();
    assert_eq!(v["issue"][0]["code"], "conflict", "{v}");
    let v = s
        .post(&format!("Task/{task_id}/$validate"), &mode_delete)
        .expect(200)
        .json();
    assert_eq!(v["issue"][0]["severity"], "information", "{v}");
    s.post("Patient/$validate", &mode_delete).expect(400);
    assert!(
        msg.contains(&format!("CarePlan/{cp_id}")) && msg.contains(&format!("Task/{task_id}")),
        "{msg}"
    );
    // Cascading is off by default.
    s.delete(&format!("Patient/{pid}?_cascade=delete"))
        .expect(400);
    s.get(&format!("Patient/{pid}")).expect(200);
    // Once the referrers are gone, the delete goes through.
    s.delete(&format!("Task/{task_id}")).expect(204);
    s.delete(&format!("CarePlan/{cp_id}")).expect(204);
    s.delete(&format!("Patient/{pid}")).expect(204);
    // Updating the referrer to point elsewhere also frees the target.
    let a = id_of(&s.create(patient()));
    let b = id_of(&s.create(patient()));
    let mut cp = s.create(json!({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": format!("Patient/{a}")}}));
    s.delete(&format!("Patient/{a}")).expect(409);
    cp["subject"] = json!({"reference": format!("Patient/{b}")});
    s.put(&format!("CarePlan/{}", id_of(&cp)), &cp).expect(200);
    s.delete(&format!("Patient/{a}")).expect(204);
});

config_tests!(
    cascading_delete_when_allowed,
    |c| c.allow_cascade_delete = "on".into(),
    |s| {
        let pid = id_of(&s.create(patient()));
        let cp_id = id_of(&s.create(json!({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": format!("Patient/{pid}")}})));
        let task_id = id_of(&s.create(
            json!({"resourceType": "Task", "status": "requested", "intent": "order",
            "basedOn": [{"reference": format!("CarePlan/{cp_id}")}]}),
        ));
        let other = id_of(&s.create(patient()));
        let oo = s
            .delete(&format!("Patient/{pid}"))
            .expect_outcome(409, "conflict");
        assert!(oo["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("_cascade=delete"));
        s.delete(&format!("Patient/{pid}?_cascade=delete"))
            .expect(204);
        s.get(&format!("Patient/{pid}")).expect(410);
        s.get(&format!("CarePlan/{cp_id}")).expect(410);
        s.get(&format!("Task/{task_id}")).expect(410);
        s.get(&format!("Patient/{other}")).expect(200);
    }
);

config_tests!(
    delete_integrity_off_for_bulk_loads,
    |c| c.referential_integrity = "off".into(),
    |s| {
        let pid = id_of(&s.create(patient()));
        s.create(json!({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": format!("Patient/{pid}")}}));
        s.delete(&format!("Patient/{pid}")).expect(204);
    }
);

// Narrative is rendered by front ends: script and active content are refused on every write
// (create, update, inside a transaction) with the element's path (txt-1), and stored narrative
// stays as it was.
backend_tests!(unsafe_narrative_is_refused_with_its_path, |s| {
    let with_div = |div: &str| {
        json!({"resourceType": "Patient", "text": {"status": "generated", "div": div},
            "name": [{"family": "Narrative"}]})
    };
    let ok = s.create(with_div(
        "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Care plan <b>reviewed</b></p></div>",
    ));
    let pid = id_of(&ok);
    for bad in [
        "<div xmlns=\"http://www.w3.org/1999/xhtml\"><script>alert(1)</script></div>",
        "<div xmlns=\"http://www.w3.org/1999/xhtml\"><img src=\"x\" onerror=\"alert(1)\"/></div>",
        "<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"javascript:alert(1)\">x</a></div>",
        "<div xmlns=\"http://www.w3.org/1999/xhtml\"><iframe src=\"https://x\"></iframe></div>",
        "<div xmlns=\"http://www.w3.org/1999/xhtml\"> </div>",
    ] {
        let oo = s
            .post("Patient", &with_div(bad))
            .expect_outcome(422, "value");
        assert_eq!(oo["issue"][0]["expression"][0], "Patient.text.div", "{bad}");
        let mut upd = with_div(bad);
        upd["id"] = json!(pid);
        s.put(&format!("Patient/{pid}"), &upd).expect(422);
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": with_div(bad), "request": {"method": "POST", "url": "Patient"}}]});
        assert!(s.post("", &tx).status >= 400, "{bad}");
    }
    assert_eq!(stored(s, "Patient"), 1);
    assert_eq!(
        s.get(&format!("Patient/{pid}")).json()["meta"]["versionId"],
        "1"
    );
});
