//! The program cycle through the API on both backends: referral → Patient/$enroll (one
//! transaction), intake of a new patient by a care manager with `user/` scopes ($enroll at the
//! base), Patient/$disenroll, and the EpisodeOfCare status rules.
mod common;
use common::auth::*;
use common::*;

const WORKFLOW: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-workflow";

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

struct World {
    system: String,
    a: String,
    p1: String,
    p1_token: String,
    p2_token: String,
}

fn world(s: &TestServer) -> World {
    let system = mint(&claims("backend", "system/*.cruds", json!({})));
    let mk = |body: Value| {
        let ty = body["resourceType"].as_str().unwrap().to_string();
        let r = s.as_token(Some(&system), "POST", &ty, Some(&body));
        r.expect(201);
        id_of(&r.json())
    };
    let a = mk(json!({"resourceType": "Patient", "name": [{"family": "Alpha"}]}));
    let p1 = mk(json!({"resourceType": "Practitioner", "name": [{"family": "Manager"}]}));
    let p2 = mk(json!({"resourceType": "Practitioner", "name": [{"family": "Other"}]}));
    let tok = |p: &str| {
        mint(&claims(
            p,
            "user/*.cruds",
            json!({"fhirUser": format!("Practitioner/{p}")}),
        ))
    };
    World {
        p1_token: tok(&p1),
        p2_token: tok(&p2),
        system,
        a,
        p1,
    }
}

fn referral(patient: &str) -> Value {
    json!({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "category": [{"coding": [{"system": WORKFLOW, "code": "icm-referral"}]}],
        "code": {"text": "Integrated care management"},
        "subject": {"reference": format!("Patient/{patient}")}})
}

fn entries_of(b: &Value, ty: &str) -> Vec<Value> {
    b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"]["resourceType"] == ty)
        .map(|e| e["resource"].clone())
        .collect()
}

fn count(s: &TestServer, token: &str, query: &str) -> u64 {
    let r = s.as_token(Some(token), "GET", &format!("{query}&_summary=count"), None);
    r.expect(200);
    r.json()["total"].as_u64().unwrap()
}

