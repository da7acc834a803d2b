//! The code and extension corpus (tests/data/validation-corpus/codes/ and extensions/):
//! hand-written cases and mutations of the R4 examples (scripts/gen_validation_corpus.py), each
//! sent to `POST /fhir/{type}/$validate` (the pure validator every write path shares). The error
//! issues must be exactly the expected (expression, code) pairs, the expected warnings must be
//! there, and a case marked `noWarnings` must have none. `cargo test --test validation_codes --
//! --nocapture` prints the counts reported in the README.
mod common;
#[path = "common/examples.rs"]
mod official;
use std::collections::{BTreeMap, BTreeSet};

use common::*;
use icm_fhir::fhir::validate::extensions;

type Issues = BTreeSet<(String, String)>;

fn expected(case: &Value, key: &str) -> Issues {
    case[key]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["expression"].as_str().unwrap().to_string(),
                e["code"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// (errors, warnings) of an OperationOutcome as (expression, code) pairs.
fn split(oo: &Value) -> (Issues, Issues) {
    let (mut errors, mut warnings) = (Issues::new(), Issues::new());
    for i in oo["issue"].as_array().into_iter().flatten() {
        let pair = (
            i["expression"][0].as_str().unwrap_or("").to_string(),
            i["code"].as_str().unwrap_or("").to_string(),
        );
        match i["severity"].as_str() {
            Some("error" | "fatal") => errors.insert(pair),
            Some("warning") => warnings.insert(pair),
            _ => false,
        };
    }
    (errors, warnings)
}

/// Apply a case's edits (`remove`, then `set`, by JSON pointer) to a copy of an example.
fn mutate(example: &Value, case: &Value) -> Value {
    let mut v = example.clone();
    for p in case["remove"].as_array().into_iter().flatten() {
        let p = p.as_str().unwrap();
        let (parent, key) = p.rsplit_once('/').unwrap();
        v.pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("{p}"))
            .remove(key);
    }
    for (p, val) in case["set"].as_object().into_iter().flatten() {
        let (parent, key) = p.rsplit_once('/').unwrap();
        match v.pointer_mut(parent).unwrap_or_else(|| panic!("{p}")) {
            Value::Object(o) => {
                o.insert(key.to_string(), val.clone());
            }
            Value::Array(a) => a[key.parse::<usize>().unwrap()] = val.clone(),
            _ => panic!("{p}"),
        }
    }
    v
}

#[test]
fn code_and_extension_corpus() {
    let Some(s) = start_with(Backend::Sqlite, |c| c.referential_integrity = "off".into()) else {
        return;
    };
    let examples: BTreeMap<String, Value> = official::examples().into_iter().collect();
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/validation-corpus");
    let mut failures = Vec::new();
    let mut counts: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for folder in ["codes", "extensions"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(folder))
            .unwrap()
            .map(|f| f.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let doc: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            let label = format!("{folder}/{}", f.file_name().unwrap().to_string_lossy());
            for case in doc["cases"].as_array().unwrap() {
                let resource = match case["example"].as_str() {
                    Some(ex) => mutate(&examples[ex], case),
                    None => case["resource"].clone(),
                };
                let ty = resource["resourceType"].as_str().unwrap();
                let r = s.post(&format!("{ty}/$validate"), &resource);
                let name = format!("{label}: {}", case["name"].as_str().unwrap());
                if r.status != 200 {
                    failures.push(format!("{name}: status {} {}", r.status, r.body));
                    continue;
                }
                let (errors, warnings) = split(&r.json());
                let want_errors = expected(case, "errors");
                let want_warnings = expected(case, "warnings");
                let c = counts.entry(label.clone()).or_default();
                c.0 += 1;
                if want_errors.is_empty() {
                    c.1 += 1;
                } else {
                    c.2 += 1;
                }
                if errors != want_errors {
                    failures.push(format!(
                        "{name}: errors {errors:?}, expected {want_errors:?}"
                    ));
                }
                if !want_warnings.is_subset(&warnings) {
                    failures.push(format!(
                        "{name}: warnings {warnings:?} lack {want_warnings:?}"
                    ));
                }
                if case["noWarnings"] == true && !warnings.is_empty() {
                    failures.push(format!("{name}: unexpected warnings {warnings:?}"));
                }
            }
        }
    }
    let total: usize = counts.values().map(|c| c.0).sum();
    for (label, (n, valid, invalid)) in &counts {
        println!("{label:40} {n:5} cases ({valid} valid, {invalid} invalid)");
    }
    println!(
        "corpus: {total} cases, {} answered as expected",
        total - failures.len().min(total)
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The extensions the server writes itself (risk, measures, assessments, worklist,
/// disenrollment) are held, so its own output never draws an unknown-extension warning.
#[test]
fn the_programs_own_extensions_are_held() {
    use icm_fhir::care::{assessment, measures, risk, worklist};
    use icm_fhir::service::{operations, program};
    for url in [
        risk::RISK_SCORE_URL,
        risk::LACE_SCORE_URL,
        risk::CONTRIBUTION_URL,
        measures::WINDOW_EXTENSION,
        measures::AMOUNT_EXTENSION,
        assessment::POSITIVE_ANSWER,
        assessment::POSITIVE_THRESHOLD,
        worklist::OVERDUE_EXTENSION,
        operations::REFERRAL_ATTENTION,
        operations::PATIENT_ADMITTED,
        program::DISENROLLMENT_EXT,
    ] {
        assert!(extensions::definition(url).is_some(), "{url} is not held");
    }
    let core = extensions::definition("http://hl7.org/fhir/StructureDefinition/patient-birthTime")
        .unwrap();
    assert_eq!(core.value, ["DateTime"]);
    assert!(extensions::held_count() > 400);
}
