//! The smallest valid instance of a resource type, derived from the definitions (required
//! elements only, first allowed type, first code of a required value set). Used by tests and tools.
use serde_json::{json, Map, Value};

use super::invariant::eval;
use crate::fhir::definitions::{Content, Definitions, ElemDef, Invariant, Kind, NodeId};

/// Types whose invariants tie elements together in ways the generator cannot satisfy (the
/// snapshot/differential rules sdf-3..sdf-17): a hand-written smallest instance.
const WRITTEN: &[(&str, &str)] = &[(
    "StructureDefinition",
    r#"{"resourceType": "StructureDefinition", "url": "http://example.org/x", "name": "x",
        "status": "active", "kind": "logical", "abstract": true, "type": "http://example.org/x",
        "differential": {"element": [{"id": "x", "path": "x"}]}}"#,
)];

/// A minimal valid resource of type `ty` (None for an unknown type).
pub fn instance(ty: &str) -> Option<Value> {
    if let Some((_, text)) = WRITTEN.iter().find(|(t, _)| *t == ty) {
        return serde_json::from_str(text).ok();
    }
    let d = Definitions::get();
    let td = d.type_def(ty)?;
    let mut m = Map::new();
    m.insert("resourceType".into(), json!(ty));
    fill(d, td.root, &mut m, 0);
    satisfy(d, td.root, &td.invariants, &mut m, 0);
    Some(Value::Object(m))
}

/// Add optional elements, in definition order, until the invariants hold: the first one that
/// satisfies an invariant, else the first pair (app-3 wants both `start` and `end`), or a
/// repeated element given twice.
fn satisfy(
    d: &Definitions,
    node: NodeId,
    invs: &[Invariant],
    m: &mut Map<String, Value>,
    depth: usize,
) {
    for inv in invs {
        let Some(c) = &inv.cond else { continue };
        let holds = |m: &Map<String, Value>| eval(c, &Value::Object(m.clone()));
        if holds(m) {
            continue;
        }
        let mut candidates: Vec<(String, Value)> = d
            .node(node)
            .elems
            .iter()
            .filter(|e| {
                e.min == 0
                    && !matches!(
                        e.base_name.as_str(),
                        "id" | "extension" | "modifierExtension"
                    )
            })
            .map(|e| {
                let (key, v) = value(d, e, depth);
                (key, if e.is_array() { json!([v]) } else { v })
            })
            .filter(|(k, _)| !m.contains_key(k))
            .collect();
        // A repeated element given twice (lnk-1 wants two items).
        candidates.extend(
            m.iter()
                .filter_map(|(k, v)| match v.as_array()?.as_slice() {
                    [one] => Some((k.clone(), json!([one, one]))),
                    _ => None,
                }),
        );
        let with = |extra: &[&(String, Value)]| {
            let mut t = m.clone();
            for (k, v) in extra {
                t.insert(k.clone(), v.clone());
            }
            t
        };
        let found = candidates
            .iter()
            .map(|x| with(&[x]))
            .find(|t| holds(t))
            .or_else(|| {
                candidates.iter().enumerate().find_map(|(i, x)| {
                    candidates[i + 1..]
                        .iter()
                        .map(|y| with(&[x, y]))
                        .find(|t| holds(t))
                })
            });
        if let Some(t) = found {
            *m = t;
        }
    }
}

fn fill(d: &Definitions, node: NodeId, m: &mut Map<String, Value>, depth: usize) {
    for e in &d.node(node).elems {
        if e.min == 0 {
            continue;
        }
        let (key, v) = value(d, e, depth);
        m.insert(key, if e.is_array() { json!([v]) } else { v });
    }
}

fn primitive_sample(ty: &str) -> Value {
    match ty {
        "boolean" => json!(true),
        "integer" | "positiveInt" | "unsignedInt" => json!(1),
        "decimal" => json!(1.0),
        "date" => json!("2024-01-01"),
        "dateTime" | "instant" => json!("2024-01-01T00:00:00Z"),
        "time" => json!("00:00:00"),
        "uri" | "url" | "canonical" => json!("http://example.org/x"),
        "oid" => json!("urn:oid:1.2.3"),
        "uuid" => json!("urn:uuid:c757873d-ec9a-4326-a141-556f43239520"),
        "base64Binary" => json!("AAAA"),
        "xhtml" => json!("<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"),
        _ => json!("x"),
    }
}

fn value(d: &Definitions, e: &ElemDef, depth: usize) -> (String, Value) {
    if let Content::Node(n) = e.content {
        let mut m = Map::new();
        fill(d, n, &mut m, depth + 1);
        satisfy(d, n, &e.invariants, &mut m, depth + 1);
        if m.is_empty() {
            // A backbone element needs some content: its first primitive element.
            if let Some(p) =
                d.node(n).elems.iter().find(|x| {
                    x.base_name != "id" && x.types.first().is_some_and(|t| d.is_primitive(t))
                })
            {
                let (k, v) = value(d, p, depth + 1);
                m.insert(k, if p.is_array() { json!([v]) } else { v });
            }
        }
        return (e.base_name.clone(), Value::Object(m));
    }
    let ty = e.types.first().map(String::as_str).unwrap_or("string");
    let key = if e.is_choice {
        let mut c = ty.chars();
        let cap: String = c
            .next()
            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
            .unwrap_or_default();
        format!("{}{cap}", e.base_name)
    } else {
        e.base_name.clone()
    };
    let coded = e
        .binding
        .as_deref()
        .and_then(|u| d.valueset(u))
        .and_then(|vs| vs.pairs.iter().min().cloned());
    let v = match ty {
        "code" => match &coded {
            Some((_, c)) => json!(c),
            // Bound to BCP 13 MIME types, checked as such (Attachment.contentType).
            None if e.base_name == "contentType" => json!("text/plain"),
            None => json!("x"),
        },
        "Coding" | "CodeableConcept" => {
            let coding = match &coded {
                Some((s, c)) => json!({"system": s, "code": c}),
                None => json!({"code": "x"}),
            };
            if ty == "Coding" {
                coding
            } else {
                json!({"coding": [coding]})
            }
        }
        "Reference" => json!({"display": "x"}),
        "Resource" => json!({"resourceType": "Basic", "code": {"text": "x"}}),
        t if d.is_primitive(t) => primitive_sample(t),
        t => match d.type_def(t) {
            Some(td) if td.kind == Kind::Complex && depth < 6 => {
                let mut m = Map::new();
                fill(d, td.root, &mut m, depth + 1);
                satisfy(d, td.root, &td.invariants, &mut m, depth + 1);
                if m.is_empty() {
                    if let Some(p) = d.node(td.root).elems.iter().find(|x| {
                        x.base_name != "id" && x.types.first().is_some_and(|t| d.is_primitive(t))
                    }) {
                        let (k, v) = value(d, p, depth + 1);
                        m.insert(k, if p.is_array() { json!([v]) } else { v });
                    }
                }
                Value::Object(m)
            }
            _ => json!({}),
        },
    };
    (key, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_instances_of_every_type_are_valid() {
        let reg = crate::fhir::registry::Registry::get();
        for ty in reg.type_names() {
            let v = instance(ty).unwrap();
            let r = super::super::validate(&v);
            assert!(!r.has_errors(), "{ty}: {v}\n{:?}", r.issues);
        }
    }
}
