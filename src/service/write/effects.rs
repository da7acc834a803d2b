//! The program's effects of a write, run by the unit of work right after the resource is
//! stored, in the same transaction:
//! - a discharge (an inpatient or emergency Encounter reaching `finished`) of an enrolled
//!   patient creates the transition-of-care Tasks (care::transitions);
//! - a completed response to one of the program's Questionnaires is scored into Observations
//!   (`derivedFrom` the response); each positive social-needs domain yields a proposed Goal and
//!   a draft community-referral ServiceRequest for the care manager to confirm;
//! - confirming such a referral (draft → active, with an Organization as performer) sends it
//!   as a Task owned by the community organization (closed-loop referral).
//!
//! The effects are the server's own work: their lookups see every row and the Tasks are written
//! with the server's authority, through the same `apply` (validation, care rules, integrity).
use std::sync::OnceLock;

use serde_json::Value;

use super::{Change, UnitOfWork};
use crate::care::referral::{self, is_community_referral};
use crate::care::transitions::{
    encounter_event, follow_up_plan, follow_up_task, EncounterEvent, WORKFLOW,
};
use crate::config::WritePolicy;
use crate::error::ApiResult;
use crate::fhir::datetime::{format_instant, now_micros};
use crate::fhir::reference::local_target;
use crate::service::context::RequestContext;
use crate::service::search::{criteria_ids, matching};
use crate::store::lookup::Row;
use crate::store::visibility::Everything;
use crate::store::write::WriteResult;

/// A patient's change in a cohort: (patient, enrolled now, period start, period end).
type CohortMove = (String, bool, Option<String>, Option<String>);

/// The local Patient a clinical resource is about (`subject` or `patient`).
fn patient_of(res: &Value) -> Option<String> {
    [&res["subject"], &res["patient"]].iter().find_map(|r| {
        match r["reference"].as_str().and_then(local_target) {
            Some(("Patient", id)) => Some(id.to_string()),
            _ => None,
        }
    })
}

/// The server's own context, for effects.
pub(super) fn server() -> &'static RequestContext {
    static CTX: OnceLock<RequestContext> = OnceLock::new();
    CTX.get_or_init(|| RequestContext::internal(WritePolicy::default(), ""))
}

