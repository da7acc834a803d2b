//! Task workflow (http://hl7.org/fhir/R4/task.html#statemachine, made precise): allowed status
//! changes, immutable intent, and the elements the server sets (lastModified, executionPeriod).
use serde_json::{Map, Value};

use super::machine::{status_of, StateMachine};
use super::str_at;
use crate::error::{ApiError, ApiResult};

pub const MACHINE: StateMachine = StateMachine {
    resource: "Task",
    states: &[
        "draft",
        "requested",
        "received",
        "accepted",
        "rejected",
        "ready",
        "cancelled",
        "in-progress",
        "on-hold",
        "failed",
        "completed",
        "entered-in-error",
    ],
    moves: &[
        ("draft", &["requested", "cancelled"]),
        (
            "requested",
            &["received", "accepted", "rejected", "ready", "cancelled"],
        ),
        ("received", &["accepted", "rejected", "cancelled"]),
        ("accepted", &["ready", "in-progress", "cancelled"]),
        (
            "ready",
            &["in-progress", "completed", "failed", "cancelled"],
        ),
        (
            "in-progress",
            &["on-hold", "completed", "failed", "cancelled"],
        ),
        ("on-hold", &["in-progress", "failed", "cancelled"]),
    ],
    to_from_any: &["entered-in-error"],
    from_to_any: &[],
};

/// Open = not terminal: work may still happen on it.
pub fn is_open(status: &str) -> bool {
    MACHINE.is_state(status) && !MACHINE.is_terminal(status)
}

/// Every open status (not terminal), in the machine's order.
pub fn open_states() -> Vec<&'static str> {
    MACHINE
        .states
        .iter()
        .copied()
        .filter(|s| is_open(s))
        .collect()
}

/// Check a Task write and fill in the server-set elements.
/// - update: status change allowed by the machine, `intent` unchanged;
/// - `lastModified` = now unless the client supplied a new value (create: any value);
/// - `executionPeriod.start` = now when the status becomes `in-progress` and
///   `executionPeriod.end` = now when it becomes terminal, unless the client supplied them.
pub fn before_write(prev: Option<&Value>, next: &mut Value, now: &str) -> ApiResult<()> {
    // A missing status is the validator's business (Task.status is 1..1); no transition check.
    let to = status_of("Task", next, false)?
        .unwrap_or_default()
        .to_string();
    if !to.is_empty() && !MACHINE.is_state(&to) {
        return Err(super::machine::invalid_status("Task", &to, MACHINE.states));
    }
    let from = match prev {
        Some(p) => {
            if p.get("intent") != next.get("intent") {
                return Err(ApiError::BusinessRule(format!(
                    "Task.intent cannot change after creation (was {}, now {})",
                    p.get("intent").map_or("absent".into(), |v| v.to_string()),
                    next.get("intent")
                        .map_or("absent".into(), |v| v.to_string())
                )));
            }
            let from = str_at(p, "status").unwrap_or_default().to_string();
            if !to.is_empty() {
                MACHINE.check(&from, &to)?;
            }
            Some(from)
        }
        None => None,
    };
    let Some(obj) = next.as_object_mut() else {
        return Ok(());
    };
    let client_set_last_modified = match (obj.get("lastModified"), prev) {
        (None, _) => false,
        (Some(v), Some(p)) => p.get("lastModified") != Some(v),
        (Some(_), None) => true,
    };
    if !client_set_last_modified {
        obj.insert("lastModified".into(), Value::String(now.into()));
    }
    if let Some(from) = from {
        if from != to {
            if to == "in-progress" {
                set_period(obj, "start", now);
            }
            if MACHINE.is_terminal(&to) && !MACHINE.is_terminal(&from) {
                set_period(obj, "end", now);
            }
        }
    }
    Ok(())
}

/// If `task` is open and basedOn CarePlan/plan_id, set it to cancelled (with a statusReason
/// unless it has one) and return true.
pub fn cancel_for_closed_plan(task: &mut Value, plan_id: &str, plan_status: &str) -> bool {
    let based_on = task
        .get("basedOn")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                r.get("reference")
                    .and_then(Value::as_str)
                    .is_some_and(|s| super::references(s, "CarePlan", plan_id))
            })
        });
    let open = str_at(task, "status").is_some_and(is_open);
    if !based_on || !open {
        return false;
    }
    if let Some(obj) = task.as_object_mut() {
        obj.insert("status".into(), Value::String("cancelled".into()));
        if !obj.contains_key("statusReason") {
            obj.insert(
                "statusReason".into(),
                serde_json::json!({"text": format!("CarePlan/{plan_id} was {plan_status}")}),
            );
        }
    }
    true
}

