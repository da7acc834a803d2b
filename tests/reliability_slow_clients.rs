//! Slow clients (issue 17): slowloris headers (a header byte now and then, never finishing) are
//! cut off after ICM_HEADER_TIMEOUT_MS; a body that trickles in is answered 408 OperationOutcome
//! after ICM_BODY_TIMEOUT (also a Bundle's); idle connections are closed; and while hundreds of
//! such connections are open, ordinary requests are served at their usual speed.
mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HEADER_TIMEOUT_MS: u64 = 1000;
const BODY_TIMEOUT_S: u64 = 2;

fn addr(s: &TestServer) -> String {
    s.root.trim_start_matches("http://").to_string()
}

/// Keep sending one byte every `every` on each stream until the server closes it (a write or
/// read fails or reads EOF) or `limit` passes; for each, how long it stayed open and what the
/// server sent.
fn trickle(
    mut streams: Vec<TcpStream>,
    byte: &[u8],
    every: Duration,
    limit: Duration,
) -> Vec<(Duration, String)> {
    let start = Instant::now();
    let mut done: Vec<Option<(Duration, String)>> = vec![None; streams.len()];
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); streams.len()];
    for s in &streams {
        s.set_nonblocking(true).unwrap();
    }
    while start.elapsed() < limit && done.iter().any(|d| d.is_none()) {
        for (i, s) in streams.iter_mut().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let mut buf = [0u8; 4096];
            let closed = loop {
                match s.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => got[i].extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            };
            let closed = closed || s.write_all(byte).is_err();
            if closed {
                done[i] = Some((
                    start.elapsed(),
                    String::from_utf8_lossy(&got[i]).to_string(),
                ));
            }
        }
        std::thread::sleep(every);
    }
    done.into_iter()
        .enumerate()
        .map(|(i, d)| d.unwrap_or((limit, String::from_utf8_lossy(&got[i]).to_string())))
        .collect()
}

/// Ordinary requests on another thread until `stop`: the slowest one.
fn ordinary_load(
    s: &TestServer,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, Duration)> {
    let base = s.base.clone();
    std::thread::spawn(move || {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        let mut n = 0;
        let mut slowest = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let r = agent
                .post(&format!("{base}/Patient"))
                .set("Content-Type", "application/fhir+json")
                .send_string(r#"{"resourceType":"Patient","name":[{"family":"Fast"}]}"#)
                .expect("an ordinary create is served");
            assert_eq!(r.status(), 201);
            let r = agent
                .get(&format!("{base}/Patient?family=fast&_count=1"))
                .call()
                .expect("an ordinary search is served");
            assert_eq!(r.status(), 200);
            slowest = slowest.max(t.elapsed());
            n += 1;
        }
        (n, slowest)
    })
}

fn server() -> TestServer {
    start_with(Backend::Sqlite, |c| {
        c.header_timeout_ms = HEADER_TIMEOUT_MS;
        c.body_timeout = BODY_TIMEOUT_S;
        c.workers = Some(2);
    })
    .unwrap()
}

#[test]
fn slowloris_headers_are_cut_off_without_starving_others() {
    let s = server();
    let stop = Arc::new(AtomicBool::new(false));
    let load = ordinary_load(&s, stop.clone());
    let streams: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut t = TcpStream::connect(addr(&s)).unwrap();
            t.write_all(b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            t
        })
        .collect();
    let results = trickle(
        streams,
        b"a",
        Duration::from_millis(200),
        Duration::from_secs(10),
    );
    stop.store(true, Ordering::Relaxed);
    let (n, slowest) = load.join().unwrap();
    let longest = results.iter().map(|r| r.0).max().unwrap();
    eprintln!(
        "300 slowloris header connections: all closed after at most {:.2} s; {n} ordinary request pairs meanwhile, slowest {:.3} s",
        longest.as_secs_f64(),
        slowest.as_secs_f64()
    );
    assert!(
        longest < Duration::from_millis(HEADER_TIMEOUT_MS + 3000),
        "a slowloris connection stayed open {longest:?}"
    );
    assert!(
        results
            .iter()
            .all(|r| r.1.is_empty() || r.1.starts_with("HTTP/1.1 408")),
        "{:?}",
        results[0]
    );
    assert!(n >= 5, "ordinary requests kept flowing: {n}");
    assert!(
        slowest < Duration::from_secs(2),
        "an ordinary request took {slowest:?}"
    );
}

#[test]
fn slow_bodies_get_408_operation_outcome_without_starving_others() {
    let s = server();
    let stop = Arc::new(AtomicBool::new(false));
    let load = ordinary_load(&s, stop.clone());
    let mut streams = Vec::new();
    for i in 0..100 {
        let mut t = TcpStream::connect(addr(&s)).unwrap();
        // Half plain creates, half transaction Bundles (a separate body reader).
        let path = if i % 2 == 0 { "/fhir/Patient" } else { "/fhir" };
        write!(
            t,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\nContent-Length: 100000\r\n\r\n{{"
        )
        .unwrap();
        streams.push(t);
    }
    let results = trickle(
        streams,
        b" ",
        Duration::from_millis(200),
        Duration::from_secs(15),
    );
    stop.store(true, Ordering::Relaxed);
    let (n, slowest) = load.join().unwrap();
    let longest = results.iter().map(|r| r.0).max().unwrap();
    eprintln!(
        "100 slow-body connections: all answered after at most {:.2} s; {n} ordinary request pairs meanwhile, slowest {:.3} s",
        longest.as_secs_f64(),
        slowest.as_secs_f64()
    );
    for (took, text) in &results {
        assert!(text.starts_with("HTTP/1.1 408"), "{text:?} after {took:?}");
        assert!(
            text.contains("OperationOutcome") && text.contains("\"timeout\""),
            "{text}"
        );
        assert!(text.contains("ICM_BODY_TIMEOUT"), "{text}");
    }
    assert!(
        longest < Duration::from_secs(BODY_TIMEOUT_S + 3),
        "a slow body held its connection {longest:?}"
    );
    assert!(n >= 5, "ordinary requests kept flowing: {n}");
    assert!(
        slowest < Duration::from_secs(2),
        "an ordinary request took {slowest:?}"
    );
}

#[test]
fn thousands_of_idle_connections_do_not_stop_new_requests() {
    let s = server();
    let idle: Vec<TcpStream> = (0..3000)
        .map(|_| TcpStream::connect(addr(&s)).unwrap())
        .collect();
    let t = Instant::now();
    for _ in 0..10 {
        s.get("metadata").expect(200);
        s.create(json!({"resourceType": "Patient", "active": true}));
    }
    let took = t.elapsed();
    eprintln!(
        "3000 idle connections open: 10 reads + 10 creates in {:.3} s",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The idle ones are closed by the server after the header timeout.
    let results = trickle(
        idle,
        b"",
        Duration::from_millis(100),
        Duration::from_secs(10),
    );
    let longest = results.iter().map(|r| r.0).max().unwrap();
    assert!(
        longest < Duration::from_millis(HEADER_TIMEOUT_MS + 4000),
        "an idle connection stayed open {longest:?}"
    );
}
