//! The SQLite storage ceiling of `bench/run` (pgbench plays this part on PostgreSQL): the same
//! statements the server's reads and creates end in, run straight against the loaded database
//! with the server's connection settings, without HTTP, JSON, validation or auditing.
//!
//! Usage: `sqlite_ceiling DB_FILE select|insert SECONDS THREADS PATIENTS`
//! - `select`: `SELECT content FROM resources WHERE res_type = 'Patient' AND res_id = ?` for a
//!   random loaded patient, on THREADS connections;
//! - `insert`: one transaction per iteration: a resource row plus one search-index row (the
//!   writers queue on SQLite's single write lock, as the server's do); the rows are deleted
//!   afterwards.
//!
//! Prints one JSON line: `{"mode": …, "ops": …, "seconds": …, "per_s": …}`.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

#[derive(QueryableByName)]
struct Content {
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    content: Option<String>,
}

#[derive(QueryableByName)]
struct Pk {
    #[diesel(sql_type = BigInt)]
    pk: i64,
}

const PATIENT: &str = r#"{"resourceType":"Patient","id":"ID","meta":{"versionId":"1","lastUpdated":"2026-12-01T00:00:00Z"},"name":[{"family":"Ceiling","given":["Bench"]}],"gender":"female","birthDate":"1970-01-01"}"#;

fn connect(path: &str) -> SqliteConnection {
    let mut c = SqliteConnection::establish(path).unwrap_or_else(|e| {
        eprintln!("cannot open {path}: {e}");
        std::process::exit(2)
    });
    // The server's settings (src/store/backend.rs).
    c.batch_execute(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; \
         PRAGMA cache_size = -32768; PRAGMA mmap_size = 1073741824; PRAGMA temp_store = MEMORY;",
    )
    .expect("pragmas");
    c
}

/// xorshift64*: enough to spread point reads over the loaded patients.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 5 {
        eprintln!("usage: sqlite_ceiling DB_FILE select|insert SECONDS THREADS PATIENTS");
        std::process::exit(2);
    }
    let (path, mode) = (args[0].clone(), args[1].clone());
    let parse = |s: &str| -> u64 {
        s.parse().unwrap_or_else(|_| {
            eprintln!("not a number: {s}");
            std::process::exit(2)
        })
    };
    let (secs, threads, patients) = (parse(&args[2]), parse(&args[3]), parse(&args[4]).max(1));
    if mode != "select" && mode != "insert" {
        eprintln!("mode must be select or insert");
        std::process::exit(2);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads.max(1))
        .map(|t| {
            let (path, mode, stop, ops) = (path.clone(), mode.clone(), stop.clone(), ops.clone());
            std::thread::spawn(move || {
                let mut c = connect(&path);
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if mode == "select" {
                        let id = format!("p{}", next(&mut rng) % patients);
                        let rows: Vec<Content> = diesel::sql_query(
                            "SELECT content FROM resources WHERE res_type = 'Patient' AND res_id = ?",
                        )
                        .bind::<Text, _>(&id)
                        .load(&mut c)
                        .expect("select");
                        assert!(rows.first().and_then(|r| r.content.as_ref()).is_some());
                    } else {
                        let id = format!("ceiling-{t}-{n}");
                        let body = PATIENT.replace("ID", &id);
                        c.immediate_transaction::<_, diesel::result::Error, _>(|c| {
                            let pk: Vec<Pk> = diesel::sql_query(
                                "INSERT INTO resources (res_type, res_id, version_id, last_updated, deleted, content) \
                                 VALUES ('Patient', ?, 1, 0, 0, ?) RETURNING pk",
                            )
                            .bind::<Text, _>(&id)
                            .bind::<Text, _>(&body)
                            .load(c)?;
                            diesel::sql_query(
                                "INSERT INTO search_string (resource_pk, res_type, param, value_norm, value_exact) \
                                 VALUES (?, 'Patient', 'family', 'ceiling', 'Ceiling')",
                            )
                            .bind::<BigInt, _>(pk[0].pk)
                            .execute(c)?;
                            Ok(())
                        })
                        .expect("insert");
                    }
                    n += 1;
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for h in handles {
        h.join().expect("worker");
    }
    let total = ops.load(Ordering::Relaxed);
    if mode == "insert" {
        let mut c = connect(&path);
        c.batch_execute(
            "DELETE FROM search_string WHERE resource_pk IN \
               (SELECT pk FROM resources WHERE res_type = 'Patient' AND res_id LIKE 'ceiling-%'); \
             DELETE FROM resources WHERE res_type = 'Patient' AND res_id LIKE 'ceiling-%';",
        )
        .expect("clean up");
    }
    println!(
        "{{\"mode\": \"{mode}\", \"ops\": {total}, \"seconds\": {elapsed:.3}, \"per_s\": {:.1}}}",
        total as f64 / elapsed
    );
}
