//! Invariants (constraints) evaluated by the FHIRPath engine (`fhir::fhirpath`): every
//! error-level invariant of the R4 definitions and of the ICM profiles is compiled once (when
//! the definitions load) and evaluated on the element it is declared on. As in the HL7
//! reference validator, an invariant holds only when it evaluates to `true`: `false` and empty
//! (e.g. a date compared with a dateTime of the same day) both fail.
use serde_json::Value;

use crate::fhir::fhirpath::{self, Env, Expr};

/// A compiled invariant condition.
pub type Cond = Expr;

/// `sqty-1` of the R4 SimpleQuantity profile (elements flagged `simpleQuantity` in
/// definitions.json are Quantities constrained by it).
pub const SQTY_1: (&str, &str) = ("sqty-1", "comparator.empty()");

/// R4 invariants whose published expression is wrong, evaluated with the correction the
/// specification later published: (key, R4 expression, corrected expression, why).
pub const ERRATA: &[(&str, &str, &str, &str)] = &[(
    "ref-1",
    "reference.startsWith('#').not() or (reference.substring(1).trace('url') in %rootResource.contained.id.trace('ids'))",
    "reference.exists() implies (reference.startsWith('#').not() or (reference.substring(1).trace('url') in %rootResource.contained.id.trace('ids')) or (reference = '#' and %rootResource != %resource))",
    "R4's ref-1 is empty, so failing, for a Reference without `reference` (identifier or display only, \
     which R4 allows) and for `#`, a contained resource's reference to its container (which R4 \
     requires dom-3 to accept); R4B/R5 added the `reference.exists() implies` guard and the `#` case",
)];

/// Compile an invariant's expression (`None` if it is not valid FHIRPath for this engine;
/// a test asserts every R4 and ICM invariant compiles). An expression in `ERRATA` is
/// replaced by its correction.
pub fn compile(key: &str, expr: &str) -> Option<Cond> {
    let expr = ERRATA
        .iter()
        .find(|(k, r4, _, _)| *k == key && *r4 == expr)
        .map_or(expr, |e| e.2);
    fhirpath::parse(expr).ok()
}

/// Whether the invariant holds on `node` (of FHIR type `ty` when known) in `env`.
pub fn holds(c: &Cond, env: &Env, node: &Value, ty: Option<&str>) -> bool {
    let env = Env {
        context: Some(node),
        ..*env
    };
    // The context's type matters to the engine only for dates and times (a computed node
    // otherwise infers its type from the JSON); naming it would cost an allocation per check.
    let ty = ty.filter(|t| matches!(*t, "date" | "dateTime" | "instant" | "time"));
    let r = fhirpath::eval_in(c, &env, &[fhirpath::typed(node, ty)]);
    match r.as_slice() {
        [n] => n.value.as_ref() == &Value::Bool(true),
        _ => false,
    }
}

