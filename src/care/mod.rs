//! Care-coordination rules, pure functions over JSON: the Task, CarePlan, CareTeam and
//! EpisodeOfCare state machines and the server-set Task elements, applied by the one write path
//! to every write; assessments (Questionnaires, their validation and scoring) and transitions
//! of care.
pub mod assessment;
pub mod careplan;
pub mod careteam;
pub mod caseload;
pub mod cohort;
pub mod episode;
pub mod machine;
pub mod measures;
pub mod referral;
pub mod risk;
pub mod task;
pub mod transitions;
pub mod worklist;

use serde_json::Value;

use crate::error::ApiResult;

/// What a write must also do once the resource itself is stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Effects {
    /// The CarePlan reached `revoked` or `completed`: cancel the open Tasks based on it.
    pub cancel_tasks_based_on: bool,
}

/// Apply the care rules to a write of `ty`: `prev` is the current content (None for a create or
/// a re-create after delete), `next` the body about to be stored (server-set elements are filled
/// in here), `now` the FHIR instant of the change.
pub fn before_write(
    ty: &str,
    prev: Option<&Value>,
    next: &mut Value,
    now: &str,
) -> ApiResult<Effects> {
    match ty {
        "Task" => {
            referral::check_task(prev, next)?;
            task::before_write(prev, next, now)?;
            Ok(Effects::default())
        }
        "CarePlan" => careplan::before_write(prev, next),
        "CareTeam" => {
            careteam::before_write(prev, next)?;
            Ok(Effects::default())
        }
        "EpisodeOfCare" => {
            episode::before_write(prev, next)?;
            Ok(Effects::default())
        }
        "Subscription" => {
            crate::fhir::subscription::before_write(next)?;
            Ok(Effects::default())
        }
        _ => Ok(Effects::default()),
    }
}

/// A string element of a resource.
pub(crate) fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Whether a literal reference points at the local ty/id (any version; fhir::reference: an
/// absolute URL is another server's resource).
pub fn references(reference: &str, ty: &str, id: &str) -> bool {
    crate::fhir::reference::refers_to(reference, ty, id)
}

/// The program's workflow codes (referral category, the codes of the Tasks the server creates).
pub const WORKFLOW: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-workflow";
/// The programs (EpisodeOfCare.type).
pub const PROGRAM: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-program";

/// Whether a CarePlan names `ty/id` (e.g. its EpisodeOfCare) in `supportingInfo`.
pub fn supported_by(plan: &Value, ty: &str, id: &str) -> bool {
    plan["supportingInfo"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| {
            s["reference"]
                .as_str()
                .is_some_and(|r| references(r, ty, id))
        })
}

/// The tier (`high` | `moderate` | `low`) of a RiskAssessment.
pub fn tier_of(assessment: &Value) -> Option<&str> {
    assessment["prediction"][0]["qualitativeRisk"]["coding"][0]["code"].as_str()
}

/// Response header carrying how many Tasks a CarePlan update cancelled.
pub const CANCELLED_TASKS_HEADER: &str = "X-ICM-Cancelled-Tasks";

/// The information message listing the Tasks a closed CarePlan cancelled.
pub fn cancelled_message(tasks: &[String]) -> String {
    format!(
        "cancelled {} open Task(s) based on this CarePlan: {}",
        tasks.len(),
        tasks.join(", ")
    )
}

/// The program's system-level operations (CapabilityStatement.rest.operation): intake at the
/// base and the outcome measures.
pub const SYSTEM_OPERATIONS: &[(&str, &str)] = &[
    ("enroll", "http://icm-fhir.org/OperationDefinition/enroll"),
    (
        "export",
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
    ),
    (
        "icm-metrics",
        "http://icm-fhir.org/OperationDefinition/icm-metrics",
    ),
];

/// Add the care rules and operations of `ty` to its CapabilityStatement.rest.resource entry:
/// `documentation` with the allowed status transitions, and `operation` for $everything,
/// $worklist and $caseload.
pub fn capability(ty: &str, resource: &mut Value) {
    let doc = match ty {
        "Task" => Some(format!(
            "{} Task.intent cannot change. The server sets lastModified on every change, executionPeriod.start on entering in-progress and executionPeriod.end on reaching a terminal state, unless the client supplied them. A Task may be created in any status.",
            task::MACHINE.describe()
        )),
        "CarePlan" => Some(format!(
            "{} When a CarePlan becomes revoked or completed, its open Tasks (basedOn it) are cancelled in the same transaction; the count is reported in the {CANCELLED_TASKS_HEADER} header.",
            careplan::MACHINE.describe()
        )),
        "CareTeam" => Some(careteam::MACHINE.describe()),
        "EpisodeOfCare" => Some(format!(
            "{} An EpisodeOfCare is the enrollment in an ICM program (Patient/$enroll, Patient/$disenroll).",
            episode::MACHINE.describe()
        )),
        _ => None,
    };
    let ops: &[(&str, &str)] = match ty {
        "Patient" => &[
            (
                "everything",
                "http://hl7.org/fhir/OperationDefinition/Patient-everything",
            ),
            (
                "enroll",
                "http://icm-fhir.org/OperationDefinition/Patient-enroll",
            ),
            (
                "disenroll",
                "http://icm-fhir.org/OperationDefinition/Patient-disenroll",
            ),
            (
                "stratify",
                "http://icm-fhir.org/OperationDefinition/Patient-stratify",
            ),
            (
                "export",
                "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
            ),
        ],
        "Group" => &[(
            "export",
            "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
        )],
        "Practitioner" => &[
            (
                "worklist",
                "http://icm-fhir.org/OperationDefinition/Practitioner-worklist",
            ),
            (
                "caseload",
                "http://icm-fhir.org/OperationDefinition/Practitioner-caseload",
            ),
        ],
        _ => &[],
    };
    if let Some(o) = resource.as_object_mut() {
        if let Some(d) = doc {
            o.insert("documentation".into(), Value::String(d));
        }
        if !ops.is_empty() {
            // The type's own operations first, then those served for every type ($validate).
            let mut list: Vec<Value> = ops
                .iter()
                .map(|(n, d)| serde_json::json!({"name": n, "definition": d}))
                .collect();
            if let Some(Value::Array(common)) = o.remove("operation") {
                list.extend(common);
            }
            o.insert("operation".into(), Value::Array(list));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reference_forms() {
        assert!(super::references("CarePlan/p1", "CarePlan", "p1"));
        assert!(!super::references(
            "http://x/fhir/CarePlan/p1",
            "CarePlan",
            "p1"
        ));
        assert!(super::references(
            "CarePlan/p1/_history/3",
            "CarePlan",
            "p1"
        ));
        assert!(!super::references("CarePlan/p10", "CarePlan", "p1"));
        assert!(!super::references("Goal/p1", "CarePlan", "p1"));
    }
}
