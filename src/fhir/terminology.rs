//! The code systems and value sets this server holds (pure): HL7's R4 code systems
//! (`fhir-profiles/r4/codesystems.json`, every complete `http://hl7.org/fhir/…` and
//! `http://terminology.hl7.org/CodeSystem/…` system, with displays and hierarchy), the R4
//! required value sets (`required-valuesets.json`) and the extensible ones expandable from those
//! systems (`extensible-bindings.json`), and the program's own CodeSystems and ValueSets
//! (`fhir-profiles/icm/`). Search uses them for the token modifiers `:in`, `:not-in`, `:below`
//! and `:above`; validation for bindings and for the codes of held systems (`validate::codes`).
//!
//! Hierarchies come from nested `concept`s of a CodeSystem (a child is subsumed by its parent).
//! A system named by a required value set but not among the complete HL7 systems (e.g. a
//! fragment) is held flat with the value set's codes (a code subsumes only itself).
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::OnceLock;

use serde_json::Value;

use crate::fhir::definitions::Definitions;
use crate::fhir::validate::profiles::RESOURCES;

/// One held code system: every code, and each code's parent (when it has one).
#[derive(Debug, Default)]
pub struct CodeSystem {
    pub codes: BTreeSet<String>,
    parent: HashMap<String, String>,
    /// A code's display, where the definition gives one.
    display: HashMap<String, String>,
    /// The CodeSystem's `name` (or its URL's last segment for the R4 systems held flat).
    pub name: String,
    /// Every code of the system is held (an HL7 R4 system with content `complete`, or one of
    /// the program's): a code outside `codes` is not a code of this system.
    pub complete: bool,
    /// Lower-cased codes, for a system that does not declare itself case-sensitive.
    lower: Option<HashSet<String>>,
}

impl CodeSystem {
    /// Whether `code` is a code of this system (ignoring case where the system is not declared
    /// case-sensitive: the v2 tables).
    pub fn has_code(&self, code: &str) -> bool {
        self.codes.contains(code)
            || self
                .lower
                .as_ref()
                .is_some_and(|l| l.contains(&code.to_lowercase()))
    }
    /// The code as this system spells it: `code` itself, or, in a system not declared
    /// case-sensitive, the code equal to it ignoring case.
    pub fn canonical<'a>(&'a self, code: &'a str) -> Option<&'a str> {
        if self.codes.contains(code) {
            return Some(code);
        }
        self.lower.as_ref()?;
        self.codes
            .iter()
            .find(|c| c.eq_ignore_ascii_case(code))
            .map(String::as_str)
    }
    /// `code` and every code below it, in code order.
    pub fn descendants_or_self(&self, code: &str) -> Vec<String> {
        self.codes
            .iter()
            .filter(|c| self.ancestors_or_self(c).iter().any(|a| a == code))
            .cloned()
            .collect()
    }
    /// A CodeSystem resource's codes, hierarchy and displays.
    pub fn from_resource(cs: &Value) -> CodeSystem {
        let mut out = CodeSystem {
            name: cs["name"].as_str().unwrap_or_default().to_string(),
            ..CodeSystem::default()
        };
        walk(&cs["concept"], None, &mut out);
        out.complete = cs["content"] == "complete";
        out
    }
    /// The display of `code`, where the definition gives one.
    pub fn display(&self, code: &str) -> Option<&str> {
        self.display.get(code).map(String::as_str)
    }
    /// The direct parent of `code`, if it has one.
    pub fn parent(&self, code: &str) -> Option<&str> {
        self.parent.get(code).map(String::as_str)
    }
    /// The codes directly below `code`.
    pub fn children(&self, code: &str) -> Vec<&str> {
        self.codes
            .iter()
            .filter(|c| self.parent.get(*c).map(String::as_str) == Some(code))
            .map(String::as_str)
            .collect()
    }
    /// How `a` relates to `b` in this system's hierarchy (CodeSystem/$subsumes).
    pub fn subsumes(&self, a: &str, b: &str) -> Subsumption {
        if a == b {
            Subsumption::Equivalent
        } else if self.ancestors_or_self(b).iter().any(|x| x == a) {
            Subsumption::Subsumes
        } else if self.ancestors_or_self(a).iter().any(|x| x == b) {
            Subsumption::SubsumedBy
        } else {
            Subsumption::NotSubsumed
        }
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

/// The outcome of CodeSystem/$subsumes (R4 concept-subsumption-outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subsumption {
    Equivalent,
    Subsumes,
    SubsumedBy,
    NotSubsumed,
}

impl Subsumption {
    pub fn as_str(self) -> &'static str {
        match self {
            Subsumption::Equivalent => "equivalent",
            Subsumption::Subsumes => "subsumes",
            Subsumption::SubsumedBy => "subsumed-by",
            Subsumption::NotSubsumed => "not-subsumed",
        }
    }
}

