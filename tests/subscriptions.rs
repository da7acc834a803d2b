//! R4 Subscriptions: validation, matching through the search engine with the subscriber's
//! access, the outbox written in the write's transaction, rest-hook delivery (headers, payload,
//! retries with backoff, status error), and exactly-once delivery across a restart and with two
//! processes on one database. Each test runs on SQLite and PostgreSQL; notifications go to a
//! tiny HTTP receiver in the test.
mod common;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::auth::*;
use common::*;
use icm_fhir::config::Config;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A notification endpoint: records every request; answers 500 to the first `fail_first`
/// requests (all of them when `fail_first` is usize::MAX), 200 afterwards.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Got>>> = Default::default();
        let seen = Arc::new(AtomicUsize::new(0));
        let g = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() || line.is_empty() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_string();
                let path = parts.next().unwrap_or_default().to_string();
                let mut headers = vec![];
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.trim_end().split_once(':') {
                        headers.push((k.trim().to_string(), v.trim().to_string()));
                    }
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                g.lock().unwrap().push(Got {
                    method,
                    path,
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let status = if n < fail_first {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Receiver { url, got }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Wait until at least `n` requests arrived (or the timeout), then return them all.
    fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Got> {
        let start = Instant::now();
        while self.got().len() < n && start.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.got()
    }

    /// Let the delivery worker run for a while, then return what arrived.
    fn settle(&self) -> Vec<Got> {
        std::thread::sleep(Duration::from_millis(800));
        self.got()
    }
}

/// Fast delivery for tests: poll every 50 ms, retry after 100 ms, give up after 3 attempts.
fn fast(c: &mut Config) {
    c.subscription_poll_ms = 50;
    c.subscription_backoff_ms = 100;
    c.subscription_max_attempts = 3;
    c.subscription_timeout = 5;
}

/// Run a test on SQLite and on PostgreSQL (skipped loudly when unreachable outside CI).
macro_rules! both {
    ($name:ident, $f:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn sqlite() {
                let f: &dyn Fn(Backend) = &$f;
                f(Backend::Sqlite);
            }
            #[test]
            fn postgres() {
                if common::start(Backend::Postgres).is_none() {
                    return;
                }
                let f: &dyn Fn(Backend) = &$f;
                f(Backend::Postgres);
            }
        }
    };
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

fn rest_hook(criteria: &str, endpoint: &str, extra: Value) -> Value {
    let mut channel = json!({"type": "rest-hook", "endpoint": endpoint});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            channel[k] = v;
        }
    }
    json!({"resourceType": "Subscription", "status": "requested",
           "reason": "care manager alerts", "criteria": criteria, "channel": channel})
}

fn task(patient: &str, owner: &str, status: &str) -> Value {
    json!({"resourceType": "Task", "status": status, "intent": "order",
           "for": {"reference": format!("Patient/{patient}")},
           "owner": {"reference": format!("Practitioner/{owner}")}})
}

fn ed_visit(patient: &str, class: &str, status: &str) -> Value {
    json!({"resourceType": "Encounter", "status": status,
           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": class},
           "subject": {"reference": format!("Patient/{patient}")}})
}

