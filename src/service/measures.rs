//! `GET /fhir/$icm-metrics`: the program's outcome measures as R4 MeasureReports. The facts
//! come from the search index through one store entry point (`store::search::facts`) with the
//! request's context, so every count is of what the caller may see; the definitions are pure
//! functions in care::measures.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::context::RequestContext;
use super::read::param;
use crate::care::assessment::{EXPERIENCE, SATISFACTION_TOTAL};
use crate::care::measures::{
    self as m, day_of, end_day, start_day, Day, Episode, Facts, Frames, MeasureId, Period, Spans,
    Stay, StayClass, Subject, TaskFact,
};
use crate::care::risk::{chronic_code_patterns, METHOD_CODE, METHOD_SYSTEM};
use crate::care::{PROGRAM, WORKFLOW};
use crate::error::{ApiError, ApiResult};
use crate::fhir::bundle::bundle;
use crate::fhir::datetime::{format_instant, now_micros};
use crate::fhir::reference::local_target;
use crate::fhir::resource::check_id;
use crate::fhir::search::values::date_range;
use crate::store::lookup::read_current;
use crate::store::search::facts::{
    facts, CodeMatch, Cond, Fact, FactQuery, Linked, SystemMatch, TokenMatch,
};
use crate::store::{DbConn, Store};

const LOINC: &str = "http://loinc.org";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const DISPOSITION: &str = "http://terminology.hl7.org/CodeSystem/discharge-disposition";
const RISK_PROBABILITY: &str = "http://terminology.hl7.org/CodeSystem/risk-probability";
const DAY_MICROS: i64 = 86_400_000_000;
/// Every parameter the operation takes.
const PARAMS: &[&str] = &[
    "period-start",
    "period-end",
    "care-manager",
    "organization",
    "subject",
    "compare",
    "measure",
    "_format",
    "_pretty",
];

/// What a request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRequest {
    pub period: Period,
    pub care_manager: Option<(String, String)>,
    pub organization: Option<String>,
    pub subject: Option<String>,
    pub pre_post: bool,
    pub measures: Vec<MeasureId>,
}

fn bad(name: &str, msg: String) -> ApiError {
    ApiError::invalid_at(msg, name)
}

/// The single value of a parameter (400 when repeated).
fn single<'a>(params: &'a [(String, String)], name: &str) -> ApiResult<Option<&'a str>> {
    let n = params.iter().filter(|(k, _)| k == name).count();
    if n > 1 {
        return Err(bad(name, format!("{name} is given {n} times")));
    }
    Ok(param(params, name))
}

/// A `Type/id` reference parameter to one of `types`.
fn reference(
    params: &[(String, String)],
    name: &str,
    types: &[&str],
) -> ApiResult<Option<(String, String)>> {
    let Some(v) = single(params, name)? else {
        return Ok(None);
    };
    match local_target(v) {
        Some((t, id)) if types.contains(&t) && check_id(id).is_ok() => {
            Ok(Some((t.to_string(), id.to_string())))
        }
        _ => Err(bad(
            name,
            format!(
                "{name} '{v}' is not a reference of the form {}/id",
                types.join("/id or ")
            ),
        )),
    }
}

/// Parse the query of `$icm-metrics`.
pub fn parse(params: &[(String, String)]) -> ApiResult<MetricsRequest> {
    if let Some((k, _)) = params.iter().find(|(k, _)| !PARAMS.contains(&k.as_str())) {
        return Err(bad(
            k,
            format!(
                "$icm-metrics does not take the parameter '{k}' (it takes {})",
                PARAMS[..7].join(", ")
            ),
        ));
    }
    let date = |name: &str| -> ApiResult<(i64, i64)> {
        let v = single(params, name)?
            .ok_or_else(|| bad(name, format!("{name} is required (a FHIR date)")))?;
        date_range(v).ok_or_else(|| bad(name, format!("{name} '{v}' is not a FHIR date")))
    };
    let (start, _) = date("period-start")?;
    let (_, end) = date("period-end")?;
    let period = Period {
        first: day_of(start),
        last: day_of(end - 1),
    };
    if period.first > period.last {
        return Err(bad(
            "period-start",
            "period-start is after period-end".into(),
        ));
    }
    let care_manager = reference(
        params,
        "care-manager",
        &["Practitioner", "PractitionerRole"],
    )?;
    let organization = reference(params, "organization", &["Organization"])?.map(|(_, id)| id);
    let subject = reference(params, "subject", &["Patient"])?.map(|(_, id)| id);
    let pre_post = match single(params, "compare")? {
        None => false,
        Some("pre-post") => true,
        Some(v) => {
            return Err(bad(
                "compare",
                format!("compare '{v}' is not supported (only pre-post)"),
            ))
        }
    };
    let mut measures: Vec<MeasureId> = Vec::new();
    for (_, v) in params.iter().filter(|(k, _)| k == "measure") {
        for one in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let id = MeasureId::parse(one).ok_or_else(|| {
                bad(
                    "measure",
                    format!("measure '{one}' is not one of this server's measures"),
                )
            })?;
            if pre_post && !id.pre_post() {
                return Err(bad(
                    "measure",
                    format!("measure '{one}' has no pre/post comparison (only the utilisation and clinical measures do)"),
                ));
            }
            if subject.is_some() && !id.individual() {
                return Err(bad(
                    "measure",
                    format!("measure '{one}' has no individual report"),
                ));
            }
            if !measures.contains(&id) {
                measures.push(id);
            }
        }
    }
    if measures.is_empty() {
        measures = MeasureId::ALL
            .into_iter()
            .filter(|m| (!pre_post || m.pre_post()) && (subject.is_none() || m.individual()))
            .collect();
    }
    measures.sort();
    Ok(MetricsRequest {
        period,
        care_manager,
        organization,
        subject,
        pre_post,
        measures,
    })
}

