//! The server behind PgBouncer in transaction-pooling mode (`.ci/pgbouncer` starts one on port
//! 6432; `ICM_TEST_PGBOUNCER_PORT` names another), with `ICM_PG_STATEMENT_CACHE=off`:
//! concurrent creates, conditional updates, searches and transactions all succeed, although
//! consecutive statements of one server connection land on different PostgreSQL sessions.
mod common;
use common::*;
use diesel::prelude::*;

fn bouncer_port() -> String {
    std::env::var("ICM_TEST_PGBOUNCER_PORT").unwrap_or_else(|_| "6432".into())
}

fn bouncer_reachable() -> bool {
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", bouncer_port());
    match PgConnection::establish(&url) {
        Ok(_) => true,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("CI=true but no PgBouncer at {url} ({e}): run .ci/pgbouncer");
            }
            eprintln!("\n!!!!! no PgBouncer at {url} ({e}): PgBouncer test SKIPPED (run .ci/pgbouncer) !!!!!\n");
            false
        }
    }
}

#[test]
fn transaction_pooling_with_the_statement_cache_off() {
    if !bouncer_reachable() {
        return;
    }
    let Some(s) = start_with(Backend::Postgres, |c| {
        let db = c.database_url.rsplit('/').next().unwrap().to_string();
        c.database_url = format!("postgres://postgres@127.0.0.1:{}/{db}", bouncer_port());
        c.pg_statement_cache = "off".into();
        c.pool_size = 8;
    }) else {
        return;
    };
    let statuses = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (s, statuses) = (&s, &statuses);
            scope.spawn(move || {
                for i in 0..25 {
                    let id = format!("b{t}-{i}");
                    let mut got = vec![
                        s.put(
                            &format!("Patient/{id}"),
                            &json!({"resourceType": "Patient", "id": id, "name": [{"family": format!("Bouncer{t}")}]}),
                        )
                        .status,
                        s.put(
                            &format!("Patient/{id}"),
                            &json!({"resourceType": "Patient", "id": id, "name": [{"family": format!("Bouncer{t}")}], "gender": "other"}),
                        )
                        .status,
                        s.get(&format!("Patient?family=Bouncer{t}&_total=accurate")).status,
                        s.post(
                            "",
                            &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                                {"fullUrl": "urn:uuid:0b6c2a52-0000-4000-8000-000000000001",
                                 "resource": {"resourceType": "Task", "status": "requested", "intent": "order",
                                              "for": {"reference": format!("Patient/{id}")}},
                                 "request": {"method": "POST", "url": "Task"}}]}),
                        )
                        .status,
                    ];
                    statuses.lock().unwrap().append(&mut got);
                }
            });
        }
    });
    let statuses = statuses.into_inner().unwrap();
    let failed: Vec<&u16> = statuses.iter().filter(|c| **c >= 300).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        statuses.len()
    );
    let b = s.get("Patient?family=Bouncer&_summary=count").json();
    assert_eq!(b["total"], 200);
    let t = s.get("Task?_summary=count").json();
    assert_eq!(t["total"], 200);
}
