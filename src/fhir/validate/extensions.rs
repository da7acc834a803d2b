//! Extensions against the definitions the server holds: the core R4 extensions
//! (`fhir-profiles/r4/extensions.json`) and the program's own (`fhir-profiles/icm/`
//! StructureDefinitions of type Extension). A held extension must carry a value of one of its
//! allowed types, or, when complex, no value and only sub-extensions it declares (each with an
//! allowed value type and no more often than allowed); an extension the server does not hold is
//! accepted with a warning (as HAPI does by default). No ICM profile slices (closes) extensions.
use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::Walker;
use crate::fhir::outcome::{Issue, IssueType};
use crate::fhir::validate::profiles::RESOURCES;

const EXTENSIONS_JSON: &str = include_str!("../../../fhir-profiles/r4/extensions.json");

/// One held extension definition.
#[derive(Debug, Default)]
pub struct ExtensionDef {
    /// Allowed value types as they appear in JSON keys (`valueDateTime` → `DateTime`); empty for
    /// a complex extension (no value allowed).
    pub value: Vec<String>,
    /// A complex extension's sub-extensions: url (relative name or absolute) → value types, max.
    pub sub: HashMap<String, (Vec<String>, Option<usize>)>,
    /// Where it may be used (context expressions), for documentation.
    pub context: Vec<String>,
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn types(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(capitalize)
        .collect()
}

fn max_of(m: &Value) -> Option<usize> {
    m.as_str().and_then(|m| m.parse().ok())
}

/// An ICM StructureDefinition of type Extension, read from its differential (`Extension.value[x]`
/// types, `Extension.extension:name` slices with their `url` and `value[x]`).
fn from_differential(sd: &Value) -> ExtensionDef {
    let els: Vec<&Value> = sd["differential"]["element"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let by_id = |id: &str| els.iter().copied().find(|e| e["id"] == id);
    let value_types = |id: &str| {
        by_id(id)
            .filter(|e| e["max"] != "0")
            .map(|e| {
                e["type"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t["code"].as_str())
                    .map(capitalize)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut def = ExtensionDef {
        value: value_types("Extension.value[x]"),
        context: sd["context"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["expression"].as_str().map(String::from))
            .collect(),
        ..ExtensionDef::default()
    };
    for e in &els {
        let id = e["id"].as_str().unwrap_or_default();
        if let Some(slice) = id.strip_prefix("Extension.extension:") {
            if slice.contains('.') {
                continue;
            }
            let url = by_id(&format!("{id}.url"))
                .and_then(|u| u["fixedUri"].as_str())
                .unwrap_or(slice)
                .to_string();
            def.sub.insert(
                url,
                (value_types(&format!("{id}.value[x]")), max_of(&e["max"])),
            );
        }
    }
    def
}

fn load() -> HashMap<String, ExtensionDef> {
    let raw: Value = serde_json::from_str(EXTENSIONS_JSON)
        .expect("fhir-profiles/r4/extensions.json is embedded and valid");
    let mut out = HashMap::new();
    for (url, e) in raw["extension"].as_object().into_iter().flatten() {
        let sub = e["extension"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(u, s)| (u.clone(), (types(&s["value"]), max_of(&s["max"]))))
            .collect();
        out.insert(
            url.clone(),
            ExtensionDef {
                value: types(&e["value"]),
                sub,
                context: e["context"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str().map(String::from))
                    .collect(),
            },
        );
    }
    for (rt, _, text) in RESOURCES {
        if *rt != "StructureDefinition" {
            continue;
        }
        let sd: Value = serde_json::from_str(text).expect("embedded ICM conformance resource");
        if sd["type"] == "Extension" {
            if let Some(url) = sd["url"].as_str() {
                out.insert(url.to_string(), from_differential(&sd));
            }
        }
    }
    out
}

fn defs() -> &'static HashMap<String, ExtensionDef> {
    static DEFS: OnceLock<HashMap<String, ExtensionDef>> = OnceLock::new();
    DEFS.get_or_init(load)
}

/// The held extension definition for `url`, if any.
pub fn definition(url: &str) -> Option<&'static ExtensionDef> {
    defs().get(url)
}

/// How many extension definitions the server holds.
pub fn held_count() -> usize {
    defs().len()
}

/// The value[x] of an extension: its JSON key's type suffix (`valueDateTime` → `DateTime`).
fn value_type(m: &Map<String, Value>) -> Option<&str> {
    m.keys()
        .find_map(|k| k.strip_prefix("value").filter(|t| !t.is_empty()))
}

impl Walker<'_> {
    /// An Extension (at the current path) against its held definition.
    pub(super) fn extension(&mut self, m: &Map<String, Value>) {
        let Some(url) = m.get("url").and_then(Value::as_str) else {
            return; // url is required: the structure check says so
        };
        if !super::bundle::is_absolute_uri(url) {
            return; // a sub-extension's name: judged by its parent when the parent is held
        }
        let Some(def) = definition(url) else {
            let at = self.path.clone();
            self.report.issues.push(
                Issue::warning(
                    IssueType::Structure,
                    format!("extension {url} is not known to this server; accepted without checking its content"),
                )
                .at(at),
            );
            return;
        };
        let value = value_type(m);
        let nested = m.get("extension").and_then(Value::as_array);
        if def.value.is_empty() {
            if let Some(t) = value {
                self.issue(
                    IssueType::Structure,
                    format!("extension {url} is complex: it has sub-extensions, not a value (found value{t})"),
                );
            }
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for (i, sub) in nested.into_iter().flatten().enumerate() {
                let Some(su) = sub.get("url").and_then(Value::as_str) else {
                    continue;
                };
                let Some((allowed, max)) = def.sub.get(su) else {
                    if !super::bundle::is_absolute_uri(su) {
                        self.issue_sub(
                            &format!(".extension[{i}]"),
                            IssueType::Structure,
                            format!("extension {url} has no sub-extension '{su}'"),
                        );
                    }
                    continue;
                };
                let n = counts.entry(su).or_default();
                *n += 1;
                if max.is_some_and(|max| *n > max) {
                    self.issue_sub(
                        &format!(".extension[{i}]"),
                        IssueType::Structure,
                        format!(
                            "sub-extension '{su}' of {url} may appear at most {} time(s)",
                            max.unwrap_or(0)
                        ),
                    );
                }
                let sv = sub.as_object().and_then(value_type);
                match sv {
                    Some(t) if !allowed.is_empty() && !allowed.iter().any(|a| a == t) => self
                        .issue_sub(
                            &format!(".extension[{i}]"),
                            IssueType::Value,
                            format!(
                            "sub-extension '{su}' of {url} must have a value of type {}, not {t}",
                            allowed.join(" | ")
                        ),
                        ),
                    Some(t) if allowed.is_empty() => self.issue_sub(
                        &format!(".extension[{i}]"),
                        IssueType::Structure,
                        format!("sub-extension '{su}' of {url} has no value (found value{t})"),
                    ),
                    _ => {}
                }
            }
        } else {
            if let Some(t) = value {
                if !def.value.iter().any(|a| a == t) {
                    self.issue(
                        IssueType::Value,
                        format!(
                            "extension {url} must have a value of type {}, not {t}",
                            def.value.join(" | ")
                        ),
                    );
                }
            }
            if nested.is_some_and(|n| !n.is_empty()) {
                self.issue(
                    IssueType::Structure,
                    format!("extension {url} has a value, not sub-extensions"),
                );
            }
        }
    }
}
