//! SQLite on a full disk (issue 17), on the real server binary. Writes that find no room answer
//! 507 (SQLite "database or disk is full") or 503 (an I/O error) OperationOutcome with
//! Retry-After — never 500 — and store nothing; reads keep working; when room returns, writing
//! resumes without a restart; afterwards `PRAGMA integrity_check` is `ok`, every acknowledged
//! write is there and `icm-fhir verify` passes.
//!
//! Read-only files: the database and its WAL made immutable (`chattr +i`; root cannot write
//! them either, even through descriptors already open): writes answer 503, reads keep working,
//! writing resumes after `chattr -i`.
//!
//! Two ways to fill the disk:
//! - a file-size limit (`RLIMIT_FSIZE`, set on the running server with `prlimit`, `SIGXFSZ`
//!   ignored so the write fails with `EFBIG` instead of killing the process): needs no
//!   privileges, so it always runs;
//! - a real full file system: a size-limited `tmpfs` (`ENOSPC`), shrunk to just above what it
//!   holds and grown again with `mount -o remount,size=…`. Needs root with mount rights; where
//!   mounting is impossible it is skipped with a message, except under CI=true, where it fails.
mod common;
use common::*;
use diesel::prelude::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_icm-fhir");

use common::process::{free_port, wait_ready, Process as Server};

/// (status, Retry-After present, body); transport errors fail the test.
fn send(method: &str, url: &str, body: Option<&Value>) -> (u16, bool, Value) {
    common::process::send(Duration::from_secs(60), method, url, body)
}

/// The server on `db`, started through `sh` with SIGXFSZ ignored (inherited across exec), so a
/// write past a file-size limit fails with EFBIG instead of killing the process.
fn spawn(db: &Path, spool: &Path, log: &Path) -> Server {
    let port = free_port();
    let child = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; exec \"$0\" serve")
        .arg(BIN)
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("ICM_BIND", format!("127.0.0.1:{port}"))
        .env("ICM_AUTH", "off")
        .env("ICM_WORKERS", "2")
        .env("ICM_AUDIT_SPOOL", spool)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}/fhir"),
    };
    wait_ready(&server.base);
    server
}

/// An Observation of about 6 KB (so the disk fills in a few hundred writes).
fn big(i: usize) -> Value {
    json!({"resourceType": "Observation", "status": "final",
        "identifier": [{"system": "urn:fill", "value": format!("f{i}")}],
        "code": {"text": format!("fill {i}")},
        "valueString": "x".repeat(6000)})
}

#[derive(Default, Debug)]
struct Figures {
    acknowledged: Vec<String>,
    refused: Vec<u16>,
    first_refusal_after: usize,
}

const WARM_UP: usize = 30;

/// Some data first, written freely.
fn warm_up(s: &Server, figures: &mut Figures) {
    for i in 0..WARM_UP {
        let (st, _, b) = send("POST", &format!("{}/Observation", s.base), Some(&big(i)));
        assert_eq!(st, 201, "{b}");
        figures
            .acknowledged
            .push(b["id"].as_str().unwrap().to_string());
    }
}

/// Write until the storage refuses `REFUSALS` writes in a row (at most `limit` attempts). Every
/// refusal must be a 507 or 503 OperationOutcome with Retry-After.
fn fill(s: &Server, limit: usize, figures: &mut Figures) {
    const REFUSALS: usize = 5;
    let mut in_a_row = 0;
    for i in 0..limit {
        let (st, retry, b) = send("POST", &format!("{}/Observation", s.base), Some(&big(i)));
        match st {
            201 => {
                in_a_row = 0;
                figures
                    .acknowledged
                    .push(b["id"].as_str().unwrap().to_string());
            }
            503 | 507 => {
                assert_eq!(b["resourceType"], "OperationOutcome", "{st}: {b}");
                let code = b["issue"][0]["code"].as_str().unwrap_or_default();
                assert!(
                    (st == 507 && code == "no-store") || (st == 503 && code == "transient"),
                    "{st} with issue code {code}: {b}"
                );
                assert!(retry, "{st} carries Retry-After");
                if figures.refused.is_empty() {
                    figures.first_refusal_after = figures.acknowledged.len() - WARM_UP;
                }
                figures.refused.push(st);
                in_a_row += 1;
                if in_a_row == REFUSALS {
                    return;
                }
            }
            other => {
                panic!("write {i} on a full disk answered {other} (want 201, 503 or 507): {b}")
            }
        }
    }
    panic!("the storage never filled in {limit} writes");
}

