//! Security: authentication, SMART scopes, patient and care-team boundaries, audit trail —
//! a matrix of token kinds × interactions on both backends.
mod common;
use common::auth::*;
use common::*;
use jsonwebtoken::Algorithm;

/// Kinds of caller in the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    NoToken,
    Expired,
    BadSignature,
    AlgNone,
    WrongAud,
    PatientA,
    PatientB,
    PractOnATeam,
    PractNoTeam,
    Admin,
    System,
}

const ALL: [Who; 11] = [
    Who::NoToken,
    Who::Expired,
    Who::BadSignature,
    Who::AlgNone,
    Who::WrongAud,
    Who::PatientA,
    Who::PatientB,
    Who::PractOnATeam,
    Who::PractNoTeam,
    Who::Admin,
    Who::System,
];

impl Who {
    fn bounded(self) -> bool {
        matches!(
            self,
            Who::PatientA | Who::PatientB | Who::PractOnATeam | Who::PractNoTeam
        )
    }
    fn unauthenticated(self) -> bool {
        matches!(
            self,
            Who::NoToken | Who::Expired | Who::BadSignature | Who::AlgNone | Who::WrongAud
        )
    }
}

/// Two patients with data, a care team for A, and the ids of everything.
struct World {
    a: String,
    b: String,
    p1: String,
    p2: String,
    obs_a: String,
    obs_b: String,
    task_a: String,
    task_b: String,
    system: String,
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
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
    let b = mk(json!({"resourceType": "Patient", "name": [{"family": "Bravo"}]}));
    let p1 = mk(json!({"resourceType": "Practitioner", "name": [{"family": "OnTeam"}]}));
    let p2 = mk(json!({"resourceType": "Practitioner", "name": [{"family": "NoTeam"}]}));
    mk(
        json!({"resourceType": "CareTeam", "status": "active", "subject": {"reference": format!("Patient/{a}")},
        "participant": [{"member": {"reference": format!("Practitioner/{p1}")}}]}),
    );
    // An inactive team does not count.
    mk(
        json!({"resourceType": "CareTeam", "status": "inactive", "subject": {"reference": format!("Patient/{b}")},
        "participant": [{"member": {"reference": format!("Practitioner/{p2}")}}]}),
    );
    let obs = |p: &str| json!({"resourceType": "Observation", "status": "final", "code": {"text": "weight"}, "subject": {"reference": format!("Patient/{p}")}});
    let task = |p: &str| json!({"resourceType": "Task", "status": "ready", "intent": "order", "for": {"reference": format!("Patient/{p}")}});
    let obs_a = mk(obs(&a));
    let obs_b = mk(obs(&b));
    let task_a = mk(task(&a));
    let task_b = mk(task(&b));
    World {
        a,
        b,
        p1,
        p2,
        obs_a,
        obs_b,
        task_a,
        task_b,
        system,
    }
}

fn token(w: &World, who: Who) -> Option<String> {
    let good = |sub: &str, scope: &str, extra: Value| Some(mint(&claims(sub, scope, extra)));
    match who {
        Who::NoToken => None,
        Who::Expired => Some(mint(&claims(
            "x",
            "system/*.cruds",
            json!({"exp": now() - 3600}),
        ))),
        Who::BadSignature => Some(mint_hs(
            &claims("x", "system/*.cruds", json!({})),
            b"another-secret-another-secret-another-secret",
        )),
        Who::AlgNone => Some(alg_none(&claims("x", "system/*.cruds", json!({})))),
        Who::WrongAud => Some(mint(&claims(
            "x",
            "system/*.cruds",
            json!({"aud": "someone-else"}),
        ))),
        Who::PatientA => good("pa", "patient/*.cruds", json!({"patient": w.a})),
        Who::PatientB => good("pb", "patient/*.cruds", json!({"patient": w.b})),
        Who::PractOnATeam => good(
            "doc1",
            "user/*.cruds",
            json!({"fhirUser": format!("Practitioner/{}", w.p1)}),
        ),
        Who::PractNoTeam => good(
            "doc2",
            "user/*.cruds",
            json!({"fhirUser": format!("Practitioner/{}", w.p2)}),
        ),
        Who::Admin => good("root", "user/*.cruds", json!({"role": "admin"})),
        Who::System => Some(w.system.clone()),
    }
}

/// Which patients' data a caller may see.
fn sees(who: Who) -> (bool, bool) {
    match who {
        Who::PatientA | Who::PractOnATeam => (true, false),
        Who::PatientB => (false, true),
        Who::PractNoTeam => (false, false),
        Who::Admin | Who::System => (true, true),
        _ => (false, false),
    }
}

