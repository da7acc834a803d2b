//! Several server processes on one PostgreSQL (issue 17): three `icm-fhir serve` processes on
//! their own ports share one database (started together, so they also race for the migrations).
//! Concurrent If-Match updates through all three: exactly one wins per version. A
//! conditional-create race: exactly one resource per criteria. Blind concurrent updates: version
//! numbers gap-free, history complete (one version per acknowledged write). `icm-fhir verify`
//! passes afterwards. The same on one SQLite file.
mod common;
use common::*;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_icm-fhir");
const PROCESSES: usize = 3;
/// Clients per process.
const CLIENTS: usize = 2;

use common::process::{free_port, wait_ready, Process as Server};

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build()
}

/// One request the test sent and the answer it got (for the audit-trail check).
#[derive(Debug, Clone)]
struct Sent {
    url: String,
    method: String,
    status: u16,
    /// `Type/id/_history/version` of the version a write created.
    version_ref: Option<String>,
}

/// Every request `send` made, in every test of this file (told apart by the server's port).
static SENT: std::sync::Mutex<Vec<Sent>> = std::sync::Mutex::new(Vec::new());

/// (status, body) of a request; transport errors fail the test. Recorded in `SENT`.
fn send(method: &str, url: &str, headers: &[(&str, String)], body: Option<&Value>) -> (u16, Value) {
    let (status, v) = send_unrecorded(method, url, headers, body);
    let version_ref = match (method, status) {
        ("POST", 201) | ("PUT", 200 | 201) => Some(format!(
            "{}/{}/_history/{}",
            v["resourceType"].as_str().unwrap(),
            v["id"].as_str().unwrap(),
            v["meta"]["versionId"].as_str().unwrap()
        )),
        _ => None,
    };
    SENT.lock().unwrap().push(Sent {
        url: url.to_string(),
        method: method.to_string(),
        status,
        version_ref,
    });
    (status, v)
}

fn send_unrecorded(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = agent().request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let r = match body {
        Some(b) => req
            .set("Content-Type", "application/fhir+json")
            .send_string(&b.to_string()),
        None => req.call(),
    };
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    (status, resp.into_json().unwrap_or(Value::Null))
}

/// A fresh database on the shared cluster, dropped afterwards.
struct Db {
    admin: String,
    name: String,
    url: String,
}

