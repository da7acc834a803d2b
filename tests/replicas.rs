//! Read replicas (`ICM_READ_DATABASE_URL`) against a real streaming-replication hot standby
//! of the local PostgreSQL (`.ci/pg-standby` starts one on port 5433; `ICM_TEST_REPLICA_PORT`
//! names another). Reads and searches of other callers go to the standby; a caller's reads
//! right after its own write see the write; a standby that stops replaying is left out after
//! `ICM_READ_MAX_LAG_MS`, and used again when it catches up.
mod common;
use common::auth::*;
use common::*;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use std::time::{Duration, Instant};

fn standby_port() -> String {
    std::env::var("ICM_TEST_REPLICA_PORT").unwrap_or_else(|_| "5433".into())
}

/// The standby URL of the same database as `primary`.
fn on_standby(primary: &str) -> String {
    let db = primary.rsplit('/').next().unwrap();
    format!("postgres://postgres@127.0.0.1:{}/{db}", standby_port())
}

fn standby_reachable() -> bool {
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", standby_port());
    match PgConnection::establish(&url) {
        Ok(_) => true,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("CI=true but no standby at {url} ({e}): run .ci/pg-standby");
            }
            eprintln!("\n!!!!! no PostgreSQL standby at {url} ({e}): read-replica test SKIPPED (run .ci/pg-standby) !!!!!\n");
            false
        }
    }
}

fn reads(s: &TestServer) -> (u64, u64) {
    let m = s.get("/metrics").body;
    let find = |src: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with(&format!("icm_reads_total{{source=\"{src}\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (find("replica"), find("primary"))
}

#[track_caller]
fn eventually(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out: {what}");
}

#[test]
fn reads_go_to_a_fresh_standby_and_writers_read_their_writes() {
    if !standby_reachable() {
        return;
    }
    let Some(s) = start_secure_with(Backend::Postgres, |c| {
        c.read_database_url = on_standby(&c.database_url);
        c.read_max_lag_ms = 1500;
    }) else {
        return;
    };
    let wt = mint(&claims("writer", "system/*.cruds", json!({})));
    let ot = mint(&claims("other", "system/*.rs", json!({})));
    let writer = |s: &TestServer, m: &str, p: &str, b: Option<Value>| {
        s.as_token(Some(&wt), m, p, b.as_ref())
    };
    let other = |s: &TestServer, m: &str, p: &str, b: Option<Value>| {
        s.as_token(Some(&ot), m, p, b.as_ref())
    };
    // The standby serves once it has replayed the primary's position of a moment ago.
    eventually("the standby serving reads", Duration::from_secs(20), || {
        other(&s, "GET", "Patient?_count=1", None).status == 200 && reads(&s).0 > 0
    });
    // Read your writes: create, then read and search at once, many times.
    for i in 0..20 {
        let p = writer(
            &s,
            "POST",
            "Patient",
            Some(json!({"resourceType": "Patient", "name": [{"family": format!("Replica{i}")}]})),
        );
        assert_eq!(p.status, 201, "{}", p.body);
        let id = p.json()["id"].as_str().unwrap().to_string();
        assert_eq!(
            writer(&s, "GET", &format!("Patient/{id}"), None).status,
            200
        );
        let found = writer(&s, "GET", &format!("Patient?family=Replica{i}"), None).json();
        assert_eq!(
            found["entry"].as_array().map(Vec::len),
            Some(1),
            "search {i}"
        );
    }
    // Another caller's searches are served by the standby (which has the data soon after).
    let (replica_before, _) = reads(&s);
    eventually(
        "another caller sees the writes",
        Duration::from_secs(10),
        || {
            other(&s, "GET", "Patient?family=Replica19", None).json()["entry"]
                .as_array()
                .is_some_and(|e| e.len() == 1)
        },
    );
    for _ in 0..10 {
        assert_eq!(other(&s, "GET", "Patient?family=Replica", None).status, 200);
    }
    assert!(reads(&s).0 >= replica_before + 10, "{:?}", reads(&s));

    // The standby stops replaying: after the lag bound, every read goes to the primary and
    // sees the newest data; when replay resumes the standby serves again.
    let standby = on_standby(&s.database_url);
    let mut sb = PgConnection::establish(&standby).unwrap();
    sb.batch_execute("SELECT pg_wal_replay_pause()").unwrap();
    let p = writer(
        &s,
        "POST",
        "Patient",
        Some(json!({"resourceType": "Patient", "name": [{"family": "AfterPause"}]})),
    );
    assert_eq!(p.status, 201);
    let id = p.json()["id"].as_str().unwrap().to_string();
    // The writer reads its write at once (the primary: the standby has not replayed it)…
    assert_eq!(
        writer(&s, "GET", &format!("Patient/{id}"), None).status,
        200
    );
    // …while another caller, within the lag bound, is served by the standby, which does not
    // have it yet (reads by others are eventually consistent, within ICM_READ_MAX_LAG_MS).
    let stale = other(&s, "GET", "Patient?family=AfterPause", None).json();
    assert_eq!(stale["entry"].as_array().map(Vec::len), None, "{stale}");
    std::thread::sleep(Duration::from_millis(2500));
    let (_, primary_before) = reads(&s);
    let r = other(&s, "GET", "Patient?family=AfterPause", None).json();
    assert_eq!(r["entry"].as_array().map(Vec::len), Some(1), "{r}");
    assert!(
        reads(&s).1 > primary_before,
        "served by the primary while the standby lags"
    );
    sb.batch_execute("SELECT pg_wal_replay_resume()").unwrap();
    let (replica_paused, _) = reads(&s);
    eventually("the standby serving again", Duration::from_secs(20), || {
        other(&s, "GET", "Patient?family=AfterPause", None).status == 200
            && reads(&s).0 > replica_paused
    });
}