// ---- fact queries

fn token(param: &str, any: Vec<TokenMatch>) -> Cond {
    Cond::Token {
        param: param.into(),
        any,
    }
}

fn codes(list: &[&str]) -> Vec<TokenMatch> {
    list.iter().map(|c| TokenMatch::code(c)).collect()
}

fn overlaps(param: &str, (first, last): (Day, Day)) -> Cond {
    Cond::Overlaps {
        param: param.into(),
        low: first.saturating_mul(DAY_MICROS),
        high: (last + 1).saturating_mul(DAY_MICROS),
    }
}

/// Statuses of an Observation that count: a result.
const RESULT_STATUSES: &[&str] = &["final", "amended", "corrected"];

// ---- fact kinds: what the measures read of each resource, derived when it is written
// (store::search::facts); the readers below add the request's period and population.

/// An enrollment: EpisodeOfCare of an ICM program, active, onhold or finished.
fn episode_kind() -> FactQuery {
    FactQuery {
        kind: Some("episode"),
        ty: "EpisodeOfCare".into(),
        patient_param: "patient".into(),
        conds: vec![
            token(
                "type",
                vec![TokenMatch {
                    system: SystemMatch::Is(PROGRAM.into()),
                    code: CodeMatch::Any,
                }],
            ),
            token("status", codes(&["active", "onhold", "finished"])),
        ],
        dates: vec!["date".into()],
        reference: Some("care-manager".into()),
        linked: Some(Linked {
            ref_param: "incoming-referral".into(),
            target_type: "ServiceRequest".into(),
            date_param: "authored".into(),
            kind: Some("referral"),
        }),
        ..FactQuery::default()
    }
}

/// An inpatient stay or emergency visit.
fn stay_kind() -> FactQuery {
    let classes = ["IMP", "ACUTE", "NONAC", "EMER"]
        .iter()
        .map(|c| TokenMatch {
            system: SystemMatch::IsOrAbsent(ACT_CODE.into()),
            code: CodeMatch::Is((*c).into()),
        })
        .collect();
    FactQuery {
        kind: Some("stay"),
        ty: "Encounter".into(),
        patient_param: "patient".into(),
        conds: vec![
            token("class", classes),
            token(
                "status",
                codes(&["arrived", "triaged", "in-progress", "onleave", "finished"]),
            ),
        ],
        dates: vec!["date".into()],
        tokens: vec!["class".into(), "status".into()],
        flags: vec![token(
            "discharge-disposition",
            m::EXCLUDED_DISPOSITIONS
                .iter()
                .map(|c| TokenMatch {
                    system: SystemMatch::IsOrAbsent(DISPOSITION.into()),
                    code: CodeMatch::Is((*c).into()),
                })
                .collect(),
        )],
        ..FactQuery::default()
    }
}

/// An active Condition of a chronic-condition group (`diabetes`, `hypertension`).
fn condition_kind(group: &'static str) -> FactQuery {
    let any = chronic_code_patterns(group)
        .into_iter()
        .map(|(system, code, prefix)| TokenMatch {
            system: SystemMatch::Is(system.into()),
            code: if prefix {
                CodeMatch::Prefix(code)
            } else {
                CodeMatch::Is(code)
            },
        })
        .collect();
    let all = vec![TokenMatch {
        system: SystemMatch::Any,
        code: CodeMatch::Any,
    }];
    FactQuery {
        kind: Some(group),
        without_id: true,
        ty: "Condition".into(),
        patient_param: "patient".into(),
        conds: vec![
            token("code", any),
            Cond::Any(vec![
                Cond::Not(Box::new(token("clinical-status", all))),
                token(
                    "clinical-status",
                    codes(&["active", "recurrence", "relapse"]),
                ),
            ]),
            Cond::Not(Box::new(token(
                "verification-status",
                codes(&["refuted", "entered-in-error"]),
            ))),
        ],
        ..FactQuery::default()
    }
}

/// A deceased patient, with the date of death when recorded.
fn death_kind() -> FactQuery {
    FactQuery {
        kind: Some("death"),
        without_id: true,
        ty: "Patient".into(),
        conds: vec![token("deceased", codes(&["true"]))],
        dates: vec!["death-date".into()],
        ..FactQuery::default()
    }
}

/// A dated quantity of a resulted Observation with `code` (HbA1c results, satisfaction totals).
fn observation_kind(kind: &'static str, code: TokenMatch) -> FactQuery {
    FactQuery {
        kind: Some(kind),
        without_id: true,
        ty: "Observation".into(),
        patient_param: "patient".into(),
        conds: vec![
            token("code", vec![code]),
            token("status", codes(RESULT_STATUSES)),
        ],
        dates: vec!["date".into()],
        quantity: Some("value-quantity".into()),
        ..FactQuery::default()
    }
}

