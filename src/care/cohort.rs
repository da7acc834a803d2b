//! Program cohorts: one `Group` per ICM program (`Group/icm-cohort-{program}`, type person,
//! actual) whose members are the patients enrolled in it, kept current by the unit of work on
//! every EpisodeOfCare write. A patient whose enrollment ends stays listed with `inactive: true`
//! and `period.end`, so the Group also records who left and when. Pure: JSON in, JSON out.
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

/// Record one patient's enrollment state in a cohort Group: `current` adds the patient (or
/// makes a former member active again, from `start`); otherwise a member becomes inactive with
/// `period.end` = `end`. Whether the Group changed.
pub fn set_member(
    group: &mut Value,
    patient: &str,
    current: bool,
    start: Option<&str>,
    end: Option<&str>,
) -> bool {
    let reference = format!("Patient/{patient}");
    if !group["member"].is_array() {
        group["member"] = json!([]);
    }
    let members = group["member"].as_array_mut().expect("member array");
    let pos = members
        .iter()
        .position(|m| m["entity"]["reference"].as_str() == Some(reference.as_str()));
    let changed = match (pos, current) {
        (None, false) => false,
        (None, true) => {
            let mut m = json!({"entity": {"reference": reference}, "inactive": false});
            if let Some(s) = start {
                m["period"] = json!({"start": s});
            }
            members.push(m);
            true
        }
        (Some(i), true) => {
            let m = &mut members[i];
            let was = m.clone();
            m["inactive"] = json!(false);
            if let Some(p) = m["period"].as_object_mut() {
                if p.remove("end").is_some() {
                    if let Some(s) = start {
                        p.insert("start".into(), json!(s));
                    }
                }
            } else if let Some(s) = start {
                m["period"] = json!({"start": s});
            }
            *m != was
        }
        (Some(i), false) => {
            let m = &mut members[i];
            if m["inactive"] == true {
                false
            } else {
                m["inactive"] = json!(true);
                if let Some(e) = end {
                    if !m["period"].is_object() {
                        m["period"] = json!({});
                    }
                    m["period"]["end"] = json!(e);
                }
                true
            }
        }
    };
    let active = members.iter().filter(|m| m["inactive"] != true).count();
    group["quantity"] = json!(active);
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_join_leave_and_return() {
        let mut g = new_group("chronic-disease");
        assert!(set_member(&mut g, "a", true, Some("2025-01-01"), None));
        assert!(!set_member(&mut g, "a", true, Some("2025-01-01"), None));
        assert!(set_member(&mut g, "b", true, None, None));
        assert_eq!(g["quantity"], 2);
        assert!(set_member(&mut g, "a", false, None, Some("2025-06-01")));
        assert_eq!(g["member"][0]["inactive"], true);
        assert_eq!(g["member"][0]["period"]["end"], "2025-06-01");
        assert_eq!(g["quantity"], 1);
        assert!(!set_member(&mut g, "c", false, None, Some("2025-06-01")));
        assert!(set_member(&mut g, "a", true, Some("2025-09-01"), None));
        assert_eq!(g["member"][0]["period"], json!({"start": "2025-09-01"}));
        assert_eq!(g["quantity"], 2);
    }

    #[test]
    fn programs_of_an_episode() {
        let ep = json!({"type": [{"coding": [{"system": PROGRAM, "code": "chronic-disease"}, {"system": "x", "code": "y"}]}]});
        assert_eq!(programs(&ep), vec!["chronic-disease".to_string()]);
    }
}
