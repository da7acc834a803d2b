//! Backup, restore and verify (issue 17): `icm-fhir backup` copies a database that is serving a
//! write load into a consistent file; the restored copy passes `icm-fhir verify` and holds every
//! write acknowledged before the backup began; a copy with one index row or one history row
//! removed fails verify with a report.
mod common;
use common::*;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_icm-fhir");

fn cli(args: &[&str], url: &str) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run icm-fhir");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn patient(i: usize, round: usize) -> Value {
    json!({"resourceType": "Patient", "active": true,
           "name": [{"family": format!("Backup{i}"), "given": [format!("Round{round}")]}],
           "birthDate": "1950-01-02",
           "identifier": [{"system": "urn:test:backup", "value": format!("b-{i}")}]})
}

/// Writers creating and updating Patients and Observations until `stop`; the ids of every
/// acknowledged write with its version.
fn write_load(
    s: &TestServer,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, i64, Instant)>>>,
    threads: usize,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..threads)
        .map(|t| {
            let base = s.base.clone();
            let stop = stop.clone();
            let acked = acked.clone();
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(30))
                    .build();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let n = t * 100_000 + i;
                    let r: Value = agent
                        .post(&format!("{base}/Patient"))
                        .set("Content-Type", "application/fhir+json")
                        .send_string(&patient(n, 0).to_string())
                        .expect("create")
                        .into_json()
                        .unwrap();
                    let id = r["id"].as_str().unwrap().to_string();
                    acked
                        .lock()
                        .unwrap()
                        .push((format!("Patient/{id}"), 1, Instant::now()));
                    let mut p = patient(n, 1);
                    p["id"] = json!(id);
                    agent
                        .put(&format!("{base}/Patient/{id}"))
                        .set("Content-Type", "application/fhir+json")
                        .send_string(&p.to_string())
                        .expect("update");
                    acked
                        .lock()
                        .unwrap()
                        .push((format!("Patient/{id}"), 2, Instant::now()));
                    let o = json!({"resourceType": "Observation", "status": "final",
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                        "subject": {"reference": format!("Patient/{id}")},
                        "effectiveDateTime": "2024-05-01T10:00:00Z",
                        "valueQuantity": {"value": 60 + (n % 40), "unit": "/min",
                            "system": "http://unitsofmeasure.org", "code": "/min"}});
                    let r: Value = agent
                        .post(&format!("{base}/Observation"))
                        .set("Content-Type", "application/fhir+json")
                        .send_string(&o.to_string())
                        .expect("create observation")
                        .into_json()
                        .unwrap();
                    acked.lock().unwrap().push((
                        format!("Observation/{}", r["id"].as_str().unwrap()),
                        1,
                        Instant::now(),
                    ));
                }
            })
        })
        .collect()
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    v: i64,
}

fn version_in(
    conn: &mut impl diesel::connection::LoadConnection<Backend = diesel::sqlite::Sqlite>,
    reference: &str,
) -> Option<i64> {
    let (ty, id) = reference.split_once('/').unwrap();
    let rows: Vec<Version> = diesel::sql_query(
        "SELECT version_id AS v FROM resources WHERE res_type = ? AND res_id = ?",
    )
    .bind::<diesel::sql_types::Text, _>(ty)
    .bind::<diesel::sql_types::Text, _>(id)
    .load(conn)
    .unwrap();
    rows.first().map(|r| r.v)
}

fn sqlite_exec(path: &std::path::Path, sql: &str) {
    let mut c = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    c.batch_execute(sql).unwrap();
}

