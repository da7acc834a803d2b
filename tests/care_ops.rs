//! Care-management operations on both backends: Patient/$everything, Practitioner/$worklist,
//! Practitioner/$caseload.
mod common;
use common::*;

fn ids(b: &Value) -> Vec<String> {
    b["entry"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["resource"]["resourceType"].as_str().unwrap(),
                        e["resource"]["id"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn put(s: &TestServer, v: Value) {
    let path = format!(
        "{}/{}",
        v["resourceType"].as_str().unwrap(),
        v["id"].as_str().unwrap()
    );
    let r = s.put(&path, &v);
    assert!(r.status == 201 || r.status == 200, "{path}: {}", r.body);
}

fn patient_record(s: &TestServer) {
    // Referenced resources first (referential integrity).
    put(s, json!({"resourceType": "Practitioner", "id": "dr"}));
    put(s, json!({"resourceType": "Practitioner", "id": "other"}));
    put(
        s,
        json!({"resourceType": "Organization", "id": "org", "name": "Org"}),
    );
    put(
        s,
        json!({"resourceType": "Patient", "id": "p1", "generalPractitioner": [{"reference": "Practitioner/dr"}], "managingOrganization": {"reference": "Organization/org"}}),
    );
    put(s, json!({"resourceType": "Patient", "id": "p2"}));
    for i in 0..5 {
        put(
            s,
            json!({"resourceType": "Observation", "id": format!("o{i}"), "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}}),
        );
    }
    put(
        s,
        json!({"resourceType": "Observation", "id": "o-p2", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/p2"}}),
    );
    put(
        s,
        json!({"resourceType": "CarePlan", "id": "cp1", "status": "active", "intent": "plan", "subject": {"reference": "Patient/p1"}}),
    );
    put(
        s,
        json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}, "asserter": {"reference": "Practitioner/dr"}}),
    );
}

backend_tests!(everything_compartment_and_paging, |s| {
    patient_record(s);
    let b = s.get("Patient/p1/$everything?_count=100").json();
    assert_eq!(b["type"], "searchset");
    let got = ids(&b);
    assert_eq!(got[0], "Patient/p1", "the patient comes first");
    for want in [
        "Observation/o0",
        "Observation/o4",
        "CarePlan/cp1",
        "Condition/c1",
        "Practitioner/dr",
        "Organization/org",
    ] {
        assert!(
            got.contains(&want.to_string()),
            "{want} missing from {got:?}"
        );
    }
    assert!(!got.contains(&"Observation/o-p2".to_string()));
    assert!(!got.contains(&"Practitioner/other".to_string()));
    assert_eq!(got.len(), 10);
    assert_eq!(b["total"], 10);
    // paging: 3 per page, following next links, covers everything exactly once
    let mut seen = vec![];
    let mut url = s.url("Patient/p1/$everything?_count=3");
    let mut pages = 0;
    loop {
        let page = s.get(&url).json();
        let page_ids = ids(&page);
        assert!(page_ids.len() <= 3);
        seen.extend(page_ids);
        pages += 1;
        match page["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
        {
            Some(l) => url = l["url"].as_str().unwrap().to_string(),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(seen, got);
    // _type and _since
    let b = s
        .get("Patient/p1/$everything?_type=Observation,Patient")
        .json();
    assert_eq!(ids(&b).len(), 6);
    let future = "2999-01-01T00:00:00Z";
    assert_eq!(
        s.get(&format!("Patient/p1/$everything?_since={future}"))
            .json()["total"],
        0
    );
    let cp = s.get("CarePlan/cp1").json();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let since = cp["meta"]["lastUpdated"].as_str().unwrap().to_string();
    let b = s
        .get(&format!("Patient/p1/$everything?_since={since}"))
        .json();
    assert!(ids(&b).contains(&"CarePlan/cp1".to_string()));
    assert!(!ids(&b).contains(&"Observation/o0".to_string()));
    s.get("Patient/nobody/$everything")
        .expect_outcome(404, "not-found");
    s.get("Patient/p1/$everything?_type=Nope")
        .expect_outcome(400, "invalid");
    s.get("Patient/p1/$everything?_since=soon")
        .expect_outcome(400, "invalid");
});

fn task(
    id: &str,
    owner: &str,
    status: &str,
    prio: Option<&str>,
    due: Option<&str>,
    patient: &str,
) -> Value {
    let mut t = json!({"resourceType": "Task", "id": id, "status": status, "intent": "order",
        "owner": {"reference": owner}, "for": {"reference": patient}});
    if let Some(p) = prio {
        t["priority"] = json!(p);
    }
    if let Some(d) = due {
        t["restriction"] = json!({"period": {"end": d}});
    }
    t
}

fn care_setting(s: &TestServer) {
    put(s, json!({"resourceType": "Practitioner", "id": "cm"}));
    put(s, json!({"resourceType": "Practitioner", "id": "nurse"}));
    for p in ["pa", "pb", "pc"] {
        put(s, json!({"resourceType": "Patient", "id": p}));
    }
    // cm coordinates team A (pa), is a plain member of team B (pb); team C (pc) is inactive
    put(
        s,
        json!({"resourceType": "CareTeam", "id": "ta", "status": "active", "subject": {"reference": "Patient/pa"},
        "participant": [{"role": [{"coding": [{"system": "http://snomed.info/sct", "code": "768820003", "display": "Care coordinator"}]}], "member": {"reference": "Practitioner/cm"}}]}),
    );
    put(
        s,
        json!({"resourceType": "CareTeam", "id": "tb", "status": "active", "subject": {"reference": "Patient/pb"},
        "participant": [{"role": [{"text": "nurse"}], "member": {"reference": "Practitioner/cm"}}, {"role": [{"text": "Care coordinator"}], "member": {"reference": "Practitioner/nurse"}}]}),
    );
    put(
        s,
        json!({"resourceType": "CareTeam", "id": "tc", "status": "inactive", "subject": {"reference": "Patient/pc"},
        "participant": [{"role": [{"text": "coordinator"}], "member": {"reference": "Practitioner/cm"}}]}),
    );
    put(
        s,
        json!({"resourceType": "CarePlan", "id": "cpa", "status": "active", "intent": "plan", "subject": {"reference": "Patient/pa"}}),
    );
    put(
        s,
        json!({"resourceType": "CarePlan", "id": "cpa-old", "status": "completed", "intent": "plan", "subject": {"reference": "Patient/pa"}}),
    );
    put(
        s,
        task(
            "w-routine-late",
            "Practitioner/cm",
            "requested",
            Some("routine"),
            Some("2020-01-01"),
            "Patient/pa",
        ),
    );
    put(
        s,
        task(
            "w-stat",
            "Practitioner/cm",
            "in-progress",
            Some("stat"),
            Some("2999-01-01"),
            "Patient/pa",
        ),
    );
    put(
        s,
        task(
            "w-team-urgent",
            "CareTeam/ta",
            "ready",
            Some("urgent"),
            Some("2999-01-01"),
            "Patient/pa",
        ),
    );
    put(
        s,
        task(
            "w-team-urgent-sooner",
            "CareTeam/ta",
            "ready",
            Some("urgent"),
            Some("2998-01-01"),
            "Patient/pa",
        ),
    );
    put(
        s,
        task(
            "w-asap-late",
            "Practitioner/cm",
            "on-hold",
            Some("asap"),
            Some("2021-01-01"),
            "Patient/pb",
        ),
    );
    let mut done1 = task(
        "x-done",
        "Practitioner/cm",
        "completed",
        Some("stat"),
        Some("2020-01-01"),
        "Patient/pa",
    );
    done1["executionPeriod"] = json!({"end": "2026-01-01"});
    put(s, done1);
    put(
        s,
        task(
            "x-teamb",
            "CareTeam/tb",
            "ready",
            Some("stat"),
            None,
            "Patient/pb",
        ),
    );
    put(
        s,
        task(
            "x-teamc",
            "CareTeam/tc",
            "ready",
            Some("stat"),
            None,
            "Patient/pc",
        ),
    );
    put(
        s,
        task(
            "x-nurse",
            "Practitioner/nurse",
            "ready",
            Some("stat"),
            None,
            "Patient/pb",
        ),
    );
    let mut done = task(
        "x-done2",
        "Practitioner/cm",
        "completed",
        None,
        None,
        "Patient/pa",
    );
    done["executionPeriod"] = json!({"end": "2026-03-04T05:06:07Z"});
    put(s, done);
}

backend_tests!(worklist_ordering_and_filters, |s| {
    care_setting(s);
    let b = s.get("Practitioner/cm/$worklist").json();
    assert!(
        b["link"][0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/Practitioner/cm/$worklist"),
        "self link without a dangling '?': {}",
        b["link"]
    );
    assert_eq!(b["type"], "searchset");
    assert_eq!(
        ids(&b),
        [
            "Task/w-asap-late",
            "Task/w-routine-late",
            "Task/w-stat",
            "Task/w-team-urgent-sooner",
            "Task/w-team-urgent"
        ]
    );
    assert_eq!(b["total"], 5);
    let overdue: Vec<bool> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["search"]["extension"].as_array().is_some_and(|x| {
                x.iter().any(|x| {
                    x["url"] == "http://icm-fhir.org/StructureDefinition/task-overdue"
                        && x["valueBoolean"] == true
                })
            })
        })
        .collect();
    assert_eq!(overdue, [true, true, false, false, false]);
    let b = s.get("Practitioner/cm/$worklist?_count=2").json();
    assert_eq!(ids(&b), ["Task/w-asap-late", "Task/w-routine-late"]);
    let b = s
        .get("Practitioner/cm/$worklist?status=ready,completed")
        .json();
    assert_eq!(
        ids(&b),
        [
            "Task/x-done",
            "Task/w-team-urgent-sooner",
            "Task/w-team-urgent",
            "Task/x-done2"
        ]
    );
    let b = s
        .get("Practitioner/cm/$worklist?due-before=2999-01-01")
        .json();
    assert_eq!(
        ids(&b),
        [
            "Task/w-asap-late",
            "Task/w-routine-late",
            "Task/w-team-urgent-sooner"
        ]
    );
    // the nurse coordinates team B
    let b = s.get("Practitioner/nurse/$worklist").json();
    assert_eq!(ids(&b), ["Task/x-nurse", "Task/x-teamb"]);
    s.get("Practitioner/nobody/$worklist")
        .expect_outcome(404, "not-found");
    s.get("Practitioner/cm/$worklist?status=done")
        .expect_outcome(400, "invalid");
});

fn part<'a>(p: &'a Value, name: &str) -> Vec<&'a Value> {
    p["part"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["name"] == name)
        .collect()
}

backend_tests!(caseload_counts, |s| {
    care_setting(s);
    let b = s.get("Practitioner/cm/$caseload").json();
    assert_eq!(b["resourceType"], "Parameters");
    let ps = b["parameter"].as_array().unwrap();
    assert_eq!(ps.len(), 2, "active teams only: {b}");
    let pa = ps
        .iter()
        .find(|p| part(p, "patient")[0]["valueReference"]["reference"] == "Patient/pa")
        .unwrap();
    assert_eq!(
        part(pa, "careTeam")[0]["valueReference"]["reference"],
        "CareTeam/ta"
    );
    let plans: Vec<&Value> = part(pa, "activeCarePlan");
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0]["valueReference"]["reference"], "CarePlan/cpa");
    assert_eq!(part(pa, "openTasks")[0]["valueInteger"], 4);
    assert_eq!(part(pa, "overdueTasks")[0]["valueInteger"], 1);
    assert_eq!(
        part(pa, "lastCompletedTask")[0]["valueDateTime"],
        "2026-03-04T05:06:07Z"
    );
    let pb = ps
        .iter()
        .find(|p| part(p, "patient")[0]["valueReference"]["reference"] == "Patient/pb")
        .unwrap();
    assert_eq!(part(pb, "openTasks")[0]["valueInteger"], 3);
    assert_eq!(part(pb, "overdueTasks")[0]["valueInteger"], 1);
    assert!(part(pb, "activeCarePlan").is_empty());
    assert!(part(pb, "lastCompletedTask").is_empty());
    // an empty caseload
    put(s, json!({"resourceType": "Practitioner", "id": "new"}));
    let b = s.get("Practitioner/new/$caseload").json();
    assert!(b.get("parameter").is_none());
    s.get("Practitioner/nobody/$caseload")
        .expect_outcome(404, "not-found");
});

backend_tests!(capability_statement_documents_rules_and_operations, |s| {
    let cs = s.get("metadata").json();
    let res = cs["rest"][0]["resource"].as_array().unwrap();
    let find = |t: &str| res.iter().find(|r| r["type"] == t).unwrap().clone();
    let task = find("Task");
    let doc = task["documentation"].as_str().unwrap();
    assert!(
        doc.contains("in-progress → on-hold | completed | failed | cancelled | entered-in-error"),
        "{doc}"
    );
    assert!(
        doc.contains("completed (terminal) → entered-in-error"),
        "{doc}"
    );
    assert!(find("CarePlan")["documentation"]
        .as_str()
        .unwrap()
        .contains("unknown → any status"));
    assert!(find("CareTeam")["documentation"]
        .as_str()
        .unwrap()
        .contains("inactive → active | entered-in-error; entered-in-error (terminal)"));
    assert_eq!(find("Patient")["operation"][0]["name"], "everything");
    assert_eq!(find("Practitioner")["operation"][1]["name"], "caseload");
    assert_eq!(task["conditionalCreate"], true);
    assert_eq!(task["conditionalDelete"], "multiple");
    let sys: Vec<&str> = cs["rest"][0]["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    assert!(sys.contains(&"transaction") && sys.contains(&"batch"));
});
