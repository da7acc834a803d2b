//! Program cohorts: one `Group` per ICM program (`Group/icm-cohort-{program}`, type person,
//! actual) whose members are the patients enrolled in it, kept current by the unit of work on
//! every EpisodeOfCare write. A patient whose enrollment ends stays listed with `inactive: true`
//! and `period.end`, so the Group also records who left and when. The members are kept as rows
//! (store::members), one per patient, so an enrollment changes one row and never rewrites the
//! member list; these are the rules for one member's change. Pure: JSON in, JSON out.
use serde_json::{json, Value};

use super::PROGRAM;
use crate::fhir::reference::local_target;

/// The id of a program's cohort Group.
pub fn cohort_id(program: &str) -> String {
    format!("icm-cohort-{program}")
}

/// The programs an EpisodeOfCare is an enrollment in (its `type` codes of the program system).
pub fn programs(episode: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in episode["type"].as_array().into_iter().flatten() {
        for c in t["coding"].as_array().into_iter().flatten() {
            if c["system"] == PROGRAM {
                if let Some(code) = c["code"].as_str() {
                    if !code.is_empty()
                        && code
                            .chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.')
                        && !out.iter().any(|p| p == code)
                    {
                        out.push(code.to_string());
                    }
                }
            }
        }
    }
    out
}

/// The enrolled Patient of an EpisodeOfCare.
pub fn patient(episode: &Value) -> Option<String> {
    match episode["patient"]["reference"]
        .as_str()
        .and_then(local_target)
    {
        Some(("Patient", id)) => Some(id.to_string()),
        _ => None,
    }
}

/// Whether an EpisodeOfCare is a current enrollment.
pub fn is_current(episode: &Value) -> bool {
    matches!(
        episode["status"].as_str(),
        Some("planned" | "waitlist" | "active" | "onhold")
    )
}

/// A new, empty cohort Group for a program.
pub fn new_group(program: &str) -> Value {
    json!({
        "resourceType": "Group",
        "id": cohort_id(program),
        "identifier": [{"system": "http://icm-fhir.org/fhir/cohort", "value": program}],
        "active": true,
        "type": "person",
        "actual": true,
        "code": {"coding": [{"system": PROGRAM, "code": program}]},
        "name": format!("ICM {program} program cohort"),
        "quantity": 0,
    })
}

/// Whether `id` names a program cohort Group (its members are kept as rows, not in its JSON).
pub fn is_cohort_id(id: &str) -> bool {
    id.strip_prefix("icm-cohort-")
        .is_some_and(|p| !p.is_empty())
}

/// One member's state in a cohort: active or not, and the period of its membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    pub inactive: bool,
    pub start: Option<String>,
    pub end: Option<String>,
}

/// One patient's enrollment change applied to their membership (`prev`, None when not a
/// member): `current` adds the patient (or makes a former member active again, from `start`);
/// otherwise a member becomes inactive with `period.end` = `end`. The new state, or None when
/// nothing changes.
pub fn next_state(
    prev: Option<&MemberState>,
    current: bool,
    start: Option<&str>,
    end: Option<&str>,
) -> Option<MemberState> {
    let next = match (prev, current) {
        (None, false) => return None,
        (None, true) => MemberState {
            inactive: false,
            start: start.map(str::to_string),
            end: None,
        },
        (Some(p), true) => {
            let mut m = p.clone();
            m.inactive = false;
            if m.end.take().is_some() || m.start.is_none() {
                if let Some(s) = start {
                    m.start = Some(s.to_string());
                }
            }
            m
        }
        (Some(p), false) => {
            if p.inactive {
                return None;
            }
            let mut m = p.clone();
            m.inactive = true;
            if let Some(e) = end {
                m.end = Some(e.to_string());
            }
            m
        }
    };
    (prev != Some(&next)).then_some(next)
}

/// The members a written Group body lists (`member.entity` a local Patient), in order, each
/// once (a later repetition is ignored).
pub fn members_of(group: &Value) -> Vec<(String, MemberState)> {
    let mut out: Vec<(String, MemberState)> = Vec::new();
    for m in group["member"].as_array().into_iter().flatten() {
        let Some(("Patient", id)) = m["entity"]["reference"].as_str().and_then(local_target) else {
            continue;
        };
        if out.iter().any(|(p, _)| p == id) {
            continue;
        }
        let text = |k: &str| m["period"][k].as_str().map(str::to_string);
        out.push((
            id.to_string(),
            MemberState {
                inactive: m["inactive"] == true,
                start: text("start"),
                end: text("end"),
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_join_leave_and_return() {
        let a = next_state(None, true, Some("2025-01-01"), None).unwrap();
        assert_eq!(a.start.as_deref(), Some("2025-01-01"));
        assert!(!a.inactive);
        // The same enrollment again: nothing changes.
        assert_eq!(next_state(Some(&a), true, Some("2025-01-01"), None), None);
        // Leaves: inactive with the end of the period.
        let left = next_state(Some(&a), false, None, Some("2025-06-01")).unwrap();
        assert!(left.inactive);
        assert_eq!(left.end.as_deref(), Some("2025-06-01"));
        assert_eq!(
            next_state(Some(&left), false, None, Some("2025-07-01")),
            None
        );
        // Not a member and not enrolled: nothing.
        assert_eq!(next_state(None, false, None, Some("2025-06-01")), None);
        // Returns: active again from the new start, no end.
        let back = next_state(Some(&left), true, Some("2025-09-01"), None).unwrap();
        assert_eq!(
            back,
            MemberState {
                inactive: false,
                start: Some("2025-09-01".into()),
                end: None
            }
        );
    }

    #[test]
    fn members_of_a_written_group() {
        let g = json!({"member": [
            {"entity": {"reference": "Patient/a"}, "period": {"start": "2025-01-01"}},
            {"entity": {"reference": "Patient/b"}, "inactive": true, "period": {"end": "2025-02-01"}},
            {"entity": {"reference": "Patient/a"}},
            {"entity": {"reference": "Practitioner/x"}}]});
        let m = members_of(&g);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].0, "a");
        assert!(m[1].1.inactive);
        assert_eq!(m[1].1.end.as_deref(), Some("2025-02-01"));
        assert!(
            is_cohort_id("icm-cohort-x") && !is_cohort_id("icm-cohort-") && !is_cohort_id("g1")
        );
    }

    #[test]
    fn programs_of_an_episode() {
        let ep = json!({"type": [{"coding": [{"system": PROGRAM, "code": "chronic-disease"}, {"system": "x", "code": "y"}]}]});
        assert_eq!(programs(&ep), vec!["chronic-disease".to_string()]);
    }
}
