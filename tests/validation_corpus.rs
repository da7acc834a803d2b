//! The invariant corpus (tests/data/validation-corpus/*.json): hand-written valid and invalid
//! resources, each invalid one with the exact invariant keys and element paths expected. Every
//! case runs through the pure validator (`validate`, the entry point every write path and
//! `$validate` share) plus the ICM profiles a resource claims; the error issues must be exactly
//! the expected ones. A second test derives invalid variants from the specification's own
//! examples (every Period with start < end reversed: per-1; every Range with low < high
//! reversed: rng-2) and expects exactly that one issue at that path.
//! `cargo test --test validation_corpus -- --nocapture` prints the counts reported in the README.
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

#[path = "common/examples.rs"]
mod official;

/// Periods and Ranges in `v` (JSON pointer-ish path → FHIRPath expression) to mutate.
fn find_ordered(
    v: &Value,
    expr: &str,
    choices: &serde_json::Map<String, Value>,
    out: &mut Vec<(Vec<String>, String, &'static str)>,
    ptr: &mut Vec<String>,
) {
    if let Value::Object(m) = v {
        for (k, child) in m {
            if k == "contained" || k.starts_with('_') {
                continue; // keep to the resource's own elements
            }
            // A choice variant (`scheduledTiming`) is written `scheduled.ofType(Timing)`.
            let name = k
                .char_indices()
                .filter(|(_, c)| c.is_ascii_uppercase())
                .find_map(|(at, _)| {
                    let (base, suffix) = k.split_at(at);
                    choices.get(base)?.as_array()?.iter().find_map(|t| {
                        let t = t.as_str()?;
                        let mut c = t.chars();
                        let cap = c.next()?.to_ascii_uppercase().to_string() + c.as_str();
                        (cap == suffix).then(|| format!("{base}.ofType({t})"))
                    })
                })
                .unwrap_or_else(|| k.clone());
            let kind = if k == "period" || k.ends_with("Period") {
                Some(("start", "end", "per-1"))
            } else if k
                .strip_suffix("Range")
                .is_some_and(|base| choices.contains_key(base))
            {
                Some(("low", "high", "rng-2"))
            } else {
                None
            };
            let items: Vec<(Option<usize>, &Value)> = match child {
                Value::Array(a) => a.iter().enumerate().map(|(i, x)| (Some(i), x)).collect(),
                x => vec![(None, x)],
            };
            for (i, item) in items {
                let e = match i {
                    Some(i) => format!("{expr}.{name}[{i}]"),
                    None => format!("{expr}.{name}"),
                };
                ptr.push(k.clone());
                if let Some(i) = i {
                    ptr.push(i.to_string());
                }
                if let Some((lo, hi, key)) = kind {
                    let ordered = match (item.get(lo), item.get(hi)) {
                        (Some(Value::String(a)), Some(Value::String(b))) => {
                            a.len() == b.len() && a < b
                        }
                        (Some(a), Some(b)) => match (a["value"].as_f64(), b["value"].as_f64()) {
                            (Some(x), Some(y)) => {
                                x < y && a["code"] == b["code"] && a["unit"] == b["unit"]
                            }
                            _ => false,
                        },
                        _ => false,
                    };
                    if ordered {
                        out.push((ptr.clone(), e.clone(), key));
                    }
                }
                find_ordered(item, &e, choices, out, ptr);
                if i.is_some() {
                    ptr.pop();
                }
                ptr.pop();
            }
        }
    }
}

#[test]
fn reversed_periods_and_ranges_of_the_official_examples() {
    let choices: Value =
        serde_json::from_str(include_str!("../fhir-profiles/r4/choice-elements.json")).unwrap();
    let choices = choices.as_object().unwrap();
    let (mut n, mut failures) = (0, Vec::new());
    for (name, ex) in official::examples() {
        let rt = ex["resourceType"].as_str().unwrap().to_string();
        if rt == "Bundle" || !errors(&ex).is_empty() {
            continue; // Bundles nest resources; known-bad examples are not mutated
        }
        let mut found = Vec::new();
        find_ordered(&ex, &rt, choices, &mut found, &mut Vec::new());
        for (ptr, expr, key) in found {
            let mut m = ex.clone();
            let pointer = format!("/{}", ptr.join("/"));
            let target = m.pointer_mut(&pointer).unwrap();
            let (lo, hi) = if key == "per-1" {
                ("start", "end")
            } else {
                ("low", "high")
            };
            let (a, b) = (target[lo].clone(), target[hi].clone());
            target[lo] = b;
            target[hi] = a;
            n += 1;
            let want: BTreeSet<_> =
                [(key.to_string(), expr.clone(), "invariant".to_string())].into();
            let got = errors(&m);
            if got != want {
                failures.push(format!("{name} {pointer}: expected {want:?}, got {got:?}"));
            }
        }
    }
    println!(
        "official examples, start/end and low/high reversed: {} of {n} rejected with exactly the expected invariant and path",
        n - failures.len()
    );
    assert!(n > 50, "{n} mutations");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
