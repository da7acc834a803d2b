//! Shared integration-test harness: a real server on a random loopback port, per test, on a
//! fresh database (a temporary SQLite file, or a new PostgreSQL database dropped afterwards).
#![allow(dead_code, unused_imports)]

pub mod auth;
pub mod process;
pub mod search;

use std::sync::mpsc;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use icm_fhir::config::Config;
pub use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Admin URL of the PostgreSQL server used for per-test databases.
pub fn pg_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Replace the database name in a postgres URL.
fn pg_url_with_db(admin: &str, db: &str) -> String {
    let (head, tail) = match admin.split_once('?') {
        Some((h, t)) => (h, Some(t)),
        None => (admin, None),
    };
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let base = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    match tail {
        Some(t) => format!("{base}/{db}?{t}"),
        None => format!("{base}/{db}"),
    }
}

struct PgDb {
    admin: String,
    name: String,
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(mut c) = PgConnection::establish(&self.admin) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

pub struct TestServer {
    /// FHIR base, e.g. http://127.0.0.1:43121/fhir
    pub base: String,
    /// Server root, e.g. http://127.0.0.1:43121
    pub root: String,
    pub backend: Backend,
    pub database_url: String,
    agent: ureq::Agent,
    system: Option<actix_web::rt::System>,
    thread: Option<std::thread::JoinHandle<()>>,
    _pg: Option<PgDb>,
    _dir: Option<TempDir>,
}

/// A temporary folder removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!("icm-fhir-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(sys) = self.system.take() {
            sys.stop();
        }
        // The server thread ends once its System has stopped; it is not joined so that a
        // slow shutdown can never hang a test.
        drop(self.thread.take());
    }
}

/// Start a server for `backend`; `None` (with a loud message) when PostgreSQL is unreachable
/// outside CI. In CI (CI=true) an unreachable PostgreSQL fails the test.
pub fn start(backend: Backend) -> Option<TestServer> {
    start_with(backend, |_| {})
}

pub fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<TestServer> {
    let (url, pg, dir) = match backend {
        Backend::Sqlite => {
            let dir = TempDir::new();
            let url = format!("sqlite://{}/icm.db", dir.0.display());
            (url, None, Some(dir))
        }
        Backend::Postgres => {
            let admin = pg_admin_url();
            let mut conn = match PgConnection::establish(&admin) {
                Ok(c) => c,
                Err(e) => {
                    if in_ci() {
                        panic!("CI=true but PostgreSQL at {admin} is unreachable: {e}");
                    }
                    eprintln!(
                        "\n!!!!! PostgreSQL at {admin} is unreachable ({e}): the PostgreSQL half of this test was SKIPPED !!!!!\n"
                    );
                    return None;
                }
            };
            let name = format!("icm_test_{}", uuid::Uuid::new_v4().simple());
            conn.batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .expect("create test database");
            let url = pg_url_with_db(&admin, &name);
            (url, Some(PgDb { admin, name }), Some(TempDir::new()))
        }
    };
    Some(launch(backend, url, tweak, pg, dir))
}

/// A fresh, empty database (not migrated) for `backend`, removed on drop; `None` when PostgreSQL
/// is unreachable outside CI (as [`start`]).
pub struct FreshDb {
    pub url: String,
    _pg: Option<PgDb>,
    _dir: TempDir,
}

pub fn fresh_database(backend: Backend) -> Option<FreshDb> {
    let dir = TempDir::new();
    match backend {
        Backend::Sqlite => Some(FreshDb {
            url: format!("sqlite://{}/icm.db", dir.0.display()),
            _pg: None,
            _dir: dir,
        }),
        Backend::Postgres => {
            let admin = pg_admin_url();
            let mut conn = match PgConnection::establish(&admin) {
                Ok(c) => c,
                Err(e) => {
                    if in_ci() {
                        panic!("CI=true but PostgreSQL at {admin} is unreachable: {e}");
                    }
                    eprintln!(
                        "\n!!!!! PostgreSQL at {admin} is unreachable ({e}): the PostgreSQL half of this test was SKIPPED !!!!!\n"
                    );
                    return None;
                }
            };
            let name = format!("icm_test_{}", uuid::Uuid::new_v4().simple());
            conn.batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .expect("create test database");
            Some(FreshDb {
                url: pg_url_with_db(&admin, &name),
                _pg: Some(PgDb { admin, name }),
                _dir: dir,
            })
        }
    }
}

/// Where a test server's audit writer spools: its own temporary folder, or a fresh file in the
/// system's temporary folder — never the working directory (the repository).
fn spool_path(dir: Option<&TempDir>) -> String {
    match dir {
        Some(d) => d.0.join("audit-spool.jsonl").display().to_string(),
        None => std::env::temp_dir()
            .join(format!(
                "icm-test-audit-{}.jsonl",
                uuid::Uuid::new_v4().simple()
            ))
            .display()
            .to_string(),
    }
}

