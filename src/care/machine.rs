//! A status state machine given as data: the states, the allowed moves, and the wildcard rules.
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::fhir::outcome::{Issue, IssueType};

pub struct StateMachine {
    /// The resource type, for messages.
    pub resource: &'static str,
    /// Every status code (the element's required value set).
    pub states: &'static [&'static str],
    /// Allowed moves from each state (besides staying in the same state).
    pub moves: &'static [(&'static str, &'static [&'static str])],
    /// States reachable from any state.
    pub to_from_any: &'static [&'static str],
    /// States from which any state is reachable.
    pub from_to_any: &'static [&'static str],
}

impl StateMachine {
    pub fn is_state(&self, s: &str) -> bool {
        self.states.contains(&s)
    }

    /// Whether `from → to` is allowed (same-status updates always are).
    pub fn allows(&self, from: &str, to: &str) -> bool {
        if !self.is_state(from) || !self.is_state(to) {
            return false;
        }
        from == to
            || self.to_from_any.contains(&to)
            || self.from_to_any.contains(&from)
            || self
                .moves
                .iter()
                .any(|(f, tos)| *f == from && tos.contains(&to))
    }

    /// The states reachable from `from` in one change (other than itself).
    pub fn targets(&self, from: &str) -> Vec<&'static str> {
        self.states
            .iter()
            .copied()
            .filter(|t| *t != from && self.allows(from, t))
            .collect()
    }

    /// Terminal: no move leads out of it (except to the from-any states).
    pub fn is_terminal(&self, s: &str) -> bool {
        self.is_state(s)
            && !self.from_to_any.contains(&s)
            && !self.moves.iter().any(|(f, tos)| *f == s && !tos.is_empty())
    }

    /// Check a change of status; 409 business-rule naming the transition when refused.
    pub fn check(&self, from: &str, to: &str) -> ApiResult<()> {
        if !self.is_state(to) {
            return Err(invalid_status(self.resource, to, self.states));
        }
        if !self.is_state(from) || self.allows(from, to) {
            // An unknown stored status (written before these rules) does not block a fix.
            return Ok(());
        }
        let targets = self.targets(from);
        let allowed = if targets.is_empty() {
            format!("'{from}' is terminal")
        } else {
            format!("from '{from}' only {} are allowed", targets.join(", "))
        };
        Err(ApiError::BusinessRule(format!(
            "{} status transition '{from}' → '{to}' is not allowed ({allowed})",
            self.resource
        )))
    }

    /// The transitions as text, in the order of the table, for the CapabilityStatement.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .states
            .iter()
            .map(|s| {
                if self.from_to_any.contains(s) {
                    return format!("{s} → any status");
                }
                let mut t: Vec<&str> = self
                    .moves
                    .iter()
                    .filter(|(f, _)| f == s)
                    .flat_map(|(_, tos)| tos.iter().copied())
                    .collect();
                let terminal = self.is_terminal(s);
                t.extend(self.to_from_any.iter().copied().filter(|x| x != s));
                match (terminal, t.is_empty()) {
                    (true, true) => format!("{s} (terminal)"),
                    (true, false) => format!("{s} (terminal) → {}", t.join(" | ")),
                    _ => format!("{s} → {}", t.join(" | ")),
                }
            })
            .collect();
        format!(
            "{} status transitions (same-status updates are always allowed; anything else is refused with 409 business-rule): {}.",
            self.resource,
            parts.join("; ")
        )
    }
}

/// 422 code-invalid for a status outside the value set.
pub fn invalid_status(resource: &str, status: &str, states: &[&str]) -> ApiError {
    let mut i = Issue::error(
        IssueType::CodeInvalid,
        format!(
            "{resource}.status '{status}' is not one of {}",
            states.join(", ")
        ),
    );
    i.expression = vec![format!("{resource}.status")];
    ApiError::Unprocessable(vec![i])
}

/// The status of a body: required for Task and CarePlan (422 when missing or not a string).
pub fn status_of<'a>(resource: &str, v: &'a Value, required: bool) -> ApiResult<Option<&'a str>> {
    match v.get("status") {
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        None | Some(Value::Null) if !required => Ok(None),
        _ => {
            let mut i = Issue::error(
                IssueType::Required,
                format!("{resource}.status is required and must be a code"),
            );
            i.expression = vec![format!("{resource}.status")];
            Err(ApiError::Unprocessable(vec![i]))
        }
    }
}