#[test]
fn sqlite_backup_under_write_load_restores_and_verifies() {
    let s = start(Backend::Sqlite).unwrap();
    let dir = TempDir::new();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers = write_load(&s, stop.clone(), acked.clone(), 3);
    // Let the load build up, then back up while it runs.
    while acked.lock().unwrap().len() < 150 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let backup = dir.0.join("backup.db");
    let began = Instant::now();
    let (code, out) = cli(&["backup", backup.to_str().unwrap()], &s.database_url);
    assert_eq!(code, 0, "backup failed: {out}");
    let during = acked.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > during,
        "the write load kept going during the backup"
    );

    // Backing up onto an existing file is refused.
    let (code, out) = cli(&["backup", backup.to_str().unwrap()], &s.database_url);
    assert_ne!(code, 0, "{out}");

    // Restore: copy the backup to where a server would find it.
    let restored = dir.0.join("restored.db");
    std::fs::copy(&backup, &restored).unwrap();
    let url = format!("sqlite://{}", restored.display());
    let (code, out) = cli(&["verify"], &url);
    assert_eq!(code, 0, "verify of the restored backup failed:\n{out}");
    assert!(out.contains("OK"), "{out}");

    // Every write acknowledged before the backup began is in it (at that version or later).
    let mut conn = SqliteConnection::establish(restored.to_str().unwrap()).unwrap();
    let mut before = 0;
    for (reference, version, at) in &acked {
        if *at < began {
            before += 1;
            let v = version_in(&mut conn, reference);
            assert!(
                v.is_some_and(|v| v >= *version),
                "{reference} v{version} was acknowledged before the backup but the backup has {v:?}"
            );
        }
    }
    assert!(before >= 150);
    drop(conn);

    // The live database verifies too.
    let (code, out) = cli(&["verify"], &s.database_url);
    assert_eq!(code, 0, "verify of the live database failed:\n{out}");

    // A copy missing one index row fails verify, naming the resource and the row.
    let broken = dir.0.join("no-index-row.db");
    std::fs::copy(&restored, &broken).unwrap();
    sqlite_exec(
        &broken,
        "DELETE FROM search_token WHERE rowid = (SELECT MIN(t.rowid) FROM search_token t \
         JOIN resources r ON r.pk = t.resource_pk WHERE r.res_type = 'Observation' AND t.param = 'code')",
    );
    let (code, out) = cli(&["verify"], &format!("sqlite://{}", broken.display()));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Observation/") && out.contains("index row missing: search_token code"),
        "{out}"
    );

    // A copy missing one history row fails verify.
    let broken = dir.0.join("no-history-row.db");
    std::fs::copy(&restored, &broken).unwrap();
    sqlite_exec(
        &broken,
        "DELETE FROM resource_history WHERE hid = (SELECT MIN(hid) FROM resource_history \
         WHERE res_type = 'Patient' AND version_id = 1)",
    );
    let (code, out) = cli(&["verify"], &format!("sqlite://{}", broken.display()));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("current version 2 but history has 1 version(s) (2..2)"),
        "{out}"
    );

    // An extra index row and a content that no longer parses are found too.
    let broken = dir.0.join("extra.db");
    std::fs::copy(&restored, &broken).unwrap();
    sqlite_exec(
        &broken,
        "INSERT INTO search_string (resource_pk, res_type, param, value_norm, value_exact, grp) \
         SELECT MIN(pk), 'Patient', 'family', 'forged', 'Forged', 0 FROM resources WHERE res_type = 'Patient'; \
         UPDATE resources SET content = '{\"resourceType\": \"Patient\"' WHERE pk = \
         (SELECT MAX(pk) FROM resources WHERE res_type = 'Patient');",
    );
    let (code, out) = cli(&["verify"], &format!("sqlite://{}", broken.display()));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("unexpected index row: search_string family"),
        "{out}"
    );
    assert!(out.contains("content is not JSON"), "{out}");
}

fn pg_exec(url: &str, sql: &str) {
    let mut c = PgConnection::establish(url).unwrap();
    c.batch_execute(sql).unwrap();
}

/// PostgreSQL: `icm-fhir backup` runs pg_dump while the server writes; pg_restore into a new
/// database; verify passes there and fails once an index or history row is removed.
#[test]
fn postgres_backup_with_pg_dump_restores_and_verifies() {
    let Some(s) = start(Backend::Postgres) else {
        return;
    };
    if Command::new("pg_dump").arg("--version").output().is_err() {
        eprintln!("pg_dump is not installed: the PostgreSQL backup test was SKIPPED");
        return;
    }
    let dir = TempDir::new();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers = write_load(&s, stop.clone(), acked.clone(), 2);
    while acked.lock().unwrap().len() < 100 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let dump = dir.0.join("icm.dump");
    let (code, out) = cli(&["backup", dump.to_str().unwrap()], &s.database_url);
    assert_eq!(code, 0, "backup failed: {out}");
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }

    let admin = pg_admin_url();
    let name = format!("icm_restore_{}", uuid::Uuid::new_v4().simple());
    pg_exec(&admin, &format!("CREATE DATABASE \"{name}\""));
    let restored = {
        let (head, _) = admin.rsplit_once('/').unwrap();
        format!("{head}/{name}")
    };
    let st = Command::new("pg_restore")
        .args(["--no-owner", "--exit-on-error", "--dbname", &restored])
        .arg(&dump)
        .status()
        .unwrap();
    assert!(st.success(), "pg_restore failed");
    let result = std::panic::catch_unwind(|| {
        let (code, out) = cli(&["verify"], &restored);
        assert_eq!(code, 0, "verify of the restored dump failed:\n{out}");
        pg_exec(
            &restored,
            "DELETE FROM search_token WHERE ctid = (SELECT t.ctid FROM search_token t \
             JOIN resources r ON r.pk = t.resource_pk WHERE r.res_type = 'Observation' \
             AND t.param = 'code' LIMIT 1)",
        );
        let (code, out) = cli(&["verify"], &restored);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("index row missing: search_token code"),
            "{out}"
        );
        pg_exec(
            &restored,
            "DELETE FROM resource_history WHERE hid = (SELECT MIN(hid) FROM resource_history \
             WHERE res_type = 'Patient' AND version_id = 1)",
        );
        let (code, out) = cli(&["verify"], &restored);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("but history has 1 version(s)"), "{out}");
    });
    pg_exec(
        &admin,
        &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    );
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