/// Whether the invariant holds on `v`, taken as its own resource (standalone checks).
pub fn eval(c: &Cond, v: &Value) -> bool {
    holds(c, &Env::new(v), v, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::definitions::Definitions;
    use serde_json::json;

    fn check(expr: &str, v: Value) -> bool {
        eval(&compile("x", expr).expect(expr), &v)
    }

    #[test]
    fn every_r4_error_invariant_compiles() {
        let d = Definitions::get();
        let invs: Vec<_> = d
            .types
            .values()
            .flat_map(|t| t.invariants.iter())
            .chain(
                d.nodes
                    .iter()
                    .flat_map(|n| n.elems.iter())
                    .flat_map(|e| e.invariants.iter()),
            )
            .filter(|i| i.key != SQTY_1.0)
            .collect();
        for inv in &invs {
            assert!(
                inv.cond.is_some(),
                "{} {} does not compile: {:?}",
                inv.key,
                inv.expression,
                fhirpath::parse(&inv.expression).err()
            );
        }
        // Every invariant of the generated file is loaded (counted independently).
        let raw: Value =
            serde_json::from_str(include_str!("../../../fhir-profiles/r4/definitions.json"))
                .unwrap();
        let in_file: usize = raw["types"]
            .as_object()
            .unwrap()
            .values()
            .map(|t| {
                t["invariants"].as_array().map_or(0, Vec::len)
                    + t["elements"].as_array().map_or(0, |es| {
                        es.iter()
                            .map(|e| e["invariants"].as_array().map_or(0, Vec::len))
                            .sum()
                    })
            })
            .sum();
        assert_eq!(invs.len(), in_file);
        assert!(in_file > 700, "{in_file}");
        // Each erratum still matches the expression it corrects.
        for (key, r4, _, _) in ERRATA {
            assert!(
                invs.iter().any(|i| i.key == *key && i.expression == *r4),
                "{key}: the R4 expression changed"
            );
        }
    }

    #[test]
    fn ref_1_as_corrected() {
        let ref1 = |r: Value, root: &Value, resource: &Value| {
            let (k, x) = ("ref-1", ERRATA[0].1);
            let env = Env {
                resource,
                root,
                context: None,
                bundle: None,
            };
            holds(&compile(k, x).unwrap(), &env, &r, Some("Reference"))
        };
        let p = json!({"resourceType": "Patient", "contained": [{"resourceType": "Organization", "id": "o"}]});
        assert!(ref1(json!({"display": "x"}), &p, &p));
        assert!(ref1(json!({"reference": "Organization/1"}), &p, &p));
        assert!(ref1(json!({"reference": "#o"}), &p, &p));
        assert!(!ref1(json!({"reference": "#x"}), &p, &p));
        assert!(!ref1(json!({"reference": "#"}), &p, &p));
        assert!(ref1(json!({"reference": "#"}), &p, &p["contained"][0]));
    }

    #[test]
    fn existence_logic() {
        let pat1 = "name.exists() or telecom.exists() or address.exists() or organization.exists()";
        assert!(check(pat1, json!({"name": {"family": "X"}})));
        assert!(!check(pat1, json!({"gender": "male"})));
        let ext1 = "extension.exists() != value.exists()";
        assert!(check(ext1, json!({"url": "u", "valueString": "x"})));
        assert!(!check(ext1, json!({"url": "u"})));
        assert!(!check(
            ext1,
            json!({"url": "u", "valueString": "x", "extension": [{}]})
        ));
        let dom2 = "contained.contained.empty()";
        assert!(check(dom2, json!({"contained": [{"id": "a"}]})));
        assert!(!check(dom2, json!({"contained": [{"contained": [{}]}]})));
        let cp1 = "status = 'active' implies period.start.exists()";
        assert!(check(cp1, json!({"status": "draft"})));
        assert!(!check(cp1, json!({"status": "active"})));
        assert!(check(
            cp1,
            json!({"status": "active", "period": {"start": "2024"}})
        ));
        // An extension-only primitive exists but has no value.
        let per = "start.hasValue().not() or end.hasValue().not() or (start <= end)";
        assert!(check(
            per,
            json!({"_start": {"extension": [{"url": "u", "valueString": "x"}]}, "end": "2020"})
        ));
        assert!(check("start.exists()", json!({"_start": {"id": "a"}})));
    }

    #[test]
    fn periods_follow_the_precision_rule() {
        let per1 = compile(
            "per-1",
            "start.hasValue().not() or end.hasValue().not() or (start <= end)",
        )
        .unwrap();
        let ok = |s: &str, e: &str| eval(&per1, &json!({"start": s, "end": e}));
        assert!(ok("2024-01-01", "2024-02-01"));
        assert!(!ok("2024-03-01", "2024-02-01"));
        assert!(!ok("2024-02-01T10:00:00Z", "2024-02-01T09:00:00Z"));
        // Different zones compare as instants.
        assert!(ok("2024-02-01T10:00:00+02:00", "2024-02-01T09:00:00Z"));
        // A later month decides even at different precision.
        assert!(!ok("2024-03-10", "2024-02"));
        // Same month, different precision: unknown, so the invariant fails.
        assert!(!ok("2024-02-10", "2024-02"));
        assert!(!ok("2024-02-01", "2024-02-01T10:00:00Z"));
        assert!(ok("2024-01-31", "2024-02-01T10:00:00Z"));
        assert!(eval(&per1, &json!({"start": "2024-02-10"})));
        // Malformed values never panic (found by schemathesis in the old evaluator).
        assert!(!ok("àÔ½", "2026-"));
    }
}