both!(one_notification_per_matching_write, |b| {
    let s = start_with(b, fast).unwrap();
    let rx = Receiver::start(0);
    let pat = id_of(&s.create(json!({"resourceType": "Patient", "name": [{"family": "A"}]})));
    let pr1 = id_of(&s.create(json!({"resourceType": "Practitioner"})));
    let pr2 = id_of(&s.create(json!({"resourceType": "Practitioner"})));
    // No payload: a POST with no body, with the configured header.
    let sub = s.create(rest_hook(
        &format!("Task?owner=Practitioner/{pr1}&status=requested"),
        &rx.url,
        json!({"header": ["Authorization: Bearer hook-secret"]}),
    ));
    assert_eq!(sub["status"], "active", "the server activates it: {sub}");
    let sub_id = id_of(&sub);

    let t1 = id_of(&s.create(task(&pat, &pr1, "requested")));
    s.create(task(&pat, &pr2, "requested")); // another owner
    s.create(task(&pat, &pr1, "draft")); // another status
    rx.wait_for(1, Duration::from_secs(10));
    let got = rx.settle();
    assert_eq!(got.len(), 1, "exactly one notification: {got:?}");
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/hook");
    assert_eq!(got[0].header("Authorization"), Some("Bearer hook-secret"));
    assert!(got[0].body.is_empty(), "no payload: no body");

    // An update that still matches notifies again; one that stops matching does not.
    let mut t = s.get(&format!("Task/{t1}")).json();
    t["description"] = json!("call the patient");
    s.put(&format!("Task/{t1}"), &t).expect(200);
    assert_eq!(rx.wait_for(2, Duration::from_secs(10)).len(), 2);
    let mut t = s.get(&format!("Task/{t1}")).json();
    t["status"] = json!("cancelled");
    s.put(&format!("Task/{t1}"), &t).expect(200);
    assert_eq!(
        rx.settle().len(),
        2,
        "a write that does not match notifies nobody"
    );

    // A Subscription switched off notifies nobody.
    let mut off = s.get(&format!("Subscription/{sub_id}")).json();
    off["status"] = json!("off");
    s.put(&format!("Subscription/{sub_id}"), &off).expect(200);
    s.create(task(&pat, &pr1, "requested"));
    assert_eq!(rx.settle().len(), 2);
});

both!(payload_puts_the_resource, |b| {
    let s = start_with(b, fast).unwrap();
    let rx = Receiver::start(0);
    let pat = id_of(&s.create(json!({"resourceType": "Patient"})));
    s.create(rest_hook(
        "Encounter?class=EMER&status=in-progress",
        &rx.url,
        json!({"payload": "application/fhir+json"}),
    ));
    s.create(ed_visit(&pat, "AMB", "in-progress"));
    let enc = id_of(&s.create(ed_visit(&pat, "EMER", "in-progress")));
    s.create(ed_visit(&pat, "EMER", "finished"));
    rx.wait_for(1, Duration::from_secs(10));
    let got = rx.settle();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].method, "PUT");
    assert_eq!(got[0].path, format!("/hook/Encounter/{enc}"));
    assert!(got[0]
        .header("Content-Type")
        .unwrap()
        .starts_with("application/fhir+json"));
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["id"], enc.as_str());
    assert_eq!(body["class"]["code"], "EMER");
    assert_eq!(body["meta"]["versionId"], "1");
});

both!(validation_on_create, |b| {
    let s = start_with(b, fast).unwrap();
    let bad = |body: Value, status: u16, code: &str| {
        let r = s.post("Subscription", &body);
        r.expect_outcome(status, code);
    };
    let hook = "http://127.0.0.1:9/hook";
    bad(
        json!({"resourceType": "Subscription", "status": "requested", "reason": "r",
               "criteria": "Task?status=requested",
               "channel": {"type": "email", "endpoint": "mailto:cm@example.org"}}),
        400,
        "not-supported",
    );
    bad(
        rest_hook("Nonsense?x=1", hook, json!({})),
        400,
        "not-supported",
    );
    bad(
        rest_hook("Task?no-such-param=1", hook, json!({})),
        400,
        "invalid",
    );
    // (the R4 definitions already refuse a malformed url: 422)
    bad(
        rest_hook("Task?status=requested", "not a url", json!({})),
        422,
        "value",
    );
    bad(
        rest_hook("Task", "ftp://h/x", json!({})),
        400,
        "not-supported",
    );
    bad(
        rest_hook("Task", hook, json!({"payload": "application/fhir+xml"})),
        400,
        "not-supported",
    );
    bad(
        rest_hook("Task", hook, json!({"header": ["no colon here"]})),
        400,
        "invalid",
    );
    // Accepted: status set by the server, error text removed.
    let mut ok = rest_hook("Task?status=requested", hook, json!({}));
    ok["error"] = json!("stale");
    let r = s.post("Subscription", &ok);
    r.expect(201);
    assert_eq!(r.json()["status"], "active");
    assert!(r.json().get("error").is_none());
    let ws = json!({"resourceType": "Subscription", "status": "requested", "reason": "r",
                    "criteria": "Task", "channel": {"type": "websocket"}});
    s.post("Subscription", &ws).expect(201);
    // The CapabilityStatement lists Subscription.
    let cs = s.get("metadata").json();
    let types: Vec<&str> = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["type"].as_str())
        .collect();
    assert!(types.contains(&"Subscription"));
});