fn hba1c_kind() -> FactQuery {
    observation_kind("hba1c", TokenMatch::exact(LOINC, m::HBA1C_LOINC))
}

fn satisfaction_kind() -> FactQuery {
    observation_kind(
        "satisfaction",
        TokenMatch::exact(EXPERIENCE, SATISFACTION_TOTAL),
    )
}

/// A systolic or diastolic value, alone or as a component (one fact per value).
fn blood_pressure_kind() -> FactQuery {
    let bp = vec![
        TokenMatch::exact(LOINC, m::SYSTOLIC_LOINC),
        TokenMatch::exact(LOINC, m::DIASTOLIC_LOINC),
    ];
    FactQuery {
        kind: Some("blood-pressure"),
        without_id: true,
        ty: "Observation".into(),
        patient_param: "patient".into(),
        conds: vec![
            token("combo-code", bp.clone()),
            token("status", codes(RESULT_STATUSES)),
        ],
        dates: vec!["date".into()],
        pairs: Some(("combo-code-value-quantity".into(), bp)),
        ..FactQuery::default()
    }
}

/// A Task of the given workflow codes (any Task with a due date when `codes` is empty): its
/// dates are (due when `due`,) period and last modification, and its status.
fn task_kind(kind: &'static str, conds: Vec<Cond>, due: bool, linked: Option<Linked>) -> FactQuery {
    let mut dates = Vec::new();
    if due {
        dates.push("due".to_string());
    }
    dates.extend(["period".to_string(), "modified".to_string()]);
    FactQuery {
        kind: Some(kind),
        without_id: true,
        ty: "Task".into(),
        patient_param: "patient".into(),
        conds,
        dates,
        tokens: vec!["status".into()],
        linked,
        ..FactQuery::default()
    }
}

/// A transition follow-up Task, with the date of the Encounter it follows.
fn follow_up_kind() -> FactQuery {
    task_kind(
        "follow-up",
        vec![token(
            "code",
            vec![TokenMatch::exact(WORKFLOW, "transition-follow-up")],
        )],
        false,
        Some(Linked {
            ref_param: "focus".into(),
            target_type: "Encounter".into(),
            date_param: "date".into(),
            kind: Some("encounter"),
        }),
    )
}

/// A Task with a due date.
fn due_task_kind() -> FactQuery {
    task_kind("task-due", vec![overlaps_any("due")], true, None)
}

/// A completed outreach or follow-up Task: a contact.
fn contact_task_kind() -> FactQuery {
    task_kind(
        "contact-task",
        vec![
            token(
                "code",
                vec![
                    TokenMatch::exact(WORKFLOW, "outreach"),
                    TokenMatch::exact(WORKFLOW, "transition-follow-up"),
                ],
            ),
            token("status", codes(&["completed"])),
        ],
        false,
        None,
    )
}

/// A program RiskAssessment, whether high risk.
fn risk_kind() -> FactQuery {
    FactQuery {
        kind: Some("risk"),
        without_id: true,
        ty: "RiskAssessment".into(),
        patient_param: "patient".into(),
        // R4 has no `status` search parameter on RiskAssessment: every one of the method
        // counts (the program writes them final, and amended once superseded).
        conds: vec![token(
            "method",
            vec![TokenMatch::exact(METHOD_SYSTEM, METHOD_CODE)],
        )],
        dates: vec!["date".into()],
        flags: vec![token(
            "risk",
            vec![TokenMatch {
                system: SystemMatch::IsOrAbsent(RISK_PROBABILITY.into()),
                code: CodeMatch::Is("high".into()),
            }],
        )],
        ..FactQuery::default()
    }
}

/// An encounter that took place (a contact).
fn contact_encounter_kind() -> FactQuery {
    FactQuery {
        kind: Some("contact-encounter"),
        without_id: true,
        ty: "Encounter".into(),
        patient_param: "patient".into(),
        conds: vec![token(
            "status",
            codes(&["in-progress", "onleave", "finished"]),
        )],
        dates: vec!["date".into()],
        ..FactQuery::default()
    }
}

/// A communication sent (a contact).
fn communication_kind() -> FactQuery {
    FactQuery {
        kind: Some("contact-communication"),
        without_id: true,
        ty: "Communication".into(),
        patient_param: "patient".into(),
        conds: vec![token("status", codes(&["completed"]))],
        dates: vec!["sent".into()],
        ..FactQuery::default()
    }
}

/// An active claim, with its total.
fn claim_kind() -> FactQuery {
    FactQuery {
        kind: Some("claim"),
        without_id: true,
        ty: "Claim".into(),
        patient_param: "patient".into(),
        conds: vec![token("status", codes(&["active"]))],
        dates: vec!["created".into()],
        quantity: Some("total".into()),
        ..FactQuery::default()
    }
}

/// The date a ServiceRequest was authored (an enrollment's referral links to it).
fn referral_kind() -> FactQuery {
    FactQuery {
        kind: Some("referral"),
        ty: "ServiceRequest".into(),
        dates: vec!["authored".into()],
        ..FactQuery::default()
    }
}