/// Set executionPeriod.{key} unless already present.
fn set_period(obj: &mut Map<String, Value>, key: &str, now: &str) {
    let period = obj
        .entry("executionPeriod")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(p) = period.as_object_mut() {
        if !p.contains_key(key) {
            p.insert(key.into(), Value::String(now.into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2026-11-25T10:00:00.000Z";

    fn allowed_by_issue(from: &str, to: &str) -> bool {
        if from == to || to == "entered-in-error" {
            return true;
        }
        let t: &[&str] = match from {
            "draft" => &["requested", "cancelled"],
            "requested" => &["received", "accepted", "rejected", "ready", "cancelled"],
            "received" => &["accepted", "rejected", "cancelled"],
            "accepted" => &["ready", "in-progress", "cancelled"],
            "ready" => &["in-progress", "completed", "failed", "cancelled"],
            "in-progress" => &["on-hold", "completed", "failed", "cancelled"],
            "on-hold" => &["in-progress", "failed", "cancelled"],
            _ => &[],
        };
        t.contains(&to)
    }

    fn task(status: &str) -> Value {
        json!({"resourceType": "Task", "status": status, "intent": "order"})
    }

    #[test]
    fn every_pair() {
        let mut n = 0;
        for from in MACHINE.states {
            for to in MACHINE.states {
                let mut next = task(to);
                let r = before_write(Some(&task(from)), &mut next, NOW);
                assert_eq!(r.is_ok(), allowed_by_issue(from, to), "{from} → {to}");
                if let Err(e) = r {
                    assert!(matches!(e, ApiError::BusinessRule(_)));
                    let m = e.to_string();
                    assert!(m.contains(&format!("'{from}' → '{to}'")), "{m}");
                }
                n += 1;
            }
        }
        assert_eq!(n, 144);
    }

    #[test]
    fn terminal_states() {
        let t: Vec<_> = MACHINE
            .states
            .iter()
            .filter(|s| MACHINE.is_terminal(s))
            .collect();
        assert_eq!(
            t,
            [
                &"rejected",
                &"cancelled",
                &"failed",
                &"completed",
                &"entered-in-error"
            ]
        );
        assert!(is_open("on-hold") && !is_open("completed"));
    }

    #[test]
    fn create_in_any_state() {
        for s in MACHINE.states {
            let mut next = task(s);
            before_write(None, &mut next, NOW).unwrap();
            assert_eq!(next["lastModified"], NOW);
            assert!(next.get("executionPeriod").is_none());
        }
        let mut bad = task("done");
        assert!(matches!(
            before_write(None, &mut bad, NOW),
            Err(ApiError::Unprocessable(_))
        ));
        let mut missing = json!({"resourceType": "Task", "intent": "order"});
        assert!(
            before_write(None, &mut missing, NOW).is_ok(),
            "status presence is validation's job"
        );
    }

    #[test]
    fn intent_is_immutable() {
        let mut next = json!({"resourceType": "Task", "status": "draft", "intent": "plan"});
        let e = before_write(Some(&task("draft")), &mut next, NOW).unwrap_err();
        assert!(e.to_string().contains("intent"), "{e}");
        let mut next = json!({"resourceType": "Task", "status": "draft"});
        assert!(before_write(Some(&task("draft")), &mut next, NOW).is_err());
    }

    #[test]
    fn server_set_elements() {
        let mut prev = task("accepted");
        prev["lastModified"] = json!("2020-01-01T00:00:00Z");
        let mut next = prev.clone();
        next["status"] = json!("in-progress");
        before_write(Some(&prev), &mut next, NOW).unwrap();
        assert_eq!(
            next["lastModified"], NOW,
            "unchanged client copy is replaced"
        );
        assert_eq!(next["executionPeriod"]["start"], NOW);
        assert!(next["executionPeriod"].get("end").is_none());
        let mut done = next.clone();
        done["status"] = json!("completed");
        before_write(Some(&next), &mut done, "2026-11-26T00:00:00Z").unwrap();
        assert_eq!(done["executionPeriod"]["start"], NOW);
        assert_eq!(done["executionPeriod"]["end"], "2026-11-26T00:00:00Z");
        // client-supplied values win
        let mut c = next.clone();
        c["status"] = json!("failed");
        c["executionPeriod"] = json!({"start": "2026-01-01", "end": "2026-02-01"});
        c["lastModified"] = json!("2026-02-01T00:00:00Z");
        before_write(Some(&next), &mut c, NOW).unwrap();
        assert_eq!(c["executionPeriod"]["end"], "2026-02-01");
        assert_eq!(c["lastModified"], "2026-02-01T00:00:00Z");
        // same status: only lastModified
        let mut same = task("ready");
        before_write(Some(&task("ready")), &mut same, NOW).unwrap();
        assert!(same.get("executionPeriod").is_none());
        assert_eq!(same["lastModified"], NOW);
        // entering a terminal state from a terminal state does not set end
        let mut eie = task("entered-in-error");
        before_write(Some(&task("completed")), &mut eie, NOW).unwrap();
        assert!(eie.get("executionPeriod").is_none());
    }
}
