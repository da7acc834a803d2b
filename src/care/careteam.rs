//! CareTeam lifecycle: proposed → active | inactive; active ↔ suspended; active | suspended →
//! inactive; inactive → active (re-enrolment); any → entered-in-error (terminal).
use serde_json::Value;

use super::machine::{status_of, StateMachine};
use super::str_at;
use crate::error::ApiResult;

pub const MACHINE: StateMachine = StateMachine {
    resource: "CareTeam",
    states: &[
        "proposed",
        "active",
        "suspended",
        "inactive",
        "entered-in-error",
    ],
    moves: &[
        ("proposed", &["active", "inactive"]),
        ("active", &["suspended", "inactive"]),
        ("suspended", &["active", "inactive"]),
        ("inactive", &["active"]),
    ],
    to_from_any: &["entered-in-error"],
    from_to_any: &[],
};

/// Check a CareTeam write (status is optional in R4; a missing status is not checked).
pub fn before_write(prev: Option<&Value>, next: &mut Value) -> ApiResult<()> {
    let Some(to) = status_of("CareTeam", next, false)? else {
        return Ok(());
    };
    if !MACHINE.is_state(to) {
        return Err(super::machine::invalid_status(
            "CareTeam",
            to,
            MACHINE.states,
        ));
    }
    if let Some(from) = prev.and_then(|p| str_at(p, "status")) {
        MACHINE.check(from, to)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;
    use serde_json::json;

    fn allowed_by_issue(from: &str, to: &str) -> bool {
        if from == to || to == "entered-in-error" {
            return true;
        }
        matches!(
            (from, to),
            ("proposed", "active")
                | ("proposed", "inactive")
                | ("active", "suspended")
                | ("suspended", "active")
                | ("active", "inactive")
                | ("suspended", "inactive")
                | ("inactive", "active")
        )
    }

    fn team(s: &str) -> Value {
        json!({"resourceType": "CareTeam", "status": s})
    }

    #[test]
    fn every_pair() {
        let mut n = 0;
        for from in MACHINE.states {
            for to in MACHINE.states {
                let r = before_write(Some(&team(from)), &mut team(to));
                assert_eq!(r.is_ok(), allowed_by_issue(from, to), "{from} → {to}");
                if let Err(e) = r {
                    assert!(matches!(e, ApiError::BusinessRule(_)));
                    assert!(e.to_string().contains(&format!("'{from}' → '{to}'")));
                }
                n += 1;
            }
        }
        assert_eq!(n, 25);
        assert!(MACHINE.is_terminal("entered-in-error"));
        assert!(!MACHINE.is_terminal("inactive"));
    }

    #[test]
    fn optional_status() {
        assert!(before_write(
            Some(&team("active")),
            &mut json!({"resourceType": "CareTeam"})
        )
        .is_ok());
        assert!(before_write(None, &mut team("gone")).is_err());
    }
}
