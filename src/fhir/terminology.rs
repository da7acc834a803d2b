//! The code systems and value sets this server holds (pure): the R4 required value sets
//! (`fhir-profiles/r4/required-valuesets.json`) and the program's own CodeSystems and ValueSets
//! (`fhir-profiles/icm/`). Search uses them for the token modifiers `:in`, `:not-in`, `:below`
//! and `:above`; validation for the program's required bindings.
//!
//! Hierarchies come from nested `concept`s of a CodeSystem (a child is subsumed by its parent).
//! The R4 required value sets carry no hierarchy: their systems are held flat (a code subsumes
//! only itself).
use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use serde_json::Value;

use crate::fhir::definitions::Definitions;
use crate::fhir::validate::profiles::RESOURCES;

/// One held code system: every code, and each code's parent (when it has one).
#[derive(Debug, Default)]
pub struct CodeSystem {
    pub codes: BTreeSet<String>,
    parent: HashMap<String, String>,
}

impl CodeSystem {
    /// `code` and every code below it, in code order.
    pub fn descendants_or_self(&self, code: &str) -> Vec<String> {
        self.codes
            .iter()
            .filter(|c| self.ancestors_or_self(c).iter().any(|a| a == code))
            .cloned()
            .collect()
    }
    /// `code` and every code above it, nearest first.
    pub fn ancestors_or_self(&self, code: &str) -> Vec<String> {
        let mut out = vec![code.to_string()];
        let mut at = code;
        while let Some(p) = self.parent.get(at) {
            if out.contains(p) {
                break; // a cycle in a definition must not loop
            }
            out.push(p.clone());
            at = p;
        }
        out
    }
}

struct Terminology {
    systems: HashMap<String, CodeSystem>,
    /// Value set URL → its (system, code) pairs.
    valuesets: HashMap<String, Vec<(String, String)>>,
}

/// Every code of a CodeSystem's `concept` tree, with its parent.
fn walk(concepts: &Value, parent: Option<&str>, cs: &mut CodeSystem) {
    for c in concepts.as_array().into_iter().flatten() {
        let Some(code) = c["code"].as_str() else {
            continue;
        };
        cs.codes.insert(code.to_string());
        if let Some(p) = parent {
            cs.parent.insert(code.to_string(), p.to_string());
        }
        walk(&c["concept"], Some(code), cs);
    }
}

fn load() -> Terminology {
    let mut systems: HashMap<String, CodeSystem> = HashMap::new();
    let mut valuesets: HashMap<String, Vec<(String, String)>> = HashMap::new();
    // R4 required value sets: their codes, and their systems held flat.
    for (url, vs) in Definitions::get().valuesets() {
        let mut pairs: Vec<(String, String)> = vs.pairs.iter().cloned().collect();
        pairs.sort();
        for (s, c) in &pairs {
            systems
                .entry(s.clone())
                .or_default()
                .codes
                .insert(c.clone());
        }
        valuesets.insert(url.clone(), pairs);
    }
    // The program's own: CodeSystems first (with their hierarchy), then the ValueSets over them.
    let parsed: Vec<(&str, Value)> = RESOURCES
        .iter()
        .filter(|(rt, _, _)| matches!(*rt, "CodeSystem" | "ValueSet"))
        .map(|(rt, _, text)| {
            (
                *rt,
                serde_json::from_str(text).expect("embedded ICM conformance resource"),
            )
        })
        .collect();
    for (_, v) in parsed.iter().filter(|(rt, _)| *rt == "CodeSystem") {
        let mut cs = CodeSystem::default();
        walk(&v["concept"], None, &mut cs);
        systems.insert(v["url"].as_str().unwrap_or_default().to_string(), cs);
    }
    for (_, v) in parsed.iter().filter(|(rt, _)| *rt == "ValueSet") {
        let mut pairs = Vec::new();
        for inc in v["compose"]["include"].as_array().into_iter().flatten() {
            let Some(sys) = inc["system"].as_str() else {
                continue;
            };
            match inc["concept"].as_array() {
                Some(listed) => pairs.extend(
                    listed
                        .iter()
                        .filter_map(|c| c["code"].as_str())
                        .map(|c| (sys.to_string(), c.to_string())),
                ),
                None => pairs.extend(
                    systems
                        .get(sys)
                        .into_iter()
                        .flat_map(|cs| cs.codes.iter())
                        .map(|c| (sys.to_string(), c.clone())),
                ),
            }
        }
        valuesets.insert(v["url"].as_str().unwrap_or_default().to_string(), pairs);
    }
    Terminology { systems, valuesets }
}

fn terminology() -> &'static Terminology {
    static T: OnceLock<Terminology> = OnceLock::new();
    T.get_or_init(load)
}

/// A canonical URL without its `|version`.
fn unversioned(url: &str) -> &str {
    url.split('|').next().unwrap_or(url)
}

/// The (system, code) pairs of a value set the server holds, or None.
pub fn expand(valueset: &str) -> Option<&'static [(String, String)]> {
    terminology()
        .valuesets
        .get(unversioned(valueset))
        .map(Vec::as_slice)
}

/// A code system the server holds, or None.
pub fn code_system(system: &str) -> Option<&'static CodeSystem> {
    terminology().systems.get(unversioned(system))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKFLOW: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-workflow";

    #[test]
    fn required_value_sets_expand() {
        let g = expand("http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1").unwrap();
        let codes: Vec<&str> = g.iter().map(|(_, c)| c.as_str()).collect();
        assert_eq!(codes, ["female", "male", "other", "unknown"]);
        assert!(g
            .iter()
            .all(|(s, _)| s == "http://hl7.org/fhir/administrative-gender"));
        assert!(expand("http://example.org/ValueSet/nope").is_none());
    }

    #[test]
    fn program_hierarchy() {
        let cs = code_system(WORKFLOW).unwrap();
        assert_eq!(
            cs.descendants_or_self("transition-of-care"),
            [
                "medication-reconciliation",
                "post-discharge-visit",
                "transition-follow-up",
                "transition-of-care"
            ]
        );
        assert_eq!(
            cs.ancestors_or_self("transition-follow-up"),
            ["transition-follow-up", "transition-of-care"]
        );
        assert_eq!(cs.descendants_or_self("outreach"), ["outreach"]);
        // Flat R4 systems: a code subsumes only itself.
        let g = code_system("http://hl7.org/fhir/task-status").unwrap();
        assert_eq!(g.descendants_or_self("ready"), ["ready"]);
    }

    #[test]
    fn program_value_sets_expand() {
        let p = expand("http://icm-fhir.org/fhir/ValueSet/icm-program").unwrap();
        assert!(!p.is_empty());
        assert!(p
            .iter()
            .all(|(s, _)| s == "http://icm-fhir.org/fhir/CodeSystem/icm-program"));
    }
}