/// One code of an expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concept {
    pub system: String,
    pub code: String,
    pub display: Option<String>,
}

/// Why a ValueSet's `compose` cannot be expanded here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComposeError {
    /// The compose includes all of (or filters) a code system the server does not hold.
    SystemNotHeld(String),
    /// It includes another value set the server does not hold.
    ValueSetNotHeld(String),
    /// A filter this server does not evaluate (only `concept` `is-a`, `descendent-of`,
    /// `is-not-a`, `=`).
    Filter(String),
    /// The compose is malformed (an include without system or valueSet).
    Invalid(String),
}

impl std::fmt::Display for ComposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ComposeError::SystemNotHeld(s) => write!(f, "code system {s} is not held by this server"),
            ComposeError::ValueSetNotHeld(s) => write!(f, "value set {s} is not held by this server"),
            ComposeError::Filter(s) => write!(f, "filter {s} is not supported (only property 'concept' with is-a, descendent-of, is-not-a or =)"),
            ComposeError::Invalid(s) => write!(f, "{s}"),
        }
    }
}

struct Terminology {
    systems: HashMap<String, CodeSystem>,
    /// Value set URL → its (system, code) pairs.
    valuesets: HashMap<String, Vec<(String, String)>>,
    /// Element path (`Patient.maritalStatus`) → the extensible value set bound to it.
    extensible: HashMap<String, String>,
    /// Extensible value set URL → system → codes (for membership tests without allocating).
    extensible_sets: HashMap<String, HashMap<String, HashSet<String>>>,
}

const CODESYSTEMS_JSON: &str = include_str!("../../fhir-profiles/r4/codesystems.json");
const EXTENSIBLE_JSON: &str = include_str!("../../fhir-profiles/r4/extensible-bindings.json");

#[derive(serde::Deserialize)]
struct RawSystems {
    #[serde(rename = "codeSystem")]
    code_system: HashMap<String, RawSystem>,
}

#[derive(serde::Deserialize)]
struct RawSystem {
    name: String,
    #[serde(rename = "caseSensitive")]
    case_sensitive: Option<bool>,
    /// [code, display, parent?]
    concept: Vec<Vec<String>>,
}

#[derive(serde::Deserialize)]
struct RawExtensible {
    element: HashMap<String, String>,
    #[serde(rename = "valueSet")]
    value_set: HashMap<String, Vec<(String, String)>>,
}

/// Every code of a CodeSystem's `concept` tree, with its parent.
fn walk(concepts: &Value, parent: Option<&str>, cs: &mut CodeSystem) {
    for c in concepts.as_array().into_iter().flatten() {
        let Some(code) = c["code"].as_str() else {
            continue;
        };
        cs.codes.insert(code.to_string());
        if let Some(d) = c["display"].as_str() {
            cs.display.insert(code.to_string(), d.to_string());
        }
        if let Some(p) = parent {
            cs.parent.insert(code.to_string(), p.to_string());
        }
        walk(&c["concept"], Some(code), cs);
    }
}

