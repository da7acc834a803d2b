//! Care-manager worklist ordering: overdue first, then priority (stat > asap > urgent > routine),
//! then due date (Task.restriction.period.end, earliest first, undated last), then id.
use std::cmp::Ordering;

use serde_json::Value;

use crate::fhir::datetime::parse_lower_bound;

/// Extension marking a worklist entry whose Task is overdue (on Bundle.entry.search).
pub const OVERDUE_EXTENSION: &str = "http://icm-fhir.org/StructureDefinition/task-overdue";

/// Rank of Task.priority (lower first); a missing priority counts as routine.
pub fn priority_rank(p: Option<&str>) -> u8 {
    match p {
        Some("stat") => 0,
        Some("asap") => 1,
        Some("urgent") => 2,
        _ => 3,
    }
}

/// The due instant of a Task: restriction.period.end (microseconds), if any.
pub fn due(task: &Value) -> Option<i64> {
    task.pointer("/restriction/period/end")
        .and_then(Value::as_str)
        .and_then(parse_lower_bound)
}

/// Overdue: open, with a due date before `now`.
pub fn is_overdue(task: &Value, now: i64) -> bool {
    let open = task
        .get("status")
        .and_then(Value::as_str)
        .is_some_and(super::task::is_open);
    open && due(task).is_some_and(|d| d < now)
}

/// Worklist order of two Tasks at `now`.
pub fn compare(a: &Value, b: &Value, now: i64) -> Ordering {
    let key = |t: &Value| {
        (
            !is_overdue(t, now),
            priority_rank(t.get("priority").and_then(Value::as_str)),
            due(t).unwrap_or(i64::MAX),
        )
    };
    key(a).cmp(&key(b)).then_with(|| {
        let id = |t: &Value| {
            t.get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        id(a).cmp(&id(b))
    })
}

/// Sort Tasks into worklist order.
pub fn sort(tasks: &mut [Value], now: i64) {
    tasks.sort_by(|a, b| compare(a, b, now));
}

/// Whether a CareTeam participant's role names a care coordinator: a coding with code
/// `coordinator` (any system) or SNOMED CT 768820003 "Care coordinator", or role text /
/// display containing "coordinator".
pub fn is_coordinator_role(role: &Value) -> bool {
    let roles: Vec<&Value> = match role {
        Value::Array(a) => a.iter().collect(),
        v => vec![v],
    };
    roles.iter().any(|r| {
        let text_hit = |v: Option<&Value>| {
            v.and_then(Value::as_str)
                .is_some_and(|s| s.to_ascii_lowercase().contains("coordinator"))
        };
        text_hit(r.get("text"))
            || r.get("coding").and_then(Value::as_array).is_some_and(|cs| {
                cs.iter().any(|c| {
                    matches!(
                        c.get("code").and_then(Value::as_str),
                        Some("coordinator") | Some("768820003")
                    ) || text_hit(c.get("display"))
                })
            })
    })
}

/// Whether `practitioner_id` coordinates `team` (a participant member with a coordinator role).
pub fn coordinates(team: &Value, practitioner_id: &str) -> bool {
    team.get("participant")
        .and_then(Value::as_array)
        .is_some_and(|ps| {
            ps.iter().any(|p| {
                p.pointer("/member/reference")
                    .and_then(Value::as_str)
                    .is_some_and(|r| super::references(r, "Practitioner", practitioner_id))
                    && p.get("role").is_some_and(is_coordinator_role)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(id: &str, prio: Option<&str>, due: Option<&str>) -> Value {
        let mut v = json!({"resourceType": "Task", "id": id, "status": "requested"});
        if let Some(p) = prio {
            v["priority"] = json!(p);
        }
        if let Some(d) = due {
            v["restriction"] = json!({"period": {"end": d}});
        }
        v
    }

    #[test]
    fn order() {
        let now = parse_lower_bound("2026-06-01").unwrap();
        let mut v = vec![
            t("routine-nodue", None, None),
            t("routine-late", Some("routine"), Some("2026-05-01")),
            t("stat-future", Some("stat"), Some("2026-07-01")),
            t("urgent-soon", Some("urgent"), Some("2026-06-02")),
            t("urgent-later", Some("urgent"), Some("2026-06-20")),
            t("asap-late", Some("asap"), Some("2026-05-30")),
            t("stat-nodue", Some("stat"), None),
        ];
        sort(&mut v, now);
        let ids: Vec<&str> = v.iter().map(|x| x["id"].as_str().unwrap()).collect();
        assert_eq!(
            ids,
            [
                "asap-late",
                "routine-late",
                "stat-future",
                "stat-nodue",
                "urgent-soon",
                "urgent-later",
                "routine-nodue"
            ]
        );
        let mut done = t("x", None, Some("2020-01-01"));
        done["status"] = json!("completed");
        assert!(!is_overdue(&done, now));
    }

    #[test]
    fn coordinator() {
        let team = json!({"participant": [
            {"role": [{"coding": [{"system": "http://snomed.info/sct", "code": "768820003"}]}], "member": {"reference": "Practitioner/a"}},
            {"role": [{"text": "Nurse"}], "member": {"reference": "Practitioner/b"}},
        ]});
        assert!(coordinates(&team, "a"));
        assert!(!coordinates(&team, "b"));
        assert!(!coordinates(&team, "c"));
        assert!(is_coordinator_role(&json!([{"text": "Care Coordinator"}])));
    }
}