/// Assert that no body mentions an id of a patient (or their data) the caller may not see.
#[track_caller]
fn no_foreign_data(w: &World, who: Who, r: &Resp) {
    let (sa, sb) = sees(who);
    // An error may echo the id the client itself put in the URL; nothing else.
    let mut body = r.body.clone();
    if r.status >= 400 {
        for id in [&w.a, &w.b, &w.obs_a, &w.obs_b, &w.task_a, &w.task_b] {
            body = body.replace(&format!("/{id} is not known"), " is not known");
        }
    }
    // Bundle links echo the client's own query.
    if let Ok(mut v) = serde_json::from_str::<Value>(&body) {
        if v["resourceType"] == "Bundle" {
            v.as_object_mut().unwrap().remove("link");
            body = v.to_string();
        }
    }
    let r = &Resp { body, ..r.clone() };
    if !sa {
        for id in [&w.a, &w.obs_a, &w.task_a] {
            assert!(
                !r.body.contains(id.as_str()),
                "{who:?} got data of A: {}",
                r.body
            );
        }
    }
    if !sb {
        for id in [&w.b, &w.obs_b, &w.task_b] {
            assert!(
                !r.body.contains(id.as_str()),
                "{who:?} got data of B: {}",
                r.body
            );
        }
    }
}

#[track_caller]
fn check(w: &World, who: Who, r: &Resp, expected: u16) {
    assert_eq!(r.status, expected, "{who:?}: body {}", r.body);
    if expected == 401 {
        assert!(
            r.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer")),
            "{who:?}: 401 without WWW-Authenticate"
        );
        assert_eq!(r.json()["resourceType"], "OperationOutcome");
    }
    no_foreign_data(w, who, r);
}

secure_tests!(matrix_reads, |s| {
    let w = world(s);
    for who in ALL {
        let t = token(&w, who);
        let t = t.as_deref();
        let (sa, sb) = sees(who);
        let ok = |see: bool| {
            if who.unauthenticated() {
                401
            } else if see {
                200
            } else {
                404
            }
        };
        for (path, see) in [
            (format!("Patient/{}", w.a), sa),
            (format!("Patient/{}", w.b), sb),
            (format!("Observation/{}", w.obs_a), sa),
            (format!("Observation/{}", w.obs_b), sb),
            (format!("Task/{}/_history/1", w.task_a), sa),
            (format!("Task/{}/_history/1", w.task_b), sb),
            (format!("Task/{}/_history", w.task_a), sa),
            (format!("Observation/{}/_history", w.obs_b), sb),
        ] {
            let r = s.as_token(t, "GET", &path, None);
            check(&w, who, &r, ok(see));
        }
        // Practitioners are not patient data: any authenticated reader sees them.
        let r = s.as_token(t, "GET", &format!("Practitioner/{}", w.p1), None);
        check(&w, who, &r, if who.unauthenticated() { 401 } else { 200 });
        // Type and system history are filtered, never refused for readers.
        for path in [
            "Observation/_history",
            "Task/_history",
            "Patient/_history",
            "_history",
        ] {
            let r = s.as_token(t, "GET", path, None);
            check(&w, who, &r, if who.unauthenticated() { 401 } else { 200 });
            if !who.unauthenticated() && path == "Observation/_history" {
                assert_eq!(r.body.contains(&w.obs_a), sa, "{who:?} {path}");
                assert_eq!(r.body.contains(&w.obs_b), sb, "{who:?} {path}");
            }
        }
        // A conditional read must not reveal existence through 304.
        let r = s.request(
            "GET",
            &format!("Observation/{}", w.obs_b),
            &[
                ("If-None-Match", "W/\"1\""),
                ("Authorization", &format!("Bearer {}", t.unwrap_or(""))),
            ],
            None,
        );
        // Callers bound to patients get the full 200 (conditional headers are ignored for them).
        let expected = if who.unauthenticated() {
            401
        } else if !sb {
            404
        } else if who.bounded() {
            200
        } else {
            304
        };
        check(&w, who, &r, expected);
    }
});

