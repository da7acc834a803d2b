//! The real `icm-fhir` binary as a child process, for the reliability tests that stop, limit or
//! race whole server processes (the in-process harness cannot).
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A server process, killed on drop; `base` is its `/fhir` URL.
pub struct Process {
    pub child: Child,
    pub base: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP client whose requests give up after `timeout`.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(timeout).build()
}

/// Wait (at most 90 s) until the server at `base` answers 200 on `/readyz`.
pub fn wait_ready(base: &str) {
    let root = base.trim_end_matches("/fhir");
    let end = Instant::now() + Duration::from_secs(90);
    let client = agent(Duration::from_secs(60));
    while Instant::now() < end {
        if let Ok(r) = client.get(&format!("{root}/readyz")).call() {
            if r.status() == 200 {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("server {base} never became ready");
}

/// (status, Retry-After present, body) of a request that may take up to `timeout`; a transport
/// error fails the test (the server must answer, whatever happens to its storage).
pub fn send(
    timeout: Duration,
    method: &str,
    url: &str,
    body: Option<&Value>,
) -> (u16, bool, Value) {
    let req = agent(timeout).request(method, url);
    let r = match body {
        Some(b) => req
            .set("Content-Type", "application/fhir+json")
            .send_string(&b.to_string()),
        None => req.call(),
    };
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: transport error (the server must answer): {e}"),
    };
    let status = resp.status();
    let retry = resp.header("Retry-After").is_some();
    (status, retry, resp.into_json().unwrap_or(Value::Null))
}