impl UnitOfWork<'_> {
    /// The effects of a write of `ty` (`prev` the content before it, None for a create).
    pub(super) fn after_write(
        &mut self,
        ty: &str,
        prev: Option<&Value>,
        r: &WriteResult,
    ) -> ApiResult<()> {
        if ty == "EpisodeOfCare" {
            // (a delete has no resource: its patient leaves the cohort)
            self.as_server(|u| u.cohorts(&[(prev, r.resource.as_ref())]))?;
        }
        // Subscriptions this version matches: their notifications join this transaction.
        crate::service::subscriptions::register_written(self.conn, self.ctx, r)?;
        let registered = self.subscriptions_on(&r.ty)?;
        crate::service::subscriptions::on_write(self.conn, &self.policy, r, &registered)?;
        let Some(res) = &r.resource else {
            return Ok(());
        };
        match ty {
            "Encounter" => {
                if let Some(EncounterEvent::Discharge { at, .. }) =
                    encounter_event(prev, res, now_micros())
                {
                    // (re-stratifies too)
                    self.discharge(&r.id, res, at)?;
                } else if prev.is_none() {
                    // A new encounter (an ED visit, an admission) changes the risk.
                    if let Some(p) = patient_of(res) {
                        if self.enrolled(&p)? {
                            self.as_server(|u| u.stratify(&p))?;
                        }
                    }
                }
            }
            "Condition" => {
                if let Some(p) = patient_of(res) {
                    if self.enrolled(&p)? {
                        self.as_server(|u| u.stratify(&p))?;
                    }
                }
            }
            "QuestionnaireResponse" => {
                let done = |v: Option<&Value>| {
                    v.is_some_and(|v| matches!(v["status"].as_str(), Some("completed" | "amended")))
                };
                if done(Some(res)) && !done(prev) {
                    self.as_server(|u| u.score(&r.id, res))?;
                }
            }
            "ServiceRequest" => {
                let is = |v: Option<&Value>, s: &str| v.is_some_and(|v| v["status"] == s);
                if is(Some(res), "active") && !is(prev, "active") && is_community_referral(res) {
                    self.as_server(|u| u.send_referral(&r.id, res))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Keep the program cohort Groups (care::cohort) current after EpisodeOfCare writes: each
    /// `(before, after)` pair moves its patient in or out of the cohort of each program. One
    /// write per Group touched, so a bulk import updates a cohort once per batch.
    pub(super) fn cohorts(
        &mut self,
        changes: &[(Option<&Value>, Option<&Value>)],
    ) -> ApiResult<()> {
        use crate::care::cohort;
        // program → (patient, current, start, end), in order
        let mut per_program: std::collections::BTreeMap<String, Vec<CohortMove>> =
            Default::default();
        let now = format_instant(now_micros());
        for (prev, next) in changes {
            let Some(ep) = next.or(*prev) else { continue };
            let Some(patient) = cohort::patient(ep) else {
                continue;
            };
            let current = next.is_some_and(cohort::is_current);
            let mut programs = next.map(cohort::programs).unwrap_or_default();
            for p in prev.map(cohort::programs).unwrap_or_default() {
                if !programs.contains(&p) {
                    programs.push(p);
                }
            }
            let new_programs = next.map(cohort::programs).unwrap_or_default();
            for program in programs {
                let here = current && new_programs.contains(&program);
                if !here {
                    // Another current enrollment of the patient keeps them in the cohort.
                    let q = format!(
                        "patient=Patient/{patient}&status=planned,waitlist,active,onhold&type={}|{program}",
                        crate::care::PROGRAM
                    );
                    let own = ep["id"].as_str().unwrap_or_default();
                    if criteria_ids(self.conn(), &Everything, "EpisodeOfCare", &q)?
                        .iter()
                        .any(|i| i != own)
                    {
                        continue;
                    }
                }
                let start = ep["period"]["start"].as_str().map(str::to_string);
                let end = Some(
                    ep["period"]["end"]
                        .as_str()
                        .map_or_else(|| now.clone(), str::to_string),
                );
                per_program
                    .entry(program)
                    .or_default()
                    .push((patient.clone(), here, start, end));
            }
        }
        for (program, moves) in per_program {
            self.move_members(&program, &moves)?;
        }
        Ok(())
    }

    /// Apply one program's member moves: one member row per patient whose membership changes
    /// (store::members), then one new version of the Group with the new `quantity` — its stored
    /// JSON is the definition only, so the cost does not grow with the cohort.
    fn move_members(&mut self, program: &str, moves: &[CohortMove]) -> ApiResult<()> {
        use crate::care::cohort::{self, MemberState};
        use crate::store::members::{self, Member};
        let id = cohort::cohort_id(program);
        // Locked (FOR UPDATE on PostgreSQL) before anything is read, so concurrent enrollments
        // queue up instead of losing each other's changes.
        let stored =
            crate::store::write::current(self.conn(), "Group", &id)?.and_then(|row| row.resource());
        // The member rows of the patients moved (one query), then each move in order.
        let mut wanted: Vec<String> = moves.iter().map(|m| m.0.clone()).collect();
        wanted.sort();
        wanted.dedup();
        let mut state: std::collections::HashMap<String, MemberState> =
            members::get_many(self.conn(), &id, &wanted)?
                .into_iter()
                .map(|m| {
                    let s = MemberState {
                        inactive: m.inactive,
                        start: m.period_start,
                        end: m.period_end,
                    };
                    (m.patient_id, s)
                })
                .collect();
        let existing: std::collections::HashSet<String> = state.keys().cloned().collect();
        // patients whose state changed, in the order of the moves
        let mut changed: Vec<String> = Vec::new();
        let mut seen: std::collections::HashSet<String> = Default::default();
        let mut delta = 0i64;
        for (patient, current, start, end) in moves {
            let prev = state.get(patient).cloned();
            let Some(next) =
                cohort::next_state(prev.as_ref(), *current, start.as_deref(), end.as_deref())
            else {
                continue;
            };
            let active = |s: Option<&MemberState>| i64::from(s.is_some_and(|s| !s.inactive));
            delta += active(Some(&next)) - active(prev.as_ref());
            if seen.insert(patient.clone()) {
                changed.push(patient.clone());
            }
            state.insert(patient.clone(), next);
        }
        if changed.is_empty() {
            return Ok(());
        }
        let fresh = stored.is_none();
        let mut group = stored.unwrap_or_else(|| cohort::new_group(program));
        let before = match group["quantity"].as_i64() {
            Some(q) if !fresh => q,
            Some(_) => 0,
            // (a Group written without it) counted once
            None => members::list(self.conn(), &id)?
                .iter()
                .filter(|m| !m.inactive)
                .count() as i64,
        };
        group["quantity"] = serde_json::json!((before + delta).max(0));
        let write_group = |u: &mut Self, body: Value| {
            u.apply(
                "Group",
                Change::Update {
                    id: id.clone(),
                    body,
                    if_match: None,
                },
            )
        };
        // A new Group is stored first: the member rows' search rows hang on its row.
        if fresh {
            write_group(self, group.clone())?;
        }
        let rows: Vec<Member> = changed
            .into_iter()
            .map(|p| {
                let s = state.remove(&p).expect("moved patient has a state");
                Member {
                    patient_id: p,
                    inactive: s.inactive,
                    period_start: s.start,
                    period_end: s.end,
                }
            })
            .collect();
        members::put_many(self.conn(), &id, &rows, &existing)?;
        if !fresh {
            write_group(self, group)?;
        }
        Ok(())
    }

    /// Run `f` with the server's authority (the effects of a write the caller was allowed).
    /// The Subscriptions registered on `ty`, read once per unit of work (a Subscription written
    /// in it changes the registry, so the next lookup reads it again).
    fn subscriptions_on(
        &mut self,
        ty: &str,
    ) -> ApiResult<std::rc::Rc<Vec<crate::store::subscriptions::Registered>>> {
        if ty == "Subscription" {
            self.subscriptions.clear();
        }
        if let Some(s) = self.subscriptions.get(ty) {
            return Ok(s.clone());
        }
        let s = std::rc::Rc::new(crate::store::subscriptions::on_type(self.conn, ty)?);
        self.subscriptions.insert(ty.to_string(), s.clone());
        Ok(s)
    }

    pub(crate) fn as_server<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> ApiResult<T>,
    ) -> ApiResult<T> {
        let saved = self.ctx;
        self.ctx = server();
        let r = f(self);
        self.ctx = saved;
        r
    }

    /// Score a completed response into Observations; positive social-needs domains become a
    /// proposed Goal and a draft community referral each.
    fn score(&mut self, qr_id: &str, qr: &Value) -> ApiResult<()> {
        let Some(q) = qr["questionnaire"]
            .as_str()
            .and_then(crate::care::assessment::by_canonical)
        else {
            return Ok(());
        };
        let Some(("Patient", patient)) = qr["subject"]["reference"].as_str().and_then(local_target)
        else {
            return Ok(());
        };
        let patient = patient.to_string();
        let now = format_instant(now_micros());
        let qr_ref = format!("QuestionnaireResponse/{qr_id}");
        let manager = self.care_manager(&patient)?;
        for d in crate::care::assessment::score(q, qr) {
            let obs = crate::care::assessment::derived_observation(qr, &qr_ref, &d, &now);
            let o = self.apply("Observation", Change::Create { body: obs })?;
            if d.code.system != crate::care::assessment::SOCIAL_NEED
                || d.code.code == "positive-domains"
            {
                continue;
            }
            let obs_ref = format!("Observation/{}", o.id);
            let goal = self.apply(
                "Goal",
                Change::Create {
                    body: referral::proposed_goal(
                        &patient,
                        &d.code.code,
                        &d.code.display,
                        &obs_ref,
                    ),
                },
            )?;
            self.apply(
                "ServiceRequest",
                Change::Create {
                    body: referral::draft_referral(
                        &patient,
                        &d.code.code,
                        &d.code.display,
                        &obs_ref,
                        &format!("Goal/{}", goal.id),
                        manager.as_deref(),
                        &now,
                    ),
                },
            )?;
        }
        // A scored assessment changes the risk of an enrolled patient.
        if self.enrolled(&patient)? {
            self.stratify(&patient)?;
        }
        Ok(())
    }

    /// The patient's current enrollment (an active or on-hold EpisodeOfCare), if any.
    pub(crate) fn enrollment(&mut self, patient: &str) -> ApiResult<Option<Row>> {
        Ok(matching(
            self.conn,
            &Everything,
            "EpisodeOfCare",
            &format!("patient=Patient/{patient}&status=active,onhold"),
        )?
        .into_iter()
        .next())
    }

    /// Whether the patient has a current enrollment.
    pub(crate) fn enrolled(&mut self, patient: &str) -> ApiResult<bool> {
        Ok(self.enrollment(patient)?.is_some())
    }

    /// The care manager of the patient's current enrollment, if any.
    fn care_manager(&mut self, patient: &str) -> ApiResult<Option<String>> {
        Ok(self.enrollment(patient)?.and_then(|e| {
            e.content["careManager"]["reference"]
                .as_str()
                .map(str::to_string)
        }))
    }

    /// A confirmed community referral becomes a Task owned by the organization (once).
    fn send_referral(&mut self, sr_id: &str, sr: &Value) -> ApiResult<()> {
        let done = criteria_ids(
            self.conn,
            &Everything,
            "Task",
            &format!("focus=ServiceRequest/{sr_id}"),
        )?;
        if !done.is_empty() {
            return Ok(());
        }
        let now = format_instant(now_micros());
        if let Some(task) = referral::referral_task(sr_id, sr, &now) {
            self.apply("Task", Change::Create { body: task })?;
        }
        Ok(())
    }

    /// The follow-up Tasks of a discharge, once per Encounter, for an enrolled patient.
    fn discharge(&mut self, encounter_id: &str, enc: &Value, at: i64) -> ApiResult<()> {
        let Some(("Patient", patient)) =
            enc["subject"]["reference"].as_str().and_then(local_target)
        else {
            return Ok(());
        };
        let patient = patient.to_string();
        let Some(episode) = self.enrollment(&patient)? else {
            return Ok(());
        };
        // Replaying the same discharge creates nothing twice.
        let done = criteria_ids(
            self.conn,
            &Everything,
            "Task",
            &format!("focus=Encounter/{encounter_id}&code={WORKFLOW}|transition-follow-up"),
        )?;
        if !done.is_empty() {
            return Ok(());
        }
        // Re-stratify with the stay just ended: the visit's due date follows the new tier.
        self.as_server(|u| u.stratify(&patient))?;
        let owner = episode.content["careManager"]["reference"]
            .as_str()
            .map(str::to_string);
        let plan = self.active_plan(&patient, &episode.id)?;
        let high = self.latest_tier(&patient)?.as_deref() == Some("high");
        let now = format_instant(now_micros());
        self.as_server(|u| {
            for (code, description, due) in follow_up_plan(at, high) {
                let body = follow_up_task(
                    code,
                    description,
                    &format_instant(due),
                    &format!("Patient/{patient}"),
                    &format!("Encounter/{encounter_id}"),
                    plan.as_deref(),
                    owner.as_deref(),
                    &now,
                );
                u.apply("Task", Change::Create { body })?;
            }
            Ok(())
        })
    }

    /// The patient's active CarePlan of the episode (or any active one), as a reference.
    fn active_plan(&mut self, patient: &str, episode: &str) -> ApiResult<Option<String>> {
        let plans = matching(
            self.conn,
            &Everything,
            "CarePlan",
            &format!("subject=Patient/{patient}&status=active"),
        )?;
        let of_episode = plans
            .iter()
            .find(|p| crate::care::supported_by(&p.content, "EpisodeOfCare", episode));
        Ok(of_episode
            .or(plans.first())
            .map(|p| format!("CarePlan/{}", p.id)))
    }

    /// The qualitative risk of the patient's current RiskAssessment (`high`, …).
    fn latest_tier(&mut self, patient: &str) -> ApiResult<Option<String>> {
        Ok(
            super::stratify::current_assessment(self.conn, &Everything, patient)?
                .and_then(|r| crate::care::tier_of(&r.content).map(str::to_string)),
        )
    }
}
