//! The invariant corpus (tests/data/validation-corpus/*.json): hand-written valid and invalid
//! resources, each invalid one with the exact invariant keys and element paths expected. Every
//! case runs through the pure validator (`validate`, the entry point every write path and
//! `$validate` share) plus the ICM profiles a resource claims; the error issues must be exactly
//! the expected ones. `cargo test --test validation_corpus -- --nocapture` prints the counts
//! reported in the README.
use std::collections::BTreeSet;

use icm_fhir::fhir::outcome::Severity;
use icm_fhir::fhir::validate::{profiles, validate};
use serde_json::Value;

/// (key, expression, issue code) of every error issue, the key read from "constraint KEY failed".
fn errors(r: &Value) -> BTreeSet<(String, String, String)> {
    let mut issues = validate(r).issues;
    issues.extend(profiles::check(r, &[]));
    issues
        .into_iter()
        .filter(|i| matches!(i.severity, Severity::Error | Severity::Fatal))
        .map(|i| {
            let key = i
                .diagnostics
                .split("constraint ")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .unwrap_or("-")
                .to_string();
            (key, i.expression.join(","), i.code.as_str().to_string())
        })
        .collect()
}

#[test]
fn invariant_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/validation-corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let (mut valid, mut invalid, mut failures) = (0, 0, Vec::new());
    let mut keys = BTreeSet::new();
    for f in &files {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        for case in doc["cases"].as_array().unwrap() {
            let name = format!(
                "{}: {}",
                f.file_name().unwrap().to_string_lossy(),
                case["name"].as_str().unwrap()
            );
            let want: BTreeSet<(String, String, String)> = case["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    (
                        e["key"].as_str().unwrap().to_string(),
                        e["expression"].as_str().unwrap().to_string(),
                        e["code"].as_str().unwrap_or("invariant").to_string(),
                    )
                })
                .collect();
            if want.is_empty() {
                valid += 1;
            } else {
                invalid += 1;
                keys.extend(want.iter().map(|w| w.0.clone()));
            }
            let got = errors(&case["resource"]);
            if got != want {
                failures.push(format!("{name}\n  expected {want:?}\n  got      {got:?}"));
            }
        }
    }
    let total = valid + invalid;
    println!(
        "invariant corpus: {} files, {total} cases ({valid} valid, {invalid} invalid), {} keys asserted, {} of {total} answered exactly",
        files.len(),
        keys.len(),
        total - failures.len()
    );
    assert!(total >= 60, "{total} cases");
    assert!(
        failures.is_empty(),
        "{} of {total} cases wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
