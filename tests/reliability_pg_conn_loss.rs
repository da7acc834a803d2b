//! Connection loss mid-transaction (issue 17). An `icm-fhir serve` process on a fresh PostgreSQL
//! database takes a 1,000-entry transaction Bundle; while it runs, the test finds the backend
//! serving it in `pg_stat_activity` (the one holding a transaction id on this database) and
//! ends it with `pg_terminate_backend`, at a different point of the write each round. The
//! transaction is all or nothing: 200 with all 1,000 entries stored, or a 503 OperationOutcome
//! (with Retry-After) and none stored — counted through search (`_total=accurate`) and in the
//! tables (current rows, history rows, search-index rows). The server keeps serving (the pool
//! drops the broken connection) and `icm-fhir verify` passes at the end (nothing half-written).
mod common;
use common::*;
use diesel::prelude::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_icm-fhir");
const ENTRIES: usize = 1000;
/// Patients per Bundle; the other entries are Observations referring to them by urn:uuid.
const PATIENTS: usize = 200;

use common::process::{free_port, wait_ready, Process as Server};

struct Db {
    admin: String,
    name: String,
    url: String,
}

impl Drop for Db {
    fn drop(&mut self) {
        use diesel::connection::SimpleConnection;
        if let Ok(mut c) = diesel::PgConnection::establish(&self.admin) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// (status, Retry-After present, body) of a request; transport errors fail the test.
fn send(method: &str, url: &str, body: Option<&Value>) -> (u16, bool, Value) {
    common::process::send(Duration::from_secs(300), method, url, body)
}

/// A transaction of `ENTRIES` entries, every one carrying the identifier system `urn:cut:{run}`.
fn bundle(run: usize) -> Value {
    let system = format!("urn:cut:{run}");
    let mut entries = Vec::with_capacity(ENTRIES);
    for p in 0..PATIENTS {
        entries.push(json!({
            "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            "resource": {"resourceType": "Patient",
                "identifier": [{"system": system, "value": format!("p{p}")}],
                "name": [{"family": format!("Cut{run}"), "given": [format!("P{p}")]}],
                "birthDate": "1960-04-12"},
            "request": {"method": "POST", "url": "Patient"}
        }));
    }
    for o in 0..ENTRIES - PATIENTS {
        let subject = entries[o % PATIENTS]["fullUrl"].clone();
        entries.push(json!({
            "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            "resource": {"resourceType": "Observation", "status": "final",
                "identifier": [{"system": system, "value": format!("o{o}")}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": subject},
                "effectiveDateTime": "2026-11-30T10:00:00Z",
                "valueQuantity": {"value": 60 + (o % 40), "unit": "/min",
                    "system": "http://unitsofmeasure.org", "code": "/min"}},
            "request": {"method": "POST", "url": "Observation"}
        }));
    }
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Activity {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pid: i32,
    #[diesel(sql_type = diesel::sql_types::Text)]
    query: String,
}

fn count(c: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).load::<N>(c).unwrap()[0].n
}

/// What the database holds of run `run`: (current rows, history rows, `identifier` index rows
/// — counted on their own, so rows left without a resource would count too).
fn stored(c: &mut PgConnection, run: usize) -> (i64, i64, i64) {
    let like = format!("'%\"urn:cut:{run}\"%'");
    (
        count(
            c,
            &format!("SELECT COUNT(*) AS n FROM resources WHERE content LIKE {like}"),
        ),
        count(
            c,
            &format!("SELECT COUNT(*) AS n FROM resource_history WHERE content LIKE {like}"),
        ),
        count(
            c,
            &format!("SELECT COUNT(*) AS n FROM search_token WHERE system = 'urn:cut:{run}'"),
        ),
    )
}

/// Entries of run `run` found by search, counted with `_total=accurate`.
fn found(base: &str, run: usize) -> i64 {
    let mut n = 0;
    for ty in ["Patient", "Observation"] {
        let (st, _, b) = send(
            "GET",
            &format!("{base}/{ty}?identifier=urn:cut:{run}|&_total=accurate&_summary=count"),
            None,
        );
        assert_eq!(st, 200, "{b}");
        n += b["total"].as_i64().unwrap();
    }
    n
}

/// Terminates the backend that holds a transaction id on `db` (the Bundle's write transaction),
/// `after` once it is first seen. Returns the query it was running when ended, or None when the
/// request finished first.
fn cut(
    admin: &str,
    db: &str,
    after: Duration,
    done: &std::sync::atomic::AtomicBool,
) -> Option<String> {
    use std::sync::atomic::Ordering;
    let mut c = PgConnection::establish(admin).unwrap();
    let find = format!(
        "SELECT pid, COALESCE(query, '') AS query FROM pg_stat_activity \
         WHERE datname = '{db}' AND backend_xid IS NOT NULL AND pid <> pg_backend_pid() \
         ORDER BY xact_start LIMIT 1"
    );
    let pid = loop {
        if done.load(Ordering::SeqCst) {
            return None;
        }
        if let Some(b) = diesel::sql_query(&find)
            .load::<Activity>(&mut c)
            .unwrap()
            .pop()
        {
            break b.pid;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    std::thread::sleep(after);
    let now: Vec<Activity> = diesel::sql_query(format!(
        "SELECT pid, COALESCE(query, '') AS query FROM pg_stat_activity \
         WHERE pid = {pid} AND backend_xid IS NOT NULL"
    ))
    .load(&mut c)
    .unwrap();
    let b = now.into_iter().next()?;
    let killed = count(
        &mut c,
        &format!("SELECT COUNT(*) AS n FROM (SELECT pg_terminate_backend({pid})) t"),
    );
    assert_eq!(killed, 1);
    Some(b.query.chars().take(60).collect())
}

#[test]
fn terminated_backend_mid_transaction_is_all_or_nothing() {
    let admin = pg_admin_url();
    if admin.contains("6432") {
        // Behind PgBouncer the server's backend is the pooler's, not this test's to find.
        return;
    }
    let Ok(mut c) = PgConnection::establish(&admin) else {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but PostgreSQL is unreachable"
        );
        eprintln!("PostgreSQL unreachable: the connection-loss test was SKIPPED");
        return;
    };
    let name = format!("icm_cut_{}", uuid::Uuid::new_v4().simple());
    {
        use diesel::connection::SimpleConnection;
        c.batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap();
    }
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let db = Db {
        admin: admin.clone(),
        name: name.clone(),
        url,
    };
    let dir = TempDir::new();
    let port = free_port();
    let log = std::fs::File::create(dir.0.join("server.log")).unwrap();
    let child = Command::new(BIN)
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("ICM_BIND", format!("127.0.0.1:{port}"))
        .env("ICM_AUTH", "off")
        .env("ICM_WORKERS", "2")
        .env("ICM_POOL_SIZE", "4")
        .env("ICM_AUDIT_SPOOL", dir.0.join("spool.jsonl"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}/fhir"),
    };
    wait_ready(&server.base);
    let mut dbc = PgConnection::establish(&db.url).unwrap();

    // Run 0, untouched: how long the write phase lasts (first transaction id seen to answer).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let (admin, name, done) = (admin.clone(), name.clone(), done.clone());
        std::thread::spawn(move || {
            let mut c = PgConnection::establish(&admin).unwrap();
            loop {
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    return None;
                }
                let n = count(
                    &mut c,
                    &format!(
                        "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = '{name}' \
                         AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
                    ),
                );
                if n > 0 {
                    return Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let t = Instant::now();
    let (st, _, b) = send("POST", &server.base, Some(&bundle(0)));
    let answered = Instant::now();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(st, 200, "{b}");
    let write_began = probe.join().unwrap().expect("the write was seen");
    let write = answered - write_began;
    eprintln!(
        "untouched 1,000-entry transaction: {:.2} s in all, write phase {:.2} s",
        (answered - t).as_secs_f64(),
        write.as_secs_f64()
    );
    assert_eq!(found(&server.base, 0), ENTRIES as i64);
    let (cur, hist, tok) = stored(&mut dbc, 0);
    assert_eq!((cur, hist), (ENTRIES as i64, ENTRIES as i64));
    assert_eq!(
        tok, ENTRIES as i64,
        "identifier index rows of the stored entries"
    );

    // Runs 1..: cut at a different point of the write phase each time.
    let fractions = [0.0, 0.25, 0.5, 0.75, 0.95];
    let mut cuts = 0;
    for (k, frac) in fractions.iter().enumerate() {
        let run = k + 1;
        // The audit writer's batches (events of the previous requests) also hold a transaction
        // id for a moment: let them drain first (a look at the trail waits for them), so the
        // backend found below is the Bundle's.
        let (st, _, b) = send("GET", &format!("{}/AuditEvent?_count=1", server.base), None);
        assert_eq!(st, 200, "{b}");
        std::thread::sleep(Duration::from_millis(300));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let after = write.mul_f64(*frac);
        let killer = {
            let (admin, name, done) = (admin.clone(), name.clone(), done.clone());
            std::thread::spawn(move || cut(&admin, &name, after, &done))
        };
        let t = Instant::now();
        let (st, retry, b) = send("POST", &server.base, Some(&bundle(run)));
        let secs = t.elapsed().as_secs_f64();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let killed = killer.join().unwrap();
        let by_search = found(&server.base, run);
        let (cur, hist, tok) = stored(&mut dbc, run);
        eprintln!(
            "run {run}: cut {:.0} % into the write ({}), answer {st} after {secs:.2} s; \
             stored: {by_search} by search, {cur} rows, {hist} history rows, {tok} token rows",
            frac * 100.0,
            killed.as_deref().unwrap_or("request finished first"),
        );
        match st {
            200 => {
                assert_eq!(by_search, ENTRIES as i64, "200 but not all stored");
                assert_eq!((cur, hist), (ENTRIES as i64, ENTRIES as i64));
                assert_eq!(tok, ENTRIES as i64);
            }
            503 => {
                cuts += 1;
                assert_eq!(b["resourceType"], "OperationOutcome", "{b}");
                assert_eq!(b["issue"][0]["code"], "transient", "{b}");
                assert!(retry, "503 carries Retry-After");
                assert_eq!(
                    (by_search, cur, hist, tok),
                    (0, 0, 0, 0),
                    "503 but something of the transaction was stored"
                );
            }
            other => panic!("run {run}: answer {other} (want 200 or 503): {b}"),
        }
        // The server keeps serving: the broken connection left the pool.
        for _ in 0..8 {
            let (st, _, b) = send(
                "POST",
                &format!("{}/Patient", server.base),
                Some(&json!({"resourceType": "Patient", "name": [{"family": "After"}]})),
            );
            assert_eq!(st, 201, "a write after the cut: {b}");
            let id = b["id"].as_str().unwrap();
            let (st, _, _) = send("GET", &format!("{}/Patient/{id}", server.base), None);
            assert_eq!(st, 200);
        }
    }
    assert!(
        cuts >= 2,
        "at least two transactions were cut mid-write (got {cuts}); the test did not test"
    );
    drop(server);

    let out = Command::new(BIN)
        .arg("verify")
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verify:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("verify: {}", text.trim());
}