fn load() -> Terminology {
    let mut systems: HashMap<String, CodeSystem> = HashMap::new();
    let mut valuesets: HashMap<String, Vec<(String, String)>> = HashMap::new();
    // HL7's complete R4 code systems, with displays and hierarchy.
    let raw: RawSystems = serde_json::from_str(CODESYSTEMS_JSON)
        .expect("fhir-profiles/r4/codesystems.json is embedded and valid");
    for (url, rs) in raw.code_system {
        let mut cs = CodeSystem {
            name: rs.name,
            complete: true,
            ..CodeSystem::default()
        };
        for row in rs.concept {
            let mut it = row.into_iter();
            let Some(code) = it.next() else { continue };
            if let Some(d) = it.next().filter(|d| !d.is_empty()) {
                cs.display.insert(code.clone(), d);
            }
            if let Some(p) = it.next() {
                cs.parent.insert(code.clone(), p);
            }
            cs.codes.insert(code);
        }
        if rs.case_sensitive != Some(true) {
            cs.lower = Some(cs.codes.iter().map(|c| c.to_lowercase()).collect());
        }
        systems.insert(url, cs);
    }
    // R4 required value sets: their codes, and their systems held flat.
    for (url, vs) in Definitions::get().valuesets() {
        let mut pairs: Vec<(String, String)> = vs.pairs.iter().cloned().collect();
        pairs.sort();
        for (s, c) in &pairs {
            let cs = systems.entry(s.clone()).or_default();
            if cs.name.is_empty() {
                cs.name = s.rsplit('/').next().unwrap_or(s).to_string();
            }
            if !cs.complete {
                cs.codes.insert(c.clone());
            }
        }
        valuesets.insert(url.clone(), pairs);
    }
    // The extensible value sets whose every code comes from a held system.
    let ext: RawExtensible = serde_json::from_str(EXTENSIBLE_JSON)
        .expect("fhir-profiles/r4/extensible-bindings.json is embedded and valid");
    let mut extensible_sets: HashMap<String, HashMap<String, HashSet<String>>> = HashMap::new();
    for (url, pairs) in ext.value_set {
        let set = extensible_sets.entry(url.clone()).or_default();
        for (s, c) in &pairs {
            set.entry(s.clone()).or_default().insert(c.clone());
        }
        valuesets.entry(url).or_insert(pairs);
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
        let cs = CodeSystem::from_resource(v);
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
    Terminology {
        systems,
        valuesets,
        extensible: ext.element,
        extensible_sets,
    }
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

/// A code system whose every code the server holds (HL7's complete R4 systems, the program's
/// own): a code outside it is not a code of that system. `system` is matched exactly.
pub fn complete_system(system: &str) -> Option<&'static CodeSystem> {
    terminology().systems.get(system).filter(|cs| cs.complete)
}

/// The extensible value set bound to an element (by its definition path, e.g.
/// `Patient.maritalStatus`), when it can be expanded from held systems: its URL and a test of
/// membership.
pub fn extensible_binding(path: &str) -> Option<ExtensibleSet> {
    let t = terminology();
    let url = t.extensible.get(path)?;
    Some(ExtensibleSet {
        url,
        codes: t.extensible_sets.get(url)?,
    })
}

/// An extensible value set, for membership tests.
pub struct ExtensibleSet {
    pub url: &'static str,
    codes: &'static HashMap<String, HashSet<String>>,
}

impl ExtensibleSet {
    /// Whether system#code is in the value set (ignoring case where the system is not declared
    /// case-sensitive, as [`CodeSystem::has_code`] does).
    pub fn contains(&self, system: &str, code: &str) -> bool {
        let Some(codes) = self.codes.get(system) else {
            return false;
        };
        codes.contains(code)
            || (code_system(system).is_some_and(|cs| cs.lower.is_some())
                && codes.iter().any(|c| c.eq_ignore_ascii_case(code)))
    }
}

/// The display of a held code, where its definition gives one.
pub fn display(system: &str, code: &str) -> Option<&'static str> {
    code_system(system).and_then(|cs| cs.display(code))
}

/// A held value set's codes as concepts (with displays where known), or None.
pub fn expand_concepts(valueset: &str) -> Option<Vec<Concept>> {
    expand(valueset).map(|pairs| pairs.iter().map(|(s, c)| concept(s, c, None)).collect())
}

fn concept(system: &str, code: &str, display: Option<&str>) -> Concept {
    Concept {
        system: system.to_string(),
        code: code.to_string(),
        display: display
            .or_else(|| self::display(system, code))
            .map(String::from),
    }
}