/// Reads still work on the full disk: a read of an acknowledged resource and a search.
fn reads_work(s: &Server, figures: &Figures) {
    let id = figures
        .acknowledged
        .last()
        .expect("some writes were acknowledged");
    let (st, _, b) = send("GET", &format!("{}/Observation/{id}", s.base), None);
    assert_eq!(st, 200, "read on a full disk: {b}");
    let (st, _, b) = send(
        "GET",
        &format!(
            "{}/Observation?identifier=urn:fill|&_total=accurate&_summary=count",
            s.base
        ),
        None,
    );
    assert_eq!(st, 200, "search on a full disk: {b}");
    assert_eq!(
        b["total"].as_u64().unwrap() as usize,
        figures.acknowledged.len()
    );
}

/// Once room is back, writes succeed again (within a few seconds, no restart).
fn writes_resume(s: &Server, figures: &mut Figures) -> f64 {
    let t = Instant::now();
    loop {
        let (st, _, b) = send(
            "POST",
            &format!("{}/Observation", s.base),
            Some(&big(100_000 + figures.acknowledged.len())),
        );
        if st == 201 {
            figures
                .acknowledged
                .push(b["id"].as_str().unwrap().to_string());
            break;
        }
        assert!(matches!(st, 503 | 507), "after room returned: {st} {b}");
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "writing did not resume: {st} {b}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let secs = t.elapsed().as_secs_f64();
    for i in 0..20 {
        let (st, _, b) = send(
            "POST",
            &format!("{}/Observation", s.base),
            Some(&big(200_000 + i)),
        );
        assert_eq!(st, 201, "write {i} after room returned: {b}");
        figures
            .acknowledged
            .push(b["id"].as_str().unwrap().to_string());
    }
    secs
}

/// After the server stopped: the file is intact, every acknowledged write is there, verify OK.
fn intact(db: &Path, acknowledged: usize) {
    #[derive(QueryableByName)]
    struct Check {
        #[diesel(sql_type = diesel::sql_types::Text)]
        integrity_check: String,
    }
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut c = diesel::SqliteConnection::establish(db.to_str().unwrap()).unwrap();
    let rows: Vec<Check> = diesel::sql_query("PRAGMA integrity_check")
        .load(&mut c)
        .unwrap();
    let text: Vec<&str> = rows.iter().map(|r| r.integrity_check.as_str()).collect();
    assert_eq!(text, ["ok"], "PRAGMA integrity_check");
    let n: Vec<N> = diesel::sql_query(
        "SELECT COUNT(*) AS n FROM resources WHERE res_type = 'Observation' AND content LIKE '%urn:fill%'",
    )
    .load(&mut c)
    .unwrap();
    assert_eq!(
        n[0].n as usize, acknowledged,
        "exactly the acknowledged writes are stored (refused ones left nothing)"
    );
    let out = Command::new(BIN)
        .arg("verify")
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verify:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The distinct storage errors the server logged (`database write failed: …`).
fn logged_faults(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut v: Vec<String> = text
        .lines()
        .filter_map(|l| {
            l.split_once("database write failed: ")
                .map(|x| x.1.to_string())
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn prlimit(pid: u32, fsize: &str) {
    let st = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--fsize={fsize}"))
        .status()
        .expect("prlimit (util-linux) is needed for this test");
    assert!(st.success(), "prlimit --fsize={fsize}");
}

#[test]
fn sqlite_file_size_limit_refuses_writes_then_resumes() {
    let dir = TempDir::new();
    let db = dir.0.join("icm.db");
    let s = spawn(&db, &dir.0.join("spool.jsonl"), &dir.0.join("server.log"));
    // Some data first, written freely.
    let mut figures = Figures::default();
    warm_up(&s, &mut figures);
    // The limit: 256 KiB above the largest file the server has (database, WAL). Writes inside
    // what exists still succeed; a file that has to grow past the limit cannot.
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let limit = file_len(&db).max(file_len(&wal)) + 256 * 1024;
    let pid = s.child.id();
    prlimit(pid, &format!("{limit}:unlimited"));
    fill(&s, 3000, &mut figures);
    reads_work(&s, &figures);
    prlimit(pid, "unlimited:unlimited");
    let resumed = writes_resume(&s, &mut figures);
    eprintln!(
        "file-size limit {limit} B: {} writes acknowledged before the first refusal, refusals {:?}; \
         writing resumed {resumed:.2} s after the limit was lifted",
        figures.first_refusal_after, figures.refused
    );
    drop(s);
    eprintln!(
        "SQLite errors logged: {:?}",
        logged_faults(&dir.0.join("server.log"))
    );
    intact(&db, figures.acknowledged.len());
}

/// Mount a tmpfs of `size` on `at`; false when this process may not mount.
fn mount_tmpfs(at: &Path, size: &str) -> bool {
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn remount_size(at: &Path, size: &str) {
    let st = Command::new("mount")
        .args(["-o", &format!("remount,size={size}")])
        .arg(at)
        .status()
        .unwrap();
    assert!(st.success(), "remount size={size}");
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Bytes used on the file system at `at` (statfs through `df`).
fn used_bytes(at: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=used", "-B1"])
        .arg(at)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn sqlite_on_a_full_tmpfs_refuses_writes_then_resumes() {
    let dir = TempDir::new();
    let mnt = dir.0.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    if !mount_tmpfs(&mnt, "64m") {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but a tmpfs cannot be mounted here (root with mount rights is needed)"
        );
        eprintln!(
            "\n*** cannot mount a tmpfs (not root, or no mount rights): the full-tmpfs test was \
             SKIPPED; the file-size-limit test covers the same path ***\n"
        );
        return;
    }
    let _unmount = Unmount(mnt.clone());
    let db = mnt.join("icm.db");
    // The spool and the log live off the small file system.
    let s = spawn(&db, &dir.0.join("spool.jsonl"), &dir.0.join("server.log"));
    let mut figures = Figures::default();
    warm_up(&s, &mut figures);
    // Shrink the file system to just above what it holds.
    let used = used_bytes(&mnt);
    let size = used + 512 * 1024;
    remount_size(&mnt, &size.to_string());
    fill(&s, 3000, &mut figures);
    reads_work(&s, &figures);
    remount_size(&mnt, "64m");
    let resumed = writes_resume(&s, &mut figures);
    eprintln!(
        "tmpfs of {size} B ({used} B used): {} writes acknowledged before the first refusal, \
         refusals {:?}; writing resumed {resumed:.2} s after the file system grew",
        figures.first_refusal_after, figures.refused
    );
    drop(s);
    eprintln!(
        "SQLite errors logged: {:?}",
        logged_faults(&dir.0.join("server.log"))
    );
    intact(&db, figures.acknowledged.len());
}

/// `chattr` on the files; false when the file system does not support the attribute.
fn chattr(flag: &str, files: &[&Path]) -> bool {
    Command::new("chattr")
        .arg(flag)
        .args(files)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Takes the immutable attribute off again, whatever happens (the temporary folder must go).
struct Mutable(Vec<PathBuf>);

impl Drop for Mutable {
    fn drop(&mut self) {
        let files: Vec<&Path> = self.0.iter().map(|p| p.as_path()).collect();
        chattr("-i", &files);
    }
}

#[test]
fn sqlite_read_only_files_refuse_writes_then_resume() {
    let dir = TempDir::new();
    let db = dir.0.join("icm.db");
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let s = spawn(&db, &dir.0.join("spool.jsonl"), &dir.0.join("server.log"));
    let mut figures = Figures::default();
    warm_up(&s, &mut figures);
    let _mutable = Mutable(vec![db.clone(), wal.clone()]);
    if !chattr("+i", &[&db, &wal]) {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but chattr +i does not work on {} (root and a file system with the \
             immutable attribute are needed)",
            dir.0.display()
        );
        eprintln!(
            "\n*** chattr +i failed (not root, or the file system lacks the attribute): the \
             read-only test was SKIPPED ***\n"
        );
        return;
    }
    fill(&s, 100, &mut figures);
    assert!(
        figures.refused.iter().all(|st| *st == 503),
        "a read-only database answers 503: {:?}",
        figures.refused
    );
    reads_work(&s, &figures);
    assert!(chattr("-i", &[&db, &wal]), "chattr -i");
    let resumed = writes_resume(&s, &mut figures);
    eprintln!(
        "read-only database and WAL: {} writes acknowledged before the first refusal, refusals \
         {:?}; writing resumed {resumed:.2} s after chattr -i",
        figures.first_refusal_after, figures.refused
    );
    drop(s);
    eprintln!(
        "SQLite errors logged: {:?}",
        logged_faults(&dir.0.join("server.log"))
    );
    intact(&db, figures.acknowledged.len());
}

/// A loop-mounted ext4 file system of 64 MiB at `at`, with `errors=remount-ro`; false when this
/// process may not make or mount one.
fn mount_ext4(image: &Path, at: &Path) -> bool {
    let made = Command::new("truncate")
        .args(["-s", "64M"])
        .arg(image)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("mkfs.ext4")
            .arg("-q")
            .arg(image)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    made && mount(image, at, "loop,errors=remount-ro")
}

/// Mount the file-system image `image` at `at` with `options`.
fn mount(image: &Path, at: &Path, options: &str) -> bool {
    Command::new("mount")
        .args(["-o", options])
        .arg(image)
        .arg(at)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The mount options of the file system mounted at `at` (from /proc/mounts).
fn mount_options(at: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(at.to_str().unwrap()))
        .and_then(|l| l.split(' ').nth(3))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn sqlite_on_a_file_system_gone_read_only_refuses_writes() {
    let dir = TempDir::new();
    let (image, mnt) = (dir.0.join("disk.img"), dir.0.join("mnt"));
    std::fs::create_dir_all(&mnt).unwrap();
    if !mount_ext4(&image, &mnt) {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but a loop-mounted ext4 cannot be made here (root, mkfs.ext4 and loop \
             devices are needed)"
        );
        eprintln!(
            "\n*** cannot loop-mount an ext4 image (not root, or no loop devices): the \
             read-only-mount test was SKIPPED; the read-only-files test covers the same path ***\n"
        );
        return;
    }
    let unmount = Unmount(mnt.clone());
    let source = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE"])
        .arg(&mnt)
        .output()
        .unwrap();
    let device = String::from_utf8_lossy(&source.stdout).trim().to_string();
    let name = device.trim_start_matches("/dev/");
    let db = mnt.join("icm.db");
    let s = spawn(&db, &dir.0.join("spool.jsonl"), &dir.0.join("server.log"));
    let mut figures = Figures::default();
    warm_up(&s, &mut figures);
    // What was acknowledged reaches the device first: with `synchronous = NORMAL` a WAL commit
    // is not fsynced, and an aborted ext4 journal discards what is still in the page cache (as
    // a power loss would). `sync` models writes that were on disk before the fault.
    assert!(Command::new("sync")
        .arg("-f")
        .arg(&db)
        .status()
        .unwrap()
        .success());
    // The kernel's own reaction to a file-system error: ext4 aborts its journal and remounts the
    // file system read-only (`errors=remount-ro`) under the running server.
    std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "1")
        .expect("ext4 trigger_fs_error");
    let t = Instant::now();
    while !mount_options(&mnt)
        .split(',')
        .any(|o| o == "ro" || o == "emergency_ro")
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{}",
            mount_options(&mnt)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = figures.acknowledged.len();
    fill(&s, 100, &mut figures);
    assert_eq!(
        figures.acknowledged.len(),
        before,
        "no write is acknowledged on a read-only file system"
    );
    assert!(
        figures.refused.iter().all(|st| *st == 503),
        "a read-only file system answers 503: {:?}",
        figures.refused
    );
    reads_work(&s, &figures);
    // The server keeps answering.
    let (st, _, _) = send("GET", &format!("{}/metadata", s.base), None);
    assert_eq!(st, 200);
    drop(s);
    let faults = logged_faults(&dir.0.join("server.log"));
    eprintln!(
        "ext4 remounted read-only under the server ({}): refusals {:?}; SQLite errors logged: \
         {faults:?}",
        mount_options(&mnt),
        figures.refused
    );
    // The repair an operator would do: unmount, fsck, mount again; every acknowledged write is
    // there, the file is intact and `verify` passes.
    let st = Command::new("umount").arg(&mnt).status().unwrap();
    assert!(st.success(), "umount after the server stopped");
    std::mem::forget(unmount);
    let fsck = Command::new("e2fsck")
        .args(["-f", "-y"])
        .arg(&image)
        .output()
        .unwrap();
    // 0: clean, 1: errors corrected (the error we triggered is recorded in the superblock).
    assert!(
        matches!(fsck.status.code(), Some(0 | 1)),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    assert!(mount(&image, &mnt, "loop"), "mount after e2fsck");
    let _unmount = Unmount(mnt.clone());
    intact(&db, figures.acknowledged.len());
}

/// `kill -9` during a write load: every acknowledged write is there after a restart (WAL with
/// `synchronous = NORMAL` is durable across a crash of the process), at most the writes in
/// flight at the kill are there besides, the file is intact and `verify` passes.
#[test]
fn sqlite_survives_kill_9_during_writes() {
    const WRITERS: usize = 4;
    let dir = TempDir::new();
    let db = dir.0.join("icm.db");
    let mut s = spawn(&db, &dir.0.join("spool.jsonl"), &dir.0.join("server.log"));
    let base = s.base.clone();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let base = base.clone();
            std::thread::spawn(move || {
                let client = common::process::agent(Duration::from_secs(30));
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    let r = client
                        .post(&format!("{base}/Observation"))
                        .set("Content-Type", "application/fhir+json")
                        .send_string(&big(w * 1_000_000 + i).to_string());
                    match r {
                        Ok(r) => {
                            let b: Value = r.into_json().unwrap();
                            acknowledged.push(b["id"].as_str().unwrap().to_string());
                        }
                        Err(ureq::Error::Status(st, r)) => {
                            panic!(
                                "{st} before the kill: {}",
                                r.into_string().unwrap_or_default()
                            )
                        }
                        // The server is gone.
                        Err(_) => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    let acknowledged: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        acknowledged.len() > 20,
        "{} writes before the kill",
        acknowledged.len()
    );
    drop(s);
    // Restarted on the same file: every acknowledged write reads back.
    let s = spawn(&db, &dir.0.join("spool.jsonl"), &dir.0.join("server2.log"));
    for id in &acknowledged {
        let (st, _, b) = send("GET", &format!("{}/Observation/{id}", s.base), None);
        assert_eq!(
            st, 200,
            "acknowledged Observation/{id} after the restart: {b}"
        );
    }
    let (st, _, b) = send(
        "GET",
        &format!("{}/Observation?_summary=count&_total=accurate", s.base),
        None,
    );
    assert_eq!(st, 200, "{b}");
    let stored = b["total"].as_u64().unwrap() as usize;
    assert!(
        stored >= acknowledged.len() && stored <= acknowledged.len() + WRITERS,
        "{stored} stored for {} acknowledged and at most {WRITERS} in flight",
        acknowledged.len()
    );
    eprintln!(
        "kill -9 after 2.5 s of {WRITERS} writers: {} writes acknowledged, {stored} stored after the restart",
        acknowledged.len()
    );
    drop(s);
    intact(&db, stored);
}