secure_tests!(matrix_search_tricks, |s| {
    let w = world(s);
    let (a, b) = (&w.a, &w.b);
    let queries = [
        "Observation".to_string(),
        format!("Observation?subject=Patient/{b}"),
        format!("Observation?patient={a}"),
        "Observation?_include=Observation:subject".to_string(),
        "Patient?_revinclude=Observation:subject".to_string(),
        "Patient?_revinclude=Task:patient&_include=Patient:general-practitioner".to_string(),
        "Observation?subject:Patient.family=Bravo".to_string(),
        "Observation?subject:Patient.family=Alpha".to_string(),
        "Patient?_has:Observation:subject:status=final".to_string(),
        "Task?_include=Task:patient&_include:iterate=Patient:link".to_string(),
        "CareTeam?_include=CareTeam:subject&_include=CareTeam:participant".to_string(),
        "Practitioner?_revinclude=CareTeam:participant".to_string(),
        "Task?_total=accurate".to_string(),
    ];
    for who in ALL {
        let t = token(&w, who);
        let (sa, sb) = sees(who);
        for q in &queries {
            let r = s.as_token(t.as_deref(), "GET", q, None);
            check(&w, who, &r, if who.unauthenticated() { 401 } else { 200 });
        }
        // POST _search is the same search.
        let auth = t
            .as_ref()
            .map(|t| format!("Bearer {t}"))
            .unwrap_or_default();
        let r = s.request(
            "POST",
            "Observation/_search",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Authorization", &auth),
            ],
            Some(&format!("subject=Patient/{b}")),
        );
        check(&w, who, &r, if who.unauthenticated() { 401 } else { 200 });
        if !who.unauthenticated() {
            // What may be seen is found.
            let r = s.as_token(t.as_deref(), "GET", "Observation", None);
            assert_eq!(r.body.contains(&w.obs_a), sa, "{who:?}: {}", r.body);
            assert_eq!(r.body.contains(&w.obs_b), sb, "{who:?}: {}", r.body);
            // The boundary is in the search itself: totals count only what may be seen.
            let r = s.as_token(t.as_deref(), "GET", "Task?_total=accurate", None);
            let v = r.json();
            let n = v["entry"].as_array().map_or(0, |e| e.len());
            assert_eq!(v["total"], json!(n), "{who:?}: {}", r.body);
            assert_eq!(n, sa as usize + sb as usize, "{who:?}: {}", r.body);
            // AuditEvent search is for admins only.
            let r = s.as_token(
                t.as_deref(),
                "GET",
                &format!("AuditEvent?patient={a}"),
                None,
            );
            let admin = matches!(who, Who::Admin | Who::System);
            check(&w, who, &r, if admin { 200 } else { 403 });
        }
    }
});