impl Drop for Db {
    fn drop(&mut self) {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        if let Ok(mut c) = diesel::PgConnection::establish(&self.admin) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn fresh_db() -> Option<Db> {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let admin = pg_admin_url();
    let Ok(mut c) = diesel::PgConnection::establish(&admin) else {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but PostgreSQL is unreachable"
        );
        eprintln!("PostgreSQL unreachable: the multi-process test was SKIPPED");
        return None;
    };
    let name = format!("icm_multi_{}", uuid::Uuid::new_v4().simple());
    c.batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    Some(Db { admin, name, url })
}

fn spawn(url: &str, dir: &std::path::Path, n: usize) -> Server {
    let port = free_port();
    let log = std::fs::File::create(dir.join(format!("server-{n}.log"))).unwrap();
    let child = Command::new(BIN)
        .arg("serve")
        .env("DATABASE_URL", url)
        .env("ICM_BIND", format!("127.0.0.1:{port}"))
        .env("ICM_AUTH", "off")
        .env("ICM_WORKERS", "2")
        .env("ICM_POOL_SIZE", "4")
        .env("ICM_AUDIT_SPOOL", dir.join(format!("spool-{n}.jsonl")))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Server {
        child,
        base: format!("http://127.0.0.1:{port}/fhir"),
    }
}

/// Run `f(client, base)` on every client of every process at once; their results.
fn race<T: Send + 'static>(
    servers: &[Server],
    f: impl Fn(usize, &str) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = Arc::new(f);
    let n = servers.len() * CLIENTS;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|c| {
            let base = servers[c % servers.len()].base.clone();
            let (f, barrier) = (f.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                f(c, &base)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn version_of(v: &Value) -> i64 {
    v["meta"]["versionId"].as_str().unwrap().parse().unwrap()
}

#[test]
fn three_processes_on_one_postgres_agree() {
    let Some(db) = fresh_db() else { return };
    let dir = TempDir::new();
    three_processes_agree(&db.url, &dir);
}

/// The same on one SQLite file: SQLite has one writer per file, and a process's in-memory
/// writer lock does not reach the others; write transactions begin IMMEDIATE so none of them
/// fails with "database is locked" (a 500 before).
#[test]
fn three_processes_on_one_sqlite_file_agree() {
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.0.join("shared.db").display());
    three_processes_agree(&url, &dir);
}

fn three_processes_agree(url: &str, dir: &TempDir) {
    // Started together: they race for the migrations (an advisory lock serialises them).
    let servers: Vec<Server> = (0..PROCESSES).map(|n| spawn(url, &dir.0, n)).collect();
    for s in &servers {
        wait_ready(&s.base);
    }

    // 1. If-Match: every round, all clients update the same version; exactly one wins.
    let (st, p) = send(
        "POST",
        &format!("{}/Patient", servers[0].base),
        &[],
        Some(&json!({"resourceType": "Patient", "name": [{"family": "Race"}]})),
    );
    assert_eq!(st, 201);
    let id = p["id"].as_str().unwrap().to_string();
    let rounds = 15;
    for round in 1..=rounds {
        let id2 = id.clone();
        let results = race(&servers, move |c, base| {
            let body = json!({"resourceType": "Patient", "id": id2,
                "name": [{"family": "Race", "given": [format!("r{round}-c{c}")]}]});
            send(
                "PUT",
                &format!("{base}/Patient/{id2}"),
                &[("If-Match", format!("W/\"{round}\""))],
                Some(&body),
            )
        });
        let winners: Vec<&(u16, Value)> = results.iter().filter(|r| r.0 == 200).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {:?}",
            results.iter().map(|r| r.0).collect::<Vec<_>>()
        );
        assert_eq!(version_of(&winners[0].1), round + 1);
        for r in &results {
            assert!(
                r.0 == 200 || r.0 == 412 || r.0 == 409,
                "round {round}: {} {}",
                r.0,
                r.1
            );
        }
    }
    let (_, h) = send(
        "GET",
        &format!("{}/Patient/{id}/_history?_count=100", servers[2].base),
        &[],
        None,
    );
    let mut versions: Vec<i64> = h["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| version_of(&e["resource"]))
        .collect();
    versions.sort();
    assert_eq!(versions, (1..=rounds + 1).collect::<Vec<_>>());

    // 2. Conditional create: all clients create with the same If-None-Exist; one resource each.
    for k in 0..10 {
        let results = race(&servers, move |c, base| {
            let body = json!({"resourceType": "Patient",
                "identifier": [{"system": "urn:race", "value": format!("k{k}")}],
                "name": [{"family": format!("Client{c}")}]});
            send(
                "POST",
                &format!("{base}/Patient"),
                &[("If-None-Exist", format!("identifier=urn:race|k{k}"))],
                Some(&body),
            )
        });
        let created = results.iter().filter(|r| r.0 == 201).count();
        let found = results.iter().filter(|r| r.0 == 200).count();
        assert_eq!(
            (created, found),
            (1, PROCESSES * CLIENTS - 1),
            "criteria k{k}: {:?}",
            results.iter().map(|r| r.0).collect::<Vec<_>>()
        );
        let ids: std::collections::BTreeSet<String> = results
            .iter()
            .map(|r| r.1["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), 1, "everyone got the same resource: {ids:?}");
        for s in &servers {
            let (_, b) = send(
                "GET",
                &format!("{}/Patient?identifier=urn:race|k{k}", s.base),
                &[],
                None,
            );
            assert_eq!(b["total"], 1, "{b}");
        }
    }

    // 3. Blind updates to shared resources from every client: no version lost or doubled.
    let mut shared = Vec::new();
    for i in 0..3 {
        let (_, o) = send(
            "POST",
            &format!("{}/Observation", servers[i % PROCESSES].base),
            &[],
            Some(
                &json!({"resourceType": "Observation", "status": "preliminary",
                "code": {"text": format!("shared {i}")}}),
            ),
        );
        shared.push(o["id"].as_str().unwrap().to_string());
    }
    let per_client = 10;
    let shared2 = shared.clone();
    let results = race(&servers, move |c, base| {
        let mut ok = 0;
        for j in 0..per_client {
            let id = &shared2[(c + j) % shared2.len()];
            let body = json!({"resourceType": "Observation", "id": id, "status": "final",
                "code": {"text": format!("client {c} write {j}")}});
            let (st, b) = send("PUT", &format!("{base}/Observation/{id}"), &[], Some(&body));
            assert!(st == 200 || st == 409, "{st} {b}");
            if st == 200 {
                ok += 1;
            }
        }
        ok
    });
    let acknowledged: i64 = results.iter().sum();
    assert!(acknowledged > 0);
    let mut total_versions = 0;
    for id in &shared {
        let (_, h) = send(
            "GET",
            &format!("{}/Observation/{id}/_history?_count=500", servers[1].base),
            &[],
            None,
        );
        let mut versions: Vec<i64> = h["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| version_of(&e["resource"]))
            .collect();
        versions.sort();
        let n = versions.len() as i64;
        assert_eq!(
            versions,
            (1..=n).collect::<Vec<_>>(),
            "Observation/{id}: gaps"
        );
        let (_, cur) = send(
            "GET",
            &format!("{}/Observation/{id}", servers[0].base),
            &[],
            None,
        );
        assert_eq!(
            version_of(&cur),
            n,
            "the current version is the newest history entry"
        );
        total_versions += n;
    }
    assert_eq!(
        total_versions,
        acknowledged + shared.len() as i64,
        "one history version per acknowledged write"
    );
    audit_trail_complete(&servers);
    drop(servers);

    let out = Command::new(BIN)
        .arg("verify")
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verify:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every request the test sent through any of the processes (and got an answer to) produced
/// exactly one AuditEvent in the shared trail: the trail's (method and path, HTTP status) pairs
/// are the requests' pairs, as multisets; and every acknowledged write is named (as
/// `Type/id/_history/version`) by exactly one AuditEvent.
fn audit_trail_complete(servers: &[Server]) {
    use std::collections::BTreeMap;
    // A look at the trail first waits for the process's own queued events: look once through
    // each process. These looks (and the paging below) are audited too; they are left out of
    // both sides by their path.
    for s in servers {
        let (st, b) = send_unrecorded("GET", &format!("{}/AuditEvent?_count=1", s.base), &[], None);
        assert_eq!(st, 200, "AuditEvent search: {b}");
    }
    let mut events = Vec::new();
    let mut next = Some(format!(
        "{}/AuditEvent?_count=500&_sort=_lastUpdated",
        servers[0].base
    ));
    while let Some(url) = next.take() {
        let (st, b) = send_unrecorded("GET", &url, &[], None);
        assert_eq!(st, 200, "{url}: {b}");
        for e in b["entry"].as_array().cloned().unwrap_or_default() {
            if e["search"]["mode"] == "match" {
                events.push(e["resource"].clone());
            }
        }
        next = b["link"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["relation"] == "next"))
            .and_then(|l| l["url"].as_str())
            .map(str::to_string);
    }
    let looks = |d: &str| d.starts_with("GET /fhir/AuditEvent");
    let mut trail: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut written: BTreeMap<String, i64> = BTreeMap::new();
    for e in &events {
        let d = e["entity"][0]["description"].as_str().unwrap_or_default();
        if looks(d) {
            continue;
        }
        let status = e["outcomeDesc"].as_str().unwrap_or_default().to_string();
        *trail.entry((d.to_string(), status)).or_default() += 1;
        if let Some(w) = e["entity"][0]["what"]["reference"].as_str() {
            if w.contains("/_history/") {
                *written.entry(w.to_string()).or_default() += 1;
            }
        }
    }
    let bases: Vec<&str> = servers.iter().map(|s| s.base.as_str()).collect();
    let sent: Vec<Sent> = SENT
        .lock()
        .unwrap()
        .iter()
        .filter(|r| bases.iter().any(|b| r.url.starts_with(&format!("{b}/"))))
        .cloned()
        .collect();
    let mut asked: BTreeMap<(String, String), i64> = BTreeMap::new();
    for r in &sent {
        let path = r.url.split_once("//").unwrap().1;
        let path = &path[path.find('/').unwrap()..];
        let path = path.split('?').next().unwrap();
        *asked
            .entry((format!("{} {path}", r.method), format!("HTTP {}", r.status)))
            .or_default() += 1;
    }
    let requests: i64 = asked.values().sum();
    let audited: i64 = trail.values().sum();
    let differ: Vec<String> = asked
        .keys()
        .chain(trail.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| asked.get(*k) != trail.get(*k))
        .map(|k| {
            format!(
                "{} {}: {} sent, {} audited",
                k.0,
                k.1,
                asked.get(k).unwrap_or(&0),
                trail.get(k).unwrap_or(&0)
            )
        })
        .collect();
    assert!(
        differ.is_empty(),
        "{requests} requests, {audited} AuditEvents; differences:\n{}",
        differ.join("\n")
    );
    let acked: Vec<&String> = sent.iter().filter_map(|r| r.version_ref.as_ref()).collect();
    for v in &acked {
        assert_eq!(
            written.get(*v),
            Some(&1),
            "acknowledged write {v}: AuditEvents naming it"
        );
    }
    eprintln!(
        "audit trail: {requests} requests through {} processes, {audited} AuditEvents (one each); \
         {} acknowledged writes each named by exactly one",
        servers.len(),
        acked.len()
    );
}
