//! The search-parameter registry: every R4 SearchParameter of the supported types, plus the
//! program's own (fhir-profiles/icm/SearchParameter-*.json: Task `due`, Encounter
//! `discharge-disposition`, Claim `total`), with its FHIRPath expression parsed once and split
//! into the union branches that apply to each type.
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::Deserialize;

use crate::fhir::fhirpath::{self, Expr};
use crate::fhir::registry::Registry;

const SEARCH_PARAMETERS_JSON: &str =
    include_str!("../../../fhir-profiles/r4/search-parameters.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl ParamType {
    pub fn parse(s: &str) -> Option<ParamType> {
        Some(match s {
            "number" => ParamType::Number,
            "date" => ParamType::Date,
            "string" => ParamType::String,
            "token" => ParamType::Token,
            "reference" => ParamType::Reference,
            "composite" => ParamType::Composite,
            "quantity" => ParamType::Quantity,
            "uri" => ParamType::Uri,
            "special" => ParamType::Special,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Number => "number",
            ParamType::Date => "date",
            ParamType::String => "string",
            ParamType::Token => "token",
            ParamType::Reference => "reference",
            ParamType::Composite => "composite",
            ParamType::Quantity => "quantity",
            ParamType::Uri => "uri",
            ParamType::Special => "special",
        }
    }
}

#[derive(Deserialize)]
struct RawParam {
    code: String,
    base: Vec<String>,
    #[serde(rename = "type")]
    ty: String,
    expression: Option<String>,
    #[serde(default)]
    target: Vec<String>,
    #[serde(default)]
    component: Vec<RawComponent>,
    url: String,
}

#[derive(Deserialize)]
struct RawComponent {
    definition: String,
    expression: String,
}

/// One part of a composite parameter: its type (that of the parameter it is defined by) and
/// its expression, relative to each repetition the composite's own expression selects.
#[derive(Debug, Clone)]
pub struct Component {
    pub ptype: ParamType,
    pub expr: Expr,
}

/// One search parameter as it applies to one resource type.
#[derive(Debug, Clone)]
pub struct ParamDef {
    pub code: String,
    pub ptype: ParamType,
    pub url: String,
    /// The expression branches that apply to this type (empty: not indexable, e.g. `_text`).
    pub exprs: Vec<Expr>,
    /// Reference targets (reference parameters).
    pub targets: Vec<String>,
    /// The parts of a composite parameter, in order (empty for the other types, and for a
    /// composite whose parts this server cannot evaluate).
    pub components: Vec<Component>,
}

impl ParamDef {
    /// Whether this server can search on the parameter (indexed or served from the resource row).
    pub fn supported(&self) -> bool {
        match self.code.as_str() {
            "_id" | "_lastUpdated" => true,
            // Full-text search (fulltext.rs, store::fulltext): no expression, own table.
            "_text" | "_content" => true,
            _ => match self.ptype {
                ParamType::Special => false,
                ParamType::Composite => !self.exprs.is_empty() && !self.components.is_empty(),
                _ => !self.exprs.is_empty(),
            },
        }
    }
    /// A token parameter on identifiers (where `:of-type` applies): its expressions end at an
    /// element named `identifier` (or `…Identifier`), the R4 convention for Identifier elements.
    pub fn on_identifiers(&self) -> bool {
        fn last_member(e: &Expr) -> Option<&str> {
            match e {
                Expr::Member(_, name) => Some(name),
                Expr::Call(x, _, _) | Expr::As(x, _) | Expr::Index(x, _) => last_member(x),
                _ => None,
            }
        }
        self.ptype == ParamType::Token
            && !self.exprs.is_empty()
            && self.exprs.iter().all(|e| {
                last_member(e).is_some_and(|n| n == "identifier" || n.ends_with("Identifier"))
            })
    }
    /// Indexed in the search_* tables (`_id` and `_lastUpdated` come from `resources`).
    pub fn indexed(&self) -> bool {
        self.supported()
            && !matches!(
                self.code.as_str(),
                "_id" | "_lastUpdated" | "_text" | "_content"
            )
    }
}

pub struct SearchParams {
    by_type: HashMap<String, BTreeMap<String, ParamDef>>,
}

impl SearchParams {
    fn load() -> SearchParams {
        #[derive(Deserialize)]
        struct File {
            parameter: Vec<RawParam>,
        }
        let mut f: File = serde_json::from_str(SEARCH_PARAMETERS_JSON)
            .expect("embedded search-parameters.json is valid");
        // The program's own parameters (fhir-profiles/icm/SearchParameter-*.json).
        for (rt, id, text) in crate::fhir::validate::profiles::RESOURCES {
            if *rt == "SearchParameter" {
                let p: RawParam = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("embedded SearchParameter {id}: {e}"));
                f.parameter.push(p);
            }
        }
        let types: Vec<String> = Registry::get().type_names().map(String::from).collect();
        // Composite parts name their parameter by URL; their type is that parameter's.
        let type_by_url: HashMap<String, ParamType> = f
            .parameter
            .iter()
            .filter_map(|p| ParamType::parse(&p.ty).map(|t| (p.url.clone(), t)))
            .collect();
        let mut by_type: HashMap<String, BTreeMap<String, ParamDef>> = HashMap::new();
        for p in f.parameter {
            let Some(ptype) = ParamType::parse(&p.ty) else {
                continue;
            };
            let parsed = match p.expression.as_deref().map(fhirpath::parse) {
                Some(Ok(e)) => Some(e),
                Some(Err(e)) => {
                    log::warn!("search parameter {} not indexable: {e}", p.url);
                    None
                }
                None => None,
            };
            let components = composite_parts(&p, &type_by_url);
            for ty in &types {
                let applies = p.base.iter().any(|b| {
                    b == ty || b == "Resource" || (b == "DomainResource" && !is_plain_resource(ty))
                });
                if !applies || (ty == "AuditEvent" && !audit_event_param(&p.code)) {
                    continue;
                }
                let exprs: Vec<Expr> = parsed
                    .as_ref()
                    .map(|e| {
                        fhirpath::union_branches(e)
                            .into_iter()
                            .filter(|b| {
                                match fhirpath::root_type(b) {
                                    Some(r) => r == ty || r == "Resource" || r == "DomainResource",
                                    // Written relative to the resource (InsurancePlan-name).
                                    None => p.base.len() == 1 && &p.base[0] == ty,
                                }
                            })
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                let targets = if p.target.iter().any(|t| t == "Any" || t == "Resource") {
                    types.clone()
                } else {
                    p.target.clone()
                };
                by_type.entry(ty.clone()).or_default().insert(
                    p.code.clone(),
                    ParamDef {
                        code: p.code.clone(),
                        ptype,
                        url: p.url.clone(),
                        exprs,
                        targets,
                        components: components.clone(),
                    },
                );
            }
        }
        SearchParams { by_type }
    }

    /// The registry, loaded once per process.
    pub fn get() -> &'static SearchParams {
        static P: OnceLock<SearchParams> = OnceLock::new();
        P.get_or_init(SearchParams::load)
    }

    /// Every parameter of a type, by code.
    pub fn for_type(&self, ty: &str) -> Option<&BTreeMap<String, ParamDef>> {
        self.by_type.get(ty)
    }

    pub fn param(&self, ty: &str, code: &str) -> Option<&ParamDef> {
        self.by_type.get(ty)?.get(code)
    }

    /// Reference parameters that place a resource of `ty` in a patient's compartment
    /// (empty: the type is not in the Patient compartment; see fhir::compartment).
    pub fn patient_compartment_params(&self, ty: &str) -> &'static [String] {
        crate::fhir::compartment::params(ty)
    }
}

