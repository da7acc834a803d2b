//! Closed-loop community referrals, pure (the HL7 Gravity Project's SDOH pattern in plain R4):
//! a positive social-needs domain → a proposed Goal (expressed by the patient) and a draft
//! ServiceRequest (category community-referral, the domain as code) → the care manager
//! confirms it (active, an Organization as performer) → a Task (intent order, focus the
//! ServiceRequest) owned by the community organization, which moves it through requested →
//! received → accepted → in-progress → completed, or rejected / cancelled with a reason, and
//! records the outcome in `Task.output`.
use serde_json::{json, Value};

use super::WORKFLOW;
use crate::error::{ApiError, ApiResult};
use crate::fhir::reference::local_target;

pub use super::assessment::SOCIAL_NEED;

/// Whether a ServiceRequest or Task is a community referral (its category or code).
pub fn is_community_referral(v: &Value) -> bool {
    let coded = |c: &Value| {
        c["coding"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| x["system"] == WORKFLOW && x["code"] == "community-referral")
    };
    v["category"].as_array().into_iter().flatten().any(coded) || coded(&v["code"])
}

/// The proposed Goal of a positive domain, expressed by the patient.
pub fn proposed_goal(patient: &str, domain: &str, display: &str, finding: &str) -> Value {
    json!({
        "resourceType": "Goal",
        "lifecycleStatus": "proposed",
        "category": [{"coding": [{"system": SOCIAL_NEED, "code": domain, "display": display}]}],
        "description": {"text": format!("Address {}", display.to_lowercase())},
        "subject": {"reference": format!("Patient/{patient}")},
        "expressedBy": {"reference": format!("Patient/{patient}")},
        "addresses": [{"reference": finding}],
    })
}

/// The draft referral of a positive domain, for the care manager to confirm.
pub fn draft_referral(
    patient: &str,
    domain: &str,
    display: &str,
    finding: &str,
    goal: &str,
    requester: Option<&str>,
    now: &str,
) -> Value {
    let mut sr = json!({
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "category": [{"coding": [{"system": WORKFLOW, "code": "community-referral", "display": "Referral to a community organization"}],
            "text": "Social determinants of health"}],
        "code": {"coding": [{"system": SOCIAL_NEED, "code": domain, "display": display}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "authoredOn": now,
        "reasonReference": [{"reference": finding}],
        "supportingInfo": [{"reference": goal}],
    });
    if let Some(r) = requester {
        sr["requester"] = json!({"reference": r});
    }
    sr
}

/// The Task that sends a confirmed referral to its organization (None without an
/// Organization performer).
pub fn referral_task(sr_id: &str, sr: &Value, now: &str) -> Option<Value> {
    let org = sr["performer"]
        .as_array()?
        .iter()
        .filter_map(|p| p["reference"].as_str())
        .find(|r| matches!(local_target(r), Some(("Organization", _))))?;
    let mut t = json!({
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": {"coding": [{"system": WORKFLOW, "code": "community-referral", "display": "Referral to a community organization"}]},
        "focus": {"reference": format!("ServiceRequest/{sr_id}")},
        "for": sr["subject"].clone(),
        "owner": {"reference": org},
        "authoredOn": now,
    });
    if let Some(r) = sr.get("requester") {
        t["requester"] = r.clone();
    }
    let what = sr["code"]["coding"][0]["display"]
        .as_str()
        .or_else(|| sr["code"]["text"].as_str());
    if let Some(d) = what {
        t["description"] = json!(d);
    }
    Some(t)
}

/// A community referral Task that is rejected or cancelled says why (`statusReason`).
pub fn check_task(prev: Option<&Value>, next: &Value) -> ApiResult<()> {
    let to = next["status"].as_str().unwrap_or_default();
    let from = prev.and_then(|p| p["status"].as_str());
    if !matches!(to, "rejected" | "cancelled") || from == Some(to) || !is_community_referral(next) {
        return Ok(());
    }
    let has_reason = next["statusReason"].get("text").is_some()
        || next["statusReason"]["coding"]
            .as_array()
            .is_some_and(|c| !c.is_empty());
    if has_reason {
        Ok(())
    } else {
        Err(ApiError::BusinessRule(format!(
            "a community referral Task that becomes {to} must say why (Task.statusReason)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referral_cycle_shapes() {
        let g = proposed_goal("p", "food", "Food insecurity", "Observation/o");
        assert!(!crate::fhir::validate::validate(&g).has_errors(), "{g}");
        let mut sr = draft_referral(
            "p",
            "food",
            "Food insecurity",
            "Observation/o",
            "Goal/g",
            Some("Practitioner/m"),
            "2026-11-30T00:00:00Z",
        );
        assert!(!crate::fhir::validate::validate(&sr).has_errors(), "{sr}");
        assert!(is_community_referral(&sr));
        assert!(
            referral_task("s", &sr, "2026-11-30T00:00:00Z").is_none(),
            "no organization yet"
        );
        sr["performer"] = json!([{"reference": "Organization/pantry"}]);
        let t = referral_task("s", &sr, "2026-11-30T00:00:00Z").unwrap();
        assert_eq!(t["owner"]["reference"], "Organization/pantry");
        assert_eq!(t["requester"]["reference"], "Practitioner/m");
        assert!(!crate::fhir::validate::validate(&t).has_errors(), "{t}");
        let mut rejected = t.clone();
        rejected["status"] = json!("rejected");
        assert!(check_task(Some(&t), &rejected).is_err());
        rejected["statusReason"] = json!({"text": "outside our service area"});
        assert!(check_task(Some(&t), &rejected).is_ok());
        let mut other = json!({"status": "cancelled"});
        assert!(check_task(Some(&json!({"status": "requested"})), &other).is_ok());
        other["code"] = t["code"].clone();
        assert!(check_task(Some(&json!({"status": "requested"})), &other).is_err());
    }
}