/// A server on an existing database (migrated if needed) that does not own it.
fn launch(
    backend: Backend,
    url: String,
    tweak: impl FnOnce(&mut Config),
    pg: Option<PgDb>,
    dir: Option<TempDir>,
) -> TestServer {
    let mut config = Config::for_database(&url);
    config.audit_spool = spool_path(dir.as_ref());
    tweak(&mut config);
    serve_config(config, backend, pg, dir)
}

/// A server on an existing database (migrated first); the database is left in place.
pub fn start_on(url: &str, backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = Config::for_database(url);
    config.audit_spool = spool_path(None);
    tweak(&mut config);
    serve_config(config, backend, None, None)
}

fn serve_config(
    config: Config,
    backend: Backend,
    pg: Option<PgDb>,
    dir: Option<TempDir>,
) -> TestServer {
    let url = config.database_url.clone();
    let state = icm_fhir::build_state(config).expect("state");
    state.store.migrate().expect("migrations");
    icm_fhir::service::definitions::install(&state.store, state.config.write_policy())
        .expect("shipped conformance resources");
    state
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    let listener = icm_fhir::listen("127.0.0.1:0", 4096).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let sys = actix_web::rt::System::new();
        sys.block_on(async {
            let server = icm_fhir::server(state, listener).expect("server");
            actix_web::rt::spawn(server);
        });
        tx.send(actix_web::rt::System::current()).unwrap();
        let _ = sys.run();
    });
    let system = rx.recv().expect("server thread started");
    let root = format!("http://127.0.0.1:{port}");
    TestServer {
        base: format!("{root}/fhir"),
        root,
        backend,
        database_url: url,
        agent: ureq::AgentBuilder::new()
            .timeout(std::time::Duration::from_secs(60))
            .build(),
        system: Some(system),
        thread: Some(thread),
        _pg: pg,
        _dir: dir,
    }
}

impl TestServer {
    /// Stop this server (its database stays until the TestServer is dropped).
    pub fn stop(&mut self) {
        if let Some(sys) = self.system.take() {
            sys.stop();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Another server process on this server's database (a restart, or a second process
    /// sharing it); it does not own the database.
    pub fn another(&self, tweak: impl FnOnce(&mut Config)) -> TestServer {
        launch(self.backend, self.database_url.clone(), tweak, None, None)
    }
}

/// A response: status, headers (lower-case names), body text.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {:?}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        let n = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.as_str())
    }
    /// Assert the status, printing the body on mismatch.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }
    /// Assert this is an OperationOutcome error with the given status and first issue code.
    #[track_caller]
    pub fn expect_outcome(&self, status: u16, code: &str) -> Value {
        self.expect(status);
        let v = self.json();
        assert_eq!(v["resourceType"], "OperationOutcome", "body: {}", self.body);
        let codes: Vec<&str> = v["issue"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["code"].as_str().unwrap())
            .collect();
        assert!(
            codes.contains(&code),
            "issue codes {codes:?} lack {code}; body: {}",
            self.body
        );
        v
    }
}

impl TestServer {
    /// Absolute URL for a path relative to the FHIR base ("Patient/1") or the root ("/healthz").
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") {
            path.to_string()
        } else if let Some(p) = path.strip_prefix('/') {
            format!("{}/{}", self.root, p)
        } else {
            format!("{}/{}", self.base, path)
        }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Resp {
        let mut req = self.agent.request(method, &self.url(path));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let r = match body {
            Some(b) => req.send_string(b),
            None => req.call(),
        };
        let resp = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: transport error {e}"),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .map(|n| {
                let v = resp.header(&n).unwrap_or("").to_string();
                (n.to_ascii_lowercase(), v)
            })
            .collect();
        let body = resp.into_string().unwrap_or_default();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], None)
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.request("DELETE", path, &[], None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/fhir+json")],
            Some(&body.to_string()),
        )
    }

    pub fn put(&self, path: &str, body: &Value) -> Resp {
        self.request(
            "PUT",
            path,
            &[("Content-Type", "application/fhir+json")],
            Some(&body.to_string()),
        )
    }

    /// Create a resource and return it as stored (panics unless 201).
    #[track_caller]
    pub fn create(&self, body: Value) -> Value {
        let ty = body["resourceType"]
            .as_str()
            .expect("resourceType")
            .to_string();
        let r = self.post(&ty, &body);
        r.expect(201);
        r.json()
    }
}

/// Run a test body against SQLite and PostgreSQL:
/// `backend_tests!(name, |s| { ... });` makes `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! backend_tests {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn sqlite() {
                let s = $crate::common::start($crate::common::Backend::Sqlite).unwrap();
                let f: &dyn Fn(&$crate::common::TestServer) = &$body;
                f(&s);
            }
            #[test]
            fn postgres() {
                if let Some(s) = $crate::common::start($crate::common::Backend::Postgres) {
                    let f: &dyn Fn(&$crate::common::TestServer) = &$body;
                    f(&s);
                }
            }
        }
    };
}
