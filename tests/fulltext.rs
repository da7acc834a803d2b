//! Full-text search `_text` (the narrative) and `_content` (the whole resource) on both
//! backends: PostgreSQL tsvector (english) and SQLite FTS5 (porter), pinned to exact matches,
//! with the caller's access, paging, Bundle entries, writes, and databases that predate it.
mod common;
use common::auth::*;
use common::search::*;
use common::*;

fn div(x: &str) -> Value {
    json!({"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{x}</div>")})
}

/// Two patients; notes, a care plan and task descriptions a care manager writes.
fn notes(s: &TestServer) {
    put(s, json!({"resourceType": "Patient", "id": "p1"}));
    put(s, json!({"resourceType": "Patient", "id": "p2"}));
    put(
        s,
        json!({"resourceType": "Communication", "id": "n1", "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "text": div("<p>Patient was <b>walking</b> to the pharmacy &amp; back</p>"),
        "payload": [{"contentString": "Discussed heart failure symptoms"}],
        "note": [{"text": "Prefers morning calls"}]}),
    );
    put(
        s,
        json!({"resourceType": "Communication", "id": "n2", "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "payload": [{"contentString": "Heart rate normal; failure to attend the follow-up"}]}),
    );
    put(
        s,
        json!({"resourceType": "Communication", "id": "n3", "status": "completed",
        "subject": {"reference": "Patient/p2"},
        "payload": [{"contentString": "Medication reminders by phone"}]}),
    );
    put(
        s,
        json!({"resourceType": "CarePlan", "id": "cp1", "status": "active", "intent": "plan",
        "subject": {"reference": "Patient/p1"}, "description": "Diabetes self-management",
        "note": [{"text": "Walks 20 minutes daily; meets friends at the Café"}]}),
    );
    put(
        s,
        json!({"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order",
        "for": {"reference": "Patient/p1"},
        "description": "Call patient about the walker delivery"}),
    );
    put(
        s,
        json!({"resourceType": "Task", "id": "t2", "status": "requested", "intent": "order",
        "for": {"reference": "Patient/p2"},
        "description": "Review medications with the pharmacist"}),
    );
}

backend_tests!(text_and_content, |s| {
    notes(s);
    // _text: the narrative only, stemmed (walking = walk), tags and entities gone.
    check(s, "Communication?_text=walk", &["n1"]);
    check(s, "Communication?_text=WALKED%20pharmacy", &["n1"]);
    check(s, "Communication?_text=heart", &[]);
    check(s, "Communication?_text=amp", &[]);
    check(s, "Communication?_text=div", &[]);
    // _content: every string value, the narrative's text included.
    check(s, "Communication?_content=heart", &["n2", "n1"]);
    check(s, "Communication?_content=pharmacy", &["n1"]);
    check(s, "Communication?_content=morning", &["n1"]);
    check(s, "Communication?_content=completed", &["n2", "n3", "n1"]);
    // Words are AND'ed; a quoted phrase must appear in sequence.
    check(s, "Communication?_content=heart%20failure", &["n2", "n1"]);
    check(s, "Communication?_content=%22heart%20failure%22", &["n1"]);
    check(s, "Communication?_content=%22failure%20heart%22", &[]);
    check(s, "Communication?_content=heart%20reminders", &[]);
    // OR between terms; a comma is OR too (FHIR); AND binds tighter than OR.
    check(
        s,
        "Communication?_content=pharmacy%20OR%20attend",
        &["n2", "n1"],
    );
    check(s, "Communication?_content=pharmacy,attend", &["n2", "n1"]);
    check(
        s,
        "Communication?_content=heart%20symptoms%20or%20reminders",
        &["n3", "n1"],
    );
    // Accents are folded on both sides; stemming on both backends.
    check(s, "CarePlan?_content=cafe", &["cp1"]);
    check(s, "CarePlan?_content=caf%C3%A9%20walking", &["cp1"]);
    check(s, "CarePlan?_text=walking", &[]);
    // Care managers search task descriptions: "walker" is not "walk".
    check(s, "Task?_content=walker", &["t1"]);
    check(s, "Task?_content=walk", &[]);
    check(s, "Task?_content=medication", &["t2"]);
    check(s, "Task?_content=the&patient=Patient/p1", &{
        // A stop word: PostgreSQL's english configuration drops it (matches nothing), SQLite's
        // porter tokenizer keeps every word.
        if s.backend == Backend::Postgres {
            vec![]
        } else {
            vec!["t1"]
        }
    });
    check(s, "Task?_content=call&patient=Patient/p2", &[]);
    // Other parameters, other types.
    check(
        s,
        "Communication?_content=heart&subject=Patient/p1",
        &["n2", "n1"],
    );
    check(s, "Patient?_content=p2", &["p2"]);
    // POST _search takes them too.
    let r = s.request(
        "POST",
        "Communication/_search",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some("_content=%22heart+failure%22"),
    );
    r.expect(200);
    assert_eq!(r.json()["entry"][0]["resource"]["id"], "n1");
    // Chains and _has reach the text of the other resource.
    check(s, "Communication?subject:Patient._content=p2", &["n3"]);
    check(s, "Patient?_has:Task:patient:_content=walker", &["p1"]);

    // An update replaces the text; a delete removes it.
    put(
        s,
        json!({"resourceType": "Communication", "id": "n2", "status": "completed",
        "subject": {"reference": "Patient/p1"}, "text": div("Diet reviewed"),
        "payload": [{"contentString": "Blood pressure stable"}]}),
    );
    check(s, "Communication?_content=heart", &["n1"]);
    check(s, "Communication?_content=attend", &[]);
    check(s, "Communication?_content=pressure", &["n2"]);
    check(s, "Communication?_text=diet", &["n2"]);
    s.delete("Communication/n1").expect(204);
    check(s, "Communication?_content=pharmacy", &[]);
    check(s, "Communication?_text=walk", &[]);
    // Re-created after the delete: found again.
    put(
        s,
        json!({"resourceType": "Communication", "id": "n1", "status": "completed",
        "subject": {"reference": "Patient/p1"}, "text": div("Walked again")}),
    );
    check(s, "Communication?_text=walk", &["n1"]);
    check(s, "Communication?_content=pharmacy", &[]);
});

backend_tests!(malformed_queries_are_400, |s| {
    notes(s);
    for q in [
        "Communication?_content=",
        "Communication?_content=%20%20",
        "Communication?_content=%22unclosed",
        "Communication?_content=OR",
        "Communication?_content=walk%20OR",
        "Communication?_content=OR%20walk",
        "Communication?_content=a%20OR%20OR%20b",
        "Communication?_content=%22%22",
        "Communication?_content=!!",
        "Communication?_content=walk,",
        "Communication?_text:exact=walk",
        "Communication?_content:missing=true",
        "Task?_text=%22",
    ] {
        let v = s.get(q).expect_outcome(400, "invalid");
        let text = v.to_string();
        assert!(
            text.contains("_content") || text.contains("_text"),
            "{q}: {text}"
        );
    }
    let long = format!("Communication?_content={}", "a%20".repeat(40));
    s.get(&long).expect_outcome(400, "invalid");
    // What FTS5 or tsquery would read as syntax is searched as text, never an error.
    for q in [
        "Communication?_content=NEAR(heart%20failure)",
        "Communication?_content=heart%20AND%20failure",
        "Communication?_content=content_text:heart",
        "Communication?_content=heart*",
        "Communication?_content=-heart",
        "Communication?_content=%27%3B%20DROP%20TABLE%20resources%3B--",
        "Communication?_content=heart%26!failure%7Cx",
        "Communication?_content=%5Eheart",
    ] {
        s.get(q).expect(200);
    }
    check(s, "Communication?_content=-heart", &["n2", "n1"]);
    check(s, "Communication?_content=NEAR(heart%20failure)", &[]);
    // `_sort` by a full-text parameter is not a sort: reported, not applied.
    let b = s.get("Communication?_sort=_content").json();
    assert!(b
        .to_string()
        .contains("_sort: unknown parameter '_content'"));
    // Bundle, Binary and Parameters have no narrative: `_text` is unknown there (lenient).
    let r = s.request(
        "GET",
        "Bundle?_text=x",
        &[("Prefer", "handling=strict")],
        None,
    );
    r.expect_outcome(400, "invalid");
    s.get("Bundle?_content=x").expect(200);
});

backend_tests!(paging_totals_and_bundle_entries, |s| {
    notes(s);
    for i in 0..5 {
        put(
            s,
            json!({"resourceType": "Task", "id": format!("r{i}"), "status": "requested", "intent": "order",
            "for": {"reference": "Patient/p1"}, "description": format!("Reminder call number {i}")}),
        );
    }
    let b = s
        .get("Task?_content=reminders&_count=2&_total=accurate")
        .json();
    assert_eq!(b["total"], 5);
    assert_eq!(b["entry"].as_array().unwrap().len(), 2);
    let next_url = next_link(&b).expect("a next link");
    assert!(next_url.contains("_content=reminders"), "{next_url}");
    check(
        s,
        "Task?_content=reminders&_count=2",
        &["r0", "r1", "r2", "r3", "r4"],
    );
    check(
        s,
        "Task?_content=reminder%20OR%20walker&_count=4&_sort=-_id",
        &["r0", "r1", "r2", "r3", "r4", "t1"],
    );
    let b = s.get("Task?_content=reminders&_count=0").json();
    assert_eq!(b["total"], 5);
    assert!(b.get("entry").is_none());
    let b = s.get("Task?_content=reminders&_summary=count").json();
    assert_eq!(b["total"], 5);
    // A GET entry of a batch goes through the same search service.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Task?_content=walker"}},
        {"request": {"method": "GET", "url": "Communication?_text=walking&_total=accurate"}},
        {"request": {"method": "GET", "url": "Task?_content=%22unclosed"}}
    ]});
    let r = s.post("", &batch);
    r.expect(200);
    let v = r.json();
    let e = v["entry"].as_array().unwrap();
    assert!(e[0]["response"]["status"]
        .as_str()
        .unwrap()
        .starts_with("200"));
    assert_eq!(e[0]["resource"]["total"], 1);
    assert_eq!(e[0]["resource"]["entry"][0]["resource"]["id"], "t1");
    assert_eq!(e[1]["resource"]["total"], 1);
    assert_eq!(e[1]["resource"]["entry"][0]["resource"]["id"], "n1");
    assert!(e[2]["response"]["status"]
        .as_str()
        .unwrap()
        .starts_with("400"));
    // Conditional criteria resolve through it as well.
    let r = s.request("DELETE", "Task?_content=reminder%20number%203", &[], None);
    assert!(r.status == 200 || r.status == 204, "{}", r.body);
    check(s, "Task?_content=reminders", &["r0", "r1", "r2", "r4"]);
});