secure_tests!(matrix_writes, |s| {
    let w = world(s);
    for who in ALL {
        let t = token(&w, who);
        let t = t.as_deref();
        let (sa, sb) = sees(who);
        let unauth = who.unauthenticated();
        // create
        for (p, see) in [(&w.a, sa), (&w.b, sb)] {
            let body = json!({"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "walk"}, "subject": {"reference": format!("Patient/{p}")}});
            let r = s.as_token(t, "POST", "Goal", Some(&body));
            check(
                &w,
                who,
                &r,
                if unauth {
                    401
                } else if see {
                    201
                } else {
                    403
                },
            );
        }
        // update in place
        for (id, p, see) in [(&w.obs_a, &w.a, sa), (&w.obs_b, &w.b, sb)] {
            let body = json!({"resourceType": "Observation", "id": id, "status": "amended", "code": {"text": "weight"}, "subject": {"reference": format!("Patient/{p}")}});
            let r = s.as_token(t, "PUT", &format!("Observation/{id}"), Some(&body));
            // Someone else's resource is "not known", whatever the body says.
            check(
                &w,
                who,
                &r,
                if unauth {
                    401
                } else if see {
                    200
                } else {
                    404
                },
            );
        }
        // moving A's task to B
        if who == Who::PatientA || who == Who::PractOnATeam {
            let body = json!({"resourceType": "Task", "id": w.task_a, "status": "ready", "intent": "order", "for": {"reference": format!("Patient/{}", w.b)}});
            let r = s.as_token(t, "PUT", &format!("Task/{}", w.task_a), Some(&body));
            check(&w, who, &r, 403);
        }
        // updating B's task with content claiming A
        if who == Who::PatientA || who == Who::PractOnATeam {
            let body = json!({"resourceType": "Task", "id": w.task_b, "status": "ready", "intent": "order", "for": {"reference": format!("Patient/{}", w.a)}});
            let r = s.as_token(t, "PUT", &format!("Task/{}", w.task_b), Some(&body));
            check(&w, who, &r, 404);
        }
        // delete (fresh resources per caller)
        for (p, see) in [(&w.a, sa), (&w.b, sb)] {
            let r = s.as_token(Some(&w.system), "POST", "Task", Some(&json!({"resourceType": "Task", "status": "ready", "intent": "order", "for": {"reference": format!("Patient/{p}")}})));
            let id = id_of(&r.json());
            let r = s.as_token(t, "DELETE", &format!("Task/{id}"), None);
            assert_eq!(
                r.status,
                if unauth {
                    401
                } else if see {
                    204
                } else {
                    404
                },
                "{who:?} delete: {}",
                r.body
            );
            // A deleted resource of someone else: 404, not 410.
            if !unauth {
                s.as_token(Some(&w.system), "DELETE", &format!("Task/{id}"), None);
                let r = s.as_token(t, "GET", &format!("Task/{id}"), None);
                // Callers bound to patients get 404 for any deleted resource (no content to decide on).
                let expected = if see && !who.bounded() { 410 } else { 404 };
                assert_eq!(r.status, expected, "{who:?} read deleted: {}", r.body);
            }
        }
    }
    // B's data was never changed by A's callers.
    let r = s.as_token(Some(&w.system), "GET", &format!("Task/{}", w.task_b), None);
    assert_eq!(r.json()["for"]["reference"], format!("Patient/{}", w.b));
});

secure_tests!(scopes_per_type_and_interaction, |s| {
    let w = world(s);
    let t = |scope: &str| mint(&claims("u", &scope.replace("user/", "system/"), json!({})));
    let read_only = t("user/Observation.rs");
    s.as_token(
        Some(&read_only),
        "GET",
        &format!("Observation/{}", w.obs_a),
        None,
    )
    .expect(200);
    s.as_token(Some(&read_only), "GET", &format!("Task/{}", w.task_a), None)
        .expect_outcome(403, "forbidden");
    let body = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
    s.as_token(Some(&read_only), "POST", "Observation", Some(&body))
        .expect_outcome(403, "forbidden");
    s.as_token(
        Some(&read_only),
        "DELETE",
        &format!("Observation/{}", w.obs_a),
        None,
    )
    .expect_outcome(403, "forbidden");
    // v1 syntax
    let v1 = t("user/Observation.write");
    s.as_token(Some(&v1), "POST", "Observation", Some(&body))
        .expect(201);
    s.as_token(Some(&v1), "GET", &format!("Observation/{}", w.obs_a), None)
        .expect_outcome(403, "forbidden");
    // create only
    let c = t("user/Observation.c");
    s.as_token(Some(&c), "POST", "Observation", Some(&body))
        .expect(201);
    let mut upd = body.clone();
    upd["id"] = json!(w.obs_a);
    s.as_token(
        Some(&c),
        "PUT",
        &format!("Observation/{}", w.obs_a),
        Some(&upd),
    )
    .expect_outcome(403, "forbidden");
    // No resource scope at all.
    let none = t("openid fhirUser");
    s.as_token(Some(&none), "GET", "_history", None)
        .expect_outcome(403, "forbidden");
    // History across types shows only the types the scopes grant.
    let r = s.as_token(Some(&read_only), "GET", "_history", None);
    r.expect(200);
    assert!(
        r.body.contains(&w.obs_a) && !r.body.contains(&w.task_a),
        "{}",
        r.body
    );
    // Batch/transaction entries are checked one by one.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": format!("Observation/{}", w.obs_a)}},
        {"request": {"method": "DELETE", "url": format!("Observation/{}", w.obs_a)}}]});
    let r = s.as_token(Some(&read_only), "POST", "", Some(&bundle));
    let oo = r.expect_outcome(403, "forbidden");
    assert!(oo.to_string().contains("entry 1"), "{oo}");
});

