//! Transitions of care, pure: when an inpatient or emergency Encounter reaches `finished` (a
//! discharge), the program's follow-up work — a contact within 2 business days, a medication
//! reconciliation, and a visit within 7 days (high risk) or 14 days (otherwise) — as Task
//! bodies for the unit of work to create. The Tasks carry the Encounter in `focus` and a
//! workflow code, which is what makes replaying the same discharge create nothing twice.
use chrono::{DateTime, Datelike, Duration, Utc, Weekday};
use serde_json::{json, Value};

use crate::fhir::datetime::parse_lower_bound;

pub use super::WORKFLOW;
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

/// Encounter classes that make a stay a hospital admission or an emergency visit.
pub fn is_acute_class(code: &str) -> bool {
    matches!(code, "IMP" | "EMER" | "ACUTE" | "NONAC" | "OBSENC")
}

fn class_code(e: &Value) -> Option<&str> {
    let c = &e["class"];
    match c["system"].as_str() {
        Some(s) if s != ACT_CODE => None,
        _ => c["code"].as_str(),
    }
}

/// What an Encounter write means for the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncounterEvent {
    /// An acute stay reached `finished`: the discharge instant (period.end, or the write time).
    Discharge { class: String, at: i64 },
    /// An acute stay is under way (`in-progress`).
    Admission { class: String },
}

/// The event of an Encounter write (`prev` None for a create), if any: a discharge only on the
/// change into `finished`, so an update of a finished stay is no new discharge.
pub fn encounter_event(prev: Option<&Value>, next: &Value, now: i64) -> Option<EncounterEvent> {
    let class = class_code(next).filter(|c| is_acute_class(c))?.to_string();
    let was = prev.and_then(|p| p["status"].as_str());
    match next["status"].as_str()? {
        "finished" if was != Some("finished") => {
            let at = next["period"]["end"]
                .as_str()
                .and_then(parse_lower_bound)
                .unwrap_or(now);
            Some(EncounterEvent::Discharge { class, at })
        }
        "in-progress" if was != Some("in-progress") => Some(EncounterEvent::Admission { class }),
        _ => None,
    }
}

/// `days` business days (Monday to Friday) after the instant `from` (microseconds), same time.
pub fn add_business_days(from: i64, days: u32) -> i64 {
    let mut t: DateTime<Utc> = DateTime::from_timestamp_micros(from).unwrap_or_default();
    let mut left = days;
    while left > 0 {
        t += Duration::days(1);
        if !matches!(t.weekday(), Weekday::Sat | Weekday::Sun) {
            left -= 1;
        }
    }
    t.timestamp_micros()
}

/// The follow-up Tasks of a discharge: (code, description, due instant).
pub fn follow_up_plan(discharge: i64, high_risk: bool) -> Vec<(&'static str, &'static str, i64)> {
    let day = 86_400_000_000_i64;
    vec![
        (
            "transition-follow-up",
            "Contact the patient within 2 business days of discharge",
            add_business_days(discharge, 2),
        ),
        (
            "medication-reconciliation",
            "Reconcile medications after discharge",
            add_business_days(discharge, 2),
        ),
        (
            "post-discharge-visit",
            if high_risk {
                "Visit within 7 days of discharge (high risk)"
            } else {
                "Visit within 14 days of discharge"
            },
            discharge + if high_risk { 7 } else { 14 } * day,
        ),
    ]
}

/// A Task body for one follow-up step.
#[allow(clippy::too_many_arguments)]
pub fn follow_up_task(
    code: &str,
    description: &str,
    due: &str,
    patient: &str,
    encounter: &str,
    plan: Option<&str>,
    owner: Option<&str>,
    now: &str,
) -> Value {
    let mut t = json!({
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "priority": "urgent",
        "code": {"coding": [{"system": WORKFLOW, "code": code}]},
        "description": description,
        "for": {"reference": patient},
        "focus": {"reference": encounter},
        "authoredOn": now,
        "restriction": {"period": {"end": due}},
    });
    if let Some(p) = plan {
        t["basedOn"] = json!([{"reference": p}]);
    }
    if let Some(o) = owner {
        t["owner"] = json!({"reference": o});
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::datetime::format_instant;

    fn at(s: &str) -> i64 {
        parse_lower_bound(s).unwrap()
    }

    #[test]
    fn discharges_and_admissions() {
        let enc = |status: &str, class: &str| {
            json!({"resourceType": "Encounter", "status": status,
                "class": {"system": ACT_CODE, "code": class},
                "period": {"start": "2026-11-20T10:00:00Z", "end": "2026-11-25T09:00:00Z"}})
        };
        let ip = enc("in-progress", "IMP");
        let fin = enc("finished", "IMP");
        assert_eq!(
            encounter_event(Some(&ip), &fin, 0),
            Some(EncounterEvent::Discharge {
                class: "IMP".into(),
                at: at("2026-11-25T09:00:00Z")
            })
        );
        assert_eq!(encounter_event(Some(&fin), &fin, 0), None, "replay");
        assert!(matches!(
            encounter_event(None, &fin, 0),
            Some(EncounterEvent::Discharge { .. })
        ));
        assert_eq!(
            encounter_event(None, &ip, 0),
            Some(EncounterEvent::Admission {
                class: "IMP".into()
            })
        );
        assert_eq!(encounter_event(None, &enc("finished", "AMB"), 0), None);
        assert!(encounter_event(None, &enc("finished", "EMER"), 0).is_some());
    }

    #[test]
    fn business_days() {
        // 2026-11-27 is a Friday: two business days later is Tuesday 2026-12-01.
        let fri = at("2026-11-27T15:00:00Z");
        assert_eq!(
            format_instant(add_business_days(fri, 2)),
            format_instant(at("2026-12-01T15:00:00Z"))
        );
        let mon = at("2026-11-23T08:00:00Z");
        assert_eq!(
            format_instant(add_business_days(mon, 2)),
            format_instant(at("2026-11-25T08:00:00Z"))
        );
        let sat = at("2026-11-28T08:00:00Z");
        assert_eq!(
            format_instant(add_business_days(sat, 2)),
            format_instant(at("2026-12-01T08:00:00Z"))
        );
    }

    #[test]
    fn plan_by_risk() {
        let d = at("2026-11-23T08:00:00Z");
        let high = follow_up_plan(d, true);
        let low = follow_up_plan(d, false);
        assert_eq!(high.len(), 3);
        assert_eq!(high[2].2 - d, 7 * 86_400_000_000);
        assert_eq!(low[2].2 - d, 14 * 86_400_000_000);
        let t = follow_up_task(
            "transition-follow-up",
            "x",
            "2026-11-25T08:00:00Z",
            "Patient/p",
            "Encounter/e",
            Some("CarePlan/c"),
            Some("Practitioner/m"),
            "2026-11-23T08:00:00Z",
        );
        assert!(!crate::fhir::validate::validate(&t).has_errors());
    }
}