both!(retries_after_failures, |b| {
    let s = start_with(b, fast).unwrap();
    let rx = Receiver::start(2); // the first two attempts fail
    let pat = id_of(&s.create(json!({"resourceType": "Patient"})));
    let sub = id_of(&s.create(rest_hook(
        "Encounter?status=in-progress",
        &rx.url,
        json!({}),
    )));
    s.create(ed_visit(&pat, "EMER", "in-progress"));
    rx.wait_for(3, Duration::from_secs(10));
    let got = rx.settle();
    assert_eq!(got.len(), 3, "two failures, then one success: {got:?}");
    assert_eq!(
        s.get(&format!("Subscription/{sub}")).json()["status"],
        "active"
    );
});

both!(status_error_after_repeated_failures, |b| {
    let s = start_with(b, fast).unwrap();
    let rx = Receiver::start(usize::MAX); // always fails
    let pat = id_of(&s.create(json!({"resourceType": "Patient"})));
    let sub = id_of(&s.create(rest_hook(
        "Encounter?status=in-progress",
        &rx.url,
        json!({}),
    )));
    s.create(ed_visit(&pat, "EMER", "in-progress"));
    let start = Instant::now();
    let mut current = s.get(&format!("Subscription/{sub}")).json();
    while current["status"] != "error" && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
        current = s.get(&format!("Subscription/{sub}")).json();
    }
    assert_eq!(current["status"], "error", "{current}");
    assert!(current["error"].as_str().unwrap().contains("500"));
    assert_eq!(rx.got().len(), 3, "ICM_SUBSCRIPTION_MAX_ATTEMPTS attempts");
    // No more notifications for a Subscription in error.
    s.create(ed_visit(&pat, "EMER", "in-progress"));
    assert_eq!(rx.settle().len(), 3);
    // Re-activated by the client (status requested), it is delivered to again.
    current["status"] = json!("requested");
    let r = s.put(&format!("Subscription/{sub}"), &current);
    r.expect(200);
    assert_eq!(r.json()["status"], "active");
    assert!(r.json().get("error").is_none());
});

both!(failed_transaction_notifies_nobody, |b| {
    let s = start_with(b, fast).unwrap();
    let rx = Receiver::start(0);
    let pat = id_of(&s.create(json!({"resourceType": "Patient"})));
    s.create(rest_hook(
        "Encounter?status=in-progress",
        &rx.url,
        json!({}),
    ));
    let entry =
        |res: Value| json!({"resource": res, "request": {"method": "POST", "url": "Encounter"}});
    // The second entry is invalid: the whole transaction, and its notification, roll back.
    let failing = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        entry(ed_visit(&pat, "EMER", "in-progress")),
        entry(json!({"resourceType": "Encounter", "status": "not-a-status",
                     "class": {"code": "EMER"}})),
    ]});
    let r = s.post("", &failing);
    assert!(r.status >= 400 && r.status < 500, "{}", r.body);
    assert_eq!(rx.settle().len(), 0, "a rolled-back write notifies nobody");
    let ok = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        entry(ed_visit(&pat, "EMER", "in-progress")),
    ]});
    s.post("", &ok).expect(200);
    rx.wait_for(1, Duration::from_secs(10));
    assert_eq!(rx.settle().len(), 1);
});