secure_tests!(public_endpoints_and_401, |s| {
    s.get("metadata").expect(200);
    let r = s.get(".well-known/smart-configuration");
    r.expect(200);
    let v = r.json();
    assert!(v["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "permission-v2"));
    let r = s.get("Patient/x");
    r.expect_outcome(401, "login");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    s.request(
        "GET",
        "Patient/x",
        &[("Authorization", "Basic dXNlcjpwYXNz")],
        None,
    )
    .expect(401);
    s.request(
        "GET",
        "Patient/x",
        &[("Authorization", "Bearer not.a.token")],
        None,
    )
    .expect(401);
    // Not yet valid.
    let nbf = mint(&claims("x", "system/*.*", json!({"nbf": now() + 3600})));
    s.as_token(Some(&nbf), "GET", "Patient/x", None).expect(401);
    // Missing exp.
    let mut c = claims("x", "system/*.*", json!({}));
    c.as_object_mut().unwrap().remove("exp");
    s.as_token(Some(&mint(&c)), "GET", "Patient/x", None)
        .expect(401);
    // Security headers everywhere.
    let r = s.get("Patient/x");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(
        s.get("/healthz").header("x-content-type-options"),
        Some("nosniff")
    );
    // No CORS unless configured.
    let r = s.request(
        "GET",
        "metadata",
        &[("Origin", "https://evil.example")],
        None,
    );
    assert!(r.header("access-control-allow-origin").is_none());
});

fn audit_events(s: &TestServer, admin: &str) -> Vec<Value> {
    let r = s.as_token(Some(admin), "GET", "AuditEvent/_history?_count=1000", None);
    r.expect(200);
    r.json()["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.get("resource").cloned())
        .collect()
}

secure_tests!(audit_trail, |s| {
    let w = world(s);
    let admin = token(&w, Who::Admin).unwrap();
    let pa = token(&w, Who::PatientA).unwrap();
    // A write carries its AuditEvent in the same transaction: visible at once.
    let body = json!({"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "walk"}, "subject": {"reference": format!("Patient/{}", w.a)}});
    let goal = id_of(&s.as_token(Some(&pa), "POST", "Goal", Some(&body)).json());
    let evs = audit_events(s, &admin);
    let created = evs
        .iter()
        .find(|e| e["entity"][0]["what"]["reference"] == format!("Goal/{goal}/_history/1"))
        .expect("create audited in the same transaction");
    assert_eq!(created["action"], "C");
    assert_eq!(created["outcome"], "0");
    assert_eq!(created["agent"][0]["altId"], "pa");
    assert_eq!(created["agent"][0]["network"]["address"], "127.0.0.1");
    assert!(created["entity"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["what"]["reference"] == format!("Patient/{}", w.a)));
    // Reads and refusals are audited too (asynchronously).
    s.as_token(Some(&pa), "GET", &format!("Observation/{}", w.obs_a), None)
        .expect(200);
    s.as_token(Some(&pa), "GET", &format!("Observation/{}", w.obs_b), None)
        .expect(404);
    s.as_token(None, "GET", &format!("Observation/{}", w.obs_b), None)
        .expect(401);
    let mut found = (false, false, false);
    for _ in 0..50 {
        let evs = audit_events(s, &admin);
        let has = |what: &str, outcome: &str, sub: Option<&str>| {
            evs.iter().any(|e| {
                e["entity"][0]["what"]["reference"] == what
                    && e["outcome"] == outcome
                    && sub.is_none_or(|x| e["agent"][0]["altId"] == x)
            })
        };
        found = (
            has(&format!("Observation/{}", w.obs_a), "0", Some("pa")),
            has(&format!("Observation/{}", w.obs_b), "4", Some("pa")),
            has(&format!("Observation/{}", w.obs_b), "4", None),
        );
        if found == (true, true, true) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(found, (true, true, true));
    let read = audit_events(s, &admin)
        .into_iter()
        .find(|e| e["entity"][0]["what"]["reference"] == format!("Observation/{}", w.obs_a))
        .unwrap();
    assert!(
        read["entity"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["what"]["reference"] == format!("Patient/{}", w.a)),
        "{read}"
    );
    // Searchable by patient, agent and date.
    let r = s.as_token(
        Some(&admin),
        "GET",
        &format!(
            "AuditEvent?patient={}&altid=pa&date=ge2020-01-01&_count=500",
            w.a
        ),
        None,
    );
    r.expect(200);
    let found: Vec<Value> = r.json()["entry"].as_array().cloned().unwrap_or_default();
    assert!(found.len() >= 2, "{}", r.body);
    assert!(found
        .iter()
        .all(|e| e["resource"]["agent"][0]["altId"] == "pa"));
    let doc1 = format!("Practitioner/{}", w.p1);
    let t1 = token(&w, Who::PractOnATeam).unwrap();
    s.as_token(Some(&t1), "GET", &format!("Patient/{}", w.a), None)
        .expect(200);
    let mut by_agent = 0;
    for _ in 0..50 {
        let r = s.as_token(
            Some(&admin),
            "GET",
            &format!("AuditEvent?agent={doc1}"),
            None,
        );
        by_agent = r.json()["entry"].as_array().map_or(0, |e| e.len());
        if by_agent > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        by_agent > 0,
        "AuditEvent?agent=Practitioner/… finds the practitioner's accesses"
    );
    // The trail is admin-only and can never be changed through the API.
    let id = id_of(&read);
    s.as_token(Some(&admin), "GET", &format!("AuditEvent/{id}"), None)
        .expect(200);
    s.as_token(Some(&pa), "GET", &format!("AuditEvent/{id}"), None)
        .expect_outcome(403, "forbidden");
    let doc = token(&w, Who::PractOnATeam).unwrap();
    s.as_token(Some(&doc), "GET", &format!("AuditEvent/{id}"), None)
        .expect_outcome(403, "forbidden");
    let r = s.as_token(Some(&doc), "GET", "_history", None);
    assert!(
        !r.body.contains("\"AuditEvent\""),
        "non-admins never see audit entries"
    );
    let mut changed = read.clone();
    changed["outcome"] = json!("0");
    s.as_token(
        Some(&admin),
        "PUT",
        &format!("AuditEvent/{id}"),
        Some(&changed),
    )
    .expect_outcome(403, "forbidden");
    s.as_token(Some(&w.system), "DELETE", &format!("AuditEvent/{id}"), None)
        .expect_outcome(403, "forbidden");
    s.as_token(Some(&w.system), "POST", "AuditEvent", Some(&changed))
        .expect_outcome(403, "forbidden");
    s.as_token(Some(&admin), "GET", &format!("AuditEvent/{id}"), None)
        .expect(200);
});

secure_tests!(care_team_via_practitioner_role_and_switch, |s| {
    let w = world(s);
    let sys = Some(w.system.as_str());
    let p3 = id_of(
        &s.as_token(
            sys,
            "POST",
            "Practitioner",
            Some(&json!({"resourceType": "Practitioner"})),
        )
        .json(),
    );
    let role = id_of(&s.as_token(sys, "POST", "PractitionerRole", Some(&json!({"resourceType": "PractitionerRole", "practitioner": {"reference": format!("Practitioner/{p3}")}}))).json());
    let t = mint(&claims(
        "doc3",
        "user/*.cruds",
        json!({"fhirUser": format!("Practitioner/{p3}")}),
    ));
    s.as_token(Some(&t), "GET", &format!("Observation/{}", w.obs_b), None)
        .expect(404);
    s.as_token(sys, "POST", "CareTeam", Some(&json!({"resourceType": "CareTeam", "status": "active", "subject": {"reference": format!("Patient/{}", w.b)}, "participant": [{"member": {"reference": format!("PractitionerRole/{role}")}}]}))).expect(201);
    s.as_token(Some(&t), "GET", &format!("Observation/{}", w.obs_b), None)
        .expect(200);
    s.as_token(Some(&t), "GET", &format!("Observation/{}", w.obs_a), None)
        .expect(404);
    // A practitioner cannot put themselves on a team.
    let team = json!({"resourceType": "CareTeam", "status": "active", "subject": {"reference": format!("Patient/{}", w.a)}, "participant": [{"member": {"reference": format!("Practitioner/{p3}")}}]});
    s.as_token(Some(&t), "POST", "CareTeam", Some(&team))
        .expect_outcome(403, "forbidden");
    s.as_token(Some(&t), "GET", &format!("Observation/{}", w.obs_a), None)
        .expect(404);
    // A user/ token without a Practitioner fhirUser sees no patient data.
    let rp = mint(&claims(
        "rel",
        "user/*.cruds",
        json!({"fhirUser": "RelatedPerson/1"}),
    ));
    s.as_token(Some(&rp), "GET", &format!("Patient/{}", w.a), None)
        .expect(404);
    // A patient token without a patient claim sees nothing of any patient.
    let np = mint(&claims("np", "patient/*.rs", json!({})));
    s.as_token(Some(&np), "GET", &format!("Patient/{}", w.a), None)
        .expect(404);
});

#[test]
fn care_team_rule_can_be_switched_off() {
    let s = start_secure_with(Backend::Sqlite, |c| c.care_team_access = "off".into()).unwrap();
    let w = world(&s);
    let t = token(&w, Who::PractNoTeam).unwrap();
    s.as_token(Some(&t), "GET", &format!("Observation/{}", w.obs_b), None)
        .expect(200);
    // patient/ scopes are still bound to their patient.
    let pa = token(&w, Who::PatientA).unwrap();
    s.as_token(Some(&pa), "GET", &format!("Observation/{}", w.obs_b), None)
        .expect(404);
}

#[test]
fn cors_only_for_configured_origins() {
    let s = start_secure_with(Backend::Sqlite, |c| {
        c.cors_origins = "https://app.example".into()
    })
    .unwrap();
    let r = s.request(
        "GET",
        "metadata",
        &[("Origin", "https://app.example")],
        None,
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let r = s.request(
        "GET",
        "metadata",
        &[("Origin", "https://evil.example")],
        None,
    );
    assert!(r.header("access-control-allow-origin").is_none());
    let r = s.request(
        "OPTIONS",
        "Patient",
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
        None,
    );
    assert!(r.status < 300, "preflight {}", r.status);
    assert!(r
        .header("access-control-allow-headers")
        .unwrap_or("")
        .contains("authorization"));
}

fn jwks_server() -> TestServer {
    start_secure_with(Backend::Sqlite, |c| {
        c.jwt_secret = None;
        c.jwks_file = Some(format!(
            "{}/tests/data/keys/jwks.json",
            env!("CARGO_MANIFEST_DIR")
        ));
        c.jwt_issuer = Some("https://idp.example".into());
    })
    .unwrap()
}

#[test]
fn jwks_keys_by_kid() {
    let s = jwks_server();
    let c = claims(
        "svc",
        "system/*.cruds",
        json!({"iss": "https://idp.example"}),
    );
    let rs = mint_pem(&c, Algorithm::RS256, Some("rsa1"), "rsa1.pem");
    s.as_token(Some(&rs), "GET", "Patient/none", None)
        .expect(404);
    let es = mint_pem(&c, Algorithm::ES256, Some("ec1"), "ec1.pem");
    s.as_token(Some(&es), "GET", "Patient/none", None)
        .expect(404);
    // Wrong kid, no kid, key of another kind, unknown signer.
    s.as_token(
        Some(&mint_pem(&c, Algorithm::RS256, Some("nope"), "rsa1.pem")),
        "GET",
        "Patient/none",
        None,
    )
    .expect(401);
    s.as_token(
        Some(&mint_pem(&c, Algorithm::RS256, None, "rsa1.pem")),
        "GET",
        "Patient/none",
        None,
    )
    .expect(401);
    s.as_token(
        Some(&mint_pem(&c, Algorithm::RS256, Some("ec1"), "rsa1.pem")),
        "GET",
        "Patient/none",
        None,
    )
    .expect(401);
    s.as_token(
        Some(&mint_pem(&c, Algorithm::RS256, Some("rsa1"), "rsa2.pem")),
        "GET",
        "Patient/none",
        None,
    )
    .expect(401);
    // Algorithm confusion: HS256 "signed" with the RSA public key as the secret.
    let pub_pem = std::fs::read(format!(
        "{}/tests/data/keys/rsa1.pub.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    s.as_token(Some(&mint_hs(&c, &pub_pem)), "GET", "Patient/none", None)
        .expect(401);
    // Wrong issuer.
    let bad_iss = claims(
        "svc",
        "system/*.cruds",
        json!({"iss": "https://evil.example"}),
    );
    s.as_token(
        Some(&mint_pem(
            &bad_iss,
            Algorithm::RS256,
            Some("rsa1"),
            "rsa1.pem",
        )),
        "GET",
        "Patient/none",
        None,
    )
    .expect(401);
}

#[test]
fn jwks_reload_rotates_keys() {
    use icm_fhir::config::Config;
    use icm_fhir::http::auth::jwt::Verifier;
    let dir = TempDir::new();
    let file = dir.0.join("jwks.json");
    let keys = format!("{}/tests/data/keys", env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(format!("{keys}/jwks.json"), &file).unwrap();
    let mut cfg = Config::for_database("sqlite://unused.db");
    cfg.jwks_file = Some(file.display().to_string());
    let v = Verifier::from_config(&cfg).unwrap();
    let c = claims("svc", "system/*.*", json!({}));
    let old = mint_pem(&c, Algorithm::RS256, Some("rsa1"), "rsa1.pem");
    let new = mint_pem(&c, Algorithm::RS256, Some("rsa2"), "rsa2.pem");
    assert!(v.verify(&old).is_ok());
    assert!(v.verify(&new).is_err());
    std::fs::copy(format!("{keys}/jwks-rotated.json"), &file).unwrap();
    assert_eq!(v.reload(), Ok(1));
    assert!(v.verify(&new).is_ok());
    assert!(v.verify(&old).is_err());
    // A broken file keeps the current keys.
    std::fs::write(&file, "not json").unwrap();
    assert!(v.reload().is_err());
    assert!(v.verify(&new).is_ok());
}

/// `icm-fhir token --key` signs RS256/ES256 tokens that a JWKS-configured server accepts.
#[test]
fn token_command_signs_with_a_private_key() {
    let keys = format!("{}/tests/data/keys", env!("CARGO_MANIFEST_DIR"));
    let mut cfg = icm_fhir::config::Config::for_database("sqlite://unused.db");
    cfg.jwks_file = Some(format!("{keys}/jwks.json"));
    cfg.jwt_audience = Some(TEST_AUDIENCE.into());
    let v = icm_fhir::http::auth::jwt::Verifier::from_config(&cfg).unwrap();
    for (pem, kid) in [("rsa1.pem", "rsa1"), ("ec1.pem", "ec1")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_icm-fhir"))
            .args([
                "token",
                "--sub",
                "svc",
                "--scope",
                "system/*.rs",
                "--key",
                &format!("{keys}/{pem}"),
                "--kid",
                kid,
            ])
            .env("ICM_JWKS_FILE", format!("{keys}/jwks.json"))
            .env("ICM_JWT_AUDIENCE", TEST_AUDIENCE)
            .env_remove("ICM_JWT_SECRET")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tok = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let p = v.verify(&tok).unwrap_or_else(|e| panic!("{pem}: {e}"));
        assert_eq!(p.sub, "svc");
    }
    // A key that is no key is a clear error.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_icm-fhir"))
        .args(["token", "--sub", "x", "--key", &format!("{keys}/jwks.json")])
        .env("ICM_JWKS_FILE", format!("{keys}/jwks.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key"));
}

#[test]
fn token_command_mints_working_tokens() {
    let dir = TempDir::new();
    let db = format!("sqlite://{}/icm.db", dir.0.display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_icm-fhir"))
        .args([
            "token",
            "--sub",
            "alice",
            "--fhir-user",
            "Practitioner/123",
            "--scope",
            "user/*.cruds",
            "--ttl",
            "1h",
            "--role",
            "admin",
        ])
        .env("DATABASE_URL", &db)
        .env_remove("ICM_JWT_SECRET")
        .env_remove("ICM_JWKS_FILE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tok = String::from_utf8(out.stdout).unwrap().trim().to_string();
    // The secret was generated next to the database, mode 0600, and verifies the token.
    let secret_file = dir.0.join("jwt-secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&secret_file)
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    assert!(!tok.contains(secret.trim()));
    let s = start_with(Backend::Sqlite, |c| {
        c.auth = "on".into();
        c.database_url = db.clone();
    })
    .unwrap();
    s.as_token(Some(&tok), "GET", "Patient/none", None)
        .expect(404);
    s.as_token(None, "GET", "Patient/none", None).expect(401);
}

#[test]
fn auth_off_refuses_public_bind() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_icm-fhir"))
        .args(["serve"])
        .env("ICM_AUTH", "off")
        .env("ICM_BIND", "0.0.0.0:0")
        .env("DATABASE_URL", "sqlite:///nonexistent-dir/never.db")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ICM_AUTH_OFF_ANY_INTERFACE"));
}

// The boundary also holds for the write paths that reach the store other than PUT/POST/DELETE:
// PATCH, transaction and batch entries, conditional create/update.
secure_tests!(boundary_on_patch_bundles_and_conditional_writes, |s| {
    let w = world(s);
    let pa = token(&w, Who::PatientA).unwrap();
    let auth = format!("Bearer {pa}");
    let patch_b = s.request(
        "PATCH",
        &format!("Task/{}", w.task_b),
        &[
            ("Content-Type", "application/json-patch+json"),
            ("Authorization", &auth),
        ],
        Some(r#"[{"op":"replace","path":"/status","value":"cancelled"}]"#),
    );
    assert_eq!(patch_b.status, 404, "PATCH of B's task: {}", patch_b.body);
    let patch_a = s.request(
        "PATCH",
        &format!("Task/{}", w.task_a),
        &[
            ("Content-Type", "application/json-patch+json"),
            ("Authorization", &auth),
        ],
        Some(&format!(
            r#"[{{"op":"replace","path":"/for/reference","value":"Patient/{}"}}]"#,
            w.b
        )),
    );
    assert_eq!(
        patch_a.status, 403,
        "PATCH moving A's task to B: {}",
        patch_a.body
    );
    // A transaction that writes for B fails as a whole; nothing of it is stored.
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b6f3a52-8d0b-4c55-9c1e-5a8f0c2d0001",
         "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "mine"}, "subject": {"reference": format!("Patient/{}", w.a)}},
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "theirs"}, "subject": {"reference": format!("Patient/{}", w.b)}},
         "request": {"method": "POST", "url": "Observation"}}
    ]});
    let r = s.as_token(Some(&pa), "POST", "", Some(&tx));
    assert_eq!(r.status, 403, "transaction writing for B: {}", r.body);
    let mine = s
        .as_token(Some(&w.system), "GET", "Observation?code:text=mine", None)
        .json();
    assert_eq!(
        mine["entry"].as_array().map_or(0, |e| e.len()),
        0,
        "rolled back"
    );
    // In a batch, only the entry for B is refused.
    let mut batch = tx.clone();
    batch["type"] = json!("batch");
    let r = s.as_token(Some(&pa), "POST", "", Some(&batch));
    r.expect(200);
    let statuses: Vec<String> = r.json()["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap().to_string())
        .collect();
    assert!(statuses[0].starts_with("201"), "{statuses:?}");
    assert!(statuses[1].starts_with("403"), "{statuses:?}");
    // Conditional create for B is refused too.
    let obs_b = json!({"resourceType": "Observation", "status": "final", "code": {"text": "cond"}, "subject": {"reference": format!("Patient/{}", w.b)}});
    let r = s.request(
        "POST",
        "Observation",
        &[
            ("Content-Type", "application/fhir+json"),
            ("Authorization", &auth),
            ("If-None-Exist", "code:text=cond"),
        ],
        Some(&obs_b.to_string()),
    );
    assert_eq!(r.status, 403, "conditional create for B: {}", r.body);
    // Nothing in any response body names B's task or observation.
    assert!(!patch_b.body.contains(&w.obs_b) && !r.body.contains(&w.obs_b));
});
