//! EpisodeOfCare — the program enrollment — status rules: planned → waitlist | active |
//! cancelled; waitlist → active | cancelled; active ↔ onhold; active | onhold → finished;
//! any → entered-in-error.
use serde_json::Value;

use super::machine::{status_of, StateMachine};
use super::str_at;
use crate::error::ApiResult;

pub const MACHINE: StateMachine = StateMachine {
    resource: "EpisodeOfCare",
    states: &[
        "planned",
        "waitlist",
        "active",
        "onhold",
        "finished",
        "cancelled",
        "entered-in-error",
    ],
    moves: &[
        ("planned", &["waitlist", "active", "cancelled"]),
        ("waitlist", &["active", "cancelled"]),
        ("active", &["onhold", "finished"]),
        ("onhold", &["active", "finished"]),
    ],
    to_from_any: &["entered-in-error"],
    from_to_any: &[],
};

/// Whether an episode in this status is a current enrollment.
pub fn is_current(status: &str) -> bool {
    matches!(status, "planned" | "waitlist" | "active" | "onhold")
}

/// Check an EpisodeOfCare write against the status rules.
pub fn before_write(prev: Option<&Value>, next: &Value) -> ApiResult<()> {
    let Some(to) = status_of("EpisodeOfCare", next, false)? else {
        return Ok(());
    };
    if !MACHINE.is_state(to) {
        return Err(super::machine::invalid_status(
            "EpisodeOfCare",
            to,
            MACHINE.states,
        ));
    }
    if let Some(p) = prev {
        MACHINE.check(str_at(p, "status").unwrap_or_default(), to)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn transitions() {
        let ok = [
            ("planned", "waitlist"),
            ("planned", "active"),
            ("planned", "cancelled"),
            ("waitlist", "active"),
            ("waitlist", "cancelled"),
            ("active", "onhold"),
            ("onhold", "active"),
            ("active", "finished"),
            ("onhold", "finished"),
            ("finished", "entered-in-error"),
            ("active", "active"),
        ];
        for (f, t) in ok {
            assert!(MACHINE.allows(f, t), "{f} → {t}");
        }
        let refused = [
            ("active", "planned"),
            ("finished", "active"),
            ("cancelled", "active"),
            ("waitlist", "finished"),
            ("planned", "finished"),
            ("entered-in-error", "active"),
        ];
        for (f, t) in refused {
            assert!(!MACHINE.allows(f, t), "{f} → {t}");
            let prev = json!({"status": f});
            assert!(before_write(Some(&prev), &json!({"status": t})).is_err());
        }
        assert!(before_write(None, &json!({"status": "bogus"})).is_err());
        assert!(is_current("onhold") && !is_current("finished"));
    }
}