both!(pending_notifications_survive_a_restart, |b| {
    // A process that does not deliver stops with notifications pending.
    let mut s1 = start_with(b, |c| {
        fast(c);
        c.subscription_delivery = "off".into();
    })
    .unwrap();
    let rx = Receiver::start(0);
    let pat = id_of(&s1.create(json!({"resourceType": "Patient"})));
    s1.create(rest_hook(
        "Encounter?status=in-progress",
        &rx.url,
        json!({}),
    ));
    let mut encs = vec![];
    for _ in 0..3 {
        encs.push(id_of(&s1.create(ed_visit(&pat, "EMER", "in-progress"))));
    }
    assert_eq!(rx.settle().len(), 0);
    s1.stop();
    // After the restart on the same database each is delivered exactly once.
    let s2 = s1.another(fast);
    rx.wait_for(3, Duration::from_secs(10));
    assert_eq!(rx.settle().len(), 3);
    drop(s2);
});

both!(two_processes_deliver_each_once, |b| {
    let s1 = start_with(b, fast).unwrap();
    let s2 = s1.another(fast);
    let rx = Receiver::start(0);
    let pat = id_of(&s1.create(json!({"resourceType": "Patient"})));
    s1.create(rest_hook(
        "Encounter?status=in-progress",
        &rx.url,
        json!({"payload": "application/fhir+json"}),
    ));
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..12 {
        let s = if i % 2 == 0 { &s1 } else { &s2 };
        ids.insert(id_of(&s.create(ed_visit(&pat, "EMER", "in-progress"))));
    }
    rx.wait_for(12, Duration::from_secs(15));
    let got = rx.settle();
    let paths: Vec<String> = got.iter().map(|g| g.path.clone()).collect();
    let distinct: std::collections::BTreeSet<String> = paths.iter().cloned().collect();
    assert_eq!(paths.len(), 12, "each notification once: {paths:?}");
    assert_eq!(
        distinct,
        ids.iter().map(|i| format!("/hook/Encounter/{i}")).collect()
    );
});

both!(notifications_honour_the_subscribers_access, |b| {
    let s = start_secure_with(b, fast).unwrap();
    let rx = Receiver::start(0);
    let system = mint(&claims("backend", "system/*.cruds", json!({})));
    let mk = |body: Value| {
        let ty = body["resourceType"].as_str().unwrap().to_string();
        let r = s.as_token(Some(&system), "POST", &ty, Some(&body));
        assert_eq!(r.status, 201, "{ty}: {}", r.body);
        id_of(&r.json())
    };
    let cm = mk(json!({"resourceType": "Practitioner", "name": [{"family": "Manager"}]}));
    let a = mk(json!({"resourceType": "Patient", "name": [{"family": "Alpha"}]}));
    let other = mk(json!({"resourceType": "Patient", "name": [{"family": "Bravo"}]}));
    mk(json!({"resourceType": "CareTeam", "status": "active",
              "subject": {"reference": format!("Patient/{a}")},
              "participant": [{"member": {"reference": format!("Practitioner/{cm}")}}]}));
    // The care manager subscribes to every ED visit in progress: only their patients' arrive.
    let token = mint(&claims(
        "cm",
        "user/*.cruds",
        json!({"fhirUser": format!("Practitioner/{cm}")}),
    ));
    let sub = json!({"resourceType": "Subscription", "status": "requested", "reason": "ED visits",
        "criteria": "Encounter?class=EMER&status=in-progress",
        "channel": {"type": "rest-hook", "endpoint": rx.url, "payload": "application/fhir+json"}});
    let r = s.as_token(Some(&token), "POST", "Subscription", Some(&sub));
    assert_eq!(r.status, 201, "{}", r.body);
    let hidden = mk(ed_visit(&other, "EMER", "in-progress"));
    let seen = mk(ed_visit(&a, "EMER", "in-progress"));
    rx.wait_for(1, Duration::from_secs(10));
    let got = rx.settle();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].path, format!("/hook/Encounter/{seen}"));
    assert!(!got
        .iter()
        .any(|g| g.body.contains(&hidden) || g.body.contains("Bravo")));
    // A patient-scoped token for A subscribing to Encounters hears nothing of the other one.
    let pt = mint(&claims("pa", "patient/*.cruds", json!({"patient": a})));
    let rx2 = Receiver::start(0);
    let mut sub2 = sub.clone();
    sub2["channel"]["endpoint"] = json!(rx2.url);
    sub2["criteria"] = json!("Encounter?status=in-progress");
    let r = s.as_token(Some(&pt), "POST", "Subscription", Some(&sub2));
    assert_eq!(r.status, 201, "{}", r.body);
    mk(ed_visit(&other, "AMB", "in-progress"));
    let mine = mk(ed_visit(&a, "AMB", "in-progress"));
    rx2.wait_for(1, Duration::from_secs(10));
    let got = rx2.settle();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].path, format!("/hook/Encounter/{mine}"));
});