/// The period of any Encounter (a follow-up Task links to the one it follows).
fn encounter_kind() -> FactQuery {
    FactQuery {
        kind: Some("encounter"),
        ty: "Encounter".into(),
        dates: vec!["date".into()],
        ..FactQuery::default()
    }
}

/// Every fact kind the measures read: installed at start (`store::search::facts::install`),
/// so each write stores the facts of its resource.
pub fn fact_kinds() -> Vec<FactQuery> {
    vec![
        episode_kind(),
        stay_kind(),
        condition_kind("diabetes"),
        condition_kind("hypertension"),
        death_kind(),
        hba1c_kind(),
        satisfaction_kind(),
        blood_pressure_kind(),
        follow_up_kind(),
        due_task_kind(),
        contact_task_kind(),
        risk_kind(),
        contact_encounter_kind(),
        communication_kind(),
        claim_kind(),
        referral_kind(),
        encounter_kind(),
    ]
}

/// The enrollments a request counts: the kind, narrowed to its care manager, organization or
/// patient.
fn episode_query(r: &MetricsRequest) -> FactQuery {
    let mut q = episode_kind();
    if let Some((t, id)) = &r.care_manager {
        q.filters.push(Cond::Ref {
            param: "care-manager".into(),
            target_type: t.clone(),
            ids: vec![id.clone()],
        });
    }
    if let Some(o) = &r.organization {
        q.filters.push(Cond::Ref {
            param: "organization".into(),
            target_type: "Organization".into(),
            ids: vec![o.clone()],
        });
    }
    q.patients = r.subject.clone().map(|s| vec![s]);
    q
}

/// Install [`fact_kinds`] for this process (idempotent): every write from now on stores the
/// facts of its resource, and reports read them. Called before a store is migrated (server
/// state, each command), so a definition change is caught by the rebuild at start.
pub fn install_fact_kinds() {
    crate::store::search::facts::install(fact_kinds());
}

/// Some row of date parameter `param` (any date).
fn overlaps_any(param: &str) -> Cond {
    Cond::Overlaps {
        param: param.into(),
        low: i64::MIN,
        high: i64::MAX,
    }
}

/// `kind` limited to the days `days` of its first date.
fn within(mut kind: FactQuery, days: (Day, Day)) -> FactQuery {
    let first = kind.dates[0].clone();
    kind.filters.push(overlaps(&first, days));
    kind
}

/// [`within`], for a reader that counts a fact on the day its first date begins: stored facts
/// are also narrowed to those beginning on `days` (one range of the facts' window index).
fn beginning(kind: FactQuery, days: (Day, Day)) -> FactQuery {
    let mut kind = within(kind, days);
    kind.narrow.begins = Some((
        days.0.saturating_mul(DAY_MICROS),
        (days.1 + 1).saturating_mul(DAY_MICROS),
    ));
    kind
}

/// `kind` narrowed to the patients with a fact of kind `has` (a clinical result read only for
/// the patients with the condition it measures).
fn of_patients_with(mut kind: FactQuery, has: &'static str) -> FactQuery {
    kind.narrow.patient_has = Some(has);
    kind
}

struct Reader<'a> {
    conn: &'a mut DbConn,
    ctx: &'a RequestContext,
    /// Only these patients (a narrowed population), else every visible one.
    patients: Option<Vec<String>>,
}

