//! The audit writer never blocks a request and never drops an AuditEvent: while the database
//! is away events go to a spool file, and they reach the audit trail when it is back — also
//! when the server restarts in between.
mod common;
use common::*;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use icm_fhir::service::audit::{AuditFacts, AuditSink};
use icm_fhir::store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn facts(i: usize) -> AuditFacts {
    AuditFacts {
        sub: Some(format!("user-{i}")),
        method: "GET".into(),
        path: format!("/fhir/Patient/p{i}"),
        ty: Some("Patient".into()),
        id: Some(format!("p{i}")),
        patients: vec![format!("p{i}")],
        status: 200,
        ..AuditFacts::default()
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn audit_rows(url: &str) -> i64 {
    let q = "SELECT COUNT(*) AS n FROM audit_log";
    let rows: Vec<Count> = match url.strip_prefix("sqlite://") {
        Some(path) => {
            let mut c = SqliteConnection::establish(path).unwrap();
            diesel::sql_query(q).load(&mut c).unwrap()
        }
        None => {
            let mut c = PgConnection::establish(url).unwrap();
            diesel::sql_query(q).load(&mut c).unwrap()
        }
    };
    rows[0].n
}

#[track_caller]
fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn store(url: &str) -> Arc<Store> {
    let s = Store::new(url, 2, Duration::from_secs(1)).unwrap();
    s.migrate().unwrap();
    Arc::new(s)
}

/// PostgreSQL refuses connections to the test database (as if it were down), then takes them
/// again. 25,000 events are queued meanwhile — more than the old bounded queue held, which
/// blocked request threads once full.
#[test]
fn events_survive_a_database_outage() {
    let Some(s) = start(Backend::Postgres) else {
        return;
    };
    let url = s.database_url.clone();
    let db = url.rsplit('/').next().unwrap().split('?').next().unwrap();
    let dir = TempDir::new();
    let spool = dir.0.join("spool.jsonl");
    let sink = AuditSink::start(store(&url), spool.clone());
    let mut admin = PgConnection::establish(&pg_admin_url()).unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}';"
        ))
        .unwrap();
    let n = 25_000;
    for i in 0..n {
        sink.enqueue(facts(i));
    }
    wait_for("every event in the spool", Duration::from_secs(60), || {
        sink.spooled() == n as u64
    });
    assert!(spool.exists());
    admin
        .batch_execute(&format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS true"))
        .unwrap();
    wait_for(
        "the spool written to the database",
        Duration::from_secs(60),
        || sink.spooled() == 0,
    );
    assert_eq!(audit_rows(&url), n as i64);
    assert!(!spool.exists(), "the spool is removed once written");
    // And new events go straight to the database again.
    sink.enqueue(facts(n));
    wait_for("a new event stored", Duration::from_secs(10), || {
        audit_rows(&url) == n as i64 + 1
    });
}

/// Events spooled by an earlier process (stopped during an outage) are written by the next
/// one; events already stored before a crash are not written twice.
fn replay_after_restart(s: &TestServer) {
    let url = s.database_url.clone();
    let dir = TempDir::new();
    let spool = dir.0.join("spool.jsonl");
    // An earlier run stored one event and spooled it and two more (crash before the spool was
    // removed): the replay writes the two that are missing.
    let earlier = [facts(1), facts(2), facts(3)];
    let records: Vec<_> = earlier
        .iter()
        .map(|f| icm_fhir::service::audit::audit_record(f, 1_764_000_000_000_000))
        .collect();
    let st = store(&url);
    st.write_tx(|c| icm_fhir::store::audit::write(c, &records[..1]))
        .unwrap();
    let lines: String = records
        .iter()
        .map(|(id, at, text, _)| {
            format!(
                "{}\n",
                serde_json::json!({"id": id, "at": at, "text": text})
            )
        })
        .collect();
    // A torn last line (the process died mid-write) is skipped.
    std::fs::write(&spool, format!("{lines}{{\"id\":\"torn")).unwrap();
    assert_eq!(audit_rows(&url), 1);
    let sink = AuditSink::start(st, spool.clone());
    wait_for("the earlier spool written", Duration::from_secs(30), || {
        sink.spooled() == 0 && !spool.exists()
    });
    assert_eq!(audit_rows(&url), 3);
}

backend_tests!(
    spool_of_an_earlier_run_is_written,
    |s| replay_after_restart(s)
);

/// More events than the writer keeps in memory, all at once: the excess goes through the
/// spool (written to the database a chunk at a time, from an offset, while the database is
/// up), the spool is removed once drained, and nothing is lost or stored twice.
fn overload_spills_and_drains(s: &TestServer) {
    let url = s.database_url.clone();
    let dir = TempDir::new();
    let spool = dir.0.join("spool.jsonl");
    let before = audit_rows(&url);
    let sink = AuditSink::start_with_limit(store(&url), spool.clone(), 50);
    let n = 6_000;
    for i in 0..n {
        sink.enqueue(facts(i));
    }
    wait_for(
        "every event in the database",
        Duration::from_secs(120),
        || audit_rows(&url) - before == n as i64 && sink.spooled() == 0,
    );
    assert!(sink.spilled() > 0, "the excess went through the spool");
    assert!(!spool.exists(), "the spool is removed once written");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(audit_rows(&url) - before, n as i64, "no event stored twice");
}

backend_tests!(overload_spills_and_drains_the_spool, |s| {
    overload_spills_and_drains(s)
});
