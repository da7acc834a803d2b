//! The independent check of `$icm-metrics` (tests/measures_check.py) on both backends: the
//! script generates a Synthea-shaped population, runs the program through its operations,
//! recomputes every measure from the resources' JSON in Python and must agree exactly with the
//! server's MeasureReports — as an administrator and with a care manager's own token.
mod common;
use std::process::Command;

use common::auth::*;
use common::*;

fn independent_check(s: &TestServer) {
    if Command::new("python3").arg("-V").output().is_err() {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but python3 is missing"
        );
        eprintln!("\n!!!!! python3 is missing: the independent check was SKIPPED !!!!!\n");
        return;
    }
    let admin = mint(&claims("checker", "system/*.cruds", json!({})));
    let manager = mint(&claims(
        "check-m1",
        "user/*.cruds",
        json!({"fhirUser": "Practitioner/check-m1"}),
    ));
    let started = std::time::Instant::now();
    let out = Command::new("python3")
        .arg(format!(
            "{}/tests/measures_check.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args([
            "--base",
            &s.base,
            "--token",
            &admin,
            "--practitioner-token",
            &manager,
            "--practitioner",
            "check-m1",
            "--patients",
            "50",
            "--seed",
            "11",
        ])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!(
        "{stdout}{}({:?}, {:.1} s)",
        String::from_utf8_lossy(&out.stderr),
        s.backend,
        started.elapsed().as_secs_f64()
    );
    assert!(out.status.success(), "the independent check disagrees");
    assert!(
        stdout.contains("12 reports checked, 0 disagreements"),
        "{stdout}"
    );
}

secure_tests!(python_recomputation_agrees, |s| independent_check(s));