/// The codes of one `include` (or `exclude`) element of a ValueSet.compose.
fn compose_part(inc: &Value) -> Result<Vec<Concept>, ComposeError> {
    let mut out: Option<Vec<Concept>> = None;
    if let Some(sys) = inc["system"].as_str() {
        let listed = inc["concept"].as_array();
        let filters = inc["filter"].as_array();
        let codes: Vec<Concept> = if let Some(listed) = listed {
            listed
                .iter()
                .filter_map(|c| {
                    c["code"]
                        .as_str()
                        .map(|code| concept(sys, code, c["display"].as_str()))
                })
                .collect()
        } else {
            let cs =
                code_system(sys).ok_or_else(|| ComposeError::SystemNotHeld(sys.to_string()))?;
            let mut keep: Vec<String> = cs.codes.iter().cloned().collect();
            for f in filters.into_iter().flatten() {
                let (prop, op, val) = (
                    f["property"].as_str().unwrap_or(""),
                    f["op"].as_str().unwrap_or(""),
                    f["value"].as_str().unwrap_or(""),
                );
                let allowed: Vec<String> = match (prop, op) {
                    ("concept", "is-a") => cs.descendants_or_self(val),
                    ("concept", "descendent-of") => cs
                        .descendants_or_self(val)
                        .into_iter()
                        .filter(|c| c != val)
                        .collect(),
                    ("concept", "is-not-a") => {
                        let below = cs.descendants_or_self(val);
                        keep.iter()
                            .filter(|c| !below.contains(c))
                            .cloned()
                            .collect()
                    }
                    ("concept", "=") => vec![val.to_string()],
                    _ => return Err(ComposeError::Filter(format!("{prop} {op} {val}"))),
                };
                keep.retain(|c| allowed.contains(c));
            }
            keep.iter().map(|c| concept(sys, c, None)).collect()
        };
        out = Some(codes);
    }
    for vs in inc["valueSet"].as_array().into_iter().flatten() {
        let url = vs.as_str().unwrap_or_default();
        let more =
            expand_concepts(url).ok_or_else(|| ComposeError::ValueSetNotHeld(url.to_string()))?;
        // Several value sets (and a system) in one include intersect.
        out = Some(match out {
            None => more,
            Some(prev) => prev
                .into_iter()
                .filter(|c| {
                    more.iter()
                        .any(|m| m.system == c.system && m.code == c.code)
                })
                .collect(),
        });
    }
    out.ok_or_else(|| {
        ComposeError::Invalid("a compose include needs a system or a valueSet".into())
    })
}

/// Expand a ValueSet resource's `compose` (enumerated concepts, whole held systems, `is-a`
/// filters on held hierarchies, other held value sets; `exclude` removes codes).
pub fn expand_compose(valueset: &Value) -> Result<Vec<Concept>, ComposeError> {
    let compose = &valueset["compose"];
    let Some(includes) = compose["include"].as_array() else {
        return Err(ComposeError::Invalid(
            "the ValueSet has no compose.include to expand".into(),
        ));
    };
    let mut out: Vec<Concept> = Vec::new();
    for inc in includes {
        for c in compose_part(inc)? {
            if !out.iter().any(|o| o.system == c.system && o.code == c.code) {
                out.push(c);
            }
        }
    }
    for exc in compose["exclude"].as_array().into_iter().flatten() {
        let gone = compose_part(exc)?;
        out.retain(|c| {
            !gone
                .iter()
                .any(|g| g.system == c.system && g.code == c.code)
        });
    }
    Ok(out)
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
    fn subsumption_and_compose() {
        let cs = code_system(WORKFLOW).unwrap();
        assert_eq!(
            cs.subsumes("transition-of-care", "transition-follow-up"),
            Subsumption::Subsumes
        );
        assert_eq!(
            cs.subsumes("transition-follow-up", "transition-of-care"),
            Subsumption::SubsumedBy
        );
        assert_eq!(cs.subsumes("outreach", "outreach"), Subsumption::Equivalent);
        assert_eq!(
            cs.subsumes("outreach", "transition-follow-up"),
            Subsumption::NotSubsumed
        );
        let vs = serde_json::json!({"resourceType": "ValueSet", "compose": {
            "include": [{"system": WORKFLOW, "filter": [{"property": "concept", "op": "is-a", "value": "transition-of-care"}]}],
            "exclude": [{"system": WORKFLOW, "concept": [{"code": "transition-of-care"}]}]}});
        let codes: Vec<String> = expand_compose(&vs)
            .unwrap()
            .into_iter()
            .map(|c| c.code)
            .collect();
        assert_eq!(
            codes,
            [
                "medication-reconciliation",
                "post-discharge-visit",
                "transition-follow-up"
            ]
        );
        let unknown =
            serde_json::json!({"compose": {"include": [{"system": "http://snomed.info/sct"}]}});
        assert_eq!(
            expand_compose(&unknown),
            Err(ComposeError::SystemNotHeld("http://snomed.info/sct".into()))
        );
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
