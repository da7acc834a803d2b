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
    // Four intake Tasks and the outreach Task of the risk tier.
    assert_eq!(wl["total"], 5, "{wl}");
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
    // The admission marks the caseload row and the worklist entries of the patient.
    let cl = s
        .as_token(
            Some(&w.p1_token),
            "GET",
            &format!("Practitioner/{}/$caseload", w.p1),
            None,
        )
        .json();
    assert!(cl.to_string().contains(&format!("Encounter/{e}")), "{cl}");
    let wl = s
        .as_token(
            Some(&w.p1_token),
            "GET",
            &format!("Practitioner/{}/$worklist", w.p1),
            None,
        )
        .json();
    let marked = wl["entry"].as_array().unwrap().iter().all(|x| {
        x["search"]["extension"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["valueReference"]["reference"] == format!("Encounter/{e}").as_str())
        })
    });
    assert!(marked, "{wl}");
    // A new encounter of an enrolled patient re-stratifies (a second RiskAssessment).
    let ras = count(
        s,
        &w.system,
        &format!("RiskAssessment?subject=Patient/{}", w.a),
    );
    assert!(ras >= 2, "{ras}");
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

fn enrolled(s: &TestServer, w: &World) -> Value {
    let sys = Some(w.system.as_str());
    let sr = id_of(
        &s.as_token(sys, "POST", "ServiceRequest", Some(&referral(&w.a)))
            .json(),
    );
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "referral", "valueReference": {"reference": format!("ServiceRequest/{sr}")}},
        {"name": "careManager", "valueReference": {"reference": format!("Practitioner/{}", w.p1)}}]});
    let r = s.as_token(
        sys,
        "POST",
        &format!("Patient/{}/$enroll", w.a),
        Some(&params),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn coding(code: &str) -> Value {
    json!({"valueCoding": {"system": "http://loinc.org", "code": code}})
}

fn answer(link: &str, a: Value) -> Value {
    json!({"linkId": link, "answer": [a]})
}

/// A social-needs screen positive for food only.
fn food_screen(patient: &str) -> Value {
    let never = coding("LA6270-8");
    json!({"resourceType": "QuestionnaireResponse", "status": "completed",
        "questionnaire": "http://icm-fhir.org/fhir/Questionnaire/icm-social-needs",
        "subject": {"reference": format!("Patient/{patient}")},
        "item": [
            {"linkId": "housing", "item": [answer("sn-living-situation", coding("LA31993-1")), answer("sn-housing-problems", coding("LA9-3"))]},
            {"linkId": "food", "item": [answer("sn-food-worry", coding("LA28397-0")), answer("sn-food-last", coding("LA28398-8"))]},
            {"linkId": "transportation", "item": [answer("sn-transportation", coding("LA32-8"))]},
            {"linkId": "utilities", "item": [answer("sn-utilities", coding("LA32-8"))]},
            {"linkId": "safety", "item": [answer("sn-safety-hurt", never.clone()), answer("sn-safety-insult", never.clone()),
                answer("sn-safety-threaten", never.clone()), answer("sn-safety-scream", never)]},
            answer("sn-help-wanted", json!({"valueBoolean": true}))]})
}

secure_tests!(closed_loop_community_referral, |s| {
    let w = world(s);
    let sys = Some(w.system.as_str());
    enrolled(s, &w);
    let org = id_of(
        &s.as_token(
            sys,
            "POST",
            "Organization",
            Some(&json!({"resourceType": "Organization", "name": "Food pantry"})),
        )
        .json(),
    );
    // An invalid response is refused naming the item.
    let mut bad = food_screen(&w.a);
    bad["item"][1]["item"][0]["answer"][0] = coding("LA9999-9");
    let r = s.as_token(
        Some(&w.p1_token),
        "POST",
        "QuestionnaireResponse",
        Some(&bad),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("sn-food-worry"), "{}", r.body);
    // The care manager records the screen: scored, a proposed Goal and a draft referral.
    let r = s.as_token(
        Some(&w.p1_token),
        "POST",
        "QuestionnaireResponse",
        Some(&food_screen(&w.a)),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let qr = id_of(&r.json());
    let obs = s
        .as_token(
            sys,
            "GET",
            &format!("Observation?derived-from=QuestionnaireResponse/{qr}"),
            None,
        )
        .json();
    let count_obs = obs["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["code"]["coding"][0]["code"] == "positive-domains");
    assert_eq!(count_obs.unwrap()["resource"]["valueInteger"], 1, "{obs}");
    let goals = s
        .as_token(
            sys,
            "GET",
            &format!("Goal?patient=Patient/{}&lifecycle-status=proposed", w.a),
            None,
        )
        .json();
    assert_eq!(goals["total"], 1, "{goals}");
    let srs = s
        .as_token(
            sys,
            "GET",
            &format!("ServiceRequest?patient=Patient/{}&status=draft", w.a),
            None,
        )
        .json();
    assert_eq!(srs["total"], 1, "{srs}");
    let mut sr = srs["entry"][0]["resource"].clone();
    assert_eq!(sr["code"]["coding"][0]["code"], "food");
    assert_eq!(
        sr["requester"]["reference"],
        format!("Practitioner/{}", w.p1)
    );
    // Confirming sends it to the organization as a Task.
    sr["status"] = json!("active");
    sr["intent"] = json!("order");
    sr["performer"] = json!([{"reference": format!("Organization/{org}")}]);
    let sr_id = id_of(&sr);
    s.as_token(
        Some(&w.p1_token),
        "PUT",
        &format!("ServiceRequest/{sr_id}"),
        Some(&sr),
    )
    .expect(200);
    let tasks = s
        .as_token(
            sys,
            "GET",
            &format!("Task?focus=ServiceRequest/{sr_id}"),
            None,
        )
        .json();
    assert_eq!(tasks["total"], 1, "{tasks}");
    let task = tasks["entry"][0]["resource"].clone();
    assert_eq!(task["owner"]["reference"], format!("Organization/{org}"));
    let tid = id_of(&task);
    // The organization's token reaches its Task and what it concerns, nothing else.
    let ot = mint(&claims(
        "pantry",
        "user/*.cruds",
        json!({"fhirUser": format!("Organization/{org}")}),
    ));
    let mine = s.as_token(Some(&ot), "GET", "Task", None).json();
    assert_eq!(mine["total"], 1, "only its own Task: {mine}");
    s.as_token(Some(&ot), "GET", &format!("Patient/{}", w.a), None)
        .expect(200);
    s.as_token(Some(&ot), "GET", &format!("ServiceRequest/{sr_id}"), None)
        .expect(200);
    let cps = s.as_token(Some(&ot), "GET", "CarePlan", None).json();
    assert_eq!(cps["total"], 0, "{cps}");
    let screen = s.as_token(
        Some(&ot),
        "GET",
        &format!("QuestionnaireResponse/{qr}"),
        None,
    );
    assert_eq!(screen.status, 404, "{}", screen.body);
    let other = id_of(
        &s.as_token(
            sys,
            "POST",
            "Patient",
            Some(&json!({"resourceType": "Patient"})),
        )
        .json(),
    );
    s.as_token(Some(&ot), "GET", &format!("Patient/{other}"), None)
        .expect(404);
    // It works the Task through its states and records the outcome.
    let mut t = task.clone();
    for st in ["received", "accepted", "in-progress"] {
        t["status"] = json!(st);
        let r = s.as_token(Some(&ot), "PUT", &format!("Task/{tid}"), Some(&t));
        assert_eq!(r.status, 200, "{st}: {}", r.body);
        t = r.json();
    }
    let proc_body = json!({"resourceType": "Procedure", "status": "completed",
        "code": {"text": "Food bank enrollment"},
        "subject": {"reference": format!("Patient/{}", w.a)},
        "performer": [{"actor": {"reference": format!("Organization/{org}")}}]});
    let r = s.as_token(Some(&ot), "POST", "Procedure", Some(&proc_body));
    assert_eq!(r.status, 201, "{}", r.body);
    let proc_id = id_of(&r.json());
    t["status"] = json!("completed");
    t["output"] = json!([{"type": {"text": "outcome"}, "valueReference": {"reference": format!("Procedure/{proc_id}")}}]);
    let r = s.as_token(Some(&ot), "PUT", &format!("Task/{tid}"), Some(&t));
    assert_eq!(r.status, 200, "{}", r.body);
    // It cannot hand the Task to someone else.
    let mut away = r.json();
    away["owner"] = json!({"reference": format!("Practitioner/{}", w.p1)});
    let r = s.as_token(Some(&ot), "PUT", &format!("Task/{tid}"), Some(&away));
    assert_eq!(r.status, 403, "{}", r.body);
    // A second referral, rejected: a reason is required, and it shows on the worklist.
    let mut sr2 = sr.clone();
    sr2.as_object_mut().unwrap().remove("id");
    sr2.as_object_mut().unwrap().remove("meta");
    sr2["status"] = json!("draft");
    let sr2_id = id_of(
        &s.as_token(Some(&w.p1_token), "POST", "ServiceRequest", Some(&sr2))
            .json(),
    );
    sr2["id"] = json!(sr2_id);
    sr2["status"] = json!("active");
    s.as_token(
        Some(&w.p1_token),
        "PUT",
        &format!("ServiceRequest/{sr2_id}"),
        Some(&sr2),
    )
    .expect(200);
    let ot = mint(&claims(
        "pantry",
        "user/*.cruds",
        json!({"fhirUser": format!("Organization/{org}")}),
    ));
    let t2 = s
        .as_token(
            Some(&ot),
            "GET",
            &format!("Task?focus=ServiceRequest/{sr2_id}"),
            None,
        )
        .json()["entry"][0]["resource"]
        .clone();
    assert!(
        t2.is_object(),
        "{}",
        s.as_token(
            sys,
            "GET",
            &format!("Task?focus=ServiceRequest/{sr2_id}"),
            None
        )
        .body
    );
    let t2_id = id_of(&t2);
    let mut rej = t2.clone();
    rej["status"] = json!("rejected");
    let r = s.as_token(Some(&ot), "PUT", &format!("Task/{t2_id}"), Some(&rej));
    assert_eq!(r.status, 409, "{}", r.body);
    rej["statusReason"] = json!({"text": "outside our service area"});
    s.as_token(Some(&ot), "PUT", &format!("Task/{t2_id}"), Some(&rej))
        .expect(200);
    let wl = s
        .as_token(
            Some(&w.p1_token),
            "GET",
            &format!("Practitioner/{}/$worklist", w.p1),
            None,
        )
        .json();
    let flagged = wl["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["id"] == t2_id.as_str());
    let flagged = flagged.unwrap_or_else(|| panic!("rejected referral on the worklist: {wl}"));
    assert_eq!(
        flagged["search"]["extension"][0]["valueCode"], "rejected",
        "{flagged}"
    );
});

secure_tests!(stratification_and_assessments, |s| {
    let w = world(s);
    let sys = Some(w.system.as_str());
    let b = enrolled(s, &w);
    // Enrollment stratified the patient.
    let first = entries_of(&b, "RiskAssessment");
    assert_eq!(first.len(), 1, "{b}");
    // The program's Questionnaires are served read-only.
    let q = s.as_token(sys, "GET", "Questionnaire/icm-phq9", None);
    q.expect(200);
    assert_eq!(q.json()["code"][0]["code"], "44249-1");
    // A PHQ-9 scored 10 (moderate) on write.
    let scores = [1, 2, 0, 3, 1, 0, 2, 1, 0];
    let codes = ["LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9"];
    let items: Vec<Value> = scores
        .iter()
        .enumerate()
        .map(|(i, n)| answer(&format!("phq9-{}", i + 1), coding(codes[*n as usize])))
        .collect();
    let qr = json!({"resourceType": "QuestionnaireResponse", "status": "completed",
        "questionnaire": "http://icm-fhir.org/fhir/Questionnaire/icm-phq9",
        "subject": {"reference": format!("Patient/{}", w.a)}, "item": items});
    let r = s.as_token(
        Some(&w.p1_token),
        "POST",
        "QuestionnaireResponse",
        Some(&qr),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let qr_id = id_of(&r.json());
    let total = s
        .as_token(
            sys,
            "GET",
            &format!(
                "Observation?code=http://loinc.org|44261-6&patient=Patient/{}",
                w.a
            ),
            None,
        )
        .json();
    assert_eq!(total["total"], 1, "{total}");
    let o = &total["entry"][0]["resource"];
    assert_eq!(o["valueInteger"], 10, "{o}");
    assert_eq!(
        o["derivedFrom"][0]["reference"],
        format!("QuestionnaireResponse/{qr_id}")
    );
    // $stratify: a new assessment superseding the previous one, never losing it.
    let r = s.as_token(
        Some(&w.p1_token),
        "POST",
        &format!("Patient/{}/$stratify", w.a),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let ra = r.json();
    assert_eq!(ra["resourceType"], "RiskAssessment");
    assert_eq!(ra["status"], "final");
    assert!(
        ra["prediction"][0]["qualitativeRisk"]["coding"][0]["code"].is_string(),
        "{ra}"
    );
    assert!(
        ra["parent"]["reference"]
            .as_str()
            .unwrap()
            .starts_with("RiskAssessment/"),
        "{ra}"
    );
    let all = s
        .as_token(
            sys,
            "GET",
            &format!("RiskAssessment?subject=Patient/{}", w.a),
            None,
        )
        .json();
    let finals = all["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"]["status"] == "final")
        .count();
    assert_eq!(finals, 1, "one current assessment: {all}");
    assert!(
        all["total"].as_u64().unwrap() >= 3,
        "earlier ones kept (amended): {all}"
    );
    // A Condition recorded for an enrolled patient re-stratifies: heart failure counts.
    let before = count(
        s,
        &w.system,
        &format!("RiskAssessment?subject=Patient/{}", w.a),
    );
    let chf = json!({"resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "88805009"}]},
        "subject": {"reference": format!("Patient/{}", w.a)}});
    let r = s.as_token(sys, "POST", "Condition", Some(&chf));
    r.expect(201);
    let chf_id = id_of(&r.json());
    assert_eq!(
        count(
            s,
            &w.system,
            &format!("RiskAssessment?subject=Patient/{}", w.a)
        ),
        before + 1
    );
    let current = s
        .as_token(
            sys,
            "GET",
            &format!("RiskAssessment?subject=Patient/{}", w.a),
            None,
        )
        .json();
    let current = current["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["status"] == "final")
        .unwrap()["resource"]
        .clone();
    assert!(
        current["basis"]
            .to_string()
            .contains(&format!("Condition/{chf_id}")),
        "the new condition contributes: {current}"
    );
    // The caseload carries the tier; a patient on no team cannot be stratified.
    let cl = s
        .as_token(
            Some(&w.p1_token),
            "GET",
            &format!("Practitioner/{}/$caseload", w.p1),
            None,
        )
        .json();
    assert!(cl.to_string().contains("riskTier"), "{cl}");
    let r = s.as_token(
        Some(&w.p2_token),
        "POST",
        &format!("Patient/{}/$stratify", w.a),
        None,
    );
    assert_eq!(r.status, 404, "{}", r.body);
});