secure_tests!(enroll_and_disenroll, |s| {
    let w = world(s);
    let sys = Some(w.system.as_str());
    let r = s.as_token(sys, "POST", "ServiceRequest", Some(&referral(&w.a)));
    r.expect(201);
    let sr = id_of(&r.json());
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "referral", "valueReference": {"reference": format!("ServiceRequest/{sr}")}},
        {"name": "careManager", "valueReference": {"reference": format!("Practitioner/{}", w.p1)}},
        {"name": "program", "valueCode": "chronic-disease"}]});
    // The care manager is on no team of A yet: A is not known to them.
    let r = s.as_token(
        Some(&w.p1_token),
        "POST",
        &format!("Patient/{}/$enroll", w.a),
        Some(&params),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = s.as_token(
        sys,
        "POST",
        &format!("Patient/{}/$enroll", w.a),
        Some(&params),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let b = r.json();
    let ep = entries_of(&b, "EpisodeOfCare");
    assert_eq!(ep.len(), 1, "{b}");
    assert_eq!(ep[0]["status"], "active");
    assert_eq!(
        ep[0]["referralRequest"][0]["reference"],
        format!("ServiceRequest/{sr}")
    );
    assert_eq!(
        ep[0]["careManager"]["reference"],
        format!("Practitioner/{}", w.p1)
    );
    let team = &entries_of(&b, "CareTeam")[0];
    assert_eq!(team["status"], "active");
    assert_eq!(
        ep[0]["team"][0]["reference"],
        format!("CareTeam/{}", id_of(team))
    );
    let plan = &entries_of(&b, "CarePlan")[0];
    assert_eq!(plan["status"], "draft");
    assert_eq!(
        plan["careTeam"][0]["reference"],
        format!("CareTeam/{}", id_of(team))
    );
    assert_eq!(
        plan["supportingInfo"][0]["reference"],
        format!("EpisodeOfCare/{}", id_of(&ep[0]))
    );
    let tasks = entries_of(&b, "Task");
    assert_eq!(tasks.len(), 4, "one intake Task per assessment");
    for t in &tasks {
        assert_eq!(
            t["basedOn"][0]["reference"],
            format!("CarePlan/{}", id_of(plan))
        );
        assert_eq!(t["owner"]["reference"], format!("Practitioner/{}", w.p1));
        assert!(t["restriction"]["period"]["end"].is_string());
    }
    for e in b["entry"].as_array().unwrap() {
        assert!(e["response"]["location"].is_string(), "{e}");
    }
    let sr_now = s
        .as_token(sys, "GET", &format!("ServiceRequest/{sr}"), None)
        .json();
    assert_eq!(sr_now["status"], "completed");
    // Now on A's team, the care manager sees A and the intake Tasks on their worklist.
    s.as_token(Some(&w.p1_token), "GET", &format!("Patient/{}", w.a), None)
        .expect(200);
    let wl = s
        .as_token(
            Some(&w.p1_token),
            "GET",
            &format!("Practitioner/{}/$worklist", w.p1),
            None,
        )
        .json();
    assert_eq!(wl["total"], 4, "{wl}");
    // A second enrollment in the same program is refused, naming the episode.
    let r = s.as_token(
        sys,
        "POST",
        &format!("Patient/{}/$enroll", w.a),
        Some(&params),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains(&id_of(&ep[0])), "{}", r.body);
    // Disenrollment: bad reason, then goals met.
    let bad = json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueCode": "bored"}]});
    let r = s.as_token(
        sys,
        "POST",
        &format!("Patient/{}/$disenroll", w.a),
        Some(&bad),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let dis = json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueCode": "goals-met"}]});
    let r = s.as_token(
        Some(&w.p1_token),
        "POST",
        &format!("Patient/{}/$disenroll", w.a),
        Some(&dis),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let ep_now = s
        .as_token(
            sys,
            "GET",
            &format!("EpisodeOfCare/{}", id_of(&ep[0])),
            None,
        )
        .json();
    assert_eq!(ep_now["status"], "finished");
    assert!(ep_now["period"]["end"].is_string());
    assert_eq!(ep_now["extension"][0]["valueCoding"]["code"], "goals-met");
    let plan_now = s
        .as_token(sys, "GET", &format!("CarePlan/{}", id_of(plan)), None)
        .json();
    assert_eq!(plan_now["status"], "revoked", "a draft plan is revoked");
    for t in &tasks {
        let t = s
            .as_token(sys, "GET", &format!("Task/{}", id_of(t)), None)
            .json();
        assert_eq!(t["status"], "cancelled", "{t}");
    }
    let team_now = s
        .as_token(sys, "GET", &format!("CareTeam/{}", id_of(team)), None)
        .json();
    assert_eq!(team_now["status"], "inactive");
    // With the team inactive, A is outside the care manager's access again.
    s.as_token(Some(&w.p1_token), "GET", &format!("Patient/{}", w.a), None)
        .expect(404);
    let r = s.as_token(
        sys,
        "POST",
        &format!("Patient/{}/$disenroll", w.a),
        Some(&dis),
    );
    assert_eq!(r.status, 404, "nothing current to disenroll: {}", r.body);
    // EpisodeOfCare status rules hold for plain updates too.
    let mut e = ep_now.clone();
    e["status"] = json!("active");
    let r = s.as_token(
        sys,
        "PUT",
        &format!("EpisodeOfCare/{}", id_of(&ep[0])),
        Some(&e),
    );
    assert_eq!(r.status, 409, "{}", r.body);
});

secure_tests!(enrollment_is_one_transaction, |s| {
    let w = world(s);
    let sys = Some(w.system.as_str());
    let r = s.as_token(sys, "POST", "ServiceRequest", Some(&referral(&w.a)));
    let sr = id_of(&r.json());
    // The care manager does not exist: referential integrity fails half-way (after the
    // referral was completed): nothing of the enrollment may remain.
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "referral", "valueReference": {"reference": format!("ServiceRequest/{sr}")}},
        {"name": "careManager", "valueReference": {"reference": "Practitioner/nobody"}}]});
    let r = s.as_token(
        sys,
        "POST",
        &format!("Patient/{}/$enroll", w.a),
        Some(&params),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    for q in [
        "EpisodeOfCare?patient",
        "CareTeam?patient",
        "CarePlan?patient",
        "Task?patient",
    ] {
        assert_eq!(
            count(s, &w.system, &format!("{q}=Patient/{}", w.a)),
            0,
            "{q}"
        );
    }
    let sr_now = s
        .as_token(sys, "GET", &format!("ServiceRequest/{sr}"), None)
        .json();
    assert_eq!(sr_now["status"], "active", "the referral is untouched");
    // A referral of another patient is refused.
    let other = s.as_token(
        sys,
        "POST",
        "Patient",
        Some(&json!({"resourceType": "Patient"})),
    );
    let other = id_of(&other.json());
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "referral", "valueReference": {"reference": format!("ServiceRequest/{sr}")}},
        {"name": "careManager", "valueReference": {"reference": format!("Practitioner/{}", w.p1)}}]});
    let r = s.as_token(
        sys,
        "POST",
        &format!("Patient/{other}/$enroll"),
        Some(&params),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // Missing referral, unknown program.
    let r = s.as_token(sys, "POST", &format!("Patient/{other}/$enroll"), Some(&json!({"resourceType": "Parameters", "parameter": [
        {"name": "careManager", "valueReference": {"reference": format!("Practitioner/{}", w.p1)}}]})));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = s.as_token(
        sys,
        "POST",
        &format!("Patient/{other}/$enroll"),
        Some(&json!({"resourceType": "Parameters", "parameter": [
        {"name": "referral", "valueReference": {"reference": format!("ServiceRequest/{sr}")}},
        {"name": "program", "valueCode": "knitting"}]})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
});

secure_tests!(intake_by_a_care_manager, |s| {
    let w = world(s);
    let mrn = json!([{"system": "http://example.org/mrn", "value": "MRN-NEW"}]);
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "patient", "resource": {"resourceType": "Patient", "identifier": mrn, "name": [{"family": "Newcomer"}]}},
        {"name": "referral", "resource": {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "category": [{"coding": [{"system": WORKFLOW, "code": "icm-referral"}]}]}},
        {"name": "program", "valueCode": "behavioral-health"}]});
    // A care manager with user/ scopes does intake alone, and is the care coordinator.
    let r = s.as_token(Some(&w.p1_token), "POST", "$enroll", Some(&params));
    assert_eq!(r.status, 200, "{}", r.body);
    let b = r.json();
    let pat = &entries_of(&b, "Patient")[0];
    let pid = id_of(pat);
    let team = &entries_of(&b, "CareTeam")[0];
    assert_eq!(
        team["participant"][0]["member"]["reference"],
        format!("Practitioner/{}", w.p1)
    );
    assert_eq!(
        team["participant"][0]["role"][0]["coding"][0]["code"],
        "care-coordinator"
    );
    let sr = &entries_of(&b, "ServiceRequest");
    assert!(sr.iter().any(|r| r["status"] == "completed"), "{b}");
    s.as_token(Some(&w.p1_token), "GET", &format!("Patient/{pid}"), None)
        .expect(200);
    // The same identifier again finds the same (visible) patient: already enrolled.
    let r = s.as_token(Some(&w.p1_token), "POST", "$enroll", Some(&params));
    assert_eq!(r.status, 409, "{}", r.body);
    // Another practitioner cannot reach the patient through intake: the plain 403, and no
    // second patient is made.
    let before = count(
        s,
        &w.system,
        "Patient?identifier=http://example.org/mrn|MRN-NEW",
    );
    let r = s.as_token(Some(&w.p2_token), "POST", "$enroll", Some(&params));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(!r.body.contains(&pid), "{}", r.body);
    assert_eq!(
        count(
            s,
            &w.system,
            "Patient?identifier=http://example.org/mrn|MRN-NEW"
        ),
        before
    );
    // A patient token cannot enroll anyone.
    let pt = mint(&claims("pat", "patient/*.cruds", json!({"patient": w.a})));
    let r = s.as_token(Some(&pt), "POST", "$enroll", Some(&params));
    assert!(r.status == 403 || r.status == 400, "{}", r.body);
});

