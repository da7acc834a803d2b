//! Index extraction: the search_* rows a resource produces, one set per parameter type (pure).
use serde_json::Value;

use super::params::{component_param, ParamType, SearchParams};
use super::values::{date_range, fold, MAX_INSTANT, MIN_INSTANT};
use crate::fhir::fhirpath::{eval, evaluate, Node};

#[derive(Debug, Clone, PartialEq)]
pub struct StringRow {
    pub param: String,
    pub norm: String,
    pub exact: String,
    /// The repetition a composite part (or an identifier and its type) came from: rows of one
    /// resource with the same non-zero `grp` were found in the same element; 0 elsewhere.
    pub grp: i64,
}
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRow {
    pub param: String,
    pub system: Option<String>,
    pub code: Option<String>,
    pub display: Option<String>,
    /// The repetition a composite part (or an identifier and its type) came from: rows of one
    /// resource with the same non-zero `grp` were found in the same element; 0 elsewhere.
    pub grp: i64,
}
#[derive(Debug, Clone, PartialEq)]
pub struct DateRow {
    pub param: String,
    pub low: i64,
    pub high: i64,
    /// The repetition a composite part (or an identifier and its type) came from: rows of one
    /// resource with the same non-zero `grp` were found in the same element; 0 elsewhere.
    pub grp: i64,
}
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceRow {
    pub param: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub target_url: Option<String>,
    /// The repetition a composite part (or an identifier and its type) came from: rows of one
    /// resource with the same non-zero `grp` were found in the same element; 0 elsewhere.
    pub grp: i64,
}
#[derive(Debug, Clone, PartialEq)]
pub struct NumberRow {
    pub param: String,
    pub value: f64,
    /// The repetition a composite part (or an identifier and its type) came from: rows of one
    /// resource with the same non-zero `grp` were found in the same element; 0 elsewhere.
    pub grp: i64,
}
#[derive(Debug, Clone, PartialEq)]
pub struct QuantityRow {
    pub param: String,
    pub value: f64,
    pub system: Option<String>,
    pub code: Option<String>,
    pub unit: Option<String>,
    /// The repetition a composite part (or an identifier and its type) came from: rows of one
    /// resource with the same non-zero `grp` were found in the same element; 0 elsewhere.
    pub grp: i64,
}
#[derive(Debug, Clone, PartialEq)]
pub struct UriRow {
    pub param: String,
    pub value: String,
    /// The repetition a composite part (or an identifier and its type) came from: rows of one
    /// resource with the same non-zero `grp` were found in the same element; 0 elsewhere.
    pub grp: i64,
}

/// Every index row of one resource.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IndexRows {
    pub strings: Vec<StringRow>,
    pub tokens: Vec<TokenRow>,
    pub dates: Vec<DateRow>,
    pub references: Vec<ReferenceRow>,
    pub numbers: Vec<NumberRow>,
    pub quantities: Vec<QuantityRow>,
    pub uris: Vec<UriRow>,
    /// The group the rows being added belong to (see `grp`), and the last one handed out.
    cur_grp: i64,
    last_grp: i64,
}

impl IndexRows {
    /// Start a new group: the rows added until `end_group` share its number.
    fn begin_group(&mut self) {
        self.last_grp += 1;
        self.cur_grp = self.last_grp;
    }
    fn end_group(&mut self) {
        self.cur_grp = 0;
    }
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.to_string().parse().ok(),
        Value::String(x) => x.parse().ok(),
        _ => None,
    }
}

/// Split a reference string into (type, id) for local references `Type/id[/_history/v]`;
/// every other form (absolute, urn, conditional) is kept as a URL only (fhir::reference).
pub fn split_reference(r: &str) -> (Option<String>, Option<String>, Option<String>) {
    match crate::fhir::reference::local_target(r) {
        Some((t, i)) => (Some(t.to_string()), Some(i.to_string()), None),
        None => (None, None, Some(r.to_string())),
    }
}

/// The reference rows one reference parameter of `ty` yields for a resource (the rows the
/// search index stores for it).
pub fn reference_rows(ty: &str, resource: &Value, param: &str) -> Vec<ReferenceRow> {
    let mut out = IndexRows::default();
    if let Some(def) = SearchParams::get().param(ty, param) {
        if def.ptype == ParamType::Reference {
            for e in &def.exprs {
                for n in evaluate(e, resource) {
                    references_of(n.value.as_ref(), &mut out, param);
                }
            }
        }
    }
    out.references
}