/// The AuditEvent parameters this server supports: who (`agent`, `altid`, `address`), what
/// (`entity`, `patient`, `subtype`, `action`), `outcome` and `date`, plus `_id` and
/// `_lastUpdated`. They are columns of the audit_log table (store::audit). The others (`type`,
/// `agent-name`, `agent-role`, `entity-name`, `entity-role`, `entity-type`, `policy`, `site`,
/// `source`, `_tag`, `_profile`, `_security`, …) are left out: one AuditEvent is written per
/// request, so every indexed value costs throughput on every request (README, "Cost of
/// auditing"). Left-out parameters are unknown to search, so they are reported, never silently
/// unmatched.
pub const AUDIT_EVENT_PARAMS: &[&str] = &[
    "action", "address", "agent", "altid", "date", "entity", "outcome", "patient", "subtype",
];

fn audit_event_param(code: &str) -> bool {
    AUDIT_EVENT_PARAMS.contains(&code) || matches!(code, "_id" | "_lastUpdated")
}

/// The parts of a composite parameter, or none when one of them cannot be evaluated (its
/// expression is outside the FHIRPath subset, or its type is composite or special).
fn composite_parts(p: &RawParam, type_by_url: &HashMap<String, ParamType>) -> Vec<Component> {
    let mut out = Vec::new();
    for c in &p.component {
        let ptype = match type_by_url.get(&c.definition) {
            Some(t) if !matches!(t, ParamType::Composite | ParamType::Special) => *t,
            _ => return vec![],
        };
        match fhirpath::parse(&c.expression) {
            Ok(expr) => out.push(Component { ptype, expr }),
            Err(e) => {
                log::warn!(
                    "composite {} not searchable: part {}: {e}",
                    p.url,
                    c.expression
                );
                return vec![];
            }
        }
    }
    out
}

/// The index `param` of part `i` of composite parameter `code`.
pub fn component_param(code: &str, i: usize) -> String {
    format!("{code}${i}")
}

/// Types that derive from Resource directly (no text/contained/extension).
fn is_plain_resource(ty: &str) -> bool {
    matches!(ty, "Bundle" | "Binary" | "Parameters")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn care_management_parameters_exist() {
        let p = SearchParams::get();
        for (ty, code, t) in [
            ("Patient", "name", ParamType::String),
            ("Patient", "birthdate", ParamType::Date),
            ("Patient", "general-practitioner", ParamType::Reference),
            ("Patient", "address-city", ParamType::String),
            ("CarePlan", "activity-code", ParamType::Token),
            ("CarePlan", "care-team", ParamType::Reference),
            ("Task", "patient", ParamType::Reference),
            ("Task", "period", ParamType::Date),
            ("Task", "business-status", ParamType::Token),
            ("Task", "_tag", ParamType::Token),
            ("Task", "_profile", ParamType::Uri),
            ("Observation", "value-quantity", ParamType::Quantity),
            ("Task", "due", ParamType::Date),
            ("Encounter", "discharge-disposition", ParamType::Token),
            ("Claim", "total", ParamType::Quantity),
        ] {
            let d = p
                .param(ty, code)
                .unwrap_or_else(|| panic!("{ty}.{code} missing"));
            assert_eq!(d.ptype, t, "{ty}.{code}");
            assert!(d.supported(), "{ty}.{code}");
        }
        // Only the branch of a shared expression that applies to the type is kept.
        assert_eq!(p.param("Task", "patient").unwrap().exprs.len(), 1);
        assert_eq!(
            p.patient_compartment_params("Task"),
            &["patient".to_string(), "focus".to_string()][..]
        );
    }
}