secure_tests!(discharge_creates_follow_up_once, |s| {
    let w = world(s);
    let sys = Some(w.system.as_str());
    let sr = id_of(
        &s.as_token(sys, "POST", "ServiceRequest", Some(&referral(&w.a)))
            .json(),
    );
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "referral", "valueReference": {"reference": format!("ServiceRequest/{sr}")}},
        {"name": "careManager", "valueReference": {"reference": format!("Practitioner/{}", w.p1)}}]});
    let b = s
        .as_token(
            sys,
            "POST",
            &format!("Patient/{}/$enroll", w.a),
            Some(&params),
        )
        .json();
    let plan = entries_of(&b, "CarePlan")[0].clone();
    let mut active = plan.clone();
    active["status"] = json!("active");
    s.as_token(
        sys,
        "PUT",
        &format!("CarePlan/{}", id_of(&plan)),
        Some(&active),
    )
    .expect(200);
    // An admission, then the discharge: three follow-up Tasks, based on the active plan, owned
    // by the care manager, focused on the Encounter, due per the transitions rules.
    let enc = json!({"resourceType": "Encounter", "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": format!("Patient/{}", w.a)},
        "period": {"start": "2026-11-20T10:00:00Z"}});
    let e = id_of(&s.as_token(sys, "POST", "Encounter", Some(&enc)).json());
    let follow = |s: &TestServer| count(s, &w.system, &format!("Task?focus=Encounter/{e}"));
    assert_eq!(follow(s), 0, "an admission creates no follow-up");
    let mut fin = enc.clone();
    fin["id"] = json!(e);
    fin["status"] = json!("finished");
    fin["period"]["end"] = json!("2026-11-27T15:00:00Z");
    s.as_token(sys, "PUT", &format!("Encounter/{e}"), Some(&fin))
        .expect(200);
    assert_eq!(follow(s), 3);
    let tasks = s
        .as_token(
            sys,
            "GET",
            &format!("Task?focus=Encounter/{e}&_count=10"),
            None,
        )
        .json();
    let mut codes: Vec<String> = Vec::new();
    for t in tasks["entry"].as_array().unwrap() {
        let t = &t["resource"];
        assert_eq!(
            t["basedOn"][0]["reference"],
            format!("CarePlan/{}", id_of(&plan))
        );
        assert_eq!(t["owner"]["reference"], format!("Practitioner/{}", w.p1));
        let code = t["code"]["coding"][0]["code"].as_str().unwrap().to_string();
        let due = t["restriction"]["period"]["end"].as_str().unwrap();
        match code.as_str() {
            // Friday 27 November + 2 business days = Tuesday 1 December.
            "transition-follow-up" | "medication-reconciliation" => {
                assert!(due.starts_with("2026-12-01"), "{code} {due}")
            }
            // Not high risk: 14 days.
            "post-discharge-visit" => assert!(due.starts_with("2026-12-11"), "{due}"),
            other => panic!("unexpected {other}"),
        }
        codes.push(code);
    }
    codes.sort();
    assert_eq!(
        codes,
        [
            "medication-reconciliation",
            "post-discharge-visit",
            "transition-follow-up"
        ]
    );
    // Replaying the discharge creates nothing twice, also concurrently.
    s.as_token(sys, "PUT", &format!("Encounter/{e}"), Some(&fin))
        .expect(200);
    assert_eq!(follow(s), 3);
    let mut second = enc.clone();
    second["period"]["start"] = json!("2026-11-28T10:00:00Z");
    let e2 = id_of(&s.as_token(sys, "POST", "Encounter", Some(&second)).json());
    let mut fin2 = second.clone();
    fin2["id"] = json!(e2);
    fin2["status"] = json!("finished");
    fin2["period"]["end"] = json!("2026-11-30T09:00:00Z");
    std::thread::scope(|sc| {
        for _ in 0..2 {
            sc.spawn(|| {
                let r = s.as_token(sys, "PUT", &format!("Encounter/{e2}"), Some(&fin2));
                assert_eq!(r.status, 200, "{}", r.body);
            });
        }
    });
    assert_eq!(
        count(s, &w.system, &format!("Task?focus=Encounter/{e2}")),
        3,
        "two discharges at once make one set of Tasks"
    );
    // A patient who is not enrolled gets none.
    let other = id_of(
        &s.as_token(
            sys,
            "POST",
            "Patient",
            Some(&json!({"resourceType": "Patient"})),
        )
        .json(),
    );
    let mut o = fin.clone();
    o.as_object_mut().unwrap().remove("id");
    o["subject"] = json!({"reference": format!("Patient/{other}")});
    let oe = id_of(&s.as_token(sys, "POST", "Encounter", Some(&o)).json());
    assert_eq!(
        count(s, &w.system, &format!("Task?focus=Encounter/{oe}")),
        0
    );
});
