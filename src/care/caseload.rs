//! Caseload summary per patient: active CarePlans, open and overdue Task counts, and the date
//! of the last completed Task — returned by Practitioner/$caseload as Parameters.
use serde_json::{json, Value};

use super::worklist::is_overdue;
use crate::fhir::datetime::parse_lower_bound;

/// One patient's line of a caseload.
#[derive(Debug, Clone, PartialEq)]
pub struct PatientSummary {
    pub patient: String,
    pub care_teams: Vec<String>,
    pub active_care_plans: Vec<String>,
    pub open_tasks: usize,
    pub overdue_tasks: usize,
    /// The latest completion time (executionPeriod.end, else lastModified) of a completed Task.
    pub last_completed: Option<String>,
    /// The tier (high | moderate | low) and reference of the latest final RiskAssessment.
    pub risk: Option<(String, String)>,
    /// An inpatient or emergency Encounter under way (an admission), as a reference.
    pub admission: Option<String>,
}

/// Order a caseload: high risk first, then moderate, low, not stratified; then by patient.
pub fn sort(lines: &mut [PatientSummary]) {
    let rank = |l: &PatientSummary| match l.risk.as_ref().map(|(t, _)| t.as_str()) {
        Some("high") => 0,
        Some("moderate") => 1,
        Some("low") => 2,
        _ => 3,
    };
    lines.sort_by(|a, b| (rank(a), &a.patient).cmp(&(rank(b), &b.patient)));
}

/// Summarise a patient's Tasks at `now`.
pub fn summarise(
    patient: String,
    care_teams: Vec<String>,
    active_care_plans: Vec<String>,
    tasks: &[Value],
    now: i64,
) -> PatientSummary {
    let status = |t: &Value| {
        t.get("status")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let open_tasks = tasks
        .iter()
        .filter(|t| super::task::is_open(&status(t)))
        .count();
    let overdue_tasks = tasks.iter().filter(|t| is_overdue(t, now)).count();
    let last_completed = tasks
        .iter()
        .filter(|t| status(t) == "completed")
        .filter_map(|t| {
            t.pointer("/executionPeriod/end")
                .or_else(|| t.get("lastModified"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .max_by_key(|s| parse_lower_bound(s).unwrap_or(i64::MIN));
    PatientSummary {
        patient,
        care_teams,
        active_care_plans,
        open_tasks,
        overdue_tasks,
        last_completed,
        risk: None,
        admission: None,
    }
}

/// The caseload as a Parameters resource: one `patient` parameter per patient, with parts
/// `patient` (Reference), `careTeam` (Reference, repeating), `activeCarePlan` (Reference,
/// repeating), `openTasks` and `overdueTasks` (integer), `lastCompletedTask` (dateTime, when any).
pub fn to_parameters(lines: &[PatientSummary]) -> Value {
    let params: Vec<Value> = lines
        .iter()
        .map(|l| {
            let mut part =
                vec![json!({"name": "patient", "valueReference": {"reference": l.patient}})];
            part.extend(
                l.care_teams
                    .iter()
                    .map(|r| json!({"name": "careTeam", "valueReference": {"reference": r}})),
            );
            part.extend(
                l.active_care_plans
                    .iter()
                    .map(|r| json!({"name": "activeCarePlan", "valueReference": {"reference": r}})),
            );
            part.push(json!({"name": "openTasks", "valueInteger": l.open_tasks}));
            part.push(json!({"name": "overdueTasks", "valueInteger": l.overdue_tasks}));
            if let Some(d) = &l.last_completed {
                part.push(json!({"name": "lastCompletedTask", "valueDateTime": d}));
            }
            if let Some((tier, ra)) = &l.risk {
                part.push(json!({"name": "riskTier", "valueCode": tier}));
                part.push(json!({"name": "riskAssessment", "valueReference": {"reference": ra}}));
            }
            if let Some(e) = &l.admission {
                part.push(json!({"name": "currentAdmission", "valueReference": {"reference": e}}));
            }
            json!({"name": "patient", "part": part})
        })
        .collect();
    let mut p = json!({"resourceType": "Parameters"});
    if !params.is_empty() {
        p["parameter"] = Value::Array(params);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        let now = parse_lower_bound("2026-06-01").unwrap();
        let tasks = vec![
            json!({"status": "requested", "restriction": {"period": {"end": "2026-05-01"}}}),
            json!({"status": "in-progress"}),
            json!({"status": "completed", "executionPeriod": {"end": "2026-04-01T10:00:00Z"}}),
            json!({"status": "completed", "lastModified": "2026-05-01T10:00:00Z"}),
            json!({"status": "cancelled", "restriction": {"period": {"end": "2026-01-01"}}}),
        ];
        let s = summarise(
            "Patient/p".into(),
            vec![],
            vec!["CarePlan/c".into()],
            &tasks,
            now,
        );
        assert_eq!((s.open_tasks, s.overdue_tasks), (2, 1));
        assert_eq!(s.last_completed.as_deref(), Some("2026-05-01T10:00:00Z"));
        let p = to_parameters(&[s]);
        assert_eq!(p["parameter"][0]["part"][1]["name"], "activeCarePlan");
        assert_eq!(p["parameter"][0]["part"][2]["valueInteger"], 2);
    }
}
