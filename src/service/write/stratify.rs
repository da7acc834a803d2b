//! Risk stratification in the unit of work: gather the patient's data, score it
//! (care::risk, configurable and explainable), store a new RiskAssessment that supersedes the
//! previous one (the previous becomes `amended`, the new one names it as `parent`; both stay
//! in the record), and keep one open outreach Task at the tier's contact frequency.
use serde_json::{json, Value};

use super::{Change, UnitOfWork};
use crate::care::risk::{self, Tier};
use crate::care::transitions::WORKFLOW;
use crate::error::{ApiError, ApiResult};
use crate::fhir::datetime::{format_instant, now_micros};
use crate::service::search::{criteria_ids, matching};
use crate::store::lookup::load_many;
use crate::store::write::WriteResult;

/// The Observation codes stratification reads (LOINC and ours).
const OBSERVATION_CODES: &str = "http://loinc.org|4548-4,http://loinc.org|85354-9,http://loinc.org|8480-6,http://loinc.org|8462-4,http://loinc.org|44261-6,http://icm-fhir.org/fhir/CodeSystem/icm-social-need|positive-domains";

/// Days of an ISO-8601 duration of the configuration (`P7D`, `P1M`, `P3M`, `P1W`).
fn days_of(duration: &str) -> i64 {
    let d = duration.trim_start_matches('P');
    let (n, unit) = d
        .split_at_checked(d.len().saturating_sub(1))
        .unwrap_or((d, ""));
    let n: i64 = n.parse().unwrap_or(30);
    match unit {
        "D" => n,
        "W" => 7 * n,
        "M" => 30 * n,
        "Y" => 365 * n,
        _ => 30,
    }
}

/// The patient's current RiskAssessment (the latest `final` one; superseded ones are `amended`).
pub fn current_assessment(
    conn: &mut crate::store::DbConn,
    vis: &dyn crate::store::visibility::Visibility,
    patient: &str,
) -> ApiResult<Option<crate::store::lookup::Row>> {
    Ok(matching(
        conn,
        vis,
        "RiskAssessment",
        &format!("subject=Patient/{patient}"),
    )?
    .into_iter()
    .filter(|r| r.content["status"] == "final")
    .max_by_key(|r| r.last_updated))
}

impl UnitOfWork<'_> {
    fn all_of(&mut self, ty: &str, criteria: &str) -> ApiResult<Vec<Value>> {
        let ctx = self.ctx;
        Ok(matching(self.conn, ctx, ty, criteria)?
            .into_iter()
            .map(|r| r.content)
            .collect())
    }

    /// Stratify Patient/`patient` now: the new RiskAssessment.
    pub fn stratify(&mut self, patient: &str) -> ApiResult<WriteResult> {
        let ctx = self.ctx;
        let p = load_many(self.conn, ctx, "Patient", &[patient.to_string()])?
            .pop()
            .ok_or_else(|| ApiError::NotFound(format!("Patient/{patient} is not known")))?
            .content;
        let subject = format!("patient=Patient/{patient}");
        let conditions = self.all_of("Condition", &subject)?;
        let encounters = self.all_of("Encounter", &subject)?;
        let observations = self.all_of(
            "Observation",
            &format!("{subject}&code={OBSERVATION_CODES}"),
        )?;
        let now = now_micros();
        let inputs = risk::inputs(&p, &conditions, &encounters, &observations, now);
        let strat = risk::stratify(&inputs, risk::load_config());
        // The previous assessment by this method is superseded, never lost.
        let mut previous = self.all_of("RiskAssessment", &subject)?;
        previous.retain(|r| {
            r["status"] == "final" && r["method"]["coding"][0]["code"] == risk::METHOD_CODE
        });
        let mut parent = None;
        for mut old in previous {
            let id = old["id"].as_str().unwrap_or_default().to_string();
            old["status"] = json!("amended");
            self.apply(
                "RiskAssessment",
                Change::Update {
                    id: id.clone(),
                    body: old,
                    if_match: None,
                },
            )?;
            parent = Some(format!("RiskAssessment/{id}"));
        }
        let body = risk::risk_assessment(
            patient,
            &strat,
            "ICM program risk score with the LACE index (configuration fhir-profiles/icm/risk-config.json); supports, does not replace, clinical judgment",
            &format_instant(now),
            parent.as_deref(),
        );
        let r = self.apply("RiskAssessment", Change::Create { body })?;
        self.outreach(patient, strat.tier, now)?;
        Ok(r)
    }

    /// Keep one open outreach Task for an enrolled patient, due at the tier's frequency.
    fn outreach(&mut self, patient: &str, tier: Tier, now: i64) -> ApiResult<()> {
        let ctx = self.ctx;
        let Some(ep) = self.enrollment(patient)? else {
            return Ok(());
        };
        let open = criteria_ids(
            self.conn,
            ctx,
            "Task",
            &format!(
                "patient=Patient/{patient}&code={WORKFLOW}|outreach&status=requested,received,accepted,ready,in-progress,on-hold"
            ),
        )?;
        if !open.is_empty() {
            return Ok(());
        }
        let every = risk::contact_frequency(tier);
        let due = now + days_of(every) * 86_400_000_000;
        let mut t = json!({
            "resourceType": "Task",
            "status": "requested",
            "intent": "plan",
            "priority": if tier == Tier::High { "urgent" } else { "routine" },
            "code": {"coding": [{"system": WORKFLOW, "code": "outreach", "display": "Recurring outreach contact"}]},
            "description": format!("Outreach contact ({} risk: every {every})", tier.code()),
            "for": {"reference": format!("Patient/{patient}")},
            "authoredOn": format_instant(now),
            "restriction": {"period": {"end": format_instant(due)}},
        });
        if let Some(m) = ep.content["careManager"]["reference"].as_str() {
            t["owner"] = json!({"reference": m});
        }
        // Based on the episode's plan, so closing the plan (disenrollment) cancels it.
        let plan = matching(
            self.conn,
            ctx,
            "CarePlan",
            &format!("subject=Patient/{patient}&status=draft,active,on-hold"),
        )?
        .into_iter()
        .find(|p| crate::care::supported_by(&p.content, "EpisodeOfCare", &ep.id));
        if let Some(p) = plan {
            t["basedOn"] = json!([{"reference": format!("CarePlan/{}", p.id)}]);
        }
        self.apply("Task", Change::Create { body: t })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::days_of("P7D"), 7);
        assert_eq!(super::days_of("P1M"), 30);
        assert_eq!(super::days_of("P3M"), 90);
        assert_eq!(super::days_of("P2W"), 14);
    }
}
