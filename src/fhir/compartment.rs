//! The Patient compartment, loaded once from fhir-profiles/r4/compartment-patient.json: which
//! resource types belong to it, through which reference search parameters, and which patients
//! a given resource belongs to. The access boundary (service::context) decides writes with
//! [`membership`]; the SQL of every read (store::search) restricts rows with [`params`] over the
//! search index, whose rows come from the same parameter expressions — one definition for both.
use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

const COMPARTMENT_JSON: &str = include_str!("../../fhir-profiles/r4/compartment-patient.json");

fn definition() -> &'static HashMap<String, Vec<String>> {
    static DEF: OnceLock<HashMap<String, Vec<String>>> = OnceLock::new();
    DEF.get_or_init(|| {
        #[derive(Deserialize)]
        struct CRes {
            code: String,
            #[serde(default)]
            param: Vec<String>,
        }
        #[derive(Deserialize)]
        struct Comp {
            resource: Vec<CRes>,
        }
        let c: Comp =
            serde_json::from_str(COMPARTMENT_JSON).expect("embedded compartment-patient.json");
        c.resource
            .into_iter()
            // A Patient is in its own compartment only (Patient.link is not followed: a
            // patient's token never reaches another Patient record through a link).
            .filter(|r| r.code != "Patient" && !r.param.is_empty())
            .map(|r| (r.code, r.param))
            .collect()
    })
}

/// The reference parameters that place a resource of `ty` in a patient's compartment
/// (empty for Patient itself and for types outside the compartment).
pub fn params(ty: &str) -> &'static [String] {
    definition().get(ty).map_or(&[], Vec::as_slice)
}

/// Whether `ty` holds patient data: Patient, or a type of the Patient compartment.
pub fn is_member_type(ty: &str) -> bool {
    ty == "Patient" || definition().contains_key(ty)
}

/// Every type of the Patient compartment (Patient first, then by name).
pub fn member_types() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = definition().keys().map(String::as_str).collect();
    v.sort_unstable();
    v.insert(0, "Patient");
    v
}

/// Whether a resource belongs to patient compartments, and to whose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// The type has no place in the Patient compartment (Practitioner, Organization, …).
    NotACompartmentType,
    /// The patient ids it belongs to (possibly none).
    Patients(BTreeSet<String>),
}

impl Membership {
    /// The patients (none for a type outside the compartment).
    pub fn patients(self) -> Vec<String> {
        match self {
            Membership::Patients(p) => p.into_iter().collect(),
            Membership::NotACompartmentType => Vec::new(),
        }
    }
}

/// The patients whose compartment a resource of type `ty` belongs to: a Patient is in its own;
/// another compartment type is in the compartment of every Patient that one of its compartment
/// parameters references locally (the same rows the search index holds for it).
pub fn membership(ty: &str, resource: &Value) -> Membership {
    let mut ids = BTreeSet::new();
    if ty == "Patient" {
        if let Some(id) = resource["id"].as_str() {
            ids.insert(id.to_string());
        }
        return Membership::Patients(ids);
    }
    let ps = params(ty);
    if ps.is_empty() {
        return Membership::NotACompartmentType;
    }
    // The parameter expressions start at the type (`Task.for`): judge a body without
    // `resourceType` as the type it is written as.
    let typed;
    let resource = if resource.get("resourceType").is_none() && resource.is_object() {
        let mut v = resource.clone();
        v["resourceType"] = Value::String(ty.to_string());
        typed = v;
        &typed
    } else {
        resource
    };
    for p in ps {
        for row in crate::fhir::search::extract::reference_rows(ty, resource, p) {
            if let (Some("Patient"), Some(id)) = (row.target_type.as_deref(), row.target_id) {
                ids.insert(id);
            }
        }
    }
    Membership::Patients(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pats(ty: &str, v: Value) -> Vec<String> {
        match membership(ty, &v) {
            Membership::Patients(p) => p.into_iter().collect(),
            Membership::NotACompartmentType => vec!["<none>".into()],
        }
    }

    #[test]
    fn members() {
        assert_eq!(pats("Patient", json!({"id": "a"})), vec!["a"]);
        assert_eq!(
            pats("Task", json!({"for": {"reference": "Patient/a"}})),
            vec!["a"]
        );
        assert_eq!(
            pats(
                "Task",
                json!({"focus": {"reference": "Patient/b"}, "owner": {"reference": "Patient/c"}})
            ),
            vec!["b"],
            "Task's compartment parameters are patient (for) and focus, not owner"
        );
        assert_eq!(
            pats(
                "CarePlan",
                json!({"subject": {"reference": "Patient/a"}, "activity": [{"detail": {"performer": [{"reference": "Patient/b"}]}}]})
            ),
            vec!["a", "b"]
        );
        assert_eq!(
            pats("Observation", json!({"subject": {"reference": "Group/g"}})),
            Vec::<String>::new()
        );
        // A foreign absolute URL is never taken for the local patient.
        assert_eq!(
            pats(
                "CareTeam",
                json!({"participant": [{"member": {"reference": "http://h/fhir/Patient/z"}}]})
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            pats(
                "Observation",
                json!({"subject": {"reference": "Patient/a/_history/2"}})
            ),
            vec!["a"]
        );
        assert_eq!(pats("Practitioner", json!({"id": "p"})), vec!["<none>"]);
        assert_eq!(pats("Organization", json!({})), vec!["<none>"]);
    }

    #[test]
    fn every_care_type_is_a_member() {
        for ty in [
            "Task",
            "CarePlan",
            "CareTeam",
            "Observation",
            "Encounter",
            "Goal",
            "Communication",
            "ServiceRequest",
        ] {
            assert!(!params(ty).is_empty(), "{ty}");
        }
        assert!(is_member_type("Patient") && !is_member_type("Practitioner"));
        assert!(member_types().len() > 60);
    }
}