/// A minimal WebSocket client (RFC 6455): enough to bind and read text frames.
struct Ws {
    stream: std::net::TcpStream,
}

impl Ws {
    fn connect(root: &str, path: &str) -> Ws {
        let addr = root.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        // The response head, byte by byte up to the blank line (frames may follow).
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Ws { stream }
    }

    fn send(&mut self, text: &str) {
        let data = text.as_bytes();
        assert!(data.len() < 126);
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![0x81, 0x80 | data.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&f).unwrap();
    }

    /// The next text frame (pings answered, other control frames skipped); None on timeout.
    fn recv(&mut self, timeout: Duration) -> Option<String> {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        loop {
            let mut h = [0u8; 2];
            if self.stream.read_exact(&mut h).is_err() {
                return None;
            }
            let op = h[0] & 0x0f;
            let mut len = (h[1] & 0x7f) as usize;
            if len == 126 {
                let mut l = [0u8; 2];
                self.stream.read_exact(&mut l).unwrap();
                len = u16::from_be_bytes(l) as usize;
            } else if len == 127 {
                let mut l = [0u8; 8];
                self.stream.read_exact(&mut l).unwrap();
                len = u64::from_be_bytes(l) as usize;
            }
            let mut data = vec![0u8; len];
            self.stream.read_exact(&mut data).unwrap();
            match op {
                1 => return Some(String::from_utf8(data).unwrap()),
                8 => return None,
                _ => continue,
            }
        }
    }
}

both!(websocket_bind_and_ping, |b| {
    let s = start_with(b, fast).unwrap();
    let pat = id_of(&s.create(json!({"resourceType": "Patient"})));
    let sub = id_of(&s.create(
        json!({"resourceType": "Subscription", "status": "requested",
        "reason": "ED", "criteria": "Encounter?class=EMER", "channel": {"type": "websocket"}}),
    ));
    // The CapabilityStatement advertises where to connect.
    let cs = s.get("metadata").json();
    let ws_url = cs["rest"][0]["extension"][0]["valueUri"].as_str().unwrap();
    assert_eq!(
        ws_url,
        format!("{}/$subscription-ws", s.base.replacen("http", "ws", 1))
    );
    // A plain GET (no WebSocket handshake) is a client mistake with an OperationOutcome, not
    // an empty 400 (schemathesis found the empty one).
    let r = s.get("$subscription-ws");
    let oo = r.expect_outcome(400, "invalid");
    assert!(oo.to_string().contains("WebSocket upgrade"), "{oo}");
    // A notification waiting before anyone binds is pinged once a client binds.
    s.create(ed_visit(&pat, "EMER", "in-progress"));
    let mut ws = Ws::connect(&s.root, "/fhir/$subscription-ws");
    ws.send("bind no-such-subscription");
    assert!(ws
        .recv(Duration::from_secs(10))
        .unwrap()
        .starts_with("error no-such-subscription"));
    ws.send(&format!("bind {sub}"));
    assert_eq!(
        ws.recv(Duration::from_secs(10)),
        Some(format!("bound {sub}"))
    );
    assert_eq!(
        ws.recv(Duration::from_secs(10)),
        Some(format!("ping {sub}"))
    );
    // One ping per matching write, none for others.
    s.create(ed_visit(&pat, "AMB", "in-progress"));
    s.create(ed_visit(&pat, "EMER", "finished"));
    assert_eq!(
        ws.recv(Duration::from_secs(10)),
        Some(format!("ping {sub}"))
    );
    assert_eq!(ws.recv(Duration::from_millis(800)), None);
});
