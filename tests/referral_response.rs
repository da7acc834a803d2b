//! A community referral that has had no response within ICM_REFERRAL_RESPONSE_DAYS shows on the
//! care manager's $worklist.
mod common;
use common::auth::*;
use common::*;

const WORKFLOW: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-workflow";

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// Zero days: any referral not yet accepted is overdue for an answer.
fn start_with_no_grace(backend: Backend) -> Option<TestServer> {
    start_secure_with(backend, |c| c.referral_response_days = 0)
}

#[test]
fn unanswered_referral_on_the_worklist_sqlite() {
    unanswered_referral_on_the_worklist(&start_with_no_grace(Backend::Sqlite).unwrap());
}

#[test]
fn unanswered_referral_on_the_worklist_postgres() {
    if let Some(s) = start_with_no_grace(Backend::Postgres) {
        unanswered_referral_on_the_worklist(&s);
    }
}

fn unanswered_referral_on_the_worklist(s: &TestServer) {
    let system = mint(&claims("backend", "system/*.cruds", json!({})));
    let sys = Some(system.as_str());
    let mk = |body: Value| {
        let ty = body["resourceType"].as_str().unwrap().to_string();
        let r = s.as_token(sys, "POST", &ty, Some(&body));
        assert_eq!(r.status, 201, "{}", r.body);
        id_of(&r.json())
    };
    let p = mk(json!({"resourceType": "Patient"}));
    let cm = mk(json!({"resourceType": "Practitioner"}));
    let org = mk(json!({"resourceType": "Organization", "name": "Ride share"}));
    mk(
        json!({"resourceType": "CareTeam", "status": "active", "subject": {"reference": format!("Patient/{p}")},
        "participant": [{"member": {"reference": format!("Practitioner/{cm}")}}]}),
    );
    let sr = mk(
        json!({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "category": [{"coding": [{"system": WORKFLOW, "code": "community-referral"}]}],
        "code": {"text": "Transportation"},
        "subject": {"reference": format!("Patient/{p}")},
        "requester": {"reference": format!("Practitioner/{cm}")},
        "performer": [{"reference": format!("Organization/{org}")}]}),
    );
    let tasks = s
        .as_token(sys, "GET", &format!("Task?focus=ServiceRequest/{sr}"), None)
        .json();
    assert_eq!(tasks["total"], 1, "{tasks}");
    let tid = id_of(&tasks["entry"][0]["resource"]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let token = mint(&claims(
        &cm,
        "user/*.cruds",
        json!({"fhirUser": format!("Practitioner/{cm}")}),
    ));
    let wl = s
        .as_token(
            Some(&token),
            "GET",
            &format!("Practitioner/{cm}/$worklist"),
            None,
        )
        .json();
    let e = wl["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["id"] == tid.as_str())
        .unwrap_or_else(|| panic!("unanswered referral on the worklist: {wl}"));
    let ext = e["search"]["extension"].as_array().unwrap();
    assert!(ext.iter().any(|x| x["valueCode"] == "no-response"), "{e}");
    // Once the organization accepts it, it leaves the worklist.
    let mut t = tasks["entry"][0]["resource"].clone();
    t["status"] = json!("accepted");
    s.as_token(sys, "PUT", &format!("Task/{tid}"), Some(&t))
        .expect(200);
    let wl = s
        .as_token(
            Some(&token),
            "GET",
            &format!("Practitioner/{cm}/$worklist"),
            None,
        )
        .json();
    assert!(
        !wl.to_string().contains(&tid),
        "an accepted referral needs no attention: {wl}"
    );
}
