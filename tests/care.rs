//! Care-coordination semantics over HTTP on both backends: state machines through every write
//! path, CarePlan closure cascading to Tasks, JSON Patch, transactions, batches, conditionals.
mod common;
use common::*;

const TASK: &[&str] = &[
    "draft",
    "requested",
    "received",
    "accepted",
    "rejected",
    "ready",
    "cancelled",
    "in-progress",
    "on-hold",
    "failed",
    "completed",
    "entered-in-error",
];
const CAREPLAN: &[&str] = &[
    "draft",
    "active",
    "on-hold",
    "revoked",
    "completed",
    "entered-in-error",
    "unknown",
];
const CARETEAM: &[&str] = &[
    "proposed",
    "active",
    "suspended",
    "inactive",
    "entered-in-error",
];

/// The transition tables exactly as issue 5 states them.
fn allowed(ty: &str, from: &str, to: &str) -> bool {
    if from == to || to == "entered-in-error" {
        return true;
    }
    let t: &[&str] = match (ty, from) {
        ("Task", "draft") => &["requested", "cancelled"],
        ("Task", "requested") => &["received", "accepted", "rejected", "ready", "cancelled"],
        ("Task", "received") => &["accepted", "rejected", "cancelled"],
        ("Task", "accepted") => &["ready", "in-progress", "cancelled"],
        ("Task", "ready") => &["in-progress", "completed", "failed", "cancelled"],
        ("Task", "in-progress") => &["on-hold", "completed", "failed", "cancelled"],
        ("Task", "on-hold") => &["in-progress", "failed", "cancelled"],
        ("CarePlan", "draft") => &["active", "revoked"],
        ("CarePlan", "active") => &["on-hold", "completed", "revoked"],
        ("CarePlan", "on-hold") => &["active", "completed", "revoked"],
        ("CarePlan", "unknown") => return true,
        ("CareTeam", "proposed") => &["active", "inactive"],
        ("CareTeam", "active") => &["suspended", "inactive"],
        ("CareTeam", "suspended") => &["active", "inactive"],
        ("CareTeam", "inactive") => &["active"],
        _ => &[],
    };
    t.contains(&to)
}

fn body(ty: &str, id: &str, status: &str) -> Value {
    match ty {
        "Task" => json!({"resourceType": ty, "id": id, "status": status, "intent": "order"}),
        "CarePlan" => {
            json!({"resourceType": ty, "id": id, "status": status, "intent": "plan", "subject": {"reference": "Patient/p"}})
        }
        _ => json!({"resourceType": ty, "id": id, "status": status}),
    }
}

/// Every from→to pair through PUT: created in `from` (creation is allowed in any state), then
/// updated to `to`: 200 when the table allows it, else 409 business-rule naming the transition.
fn every_pair(s: &TestServer, ty: &str, states: &[&str]) {
    // CarePlan.subject must resolve (referential integrity).
    s.put("Patient/p", &json!({"resourceType": "Patient", "id": "p"}));
    let mut n = 0;
    for (i, from) in states.iter().enumerate() {
        for (j, to) in states.iter().enumerate() {
            let id = format!("t{i}-{j}");
            s.put(&format!("{ty}/{id}"), &body(ty, &id, from))
                .expect(201);
            let r = s.put(&format!("{ty}/{id}"), &body(ty, &id, to));
            if allowed(ty, from, to) {
                r.expect(200);
                assert_eq!(r.json()["status"], *to);
            } else {
                let oo = r.expect_outcome(409, "business-rule");
                let d = oo["issue"][0]["diagnostics"].as_str().unwrap();
                assert!(d.contains(&format!("'{from}' → '{to}'")), "{d}");
                assert_eq!(s.get(&format!("{ty}/{id}")).json()["status"], *from);
            }
            n += 1;
        }
    }
    assert_eq!(n, states.len() * states.len());
}

backend_tests!(task_every_transition_pair, |s| every_pair(s, "Task", TASK));
backend_tests!(careplan_every_transition_pair, |s| every_pair(
    s, "CarePlan", CAREPLAN
));
backend_tests!(careteam_every_transition_pair, |s| every_pair(
    s, "CareTeam", CARETEAM
));

