//! Accuracy of the validator on the specification's own examples (tests/data/examples/): every
//! example is accepted, and invalid variants derived from them (drop a required element, bad
//! code, wrong JSON type, bad date, unknown element, wrong reference target) are each rejected
//! with the expression of the mutated element. `cargo test --test validate_examples -- --nocapture`
//! prints the counts reported in the README.
#[path = "common/examples.rs"]
mod official;
use official::examples;
use std::collections::BTreeMap;

use icm_fhir::fhir::definitions::{Content, Definitions, ElemDef};
use icm_fhir::fhir::validate::validate;
use serde_json::{json, Value};

/// Examples the R4 specification itself gets wrong (see src/fhir/validate/tests.rs). Every
/// error-level invariant is evaluated (FHIRPath engine): none of them rejects an example. R4's
/// own ref-1 expression would reject 51 (References with only a display or identifier): it is
/// evaluated as corrected in R4B/R5 (`validate::invariant::ERRATA`).
const KNOWN_BAD: &[&str] = &[
    "Observation/observation-example-clinical-gender.json",
    "MedicationRequest/medicationrequest0301.json",
    "Questionnaire/questionnaire-zika-virus-exposure-assessment.json",
];

/// The JSON key an element uses in this resource, if present (choice elements: the variant).
fn present_key(res: &Value, e: &ElemDef) -> Option<(String, usize)> {
    let obj = res.as_object()?;
    if e.is_choice {
        e.types.iter().enumerate().find_map(|(i, t)| {
            let mut c = t.chars();
            let cap = c
                .next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())?;
            let k = format!("{}{cap}", e.base_name);
            obj.contains_key(&k).then_some((k, i))
        })
    } else {
        obj.contains_key(&e.base_name)
            .then(|| (e.base_name.clone(), 0))
    }
}

fn elem_expr(ty: &str, e: &ElemDef, ti: usize) -> String {
    if e.is_choice {
        format!("{ty}.{}.ofType({})", e.base_name, e.types[ti])
    } else {
        format!("{ty}.{}", e.base_name)
    }
}

struct Mutation {
    kind: &'static str,
    resource: Value,
    expression: String,
}

fn mutations(d: &Definitions, res: &Value) -> Vec<Mutation> {
    let ty = res["resourceType"].as_str().unwrap();
    let node = d.node(d.type_def(ty).unwrap().root);
    let mut out = Vec::new();
    let mut unknown = res.clone();
    unknown["bogusElement"] = json!(1);
    out.push(Mutation {
        kind: "unknown element",
        resource: unknown,
        expression: format!("{ty}.bogusElement"),
    });
    for e in &node.elems {
        if matches!(e.base_name.as_str(), "id" | "meta" | "text" | "contained") {
            continue;
        }
        let Some((key, ti)) = present_key(res, e) else {
            continue;
        };
        let expr = elem_expr(ty, e, ti);
        let first = |v: &Value| -> Value {
            match v {
                Value::Array(a) => a[0].clone(),
                x => x.clone(),
            }
        };
        let idx = if e.is_array() { "[0]" } else { "" };
        let set_first = |new: Value| -> Value {
            let mut r = res.clone();
            if e.is_array() {
                r[&key][0] = new;
            } else {
                r[&key] = new;
            }
            r
        };
        let value = first(&res[&key]);
        let ety = e.types.get(ti).map(String::as_str).unwrap_or("");
        if e.min > 0 {
            let mut r = res.clone();
            r.as_object_mut().unwrap().remove(&key);
            r.as_object_mut().unwrap().remove(&format!("_{key}"));
            out.push(Mutation {
                kind: "drop required element",
                resource: r,
                expression: format!("{ty}.{}", e.base_name),
            });
        }
        if ety == "code" && e.binding.is_some() && value.is_string() {
            let has_codes = d
                .valueset(e.binding.as_deref().unwrap())
                .is_some_and(|vs| !vs.codes.is_empty());
            if has_codes {
                out.push(Mutation {
                    kind: "bad code",
                    resource: set_first(json!("not-a-code")),
                    expression: format!("{expr}{idx}"),
                });
            }
        }
        if matches!(ety, "date" | "dateTime" | "instant") && value.is_string() {
            out.push(Mutation {
                kind: "bad date",
                resource: set_first(json!("2024-13-45")),
                expression: format!("{expr}{idx}"),
            });
        }
        // Wrong JSON type: a number where a string or object is expected, a string for a boolean.
        let wrong = match &value {
            Value::Bool(_) => Some(json!("yes")),
            Value::String(_) | Value::Object(_) => Some(json!(42)),
            _ => None,
        };
        if let Some(w) = wrong {
            let w_expr = match e.content {
                Content::Node(_) => format!("{ty}.{}{idx}", e.base_name),
                Content::Types => format!("{expr}{idx}"),
            };
            out.push(Mutation {
                kind: "wrong type",
                resource: set_first(w),
                expression: w_expr,
            });
        }
        if ety == "Reference" && !e.targets.is_empty() && !e.targets.iter().any(|t| t == "Resource")
        {
            if let Some(r) = value["reference"].as_str() {
                let segs: Vec<&str> = r.split('/').collect();
                if segs.len() == 2 && d.is_resource_type(segs[0]) {
                    let bad = ["Basic", "Device", "Substance"]
                        .into_iter()
                        .find(|t| !e.allows_target(t))
                        .unwrap();
                    let mut refv = value.clone();
                    refv["reference"] = json!(format!("{bad}/{}", segs[1]));
                    refv.as_object_mut().unwrap().remove("type");
                    out.push(Mutation {
                        kind: "wrong reference target",
                        resource: set_first(refv),
                        expression: format!("{expr}{idx}.reference"),
                    });
                }
            }
        }
    }
    out
}

#[test]
fn official_examples_and_their_mutations() {
    let d = Definitions::get();
    let mut accepted = 0;
    let mut rejected_examples = Vec::new();
    let mut per_kind: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut misses = Vec::new();
    let all = examples();
    for (name, res) in &all {
        if KNOWN_BAD.contains(&name.as_str()) {
            continue;
        }
        let r = validate(res);
        if r.has_errors() {
            rejected_examples.push(name.clone());
            continue;
        }
        accepted += 1;
        for m in mutations(d, res) {
            let r = validate(&m.resource);
            let hit = r.has_errors()
                && r.issues
                    .iter()
                    .any(|i| i.expression.contains(&m.expression));
            let c = per_kind.entry(m.kind).or_default();
            c.0 += 1;
            if hit {
                c.1 += 1;
            } else {
                misses.push(format!(
                    "{name} [{}] expected {}: got {:?}",
                    m.kind,
                    m.expression,
                    r.issues
                        .iter()
                        .map(|i| i.expression.join(","))
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    let total: usize = per_kind.values().map(|c| c.0).sum();
    let caught: usize = per_kind.values().map(|c| c.1).sum();
    println!(
        "examples: {} files, {accepted} accepted, {} known spec errors rejected",
        all.len(),
        KNOWN_BAD.len()
    );
    for (k, (n, ok)) in &per_kind {
        println!("  {k:<24} {ok}/{n} rejected with the right expression");
    }
    println!("mutations: {caught}/{total} rejected with the right expression");
    assert!(rejected_examples.is_empty(), "{rejected_examples:?}");
    assert!(total > 1000, "{total}");
    assert!(
        misses.is_empty(),
        "{} misses:\n{}",
        misses.len(),
        misses.join("\n")
    );
}