impl Reader<'_> {
    fn run(&mut self, mut q: FactQuery) -> ApiResult<Vec<Fact>> {
        if q.patients.is_none() {
            q.patients = self.patients.clone();
        }
        let started = std::time::Instant::now();
        let out = facts(self.conn, self.ctx, &q)?;
        log::debug!(
            "$icm-metrics: {} {:?} facts in {:?}",
            out.len(),
            q.kind,
            started.elapsed()
        );
        Ok(out)
    }

    /// Enrollments.
    fn episodes(&mut self, r: &MetricsRequest) -> ApiResult<Vec<Episode>> {
        let mut q = episode_query(r);
        // The referral dates are read with the other facts (`referrals`).
        q.linked = None;
        Ok(self
            .run(q)?
            .into_iter()
            .map(|f| {
                let (low, high) = f.dates[0].unwrap_or((i64::MIN, i64::MAX));
                Episode {
                    start: start_day(low),
                    end: end_day(high),
                    care_manager: f.reference,
                    referral: None,
                    id: f.id,
                    patient: f.patient,
                }
            })
            .collect())
    }

    /// The day each enrollment starting in the period (the only ones the measure reads it for)
    /// was referred: the day its referral was authored, by enrollment id.
    fn referrals(&mut self, r: &MetricsRequest) -> ApiResult<BTreeMap<String, Day>> {
        Ok(self
            .run(beginning(episode_query(r), (r.period.first, r.period.last)))?
            .into_iter()
            .filter_map(|f| Some((f.id, f.linked.and_then(|(l, _)| start_day(l))?)))
            .collect())
    }

    /// Inpatient stays and emergency visits overlapping `days`.
    fn stays(&mut self, days: (Day, Day)) -> ApiResult<Vec<Stay>> {
        Ok(self
            .run(within(stay_kind(), days))?
            .into_iter()
            .filter_map(|f| {
                let class = match f.tokens[0].as_deref()? {
                    "EMER" => StayClass::Emergency,
                    _ => StayClass::Inpatient,
                };
                let (low, high) = f.dates[0]?;
                Some(Stay {
                    id: f.id,
                    patient: f.patient,
                    class,
                    status: f.tokens[1].clone().unwrap_or_default(),
                    admit: start_day(low),
                    discharge: end_day(high),
                    excluded: f.flags[0],
                })
            })
            .collect())
    }

    /// Patients with an active Condition of a chronic-condition group.
    fn with_condition(&mut self, group: &'static str) -> ApiResult<BTreeSet<String>> {
        Ok(self
            .run(condition_kind(group))?
            .into_iter()
            .map(|f| f.patient)
            .collect())
    }

    /// Deceased patients, with the day of death when recorded.
    fn deaths(&mut self) -> ApiResult<std::collections::BTreeMap<String, Option<Day>>> {
        Ok(self
            .run(death_kind())?
            .into_iter()
            .map(|f| (f.patient, f.dates[0].and_then(|(l, _)| start_day(l))))
            .collect())
    }

    /// Dated quantities of Observations of `kind` on `days`.
    fn observations(&mut self, kind: FactQuery, days: (Day, Day)) -> ApiResult<Vec<m::Value1>> {
        Ok(self
            .run(beginning(kind, days))?
            .into_iter()
            .filter_map(|f| {
                let (low, _) = f.dates[0]?;
                start_day(low)?;
                Some(m::Value1 {
                    patient: f.patient,
                    at: low,
                    value: f.quantity?,
                })
            })
            .collect())
    }

    /// Systolic and diastolic values, alone or as components, of the patients with a
    /// hypertension fact (the only ones the measure reads them for).
    fn blood_pressure(&mut self, days: (Day, Day)) -> ApiResult<Vec<m::BpValue>> {
        let kind = of_patients_with(blood_pressure_kind(), "hypertension");
        Ok(self
            .run(beginning(kind, days))?
            .into_iter()
            .filter_map(|f| {
                let (low, _) = f.dates[0]?;
                let (code, value) = f.pair?;
                Some(m::BpValue {
                    patient: f.patient,
                    day: start_day(low)?,
                    systolic: code == m::SYSTOLIC_LOINC,
                    value,
                })
            })
            .collect())
    }

    /// Tasks of `kind`: their status and completion day, and the day they are counted on (the
    /// due day of a kind whose first date is `due`, else the day the linked resource ended).
    fn tasks(&mut self, kind: FactQuery) -> ApiResult<Vec<TaskFact>> {
        let due = kind.dates.first().is_some_and(|d| d == "due");
        let o = usize::from(due);
        Ok(self
            .run(kind)?
            .into_iter()
            .map(|f| {
                let done = f.dates[o]
                    .and_then(|(_, h)| end_day(h))
                    .or_else(|| f.dates[o + 1].and_then(|(l, _)| start_day(l)));
                let day = if due {
                    f.dates[0].and_then(|(l, _)| start_day(l))
                } else {
                    f.linked.and_then(|(_, h)| end_day(h))
                };
                TaskFact {
                    id: f.id,
                    patient: f.patient,
                    status: f.tokens[0].clone().unwrap_or_default(),
                    done,
                    day,
                }
            })
            .collect())
    }

    /// The program's RiskAssessments on or before `last` that decide a patient's tier on
    /// that day: stored facts are narrowed to each patient's latest, when it is high (the
    /// measure reads them for the high-risk patients only: `m::high_risk_patients`).
    fn risks(&mut self, last: Day) -> ApiResult<Vec<m::RiskFact>> {
        let mut kind = risk_kind();
        kind.narrow.begins = Some((i64::MIN + 1, (last + 1).saturating_mul(DAY_MICROS)));
        kind.narrow.latest = true;
        kind.narrow.flagged = true;
        Ok(self
            .run(kind)?
            .into_iter()
            .filter_map(|f| {
                let (low, _) = f.dates[0]?;
                start_day(low).filter(|d| *d <= last)?;
                Some(m::RiskFact {
                    patient: f.patient,
                    at: low,
                    high: f.flags[0],
                })
            })
            .collect())
    }

    /// Contacts of `patients` on the days `days`: encounters that started, communications sent,
    /// outreach and follow-up Tasks completed.
    fn contacts(
        &mut self,
        patients: Vec<String>,
        days: (Day, Day),
    ) -> ApiResult<Vec<(String, Day)>> {
        let saved = self.patients.replace(patients);
        let within_days = |d: Option<Day>| d.filter(|d| (days.0..=days.1).contains(d));
        let mut out = Vec::new();
        for kind in [contact_encounter_kind(), communication_kind()] {
            for f in self.run(beginning(kind, days))? {
                if let Some(d) = within_days(f.dates[0].and_then(|(l, _)| start_day(l))) {
                    out.push((f.patient, d));
                }
            }
        }
        for t in self.tasks(contact_task_kind())? {
            if let Some(d) = within_days(t.done) {
                out.push((t.patient, d));
            }
        }
        self.patients = saved;
        Ok(out)
    }

    /// Active claims created on `days`: (patient, day, total in hundredths).
    fn claims(&mut self, days: (Day, Day)) -> ApiResult<Vec<m::ClaimFact>> {
        Ok(self
            .run(beginning(claim_kind(), days))?
            .into_iter()
            .filter_map(|f| {
                let (low, _) = f.dates[0]?;
                Some(m::ClaimFact {
                    patient: f.patient,
                    day: start_day(low)?,
                    cents: f.quantity.map_or(0, m::cents),
                })
            })
            .collect())
    }
}