backend_tests!(listed_in_capabilities_and_openapi, |s| {
    let cs = s.get("metadata").json();
    let resources = cs["rest"][0]["resource"].as_array().unwrap();
    assert!(resources.len() > 100);
    for r in resources {
        let ty = r["type"].as_str().unwrap();
        let names: Vec<&str> = r["searchParam"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let content = names.contains(&"_content");
        let text = names.contains(&"_text");
        match ty {
            "AuditEvent" => assert!(!content && !text),
            "Bundle" | "Binary" | "Parameters" => assert!(content && !text, "{ty}"),
            _ => assert!(content && text, "{ty}"),
        }
    }
    let task = resources.iter().find(|r| r["type"] == "Task").unwrap();
    let p = task["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "_text")
        .unwrap();
    assert_eq!(p["type"], "string");
    assert_eq!(
        p["definition"],
        "http://hl7.org/fhir/SearchParameter/DomainResource-text"
    );
    let doc = s.get("/openapi.json").json();
    let params: Vec<String> = doc["paths"]["/fhir/Task"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect();
    assert!(params.contains(&"_text".to_string()), "{params:?}");
    assert!(params.contains(&"_content".to_string()));
});

// A patient's token finds its own notes by their text and never another patient's.
secure_tests!(patient_token_sees_only_its_notes, |s| {
    let system = mint(&claims("backend", "system/*.cruds", json!({})));
    let mk = |body: Value| {
        let ty = body["resourceType"].as_str().unwrap().to_string();
        let r = s.as_token(Some(&system), "POST", &ty, Some(&body));
        r.expect(201);
        r.json()["id"].as_str().unwrap().to_string()
    };
    let a = mk(json!({"resourceType": "Patient", "name": [{"family": "Alpha"}]}));
    let b = mk(json!({"resourceType": "Patient", "name": [{"family": "Bravo"}]}));
    let note = |p: &str, text: &str| {
        json!({"resourceType": "Communication", "status": "completed",
        "subject": {"reference": format!("Patient/{p}")}, "text": div(text),
        "payload": [{"contentString": text}]})
    };
    let na = mk(note(&a, "Insulin dose adjusted"));
    let nb = mk(note(&b, "Insulin pump training"));
    let ta = mk(
        json!({"resourceType": "Task", "status": "requested", "intent": "order",
        "for": {"reference": format!("Patient/{a}")}, "description": "Order insulin supplies"}),
    );
    let tb = mk(
        json!({"resourceType": "Task", "status": "requested", "intent": "order",
        "for": {"reference": format!("Patient/{b}")}, "description": "Order insulin pens"}),
    );
    let pa = mint(&claims(
        "pa",
        "patient/*.read",
        json!({"patient": a.clone()}),
    ));
    let found = |tok: &str, q: &str| -> (Vec<String>, Value) {
        let r = s.as_token(Some(tok), "GET", q, None);
        r.expect(200);
        let b = r.json();
        let mut v: Vec<String> = b["entry"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        (v, b["total"].clone())
    };
    let (all, _) = found(&system, "Communication?_content=insulin");
    let mut both = vec![na.clone(), nb.clone()];
    both.sort();
    assert_eq!(all, both);
    assert_eq!(
        found(&pa, "Communication?_content=insulin&_total=accurate"),
        (vec![na.clone()], json!(1))
    );
    assert_eq!(found(&pa, "Communication?_text=pump"), (vec![], json!(0)));
    assert_eq!(
        found(&pa, "Communication?_content=pump&_total=accurate"),
        (vec![], json!(0))
    );
    assert_eq!(
        found(&pa, "Task?_content=insulin&_total=accurate"),
        (vec![ta.clone()], json!(1))
    );
    assert_eq!(found(&pa, "Task?_content=pens").0, Vec::<String>::new());
    // Reached through _has: still only the caller's patient.
    assert_eq!(
        found(&pa, "Patient?_has:Task:patient:_content=insulin").0,
        vec![a.clone()]
    );
    assert_eq!(
        found(&pa, "Patient?_has:Task:patient:_content=pens").0,
        Vec::<String>::new()
    );
    let _ = tb;
});

/// A database made before the full-text migration: `resources` rows without full-text rows.
struct OldDb {
    url: String,
    backend: Backend,
    _dir: Option<TempDir>,
    pg_name: Option<String>,
}

impl Drop for OldDb {
    fn drop(&mut self) {
        if let Some(n) = &self.pg_name {
            use diesel::connection::SimpleConnection;
            use diesel::Connection;
            if let Ok(mut c) = diesel::PgConnection::establish(&pg_admin_url()) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{n}\" WITH (FORCE)"));
            }
        }
    }
}

const FULLTEXT_MIGRATION: &str = "2026-11-30-000002";

/// Apply every migration older than the full-text one, then store two resources the old way.
fn old_database(backend: Backend) -> Option<OldDb> {
    use diesel::connection::SimpleConnection;
    use diesel::migration::{MigrationConnection, MigrationSource};
    use diesel::Connection;
    use diesel_migrations::MigrationHarness;
    let older = |name: String| name.as_str() < FULLTEXT_MIGRATION;
    let rows = "INSERT INTO resources (res_type, res_id, version_id, last_updated, deleted, content) VALUES \
        ('Communication', 'old', 1, 1700000000000000, FALSE, \
         '{\"resourceType\":\"Communication\",\"id\":\"old\",\"status\":\"completed\",\"text\":{\"status\":\"generated\",\"div\":\"<div xmlns=\\\"http://www.w3.org/1999/xhtml\\\">Home visit</div>\"},\"payload\":[{\"contentString\":\"Walking with a cane\"}]}'), \
        ('Communication', 'gone', 2, 1700000000000000, TRUE, NULL)";
    let db = match backend {
        Backend::Sqlite => {
            let dir = TempDir::new();
            let path = format!("{}/old.db", dir.0.display());
            let mut c = diesel::SqliteConnection::establish(&path).unwrap();
            c.setup().unwrap();
            let ms = MigrationSource::<diesel::sqlite::Sqlite>::migrations(
                &icm_fhir::store::backend::SQLITE_MIGRATIONS,
            )
            .unwrap();
            for m in ms {
                if older(m.name().to_string()) {
                    c.run_migration(&*m).unwrap();
                }
            }
            c.batch_execute(rows).unwrap();
            OldDb {
                url: format!("sqlite://{path}"),
                backend,
                _dir: Some(dir),
                pg_name: None,
            }
        }
        Backend::Postgres => {
            let mut admin = diesel::PgConnection::establish(&pg_admin_url()).ok()?;
            let name = format!("icm_test_{}", uuid::Uuid::new_v4().simple());
            admin
                .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .unwrap();
            let base = pg_admin_url();
            let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
            let db = OldDb {
                url: url.clone(),
                backend,
                _dir: None,
                pg_name: Some(name),
            };
            let mut c = diesel::PgConnection::establish(&url).unwrap();
            c.setup().unwrap();
            let ms = MigrationSource::<diesel::pg::Pg>::migrations(
                &icm_fhir::store::backend::PG_MIGRATIONS,
            )
            .unwrap();
            for m in ms {
                if older(m.name().to_string()) {
                    c.run_migration(&*m).unwrap();
                }
            }
            c.batch_execute(rows).unwrap();
            db
        }
    };
    Some(db)
}

fn upgrade(backend: Backend) {
    let Some(old) = old_database(backend) else {
        eprintln!("PostgreSQL unreachable: upgrade test skipped");
        return;
    };
    assert_eq!(old.backend, backend);
    let url = old.url.clone();
    // Starting the server migrates and, the index rules having changed, reindexes the stored
    // resources: their full-text rows are filled.
    let s = start_with(backend, |c| c.database_url = url.clone()).unwrap();
    check(&s, "Communication?_content=walk", &["old"]);
    check(&s, "Communication?_text=home%20visit", &["old"]);
    check(&s, "Communication?_content=gone", &[]);
    let store = icm_fhir::store::Store::new(&url, 2, std::time::Duration::from_secs(5)).unwrap();
    let sql = |text: &str| {
        let mut conn = store.conn().unwrap();
        let mut q = icm_fhir::store::sql::Sql::new();
        q.push(text);
        icm_fhir::store::sql::execute(&mut conn, &q).unwrap();
    };
    // Done once: a restart does no work.
    assert_eq!(icm_fhir::store::index::ensure_current(&store).unwrap(), 0);
    // A database indexed before the full-text rows existed (index version 2) gets them at start.
    sql("DELETE FROM search_fulltext");
    sql("UPDATE index_meta SET value = '2' WHERE key = 'index_version'");
    check(&s, "Communication?_content=walk", &[]);
    assert_eq!(store.migrate().unwrap(), 0);
    check(&s, "Communication?_content=walk", &["old"]);
    // New writes are indexed by the write path; `icm-fhir reindex` rebuilds every row.
    put(
        &s,
        json!({"resourceType": "Communication", "id": "new", "status": "completed",
        "payload": [{"contentString": "Walked to the clinic"}]}),
    );
    check(&s, "Communication?_content=walk", &["new", "old"]);
    sql("DELETE FROM search_fulltext");
    check(&s, "Communication?_content=walk", &[]);
    assert_eq!(
        icm_fhir::store::index::reindex(&store, Some("Communication"), 1).unwrap(),
        3
    );
    check(&s, "Communication?_content=walk", &["new", "old"]);
    check(&s, "Communication?_text=home", &["old"]);
}

#[test]
fn upgrade_fills_fulltext_sqlite() {
    upgrade(Backend::Sqlite);
}

#[test]
fn upgrade_fills_fulltext_postgres() {
    upgrade(Backend::Postgres);
}

// `icm-fhir import` writes the full-text rows with the other index rows (bulk path).
backend_tests!(import_fills_fulltext, |s| {
    let dir = TempDir::new();
    let lines = [
        json!({"resourceType": "Task", "id": "imp1", "status": "requested", "intent": "order",
            "description": "Arrange transport to dialysis"}),
        json!({"resourceType": "Task", "id": "imp2", "status": "requested", "intent": "order",
            "text": div("Dialysis schedule <i>changed</i>")}),
    ];
    let text: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(dir.0.join("tasks.ndjson"), text.join("\n") + "\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_icm-fhir"))
        .args(["import", "--quiet"])
        .arg(&dir.0)
        .env("DATABASE_URL", &s.database_url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    check(s, "Task?_content=dialysis", &["imp1", "imp2"]);
    check(s, "Task?_text=dialysis", &["imp2"]);
    check(s, "Task?_content=transports", &["imp1"]);
});