fn add_string(out: &mut IndexRows, param: &str, text: &str) {
    if text.is_empty() {
        return;
    }
    let grp = out.cur_grp;
    out.strings.push(StringRow {
        param: param.to_string(),
        norm: fold(text),
        exact: text.to_string(),
        grp,
    });
}

fn strings_of(n: &Value, out: &mut IndexRows, param: &str) {
    match n {
        Value::String(t) => add_string(out, param, t),
        Value::Object(o) => {
            // HumanName, Address and other complex values: every string part.
            for (k, v) in o {
                if k == "extension" || k == "use" || k == "period" || k == "id" {
                    continue;
                }
                match v {
                    Value::String(t) => add_string(out, param, t),
                    Value::Array(a) => {
                        for x in a {
                            if let Value::String(t) = x {
                                add_string(out, param, t);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// The `:of-type` rows of an identifier: one per coding of its type, in the identifier's group.
pub fn of_type_param(param: &str) -> String {
    format!("{param}:of-type")
}

/// The rows `Reference.identifier` of a reference parameter is indexed under (`:identifier`).
pub fn identifier_param(param: &str) -> String {
    format!("{param}:identifier")
}

fn tokens_of(n: &Node, out: &mut IndexRows, param: &str) {
    let v = n.value.as_ref();
    // An identifier with a type: its value and its type codings share a group (`:of-type`).
    let typed_identifier = out.cur_grp == 0
        && v.get("value").is_some()
        && v.pointer("/type/coding").is_some_and(Value::is_array);
    if typed_identifier {
        out.begin_group();
        for c in v
            .pointer("/type/coding")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let grp = out.cur_grp;
            out.tokens.push(TokenRow {
                param: of_type_param(param),
                system: s(c, "system"),
                code: s(c, "code"),
                display: None,
                grp,
            });
        }
    }
    token_values(n, out, param);
    if typed_identifier {
        out.end_group();
    }
}

fn token_values(n: &Node, out: &mut IndexRows, param: &str) {
    let grp = out.cur_grp;
    let mut push = |system: Option<String>, code: Option<String>, display: Option<String>| {
        if system.is_none() && code.is_none() && display.is_none() {
            return;
        }
        out.tokens.push(TokenRow {
            param: param.to_string(),
            system,
            code,
            display: display.map(|d| fold(&d)),
            grp,
        });
    };
    let v = n.value.as_ref();
    match v {
        Value::String(t) => push(None, Some(t.clone()), None),
        Value::Bool(b) => push(None, Some(b.to_string()), None),
        Value::Number(x) => push(None, Some(x.to_string()), None),
        Value::Object(o) => {
            if let Some(Value::Array(codings)) = o.get("coding") {
                // CodeableConcept
                for c in codings {
                    push(s(c, "system"), s(c, "code"), s(c, "display"));
                }
                if let Some(t) = s(v, "text") {
                    push(None, None, Some(t));
                }
            } else if o.contains_key("coding")
                || (o.contains_key("text") && !o.contains_key("value"))
            {
                push(None, None, s(v, "text"));
            } else if o.contains_key("value") && !o.contains_key("code") {
                // Identifier or ContactPoint: the value is the code.
                let display = v.get("type").and_then(|t| s(t, "text"));
                let system = if n.ty.as_deref() == Some("ContactPoint")
                    || (o.contains_key("system")
                        && matches!(
                            s(v, "system").as_deref(),
                            Some("phone" | "fax" | "email" | "pager" | "url" | "sms" | "other")
                        )) {
                    None
                } else {
                    s(v, "system")
                };
                push(
                    system,
                    v.get("value").and_then(|x| match x {
                        Value::String(t) => Some(t.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    }),
                    display,
                );
            } else {
                // Coding (or Quantity used as a token): system + code.
                push(s(v, "system"), s(v, "code"), s(v, "display"));
            }
        }
        _ => {}
    }
}

fn dates_of(v: &Value, out: &mut IndexRows, param: &str) {
    let grp = out.cur_grp;
    let mut push = |low: i64, high: i64| {
        out.dates.push(DateRow {
            param: param.to_string(),
            low,
            high,
            grp,
        })
    };
    match v {
        Value::String(t) => {
            if let Some((l, h)) = date_range(t) {
                push(l, h);
            }
        }
        Value::Object(o) => {
            if o.contains_key("start") || o.contains_key("end") {
                // Period: open ends are unbounded.
                let low = o
                    .get("start")
                    .and_then(Value::as_str)
                    .and_then(date_range)
                    .map_or(MIN_INSTANT, |r| r.0);
                let high = o
                    .get("end")
                    .and_then(Value::as_str)
                    .and_then(date_range)
                    .map_or(MAX_INSTANT, |r| r.1);
                push(low, high);
            } else if let Some(Value::Array(ev)) = o.get("event") {
                // Timing: each event.
                for e in ev {
                    if let Some((l, h)) = e.as_str().and_then(date_range) {
                        push(l, h);
                    }
                }
            }
        }
        _ => {}
    }
}

fn references_of(v: &Value, out: &mut IndexRows, param: &str) {
    if let Some(identifier) = v.get("identifier").filter(|i| i.is_object()) {
        let n = Node {
            value: std::borrow::Cow::Borrowed(identifier),
            ty: Some("Identifier".to_string()),
        };
        token_values(&n, out, &identifier_param(param));
    }
    let r = match v {
        Value::String(t) => Some(t.as_str()), // canonical
        Value::Object(_) => v.get("reference").and_then(Value::as_str),
        _ => None,
    };
    if let Some(r) = r {
        if r.starts_with('#') {
            return; // contained: not searchable by reference
        }
        let (t, i, u) = split_reference(r);
        // A canonical may carry a version: url|version.
        let u = u.map(|u| u.split('|').next().unwrap_or_default().to_string());
        let grp = out.cur_grp;
        out.references.push(ReferenceRow {
            param: param.to_string(),
            target_type: t,
            target_id: i,
            target_url: u,
            grp,
        });
    }
}

/// Drop repeated rows (a value reachable by two paths, e.g. an AuditEvent entity that is also
/// its patient): one row per distinct value is all a search needs.
fn dedup<T: PartialEq>(v: &mut Vec<T>) {
    let mut i = 0;
    while i < v.len() {
        if v[..i].contains(&v[i]) {
            v.remove(i);
        } else {
            i += 1;
        }
    }
}

impl IndexRows {
    fn dedup(&mut self) {
        dedup(&mut self.strings);
        dedup(&mut self.tokens);
        dedup(&mut self.dates);
        dedup(&mut self.references);
        dedup(&mut self.numbers);
        dedup(&mut self.quantities);
        dedup(&mut self.uris);
    }
}

/// The rows one value `n` of a parameter of type `ptype` yields, under `param`.
fn index_value(ptype: ParamType, n: &Node, out: &mut IndexRows, param: &str) {
    let v = n.value.as_ref();
    let grp = out.cur_grp;
    match ptype {
        ParamType::String => strings_of(v, out, param),
        ParamType::Token => tokens_of(n, out, param),
        ParamType::Date => dates_of(v, out, param),
        ParamType::Reference => references_of(v, out, param),
        ParamType::Number => {
            if let Some(x) = num(v) {
                out.numbers.push(NumberRow {
                    param: param.to_string(),
                    value: x,
                    grp,
                });
            }
        }
        ParamType::Quantity => {
            if let Some(x) = v.get("value").and_then(num) {
                out.quantities.push(QuantityRow {
                    param: param.to_string(),
                    value: x,
                    system: s(v, "system"),
                    code: s(v, "code"),
                    unit: s(v, "unit"),
                    grp,
                });
            }
        }
        ParamType::Uri => {
            if let Some(t) = v.as_str() {
                out.uris.push(UriRow {
                    param: param.to_string(),
                    value: t.to_string(),
                    grp,
                });
            }
        }
        ParamType::Composite | ParamType::Special => {}
    }
}

/// The index rows of a resource of type `ty` (none are produced for unsupported parameters).
/// A composite parameter's parts are indexed under `code$0`, `code$1`, … with one group per
/// repetition its expression selects, so a search can require its parts to match together.
pub fn extract(ty: &str, resource: &Value) -> IndexRows {
    let mut out = IndexRows::default();
    let Some(params) = SearchParams::get().for_type(ty) else {
        return out;
    };
    for (code, def) in params {
        if !def.indexed() {
            continue;
        }
        for e in &def.exprs {
            for n in evaluate(e, resource) {
                if def.ptype != ParamType::Composite {
                    index_value(def.ptype, &n, &mut out, code);
                    continue;
                }
                out.begin_group();
                let focus = [n];
                for (i, c) in def.components.iter().enumerate() {
                    let part = component_param(code, i);
                    for cn in eval(&c.expr, resource, &focus) {
                        index_value(c.ptype, &cn, &mut out, &part);
                    }
                }
                out.end_group();
            }
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patient_rows() {
        let p = json!({"resourceType": "Patient", "id": "p1",
            "meta": {"tag": [{"system": "urn:t", "code": "vip"}], "profile": ["http://x/p"]},
            "name": [{"family": "Müller", "given": ["Zoë"]}],
            "identifier": [{"system": "urn:mrn", "value": "123"}],
            "telecom": [{"system": "email", "value": "a@b.org"}],
            "gender": "female", "birthDate": "1950-02",
            "generalPractitioner": [{"reference": "Practitioner/9"}],
            "address": [{"city": "Genève"}]});
        let r = extract("Patient", &p);
        assert!(r.strings.contains(&StringRow {
            param: "family".into(),
            norm: "muller".into(),
            exact: "Müller".into(),
            grp: 0
        }));
        assert!(r
            .strings
            .iter()
            .any(|s| s.param == "name" && s.norm == "zoe"));
        assert!(r
            .strings
            .iter()
            .any(|s| s.param == "address-city" && s.norm == "geneve"));
        assert!(r.tokens.contains(&TokenRow {
            param: "identifier".into(),
            system: Some("urn:mrn".into()),
            code: Some("123".into()),
            display: None,
            grp: 0
        }));
        assert!(r
            .tokens
            .iter()
            .any(|t| t.param == "email" && t.code.as_deref() == Some("a@b.org")));
        assert!(r
            .tokens
            .iter()
            .any(|t| t.param == "gender" && t.code.as_deref() == Some("female")));
        assert!(r
            .tokens
            .iter()
            .any(|t| t.param == "_tag" && t.code.as_deref() == Some("vip")));
        assert!(r
            .uris
            .iter()
            .any(|u| u.param == "_profile" && u.value == "http://x/p"));
        assert_eq!(r.dates.iter().filter(|d| d.param == "birthdate").count(), 1);
        assert!(r.references.contains(&ReferenceRow {
            param: "general-practitioner".into(),
            target_type: Some("Practitioner".into()),
            target_id: Some("9".into()),
            target_url: None,
            grp: 0
        }));
    }

    #[test]
    fn task_and_observation_rows() {
        let t = json!({"resourceType": "Task", "status": "requested", "intent": "order",
            "for": {"reference": "Patient/1"}, "owner": {"reference": "http://other/fhir/Practitioner/2"},
            "executionPeriod": {"start": "2026-01-01"}});
        let r = extract("Task", &t);
        assert!(r
            .references
            .iter()
            .any(|x| x.param == "patient" && x.target_id.as_deref() == Some("1")));
        assert!(r.references.iter().any(|x| x.param == "owner"
            && x.target_url.as_deref() == Some("http://other/fhir/Practitioner/2")));
        let d = r.dates.iter().find(|d| d.param == "period").unwrap();
        assert_eq!(d.high, MAX_INSTANT);
        let o = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "valueQuantity": {"value": 5.40, "system": "http://unitsofmeasure.org", "code": "mg"}});
        let r = extract("Observation", &o);
        assert!(r
            .quantities
            .iter()
            .any(|q| q.param == "value-quantity" && q.value == 5.4));
    }

    /// Every expression of every supported parameter evaluates on every spec example without panicking,
    /// and the examples produce rows for most of their parameters.
    #[test]
    fn spec_examples_extract() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/examples");
        let mut n = 0;
        for t in std::fs::read_dir(dir).unwrap() {
            let t = t.unwrap();
            for f in std::fs::read_dir(t.path()).unwrap() {
                let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
                let v: Value = serde_json::from_str(&text).unwrap();
                let ty = v["resourceType"].as_str().unwrap().to_string();
                let r = extract(&ty, &v);
                n += r.tokens.len() + r.references.len();
            }
        }
        assert!(n > 1000, "{n}");
    }
}
