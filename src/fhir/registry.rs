//! Registry of supported resource types, generated from the R4 definitions (fhir-profiles/r4/).
use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

const RESOURCE_TYPES_JSON: &str = include_str!("../../fhir-profiles/r4/resource-types.json");
/// A top-level element of a resource type.
#[derive(Debug, Clone, Deserialize)]
pub struct ElementInfo {
    /// Element name as in the definition (`value[x]` for choice elements).
    pub name: String,
    /// FHIR type codes.
    pub types: Vec<String>,
    /// Maximum cardinality ("1", "*", …).
    pub max: String,
}

/// What the server knows about one resource type.
#[derive(Debug, Clone, Deserialize)]
pub struct TypeInfo {
    #[serde(rename = "type")]
    pub name: String,
    /// Top-level elements flagged isSummary in the R4 definition (drives `_summary=true`).
    pub summary: Vec<String>,
    /// Top-level elements with min >= 1.
    pub mandatory: Vec<String>,
    /// Every top-level element with its types and cardinality.
    pub elements: Vec<ElementInfo>,
}

/// How the resources of a type are stored: the one place that decides it (store/ dispatches on
/// this, the interactions served follow from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Versioned: `resources` (current), `resource_history` (every version), and the
    /// search_* index tables. Written by clients through the unit of work.
    Versioned,
    /// The append-only audit trail (`audit_log`, store::audit): one version, its search values
    /// in columns; written by the server only, read by administrators and system tokens.
    AuditLog,
}

/// The types with a storage other than [`Storage::Versioned`].
const STORAGE: &[(&str, Storage)] = &[("AuditEvent", Storage::AuditLog)];

#[derive(Debug)]
pub struct Registry {
    types: BTreeMap<String, TypeInfo>,
}

impl Registry {
    fn load() -> Registry {
        let list: Vec<TypeInfo> = serde_json::from_str(RESOURCE_TYPES_JSON)
            .expect("fhir-profiles/r4/resource-types.json is embedded at build time and valid");
        Registry {
            types: list.into_iter().map(|t| (t.name.clone(), t)).collect(),
        }
    }

    /// The registry, loaded once per process.
    pub fn get() -> &'static Registry {
        static REG: OnceLock<Registry> = OnceLock::new();
        REG.get_or_init(Registry::load)
    }

    pub fn type_info(&self, name: &str) -> Option<&TypeInfo> {
        self.types.get(name)
    }

    /// How resources of `ty` are stored.
    pub fn storage(&self, ty: &str) -> Storage {
        STORAGE
            .iter()
            .find(|(t, _)| *t == ty)
            .map_or(Storage::Versioned, |(_, s)| *s)
    }

    pub fn is_supported(&self, name: &str) -> bool {
        self.types.contains_key(name)
    }

    /// Supported type names in alphabetical order.
    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    /// Supported types in alphabetical order.
    pub fn types(&self) -> impl Iterator<Item = &TypeInfo> {
        self.types.values()
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_all_concrete_r4_types() {
        let r = Registry::get();
        assert_eq!(r.len(), 147);
        for t in [
            "Patient",
            "CarePlan",
            "CareTeam",
            "Task",
            "Bundle",
            "Parameters",
        ] {
            assert!(r.is_supported(t), "{t}");
        }
        assert!(!r.is_supported("Resource"));
        assert!(!r.is_supported("DomainResource"));
        assert!(!r.is_supported("patient"));
    }
}