/// The days every frame counts events on (from the first window's start to the last counted
/// day). Only stays are read beyond them ([`with_look_ahead`]).
fn counted_days(frames: &[&Frames]) -> Option<(Day, Day)> {
    let first = frames
        .iter()
        .flat_map(|f| f.values())
        .map(|f| f.window.0)
        .min()?;
    let last = frames
        .iter()
        .flat_map(|f| f.values())
        .map(|f| f.spans.last().map_or(f.window.1, |s| s.1.min(f.window.1)))
        .max()?;
    Some((first, last))
}

/// `days` widened by the readmission look-ahead: the stays a readmission may be.
fn with_look_ahead(days: (Day, Day)) -> (Day, Day) {
    (days.0, days.1.saturating_add(m::READMISSION_DAYS + 1))
}

/// One read of a report's facts. The reads are independent of each other, except that the
/// high-risk contacts need the enrollment spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    BloodPressure,
    DueTasks,
    FollowUps,
    Hba1c,
    Stays,
    HighRisk,
    Referrals,
    Claims,
    Satisfaction,
    Deaths,
}

/// What a [`Read`] found.
enum Got {
    BloodPressure(BTreeSet<String>, Vec<m::BpValue>),
    DueTasks(Vec<TaskFact>),
    FollowUps(Vec<TaskFact>),
    Hba1c(BTreeSet<String>, Vec<m::Value1>),
    Stays(Vec<Stay>),
    HighRisk(Vec<m::RiskFact>, Vec<(String, Day)>),
    Referrals(BTreeMap<String, Day>),
    Claims(Vec<m::ClaimFact>),
    Satisfaction(Vec<m::Value1>),
    Deaths(BTreeMap<String, Option<Day>>),
}

/// The reads the requested measures need, the longest first (at 100,000 patients), so that
/// readers working through them together finish at about the same time, and the high-risk
/// contacts late, when the enrollment spans they need are known.
fn reads_for(r: &MetricsRequest) -> Vec<Read> {
    use MeasureId as M;
    let wants = |x: MeasureId| r.measures.contains(&x);
    [
        (Read::BloodPressure, wants(M::BloodPressure)),
        (Read::DueTasks, wants(M::TasksOnTime)),
        (Read::FollowUps, wants(M::FollowUp)),
        (Read::Hba1c, wants(M::Hba1c)),
        (
            Read::Stays,
            wants(M::Readmission) || wants(M::EdVisits) || wants(M::Cost),
        ),
        (Read::HighRisk, wants(M::HighRiskContact)),
        (Read::Referrals, wants(M::ReferralToEnrollment)),
        (Read::Claims, wants(M::Cost)),
        (Read::Satisfaction, wants(M::Experience)),
        (
            Read::Deaths,
            wants(M::Hba1c) || wants(M::BloodPressure) || wants(M::HighRiskContact),
        ),
    ]
    .into_iter()
    .filter_map(|(read, wanted)| wanted.then_some(read))
    .collect()
}

impl Reader<'_> {
    /// Do `what` for the facts counted on `days` (and the stays after them a readmission may
    /// be; the high-risk contacts wait for `spans`).
    fn read(
        &mut self,
        what: Read,
        r: &MetricsRequest,
        days: (Day, Day),
        spans: &Later<Spans>,
    ) -> ApiResult<Got> {
        Ok(match what {
            Read::BloodPressure => Got::BloodPressure(
                self.with_condition("hypertension")?,
                self.blood_pressure(days)?,
            ),
            Read::DueTasks => Got::DueTasks(self.tasks(beginning(due_task_kind(), days))?),
            Read::FollowUps => {
                // Counted on the discharge day: only Tasks whose Encounter ended on `days`.
                let mut kind = follow_up_kind();
                kind.narrow.linked_ends = Some((
                    days.0.saturating_mul(DAY_MICROS),
                    (days.1 + 1).saturating_mul(DAY_MICROS),
                ));
                Got::FollowUps(self.tasks(kind)?)
            }
            Read::Hba1c => Got::Hba1c(
                self.with_condition("diabetes")?,
                self.observations(of_patients_with(hba1c_kind(), "diabetes"), days)?,
            ),
            Read::Stays => Got::Stays(self.stays(with_look_ahead(days))?),
            Read::HighRisk => {
                let risks = self.risks(r.period.last)?;
                let spans = spans
                    .wait()
                    .ok_or_else(|| ApiError::internal("the enrollments were not read"))?;
                let high: Vec<String> = m::high_risk_patients(spans, r.period, &risks)
                    .into_iter()
                    .collect();
                let contacts = if high.is_empty() {
                    Vec::new()
                } else {
                    let from = r.period.last - (m::CONTACT_DAYS - 1);
                    self.contacts(high, (from, r.period.last))?
                };
                Got::HighRisk(risks, contacts)
            }
            Read::Referrals => Got::Referrals(self.referrals(r)?),
            Read::Claims => Got::Claims(self.claims(days)?),
            Read::Satisfaction => Got::Satisfaction(self.observations(satisfaction_kind(), days)?),
            Read::Deaths => Got::Deaths(self.deaths()?),
        })
    }
}

