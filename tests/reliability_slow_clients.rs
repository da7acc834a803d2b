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

/// The tests here measure how fast a server accepts and answers while it is under attack, so
/// they run one at a time: run side by side (the default), the other two tests' servers and
/// load took the CPU from the 10,000-connection test's debug-build server, which then accepted
/// the burst more slowly than its header timeout and closed the first ones before the last were
/// accepted.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

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
    let _serial = one_at_a_time();
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
    let _serial = one_at_a_time();
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

/// The soft limit on open files of this process, raised to the hard limit when it is lower
/// (children inherit it).
fn raise_open_files() -> u64 {
    let me = std::process::id().to_string();
    let _ = std::process::Command::new("prlimit")
        .args(["--pid", &me, "--nofile=unlimited:unlimited"])
        .stderr(std::process::Stdio::null())
        .status();
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or("0");
    soft.parse().unwrap_or(u64::MAX)
}

/// Open sockets of process `pid` once the count has not changed for a second: the readiness
/// probe's connection is closed by the client as `wait_ready` returns, and the server only
/// closes its end a moment later (later still on a loaded machine). Counted while it was still
/// open, the baseline is one too high, and the test then waits for a count it can never reach
/// until the header timeout closes the idle connections — the failure seen in CI: "the server
/// holds 1230 sockets, want 10000 more than …".
fn settled_sockets_of(pid: u32) -> usize {
    let t = Instant::now();
    let mut last = sockets_of(pid);
    let mut same_since = Instant::now();
    while same_since.elapsed() < Duration::from_secs(1) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(25));
        let now = sockets_of(pid);
        if now != last {
            last = now;
            same_since = Instant::now();
        }
    }
    last
}

/// Open sockets of process `pid`.
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// 10,000 idle connections (issue 17) on the real server binary, a process of its own (client
/// and server sockets together would not fit one process's file limit): while all of them are
/// held open by the server, new reads and creates are served at once; then the server closes the
/// idle ones after its header timeout.
#[test]
fn ten_thousand_idle_connections_do_not_stop_new_requests() {
    let _serial = one_at_a_time();
    const IDLE: usize = 10_000;
    const TIMEOUT_MS: u64 = 10_000;
    let files = raise_open_files();
    if files < IDLE as u64 + 1000 {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but this process may open only {files} files"
        );
        eprintln!(
            "\n*** only {files} open files allowed: the 10,000-connection test was SKIPPED ***\n"
        );
        return;
    }
    let dir = TempDir::new();
    let port = process::free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_icm-fhir"))
        .arg("serve")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.0.join("icm.db").display()),
        )
        .env("ICM_BIND", format!("127.0.0.1:{port}"))
        .env("ICM_AUTH", "off")
        .env("ICM_WORKERS", "2")
        .env("ICM_HEADER_TIMEOUT_MS", TIMEOUT_MS.to_string())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let server = process::Process {
        child,
        base: format!("http://127.0.0.1:{port}/fhir"),
    };
    process::wait_ready(&server.base);
    let pid = server.child.id();
    let before = settled_sockets_of(pid);
    let t = Instant::now();
    let mut slowest_connect = Duration::ZERO;
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|i| {
            let c = Instant::now();
            let s = TcpStream::connect(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}"));
            slowest_connect = slowest_connect.max(c.elapsed());
            s
        })
        .collect();
    let opened = t.elapsed();
    // No connection waited for a SYN retransmission (one second): the listen queue is long
    // enough for the burst (with std's 128 it overflowed and opening took 15-20 s).
    assert!(
        slowest_connect < Duration::from_millis(900),
        "a connection took {slowest_connect:?} to open"
    );
    assert!(
        opened < Duration::from_millis(TIMEOUT_MS / 2),
        "opening {IDLE} connections took {opened:?}"
    );
    // The server has accepted them all (each is an open socket of its own process).
    let t = Instant::now();
    while sockets_of(pid) < before + IDLE {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the server holds {} sockets, want {} more than {before}",
            sockets_of(pid),
            IDLE
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let held = sockets_of(pid);
    let client = process::agent(Duration::from_secs(10));
    let t = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let r = Instant::now();
        let (st, _, _) = process::send(
            Duration::from_secs(10),
            "GET",
            &format!("{}/metadata", server.base),
            None,
        );
        assert_eq!(st, 200);
        let body = json!({"resourceType": "Patient", "active": true});
        let (st, _, b) = process::send(
            Duration::from_secs(10),
            "POST",
            &format!("{}/Patient", server.base),
            Some(&body),
        );
        assert_eq!(st, 201, "{b}");
        slowest = slowest.max(r.elapsed());
    }
    let took = t.elapsed();
    drop(client);
    // Still all held while those were served.
    assert!(
        sockets_of(pid) >= before + IDLE,
        "{} sockets",
        sockets_of(pid)
    );
    eprintln!(
        "{IDLE} idle connections opened in {:.2} s (slowest {:.3} s), server holding {held} sockets: 10 reads + 10 \
         creates in {:.3} s (slowest pair {:.3} s)",
        opened.as_secs_f64(),
        slowest_connect.as_secs_f64(),
        took.as_secs_f64(),
        slowest.as_secs_f64()
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The idle ones are closed by the server after the header timeout.
    let results = trickle(
        idle,
        b"",
        Duration::from_millis(200),
        Duration::from_secs(30),
    );
    let longest = results.iter().map(|r| r.0).max().unwrap();
    assert!(
        longest < Duration::from_millis(TIMEOUT_MS + 5_000),
        "an idle connection stayed open {longest:?}"
    );
    let t = Instant::now();
    while sockets_of(pid) > before + 10 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{} sockets left",
            sockets_of(pid)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
