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

/// The care date of each Patient-compartment type, for `$everything`'s `start`/`end` (R4: "the
/// date range relates to care dates, not record currency dates"): its date search parameters in
/// order of preference. A resource's care date is the first of them it has a value for (a
/// Condition's onset, else when it was recorded); a type not listed here, and a resource with
/// none of the values, has no care date. The index rows of these parameters (search_date) are
/// what the store compares.
const CARE_DATES: &[(&str, &[&str])] = &[
    ("Account", &["period"]),
    ("AdverseEvent", &["date"]),
    ("AllergyIntolerance", &["date"]),
    ("Appointment", &["date"]),
    ("Basic", &["created"]),
    ("CarePlan", &["date"]),
    ("CareTeam", &["date"]),
    ("ChargeItem", &["occurrence", "entered-date"]),
    ("Claim", &["created"]),
    ("ClaimResponse", &["created"]),
    ("ClinicalImpression", &["date"]),
    ("Communication", &["sent", "received"]),
    ("CommunicationRequest", &["occurrence", "authored"]),
    ("Composition", &["date"]),
    ("Condition", &["onset-date", "recorded-date"]),
    ("Consent", &["date"]),
    ("CoverageEligibilityRequest", &["created"]),
    ("CoverageEligibilityResponse", &["created"]),
    ("DetectedIssue", &["identified"]),
    ("DeviceRequest", &["event-date", "authored-on"]),
    ("DiagnosticReport", &["date", "issued"]),
    ("DocumentManifest", &["created"]),
    ("DocumentReference", &["period", "date"]),
    ("Encounter", &["date"]),
    ("EpisodeOfCare", &["date"]),
    ("ExplanationOfBenefit", &["created"]),
    ("FamilyMemberHistory", &["date"]),
    ("Flag", &["date"]),
    ("Goal", &["start-date"]),
    ("ImagingStudy", &["started"]),
    ("Immunization", &["date"]),
    ("ImmunizationEvaluation", &["date"]),
    ("ImmunizationRecommendation", &["date"]),
    ("Invoice", &["date"]),
    ("List", &["date"]),
    ("MeasureReport", &["period", "date"]),
    ("Media", &["created"]),
    ("MedicationAdministration", &["effective-time"]),
    ("MedicationDispense", &["whenhandedover", "whenprepared"]),
    ("MedicationRequest", &["authoredon"]),
    ("MedicationStatement", &["effective"]),
    ("NutritionOrder", &["datetime"]),
    ("Observation", &["date"]),
    ("Procedure", &["date"]),
    ("Provenance", &["when"]),
    ("QuestionnaireResponse", &["authored"]),
    ("RequestGroup", &["authored"]),
    ("ResearchSubject", &["date"]),
    ("RiskAssessment", &["date"]),
    ("Schedule", &["date"]),
    ("ServiceRequest", &["occurrence", "authored"]),
    ("Specimen", &["collected"]),
    ("SupplyRequest", &["date"]),
    ("Task", &["authored-on"]),
    ("VisionPrescription", &["datewritten"]),
];

/// The care-date parameters of `ty`, in order of preference (empty: no care date).
pub fn care_date_params(ty: &str) -> &'static [&'static str] {
    CARE_DATES
        .iter()
        .find(|(t, _)| *t == ty)
        .map_or(&[], |(_, p)| p)
}

/// Every type with a care date, and its parameters.
pub fn care_dated_types() -> &'static [(&'static str, &'static [&'static str])] {
    CARE_DATES
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

    #[test]
    fn care_dates_are_date_parameters_of_compartment_types() {
        let sp = crate::fhir::search::SearchParams::get();
        for (ty, ps) in care_dated_types() {
            assert!(
                !params(ty).is_empty(),
                "{ty} is not in the Patient compartment"
            );
            for p in *ps {
                let d = sp.param(ty, p).unwrap_or_else(|| panic!("{ty}.{p}"));
                assert_eq!(d.ptype, crate::fhir::search::ParamType::Date, "{ty}.{p}");
                assert!(d.indexed(), "{ty}.{p}");
            }
        }
        // Every compartment type with a date parameter has a care date, but for the
        // birth dates of people and the audit trail's record time.
        for ty in member_types() {
            let dated = sp.for_type(ty).is_some_and(|m| {
                m.values().any(|d| {
                    d.ptype == crate::fhir::search::ParamType::Date && d.code != "_lastUpdated"
                })
            });
            let skipped = matches!(ty, "Patient" | "Person" | "RelatedPerson" | "AuditEvent");
            assert_eq!(!care_date_params(ty).is_empty(), dated && !skipped, "{ty}");
        }
        assert_eq!(
            care_date_params("Condition"),
            &["onset-date", "recorded-date"]
        );
        assert!(care_date_params("Patient").is_empty());
        assert!(care_date_params("Practitioner").is_empty());
        assert!(care_date_params("Coverage").is_empty());
    }
}