/// A value one thread sets and others wait for (`None`: it will never come).
struct Later<T> {
    value: std::sync::OnceLock<Option<T>>,
    lock: std::sync::Mutex<()>,
    set: std::sync::Condvar,
}

impl<T> Later<T> {
    fn new() -> Self {
        Later {
            value: std::sync::OnceLock::new(),
            lock: std::sync::Mutex::new(()),
            set: std::sync::Condvar::new(),
        }
    }

    fn set(&self, value: Option<T>) {
        let _ = self.value.set(value);
        // Taken after the value is set: a waiter that saw no value holds the lock until it
        // waits, so this notification cannot come between its look and its wait.
        let _held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.set.notify_all();
    }

    fn wait(&self) -> Option<&T> {
        let mut held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(v) = self.value.get() {
                return v.as_ref();
            }
            held = self.set.wait(held).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn into_inner(self) -> Option<T> {
        self.value.into_inner().flatten()
    }
}

/// Sets its [`Later`] to `None` when dropped, if nothing set it before: a thread that fails
/// (or panics) before it sets the value never leaves another waiting.
struct NoneUnlessSet<'a, T>(&'a Later<T>);

impl<T> Drop for NoneUnlessSet<'_, T> {
    fn drop(&mut self) {
        if self.0.value.get().is_none() {
            self.0.set(None);
        }
    }
}

/// Do `reads` with `main` and the `others` at the same time: each reader takes the next read
/// of the list when it is done with one (the database works on one reader's statement while
/// the server decodes another's rows). `first` runs on `main` before it joins in. The first
/// error stops the readers and is returned.
fn read_all(
    main: &mut Reader,
    others: Vec<Reader>,
    reads: &[Read],
    first: impl FnOnce(&mut Reader) -> ApiResult<()>,
    work: impl Fn(&mut Reader, Read) -> ApiResult<Got> + Sync,
) -> ApiResult<Vec<Got>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let drain = |rd: &mut Reader| -> ApiResult<Vec<(usize, Got)>> {
        let mut out = Vec::new();
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(what) = reads.get(i) else { break };
            match work(rd, *what) {
                Ok(g) => out.push((i, g)),
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Ok(out)
    };
    let results: Vec<ApiResult<Vec<(usize, Got)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = others
            .into_iter()
            .map(|mut rd| scope.spawn(move || drain(&mut rd)))
            .collect();
        let mine = first(main).and_then(|()| drain(main));
        if mine.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        let mut all = vec![mine];
        all.extend(handles.into_iter().map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(ApiError::internal("a measure reader failed")))
        }));
        all
    });
    let mut got = Vec::new();
    for r in results {
        got.extend(r?);
    }
    got.sort_by_key(|(i, _)| *i);
    Ok(got.into_iter().map(|(_, g)| g).collect())
}

/// The facts of the reads in `got`, with the enrollments.
fn assemble(mut episodes: Vec<Episode>, got: Vec<Got>) -> Facts {
    let mut f = Facts::default();
    for g in got {
        match g {
            Got::BloodPressure(who, v) => (f.hypertensive, f.bp) = (who, v),
            Got::DueTasks(v) => f.due_tasks = v,
            Got::FollowUps(v) => f.follow_ups = v,
            Got::Hba1c(who, v) => (f.diabetic, f.hba1c) = (who, v),
            Got::Stays(v) => f.stays = v,
            Got::HighRisk(risks, contacts) => (f.risks, f.contacts) = (risks, contacts),
            Got::Referrals(by_id) => {
                for e in &mut episodes {
                    e.referral = by_id.get(&e.id).copied();
                }
            }
            Got::Claims(v) => f.claims = v,
            Got::Satisfaction(v) => f.satisfaction = v,
            Got::Deaths(v) => f.deaths = v,
        }
    }
    f.episodes = episodes;
    f
}

/// Readers on more connections, for a population report: two, when the pool has them at once
/// (three readers were ahead of two in 12 of 15 interleaved rounds; see the README's figures).
const OTHER_READERS: usize = 2;

/// `f` of every job, in order: the second half on another thread (the measures of a report
/// are independent; a population's take a few hundred milliseconds each).
fn on_two_threads<J: Sync, T: Send>(jobs: &[J], f: impl Fn(&J) -> T + Sync) -> Vec<T> {
    if jobs.len() < 2 {
        return jobs.iter().map(&f).collect();
    }
    let (a, b) = jobs.split_at(jobs.len() / 2);
    std::thread::scope(|scope| {
        let second = scope.spawn(|| b.iter().map(&f).collect::<Vec<T>>());
        let mut out: Vec<T> = a.iter().map(&f).collect();
        out.extend(
            second
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p)),
        );
        out
    })
}

