//! CarePlan workflow: allowed status changes; closing a plan (revoked/completed) cancels its open Tasks.
use serde_json::Value;

use super::machine::{status_of, StateMachine};
use super::{str_at, Effects};
use crate::error::ApiResult;

pub const MACHINE: StateMachine = StateMachine {
    resource: "CarePlan",
    states: &[
        "draft",
        "active",
        "on-hold",
        "revoked",
        "completed",
        "entered-in-error",
        "unknown",
    ],
    moves: &[
        ("draft", &["active", "revoked"]),
        ("active", &["on-hold", "completed", "revoked"]),
        ("on-hold", &["active", "completed", "revoked"]),
    ],
    to_from_any: &["entered-in-error"],
    from_to_any: &["unknown"],
};

/// Statuses that close a plan and cancel the open Tasks based on it.
pub fn closes(status: &str) -> bool {
    matches!(status, "revoked" | "completed")
}

/// Check a CarePlan write; report whether it closes the plan.
pub fn before_write(prev: Option<&Value>, next: &mut Value) -> ApiResult<Effects> {
    // A missing status is the validator's business (CarePlan.status is 1..1).
    let Some(to) = status_of("CarePlan", next, false)? else {
        return Ok(Effects::default());
    };
    if !MACHINE.is_state(to) {
        return Err(super::machine::invalid_status(
            "CarePlan",
            to,
            MACHINE.states,
        ));
    }
    let Some(p) = prev else {
        return Ok(Effects::default());
    };
    let from = str_at(p, "status").unwrap_or_default();
    MACHINE.check(from, to)?;
    Ok(Effects {
        cancel_tasks_based_on: closes(to) && !closes(from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;
    use serde_json::json;

    fn allowed_by_issue(from: &str, to: &str) -> bool {
        if from == to || to == "entered-in-error" || from == "unknown" {
            return true;
        }
        let t: &[&str] = match from {
            "draft" => &["active", "revoked"],
            "active" => &["on-hold", "completed", "revoked"],
            "on-hold" => &["active", "completed", "revoked"],
            _ => &[],
        };
        t.contains(&to)
    }

    fn plan(s: &str) -> Value {
        json!({"resourceType": "CarePlan", "status": s, "intent": "plan"})
    }

    #[test]
    fn every_pair() {
        let mut n = 0;
        for from in MACHINE.states {
            for to in MACHINE.states {
                let r = before_write(Some(&plan(from)), &mut plan(to));
                assert_eq!(r.is_ok(), allowed_by_issue(from, to), "{from} → {to}");
                match r {
                    Ok(e) => assert_eq!(
                        e.cancel_tasks_based_on,
                        closes(to) && !closes(from),
                        "{from} → {to}"
                    ),
                    Err(e) => {
                        assert!(matches!(e, ApiError::BusinessRule(_)));
                        assert!(e.to_string().contains(&format!("'{from}' → '{to}'")));
                    }
                }
                n += 1;
            }
        }
        assert_eq!(n, 49);
    }

    #[test]
    fn terminal_and_create() {
        let t: Vec<_> = MACHINE
            .states
            .iter()
            .copied()
            .filter(|s| MACHINE.is_terminal(s))
            .collect();
        assert_eq!(t, ["revoked", "completed", "entered-in-error"]);
        for s in MACHINE.states {
            let e = before_write(None, &mut plan(s)).unwrap();
            assert!(!e.cancel_tasks_based_on, "creating never cascades");
        }
        assert!(before_write(None, &mut plan("closed")).is_err());
    }
}