backend_tests!(task_intent_immutable_and_server_elements, |s| {
    let t = s.create(json!({"resourceType": "Task", "status": "accepted", "intent": "order"}));
    let id = t["id"].as_str().unwrap();
    assert_eq!(t["lastModified"], t["meta"]["lastUpdated"]);
    let mut t2 = t.clone();
    t2["intent"] = json!("plan");
    let oo = s
        .put(&format!("Task/{id}"), &t2)
        .expect_outcome(409, "business-rule");
    assert!(oo["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("intent"));
    let mut t3 = t.clone();
    t3["status"] = json!("in-progress");
    let r = s.put(&format!("Task/{id}"), &t3).json();
    assert_eq!(r["executionPeriod"]["start"], r["meta"]["lastUpdated"]);
    assert_eq!(r["lastModified"], r["meta"]["lastUpdated"]);
    assert!(r["executionPeriod"].get("end").is_none());
    let mut t4 = r.clone();
    t4["status"] = json!("completed");
    let done = s.put(&format!("Task/{id}"), &t4).json();
    assert_eq!(
        done["executionPeriod"]["start"],
        r["executionPeriod"]["start"]
    );
    assert_eq!(done["executionPeriod"]["end"], done["meta"]["lastUpdated"]);
    // invalid status code
    let mut bad = done.clone();
    bad["status"] = json!("finished");
    s.put(&format!("Task/{id}"), &bad)
        .expect_outcome(422, "code-invalid");
});

fn plan_with_tasks(s: &TestServer) -> (String, Vec<String>, String, String) {
    s.put("Patient/p", &json!({"resourceType": "Patient", "id": "p"}));
    let plan = s.create(json!({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/p"}}));
    let pid = plan["id"].as_str().unwrap().to_string();
    let mut open = vec![];
    for st in ["requested", "in-progress", "on-hold"] {
        let t = s.create(
            json!({"resourceType": "Task", "status": st, "intent": "order",
            "basedOn": [{"reference": format!("CarePlan/{pid}")}]}),
        );
        open.push(t["id"].as_str().unwrap().to_string());
    }
    let done = s.create(
        json!({"resourceType": "Task", "status": "completed", "intent": "order",
        "basedOn": [{"reference": format!("CarePlan/{pid}")}]}),
    );
    // Another plan whose id starts with the first one's: its Task must be left alone.
    s.put(
        &format!("CarePlan/{pid}0"),
        &json!({"resourceType": "CarePlan", "id": format!("{pid}0"), "status": "active", "intent": "plan", "subject": {"reference": "Patient/p"}}),
    )
    .expect(201);
    let other = s.create(
        json!({"resourceType": "Task", "status": "requested", "intent": "order",
        "basedOn": [{"reference": format!("CarePlan/{pid}0")}]}),
    );
    (
        pid,
        open,
        done["id"].as_str().unwrap().to_string(),
        other["id"].as_str().unwrap().to_string(),
    )
}

backend_tests!(careplan_revoked_cancels_open_tasks, |s| {
    let (pid, open, done, other) = plan_with_tasks(s);
    let mut plan = s.get(&format!("CarePlan/{pid}")).json();
    plan["status"] = json!("revoked");
    let r = s.request(
        "PUT",
        &format!("CarePlan/{pid}"),
        &[
            ("Content-Type", "application/fhir+json"),
            ("Prefer", "return=OperationOutcome"),
        ],
        Some(&plan.to_string()),
    );
    r.expect(200);
    assert_eq!(r.header("x-icm-cancelled-tasks"), Some("3"));
    let oo = r.json();
    assert!(oo["issue"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["severity"] == "information"
            && i["diagnostics"].as_str().unwrap().contains("cancelled 3")));
    for id in &open {
        let t = s.get(&format!("Task/{id}")).json();
        assert_eq!(t["status"], "cancelled", "{t}");
        assert_eq!(t["meta"]["versionId"], "2");
        assert!(t["executionPeriod"]["end"].is_string());
        assert!(t["statusReason"]["text"]
            .as_str()
            .unwrap()
            .contains("revoked"));
    }
    assert_eq!(
        s.get(&format!("Task/{done}")).json()["meta"]["versionId"],
        "1"
    );
    assert_eq!(
        s.get(&format!("Task/{other}")).json()["status"],
        "requested"
    );
    // once revoked, nothing more is cancelled and the plan cannot reopen
    plan["status"] = json!("active");
    s.put(&format!("CarePlan/{pid}"), &plan)
        .expect_outcome(409, "business-rule");
});

backend_tests!(careplan_completed_by_patch_cancels_tasks, |s| {
    let (pid, open, _, _) = plan_with_tasks(s);
    let r = s.request(
        "PATCH",
        &format!("CarePlan/{pid}"),
        &[("Content-Type", "application/json-patch+json")],
        Some(r#"[{"op":"replace","path":"/status","value":"completed"}]"#),
    );
    r.expect(200);
    assert_eq!(r.header("x-icm-cancelled-tasks"), Some("3"));
    for id in &open {
        assert_eq!(s.get(&format!("Task/{id}")).json()["status"], "cancelled");
    }
});

fn patch(s: &TestServer, path: &str, doc: &str, extra: &[(&str, &str)]) -> Resp {
    let mut h = vec![("Content-Type", "application/json-patch+json")];
    h.extend_from_slice(extra);
    s.request("PATCH", path, &h, Some(doc))
}

backend_tests!(json_patch_interaction, |s| {
    let p = s.create(json!({"resourceType": "Patient", "name": [{"family": "A"}], "active": true}));
    let id = p["id"].as_str().unwrap();
    let path = format!("Patient/{id}");
    let r = patch(
        s,
        &path,
        r#"[{"op":"test","path":"/active","value":true},{"op":"replace","path":"/name/0/family","value":"B"},{"op":"add","path":"/gender","value":"female"}]"#,
        &[("If-Match", "W/\"1\"")],
    );
    r.expect(200);
    let b = r.json();
    assert_eq!(b["name"][0]["family"], "B");
    assert_eq!(b["gender"], "female");
    assert_eq!(b["meta"]["versionId"], "2");
    assert_eq!(r.header("etag"), Some("W/\"2\""));
    // stale If-Match
    patch(
        s,
        &path,
        r#"[{"op":"remove","path":"/gender"}]"#,
        &[("If-Match", "W/\"1\"")],
    )
    .expect_outcome(412, "conflict");
    // failing test op: nothing written
    patch(
        s,
        &path,
        r#"[{"op":"remove","path":"/gender"},{"op":"test","path":"/active","value":false}]"#,
        &[],
    )
    .expect_outcome(422, "processing");
    assert_eq!(s.get(&path).json()["gender"], "female");
    // malformed patch, wrong media type, unknown resource, id change
    patch(s, &path, r#"{"op":"remove"}"#, &[]).expect_outcome(400, "invalid");
    patch(s, &path, r#"[oops"#, &[]).expect_outcome(400, "structure");
    s.request(
        "PATCH",
        &path,
        &[("Content-Type", "text/plain")],
        Some("[]"),
    )
    .expect_outcome(415, "not-supported");
    // FHIR JSON is a FHIRPath Patch: a JSON Patch array sent as it is refused as malformed.
    s.request(
        "PATCH",
        &path,
        &[("Content-Type", "application/fhir+json")],
        Some("[]"),
    )
    .expect_outcome(400, "invalid");
    patch(s, "Patient/nope", "[]", &[]).expect_outcome(404, "not-found");
    patch(
        s,
        &path,
        r#"[{"op":"replace","path":"/id","value":"other"}]"#,
        &[],
    )
    .expect_outcome(400, "invalid");
    patch(
        s,
        &path,
        r#"[{"op":"replace","path":"/resourceType","value":"Group"}]"#,
        &[],
    )
    .expect(400);
    // rules hold through PATCH
    let t = s.create(json!({"resourceType": "Task", "status": "completed", "intent": "order"}));
    patch(
        s,
        &format!("Task/{}", t["id"].as_str().unwrap()),
        r#"[{"op":"replace","path":"/status","value":"in-progress"}]"#,
        &[],
    )
    .expect_outcome(409, "business-rule");
    let cs = s.get("metadata").json();
    assert!(cs["rest"][0]["resource"][0]["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["code"] == "patch"));
});

// All of HL7's JSON Patch test cases run against the patch engine in src/fhir/patch.rs (unit
// tests): their documents are not FHIR resources, so the server's validation would refuse them
// before the patch semantics could be observed over HTTP. json_patch_interaction covers PATCH
// over HTTP with real resources.

fn txn(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// Number of stored versions of a type (type-level history).
fn count(s: &TestServer, ty: &str) -> u64 {
    let h = s.get(&format!("{ty}/_history?_count=1000"));
    h.expect(200);
    h.json()["entry"].as_array().map_or(0, |a| a.len() as u64)
}

backend_tests!(transaction_resolves_urn_uuid_everywhere, |s| {
    let b = txn(vec![
        json!({"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
               "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                            "subject": {"reference": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059"},
                            "focus": [{"reference": "urn:uuid:c1"}]},
               "request": {"method": "POST", "url": "Observation"}}),
        json!({"fullUrl": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059",
               "resource": {"resourceType": "Patient", "name": [{"family": "T"}]},
               "request": {"method": "POST", "url": "Patient"}}),
        json!({"fullUrl": "urn:uuid:c1",
               "resource": {"resourceType": "CarePlan", "id": "cp1", "status": "active", "intent": "plan",
                            "subject": {"reference": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059"},
                            "instantiatesUri": ["urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"]},
               "request": {"method": "PUT", "url": "CarePlan/cp1"}}),
    ]);
    let r = s.post("", &b);
    r.expect(200);
    let out = r.json();
    assert_eq!(out["type"], "transaction-response");
    let e = out["entry"].as_array().unwrap();
    assert_eq!(e.len(), 3);
    assert_eq!(e[0]["response"]["status"], "201 Created");
    assert_eq!(e[1]["response"]["status"], "201 Created");
    assert_eq!(e[2]["response"]["status"], "201 Created");
    let pid = e[1]["resource"]["id"].as_str().unwrap();
    assert!(e[1]["response"]["location"]
        .as_str()
        .unwrap()
        .starts_with(&format!("Patient/{pid}/_history/1")));
    assert_eq!(e[1]["response"]["etag"], "W/\"1\"");
    assert!(e[1]["response"]["lastModified"].is_string());
    let oid = e[0]["resource"]["id"].as_str().unwrap();
    let obs = s.get(&format!("Observation/{oid}")).json();
    assert_eq!(obs["subject"]["reference"], format!("Patient/{pid}"));
    assert_eq!(obs["focus"][0]["reference"], "CarePlan/cp1");
    let cp = s.get("CarePlan/cp1").json();
    assert_eq!(cp["subject"]["reference"], format!("Patient/{pid}"));
    assert_eq!(cp["instantiatesUri"][0], format!("Observation/{oid}"));
    assert!(!r.body.contains("urn:uuid:"), "{}", r.body);
});

backend_tests!(transaction_failing_half_way_leaves_nothing, |s| {
    s.put("Task/t1", &body("Task", "t1", "completed"))
        .expect(201);
    s.put(
        "Patient/keep",
        &json!({"resourceType": "Patient", "id": "keep"}),
    )
    .expect(201);
    let before = count(s, "Patient");
    let b = txn(vec![
        json!({"fullUrl": "urn:uuid:a", "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}),
        json!({"request": {"method": "DELETE", "url": "Patient/keep"}}),
        json!({"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "urn:uuid:a"}}, "request": {"method": "POST", "url": "Observation"}}),
        json!({"resource": body("Task", "t1", "in-progress"), "request": {"method": "PUT", "url": "Task/t1"}}),
    ]);
    let oo = s.post("", &b).expect_outcome(409, "business-rule");
    let d = oo["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(d.contains("Bundle.entry[3]"), "{d}");
    assert_eq!(count(s, "Patient"), before);
    assert_eq!(count(s, "Observation"), 0);
    s.get("Patient/keep").expect(200);
    assert_eq!(s.get("Task/t1").json()["meta"]["versionId"], "1");
    // a malformed entry fails the whole transaction up front
    let b = txn(vec![
        json!({"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}),
        json!({"request": {"method": "PUT", "url": "Patient/x"}}),
    ]);
    let oo = s.post("", &b).expect_outcome(400, "invalid");
    assert!(oo["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("Bundle.entry[1]"));
    assert_eq!(count(s, "Patient"), before);
    // an entry whose resource type mismatches its URL
    let b = txn(vec![
        json!({"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}),
        json!({"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Group"}}),
    ]);
    s.post("", &b).expect_outcome(400, "invalid");
    assert_eq!(count(s, "Patient"), before);
    // the same resource changed by two entries
    let b = txn(vec![
        json!({"resource": {"resourceType": "Patient", "id": "twice"}, "request": {"method": "PUT", "url": "Patient/twice"}}),
        json!({"resource": {"resourceType": "Patient", "id": "twice", "gender": "male"}, "request": {"method": "PUT", "url": "Patient/twice"}}),
    ]);
    let oo = s.post("", &b).expect_outcome(400, "invalid");
    assert!(oo["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("more than one entry"));
    s.get("Patient/twice").expect(404);
    assert_eq!(count(s, "Patient"), before);
});

backend_tests!(transaction_order_and_reads, |s| {
    s.put(
        "Patient/gone",
        &json!({"resourceType": "Patient", "id": "gone"}),
    )
    .expect(201);
    // GET listed first but processed last: it sees the PUT; DELETE processed first
    let b = txn(vec![
        json!({"request": {"method": "GET", "url": "Patient/p2"}}),
        json!({"resource": {"resourceType": "Patient", "id": "p2", "gender": "male"}, "request": {"method": "PUT", "url": "Patient/p2"}}),
        json!({"request": {"method": "DELETE", "url": "Patient/gone"}}),
        json!({"request": {"method": "GET", "url": "Patient?gender=male"}}),
    ]);
    let out = s.post("", &b);
    out.expect(200);
    let e = out.json()["entry"].clone();
    assert_eq!(e[0]["response"]["status"], "200 OK");
    assert_eq!(e[0]["resource"]["gender"], "male");
    assert_eq!(e[2]["response"]["status"], "204 No Content");
    // a search entry sees the transaction's own writes
    assert_eq!(e[3]["response"]["status"], "200 OK");
    assert_eq!(e[3]["resource"]["type"], "searchset");
    assert_eq!(e[3]["resource"]["total"], 1);
    assert_eq!(e[3]["resource"]["entry"][0]["resource"]["id"], "p2");
    s.get("Patient/gone").expect(410);
    // Prefer: return=minimal drops the resources
    let b = txn(vec![
        json!({"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}),
    ]);
    let r = s.request(
        "POST",
        "",
        &[
            ("Content-Type", "application/fhir+json"),
            ("Prefer", "return=minimal"),
        ],
        Some(&b.to_string()),
    );
    assert!(r.json()["entry"][0].get("resource").is_none());
    // not a transaction or batch
    s.post("", &json!({"resourceType": "Bundle", "type": "collection"}))
        .expect_outcome(400, "invalid");
    s.post("", &json!({"resourceType": "Patient"}))
        .expect_outcome(400, "invalid");
});

backend_tests!(batch_entries_are_independent, |s| {
    s.put("Task/t1", &body("Task", "t1", "completed"))
        .expect(201);
    let b = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": body("Task", "t1", "ready"), "request": {"method": "PUT", "url": "Task/t1"}},
        {"request": {"method": "GET", "url": "Patient/missing"}},
        {"request": {"method": "FROB", "url": "Patient"}},
        {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                      "data": "W3sib3AiOiJyZXBsYWNlIiwicGF0aCI6Ii9zdGF0dXMiLCJ2YWx1ZSI6ImVudGVyZWQtaW4tZXJyb3IifV0="},
         "request": {"method": "PATCH", "url": "Task/t1"}},
    ]});
    let r = s.post("", &b);
    r.expect(200);
    let out = r.json();
    assert_eq!(out["type"], "batch-response");
    let e = out["entry"].as_array().unwrap();
    assert_eq!(e[0]["response"]["status"], "201 Created");
    assert_eq!(e[1]["response"]["status"], "409 Conflict");
    assert_eq!(
        e[1]["response"]["outcome"]["issue"][0]["code"],
        "business-rule"
    );
    assert_eq!(e[2]["response"]["status"], "404 Not Found");
    assert_eq!(e[3]["response"]["status"], "400 Bad Request");
    assert_eq!(e[4]["response"]["status"], "200 OK", "{}", e[4]);
    assert_eq!(s.get("Task/t1").json()["status"], "entered-in-error");
    assert_eq!(count(s, "Patient"), 1);
});

#[test]
fn bundle_entry_limit() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(s) = start_with(backend, |c| c.max_bundle_entries = 2) else {
            continue;
        };
        let e = json!({"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}});
        s.post("", &txn(vec![e.clone(), e.clone()])).expect(200);
        s.post("", &txn(vec![e.clone(), e.clone(), e]))
            .expect_outcome(413, "too-long");
    }
}

fn cond_create(s: &TestServer, criteria: &str, body: &Value) -> Resp {
    s.request(
        "POST",
        "Patient",
        &[
            ("Content-Type", "application/fhir+json"),
            ("If-None-Exist", criteria),
        ],
        Some(&body.to_string()),
    )
}

backend_tests!(conditional_create_update_delete, |s| {
    let p = json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "1"}]});
    let r = cond_create(s, "identifier=urn:mrn|1", &p);
    r.expect(201);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = cond_create(s, "identifier=urn:mrn|1", &p);
    r.expect(200);
    assert_eq!(r.json()["id"], id);
    s.create(p.clone());
    cond_create(s, "identifier=urn:mrn|1", &p).expect_outcome(412, "conflict");
    // conditional update: 0 → create, 1 → update, many → 412
    let q = json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "2"}], "gender": "male"});
    s.put("Patient?identifier=urn:mrn|2", &q).expect(201);
    let mut q2 = q.clone();
    q2["gender"] = json!("female");
    let r = s.put("Patient?identifier=urn:mrn|2", &q2);
    r.expect(200);
    assert_eq!(r.json()["meta"]["versionId"], "2");
    s.put("Patient?identifier=urn:mrn|1", &q2)
        .expect_outcome(412, "conflict");
    // rules hold through conditional update
    s.put("Task/t9", &json!({"resourceType": "Task", "id": "t9", "status": "completed", "intent": "order", "identifier": [{"value": "t9"}]})).expect(201);
    s.put("Task?identifier=t9", &json!({"resourceType": "Task", "status": "ready", "intent": "order", "identifier": [{"value": "t9"}]}))
        .expect_outcome(409, "business-rule");
    // conditional delete removes every match
    s.delete("Patient?identifier=urn:mrn|1").expect(204);
    s.get(&format!("Patient/{id}")).expect(410);
    s.delete("Patient?identifier=urn:mrn|1").expect(204);
    s.delete("Patient").expect(405);
});

backend_tests!(concurrent_conditional_create_makes_one, |s| {
    let p =
        json!({"resourceType": "Patient", "identifier": [{"system": "urn:race", "value": "42"}]});
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..20)
            .map(|_| scope.spawn(|| cond_create(s, "identifier=urn:race|42", &p).status))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|c| **c == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|c| **c == 200).count(),
        19,
        "{statuses:?}"
    );
    assert_eq!(count(s, "Patient"), 1);
});

backend_tests!(transaction_conditional_references_and_creates, |s| {
    s.create(
        json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "7"}]}),
    );
    let b = txn(vec![
        json!({"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "7"}]},
               "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|7"}}),
        json!({"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                            "subject": {"reference": "Patient?identifier=urn:mrn|7"}, "focus": [{"reference": "urn:uuid:p"}]},
               "request": {"method": "POST", "url": "Observation"}}),
    ]);
    let r = s.post("", &b);
    r.expect(200);
    let e = r.json()["entry"].clone();
    assert_eq!(e[0]["response"]["status"], "200 OK");
    let pid = e[0]["resource"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        e[1]["resource"]["subject"]["reference"],
        format!("Patient/{pid}")
    );
    assert_eq!(
        e[1]["resource"]["focus"][0]["reference"],
        format!("Patient/{pid}")
    );
    assert_eq!(count(s, "Patient"), 1);
    let bad = txn(vec![
        json!({"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "Patient?identifier=urn:mrn|404"}}, "request": {"method": "POST", "url": "Observation"}}),
    ]);
    s.post("", &bad).expect_outcome(412, "conflict");
});

backend_tests!(synthea_bundle_loads_in_one_request, |s| {
    let text = include_str!("data/synthea/child-transaction.json");
    let b: Value = serde_json::from_str(text).unwrap();
    let n = b["entry"].as_array().unwrap().len();
    assert!(n > 400);
    let t0 = std::time::Instant::now();
    let r = s.request(
        "POST",
        "",
        &[
            ("Content-Type", "application/fhir+json"),
            ("Prefer", "return=minimal"),
        ],
        Some(text),
    );
    let ms = t0.elapsed().as_millis();
    r.expect(200);
    eprintln!(
        "synthea transaction of {n} entries on {:?}: {ms} ms",
        s.backend
    );
    let out = r.json();
    let e = out["entry"].as_array().unwrap();
    assert_eq!(e.len(), n);
    assert!(e.iter().all(|x| x["response"]["status"] == "201 Created"));
    // every urn:uuid reference now points at a stored resource
    let loc = e
        .iter()
        .find(|x| {
            x["response"]["location"]
                .as_str()
                .unwrap()
                .starts_with("Encounter/")
        })
        .unwrap()["response"]["location"]
        .as_str()
        .unwrap()
        .to_string();
    let enc = s.get(loc.split("/_history").next().unwrap()).json();
    let subject = enc["subject"]["reference"].as_str().unwrap();
    assert!(subject.starts_with("Patient/"), "{subject}");
    s.get(subject).expect(200);
    assert!(!enc.to_string().contains("urn:uuid:"));
});

backend_tests!(careplan_closed_in_transaction_cancels_tasks, |s| {
    let (pid, open, _, _) = plan_with_tasks(s);
    let mut plan = s.get(&format!("CarePlan/{pid}")).json();
    plan["status"] = json!("completed");
    let b = txn(vec![
        json!({"resource": plan, "request": {"method": "PUT", "url": format!("CarePlan/{pid}")}}),
    ]);
    let r = s.post("", &b);
    r.expect(200);
    let e = &r.json()["entry"][0];
    assert_eq!(e["response"]["status"], "200 OK");
    let d = e["response"]["outcome"]["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(d.contains("cancelled 3"), "{d}");
    for id in &open {
        assert_eq!(s.get(&format!("Task/{id}")).json()["status"], "cancelled");
    }
    // a failing later entry rolls the cascade back too
    let (pid2, open2, _, _) = plan_with_tasks(s);
    let mut plan2 = s.get(&format!("CarePlan/{pid2}")).json();
    plan2["status"] = json!("revoked");
    let b = txn(vec![
        json!({"resource": plan2, "request": {"method": "PUT", "url": format!("CarePlan/{pid2}")}}),
        json!({"resource": {"resourceType": "Task", "id": open2[0], "status": "requested", "intent": "plan"},
               "request": {"method": "PUT", "url": format!("Task/{}", open2[0])}}),
    ]);
    s.post("", &b).expect_outcome(409, "business-rule");
    for id in &open2 {
        assert_eq!(
            s.get(&format!("Task/{id}")).json()["meta"]["versionId"],
            "1"
        );
    }
    assert_eq!(
        s.get(&format!("CarePlan/{pid2}")).json()["status"],
        "active"
    );
});

backend_tests!(json_merge_patch_interaction, |s| {
    let p = s.create(
        json!({"resourceType": "Patient", "name": [{"family": "A", "given": ["X"]}],
        "active": true, "gender": "female", "telecom": [{"system": "phone", "value": "1"}]}),
    );
    let id = p["id"].as_str().unwrap();
    let path = format!("Patient/{id}");
    let merge = |doc: &str, extra: &[(&str, &str)]| {
        let mut h = vec![("Content-Type", "application/merge-patch+json")];
        h.extend_from_slice(extra);
        s.request("PATCH", &path, &h, Some(doc))
    };
    // null removes an element, arrays are replaced whole, objects merge.
    let r = merge(
        r#"{"gender": null, "name": [{"family": "B"}], "active": false}"#,
        &[("If-Match", "W/\"1\"")],
    );
    r.expect(200);
    let b = r.json();
    assert!(b.get("gender").is_none(), "{b}");
    assert_eq!(b["name"], json!([{"family": "B"}]));
    assert_eq!(b["active"], false);
    assert_eq!(b["telecom"][0]["value"], "1", "untouched elements stay");
    assert_eq!(b["meta"]["versionId"], "2");
    // A merge that breaks the resource is refused like any update.
    merge(r#"{"gender": "not-a-gender"}"#, &[]).expect(422);
    merge(r#"{"resourceType": "Task"}"#, &[]).expect(400);
    merge(r#"{"active": "#, &[]).expect(400);
    merge(r#"{}"#, &[("If-Match", "W/\"1\"")]).expect(412);
    assert_eq!(s.get(&path).json()["meta"]["versionId"], "2");
});