/// `GET /fhir/$icm-metrics`: a `collection` Bundle of MeasureReports. A population report
/// also takes other connections from `store` when they are to be had at once, to read its facts
/// on several at the same time (a narrowed one reads few facts: one connection is enough). A
/// one-period population report starts on its facts while the enrollments are read: it reads
/// the facts of its whole period, a superset of the enrolled days the enrollments narrow it to.
pub fn icm_metrics(
    conn: &mut DbConn,
    store: &Store,
    ctx: &RequestContext,
    params: &[(String, String)],
) -> ApiResult<Value> {
    let r = parse(params)?;
    if let Some(p) = &r.subject {
        match read_current(conn, ctx, "Patient", p)? {
            None => return Err(ApiError::NotFound(format!("Patient/{p} is not known"))),
            Some(row) if row.deleted => {
                return Err(ApiError::Gone(format!("Patient/{p} was deleted")))
            }
            Some(_) => {}
        }
    }
    let narrowed = r.care_manager.is_some() || r.organization.is_some() || r.subject.is_some();
    let mut rd = Reader {
        conn,
        ctx,
        patients: None,
    };
    let started = std::time::Instant::now();
    let reads = reads_for(&r);
    let mut pooled: Vec<_> = if narrowed {
        Vec::new()
    } else {
        (0..OTHER_READERS)
            .map_while(|_| store.try_read_conn())
            .collect()
    };
    let others: Vec<Reader> = pooled
        .iter_mut()
        .map(|c| Reader {
            conn: c,
            ctx,
            patients: None,
        })
        .collect();
    let now = now_micros();
    // The frames the reports count: the period's, or pre and post.
    let frames_of = |episodes: &[Episode], spans: &Spans| -> (Frames, Option<Frames>) {
        if r.pre_post {
            let (pre, post) = m::pre_post_frames(episodes, spans, r.period, day_of(now));
            (pre, Some(post))
        } else {
            (m::period_frames(spans, r.period), None)
        }
    };
    let spans = Later::new();
    let work = |rd: &mut Reader, what: Read, days: (Day, Day)| rd.read(what, &r, days, &spans);
    let (episodes, got, known) = if narrowed || r.pre_post {
        // The enrollments first: they decide the patients and the days to read.
        let episodes = rd.episodes(&r)?;
        let all = m::enrollment_spans(&episodes);
        let (first, post) = frames_of(&episodes, &all);
        if narrowed {
            rd.patients = Some(first.keys().cloned().collect());
        }
        let days = match &post {
            Some(post) => counted_days(&[&first, post]),
            None => counted_days(&[&first]),
        };
        spans.set(Some(all));
        // Without an event day, only the referral read is left.
        let (reads, days) = match days {
            Some(d) => (reads, d),
            None => (
                reads
                    .into_iter()
                    .filter(|x| *x == Read::Referrals)
                    .collect(),
                (r.period.first, r.period.last),
            ),
        };
        let got = read_all(
            &mut rd,
            others,
            &reads,
            |_| Ok(()),
            |rd, what| work(rd, what, days),
        )?;
        (episodes, got, Some((first, post)))
    } else {
        let days = (r.period.first, r.period.last);
        let mut episodes = Vec::new();
        let got = read_all(
            &mut rd,
            others,
            &reads,
            |rd| {
                let _guard = NoneUnlessSet(&spans);
                episodes = rd.episodes(&r)?;
                spans.set(Some(m::enrollment_spans(&episodes)));
                Ok(())
            },
            |rd, what| work(rd, what, days),
        )?;
        (episodes, got, None)
    };
    let spans = spans.into_inner().unwrap_or_default();
    let facts = assemble(episodes, got);
    let (first, post) = known.unwrap_or_else(|| frames_of(&facts.episodes, &spans));
    log::debug!(
        "$icm-metrics: {} enrollments, facts read at {:?}",
        facts.episodes.len(),
        started.elapsed()
    );
    let stamp = format_instant(now);
    let subject = match &r.subject {
        Some(p) => Subject::Patient(p.clone()),
        None => Subject::Summary,
    };
    let period = (r.period.first, r.period.last);
    let mut entries = Vec::new();
    if let Some(post) = &post {
        let pre = &first;
        let jobs: Vec<(MeasureId, &str, &Frames)> = r
            .measures
            .iter()
            .flat_map(|id| [(*id, "pre", pre), (*id, "post", post)])
            .collect();
        let reports = on_two_threads(&jobs, |(id, window, frames)| {
            let groups = m::compute(*id, &spans, frames, r.period, &facts);
            let span = m::frames_span(frames, period);
            m::measure_report(*id, &groups, &subject, span, Some(window), &stamp)
        });
        entries.extend(reports);
    } else {
        let reports = on_two_threads(&r.measures, |id| {
            let groups = m::compute(*id, &spans, &first, r.period, &facts);
            m::measure_report(*id, &groups, &subject, period, None, &stamp)
        });
        entries.extend(reports);
    }
    log::debug!("$icm-metrics: reports computed at {:?}", started.elapsed());
    if let Some(p) = &r.subject {
        ctx.note("Patient", &json!({"resourceType": "Patient", "id": p}));
    }
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    let link = format!("{}/$icm-metrics?{}", ctx.base, ser.finish());
    let entries = entries
        .into_iter()
        .map(
            |res| json!({"fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()), "resource": res}),
        )
        .collect();
    Ok(bundle("collection", None, &[("self", link)], entries))
}
