//! The program's own operations: enrollment (`Patient/{id}/$enroll`, and `$enroll` at the
//! base for intake of a new patient), disenrollment (`Patient/{id}/$disenroll`). Each is one
//! unit of work — every resource it creates or changes goes through `UnitOfWork::apply`, with
//! the care rules, validation and the caller's access — so a failure half-way leaves nothing.
//! The EpisodeOfCare is the enrollment; the referral is a ServiceRequest with the category
//! `icm-referral` of http://icm-fhir.org/fhir/CodeSystem/icm-workflow.
use serde_json::{json, Value};

use super::context::{outside_access, RequestContext};
use super::search::criteria_ids;
use super::write::{run, Change, UnitOfWork};
use crate::error::{ApiError, ApiResult};
use crate::fhir::bundle::bundle;
use crate::fhir::datetime::{format_instant, now_micros};
use crate::fhir::reference::local_target;
use crate::fhir::resource::etag;
use crate::store::lookup::load_many;
use crate::store::visibility::Everything;
use crate::store::write::WriteResult;
use crate::store::Store;

pub use crate::care::{PROGRAM, WORKFLOW};
/// Disenrollment reasons.
pub const DISENROLLMENT: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-disenrollment-reason";
/// The extension on EpisodeOfCare that records why it was finished.
pub const DISENROLLMENT_EXT: &str =
    "http://icm-fhir.org/fhir/StructureDefinition/disenrollment-reason";
const ROLE: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-care-team-role";
const PROGRAMS: &[&str] = &[
    "chronic-disease",
    "behavioral-health",
    "social-needs",
    "transitions-of-care",
];
const REASONS: &[&str] = &["goals-met", "moved", "declined", "deceased", "transferred"];
/// The assessments of the comprehensive intake (shipped Questionnaires).
const INTAKE: &[(&str, &str)] = &[
    ("icm-intake", "Intake interview"),
    ("icm-phq9", "PHQ-9 depression screen"),
    ("icm-social-needs", "Social needs screen"),
    ("icm-functional-status", "Functional status (ADL/IADL)"),
];

/// A named parameter of a Parameters body.
fn part<'a>(params: &'a Value, name: &str) -> Option<&'a Value> {
    params["parameter"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

fn reference_param<'a>(params: &'a Value, name: &str) -> Option<&'a str> {
    part(params, name)?["valueReference"]["reference"].as_str()
}

fn code_param<'a>(params: &'a Value, name: &str) -> Option<&'a str> {
    let p = part(params, name)?;
    p["valueCode"]
        .as_str()
        .or_else(|| p["valueCoding"]["code"].as_str())
        .or_else(|| p["valueString"].as_str())
}

fn bad_param(name: &str, msg: impl Into<String>) -> ApiError {
    ApiError::invalid_at(msg, format!("Parameters.parameter.where(name='{name}')"))
}

/// What an enrollment asks for.
pub struct Enrollment {
    pub program: String,
    pub care_manager: Option<String>,
    pub referral: Option<String>,
    pub referral_resource: Option<Value>,
    pub patient_resource: Option<Value>,
}

/// Parse a `$enroll` Parameters body.
pub fn parse_enrollment(params: &Value) -> ApiResult<Enrollment> {
    if params["resourceType"] != "Parameters" {
        return Err(ApiError::invalid_at(
            "$enroll takes a Parameters resource",
            "resourceType",
        ));
    }
    let program = code_param(params, "program")
        .unwrap_or("chronic-disease")
        .to_string();
    if !PROGRAMS.contains(&program.as_str()) {
        return Err(bad_param(
            "program",
            format!("program '{program}' is not one of {}", PROGRAMS.join(", ")),
        ));
    }
    let care_manager = reference_param(params, "careManager").map(str::to_string);
    if let Some(cm) = &care_manager {
        if !matches!(
            local_target(cm),
            Some(("Practitioner" | "PractitionerRole", _))
        ) {
            return Err(bad_param(
                "careManager",
                "careManager must reference a Practitioner or PractitionerRole",
            ));
        }
    }
    let referral = reference_param(params, "referral").map(str::to_string);
    let referral_resource = part(params, "referral")
        .and_then(|p| p.get("resource"))
        .cloned();
    if let Some(r) = &referral {
        if !matches!(local_target(r), Some(("ServiceRequest", _))) {
            return Err(bad_param(
                "referral",
                "referral must reference a ServiceRequest",
            ));
        }
    }
    let patient_resource = part(params, "patient")
        .and_then(|p| p.get("resource"))
        .cloned();
    Ok(Enrollment {
        program,
        care_manager,
        referral,
        referral_resource,
        patient_resource,
    })
}

fn created(r: &WriteResult, base: &str) -> Value {
    json!({
        "fullUrl": format!("{base}/{}/{}", r.ty, r.id),
        "resource": r.resource,
        "response": {
            "status": if r.kind == crate::store::write::WriteKind::Created { "201 Created" } else { "200 OK" },
            "location": format!("{}/{}/_history/{}", r.ty, r.id, r.version),
            "etag": etag(r.version),
            "lastModified": format_instant(r.last_updated),
        }
    })
}

/// The current episode of `program` for a patient, if any (as the caller sees it; a hidden one
/// is the plain 403).
fn current_episode(u: &mut UnitOfWork, patient: &str, program: &str) -> ApiResult<Option<Value>> {
    let q = format!(
        "patient=Patient/{patient}&status=planned,waitlist,active,onhold&type={PROGRAM}|{program}"
    );
    let ctx = u.ctx;
    let ids = criteria_ids(u.conn(), ctx, "EpisodeOfCare", &q)?;
    if ids.is_empty() {
        if !criteria_ids(u.conn(), &Everything, "EpisodeOfCare", &q)?.is_empty() {
            return Err(outside_access());
        }
        return Ok(None);
    }
    Ok(load_many(u.conn(), ctx, "EpisodeOfCare", &ids)?
        .into_iter()
        .next()
        .map(|r| r.content))
}

/// Enroll `patient` (already stored and visible) in the unit of work: EpisodeOfCare, CareTeam,
/// draft CarePlan, intake Tasks; the referral marked completed. The written results in order.
fn enroll_in(
    u: &mut UnitOfWork,
    patient: &str,
    e: &Enrollment,
    care_manager: &str,
) -> ApiResult<Vec<WriteResult>> {
    if let Some(ep) = current_episode(u, patient, &e.program)? {
        return Err(ApiError::Conflict(format!(
            "Patient/{patient} is already enrolled in the {} program: EpisodeOfCare/{} ({})",
            e.program,
            ep["id"].as_str().unwrap_or_default(),
            ep["status"].as_str().unwrap_or_default()
        )));
    }
    let now = now_micros();
    let today = format_instant(now);
    let due = format_instant(now + u.ctx.limits.intake_days * 86_400_000_000);
    let subject = json!({"reference": format!("Patient/{patient}")});
    let manager = json!({"reference": care_manager});
    let mut out = Vec::new();
    // The referral: it must concern this patient; enrollment completes it.
    let referral_ref = match (&e.referral, &e.referral_resource) {
        (Some(r), _) => Some(r.clone()),
        (None, Some(body)) => {
            let mut body = body.clone();
            body["subject"] = subject.clone();
            let w = u.apply("ServiceRequest", Change::Create { body })?;
            let r = format!("ServiceRequest/{}", w.id);
            out.push(w);
            Some(r)
        }
        (None, None) => None,
    };
    if let Some(r) = &referral_ref {
        let (_, id) = local_target(r).unwrap_or_default();
        let ctx = u.ctx;
        let mut sr = load_many(u.conn(), ctx, "ServiceRequest", &[id.to_string()])?
            .pop()
            .ok_or_else(|| bad_param("referral", format!("{r} is not known")))?
            .content;
        let about = sr["subject"]["reference"].as_str().and_then(local_target);
        if about != Some(("Patient", patient)) {
            return Err(bad_param(
                "referral",
                format!("{r} is not a referral of Patient/{patient}"),
            ));
        }
        if sr["status"] != "completed" {
            sr["status"] = json!("completed");
            let w = u.apply(
                "ServiceRequest",
                Change::Update {
                    id: id.to_string(),
                    body: sr,
                    if_match: None,
                },
            )?;
            out.push(w);
        }
    }
    let team = u.apply(
        "CareTeam",
        Change::Create {
            body: json!({
                "resourceType": "CareTeam",
                "status": "active",
                "name": format!("ICM {} team", e.program),
                "subject": subject,
                "period": {"start": today},
                "participant": [{
                    "role": [{"coding": [{"system": ROLE, "code": "care-coordinator", "display": "Care coordinator"}]}],
                    "member": manager,
                }],
            }),
        },
    )?;
    let team_ref = format!("CareTeam/{}", team.id);
    let mut episode = json!({
        "resourceType": "EpisodeOfCare",
        "status": "active",
        "type": [{"coding": [{"system": PROGRAM, "code": e.program}]}],
        "patient": subject,
        "period": {"start": today},
        "careManager": manager,
        "team": [{"reference": team_ref}],
    });
    if let Some(r) = &referral_ref {
        episode["referralRequest"] = json!([{"reference": r}]);
    }
    let ep = u.apply("EpisodeOfCare", Change::Create { body: episode })?;
    let plan = u.apply(
        "CarePlan",
        Change::Create {
            body: json!({
                "resourceType": "CarePlan",
                "status": "draft",
                "intent": "plan",
                "title": format!("ICM care plan ({})", e.program),
                "subject": subject,
                "period": {"start": today},
                "careTeam": [{"reference": team_ref}],
                "supportingInfo": [{"reference": format!("EpisodeOfCare/{}", ep.id)}],
            }),
        },
    )?;
    let plan_ref = format!("CarePlan/{}", plan.id);
    out.push(team);
    out.push(ep);
    out.push(plan);
    for (q, title) in INTAKE {
        let t = u.apply(
            "Task",
            Change::Create {
                body: json!({
                    "resourceType": "Task",
                    "status": "requested",
                    "intent": "order",
                    "priority": "routine",
                    "code": {"coding": [{"system": WORKFLOW, "code": "intake-assessment", "display": "Comprehensive assessment"}]},
                    "description": title,
                    "for": subject,
                    "basedOn": [{"reference": plan_ref}],
                    "owner": manager,
                    "authoredOn": today,
                    "restriction": {"period": {"end": due}},
                    "input": [{
                        "type": {"text": "questionnaire"},
                        "valueCanonical": format!("http://icm-fhir.org/fhir/Questionnaire/{q}"),
                    }],
                }),
            },
        )?;
        out.push(t);
    }
    // Stratify at enrollment (the server's own work).
    out.push(u.as_server(|s| s.stratify(patient))?);
    Ok(out)
}

/// Patient/{id}/$stratify: compute the patient's risk now and store it as a RiskAssessment
/// (superseding the previous one); the answer is the new RiskAssessment.
pub fn stratify(store: &Store, ctx: &RequestContext, patient: &str) -> ApiResult<Value> {
    let r = run(store, ctx, |u| {
        let c = u.ctx;
        super::read::read(u.conn(), c, "Patient", patient)?;
        let r = u.as_server(|s| s.stratify(patient))?;
        u.audit_request()?;
        Ok(r)
    })?;
    ctx.mark_audited();
    Ok(r.resource.unwrap_or_default())
}

/// The care manager of an enrollment: the one named, or the caller (a Practitioner token).
fn care_manager_of(ctx: &RequestContext, e: &Enrollment) -> ApiResult<String> {
    if let Some(cm) = &e.care_manager {
        return Ok(cm.clone());
    }
    ctx.principal
        .practitioner_id()
        .map(|p| format!("Practitioner/{p}"))
        .ok_or_else(|| {
            bad_param(
                "careManager",
                "careManager is required unless the caller is a Practitioner",
            )
        })
}

/// Patient/{id}/$enroll: enroll a stored patient the caller may see.
pub fn enroll(
    store: &Store,
    ctx: &RequestContext,
    patient: &str,
    params: &Value,
) -> ApiResult<Value> {
    let e = parse_enrollment(params)?;
    if e.patient_resource.is_some() {
        return Err(bad_param(
            "patient",
            "Patient/{id}/$enroll enrolls the patient in the URL; send 'patient' to $enroll at the base",
        ));
    }
    if e.referral.is_none() && e.referral_resource.is_none() {
        return Err(bad_param(
            "referral",
            "a referral (ServiceRequest) is required",
        ));
    }
    let cm = care_manager_of(ctx, &e)?;
    let written = run(store, ctx, |u| {
        let c = u.ctx;
        super::read::read(u.conn(), c, "Patient", patient)?;
        let w = enroll_in(u, patient, &e, &cm)?;
        u.audit_request()?;
        Ok(w)
    })?;
    ctx.mark_audited();
    Ok(answer(ctx, &written))
}

/// $enroll at the base: intake of a new patient (Patient inline) with its referral in one unit
/// of work. The caller becomes care coordinator unless `careManager` names someone else. An
/// existing patient matched by identifier is enrolled only when the caller may already see it.
pub fn intake(store: &Store, ctx: &RequestContext, params: &Value) -> ApiResult<Value> {
    let e = parse_enrollment(params)?;
    let Some(patient) = e.patient_resource.clone() else {
        return Err(bad_param(
            "patient",
            "$enroll at the base needs the new Patient as 'patient'",
        ));
    };
    if e.referral.is_none() && e.referral_resource.is_none() {
        return Err(bad_param(
            "referral",
            "a referral (ServiceRequest) is required",
        ));
    }
    let cm = care_manager_of(ctx, &e)?;
    // An identifier the caller sent finds an existing record first.
    let identifiers: Vec<String> = patient["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            let v = i["value"].as_str()?;
            Some(match i["system"].as_str() {
                Some(s) => format!("{s}|{v}"),
                None => v.to_string(),
            })
        })
        .collect();
    let new_id = uuid::Uuid::new_v4().to_string();
    // The new patient is inside the caller's boundary for this unit of work only: the care team
    // it creates (with the care manager) is what gives access afterwards.
    let widened = ctx.with_patient(&new_id);
    let written = run(store, &widened, |u| {
        let mut existing = None;
        for ident in &identifiers {
            let q = format!("identifier={}", url_escape(ident));
            let visible = criteria_ids(u.conn(), ctx, "Patient", &q)?;
            if let Some(id) = visible.into_iter().next() {
                existing = Some(id);
                break;
            }
            if !criteria_ids(u.conn(), &Everything, "Patient", &q)?.is_empty() {
                return Err(outside_access());
            }
        }
        let mut w = Vec::new();
        let pid = match existing {
            Some(id) => id,
            None => {
                let mut body = patient.clone();
                body["id"] = json!(new_id);
                let r = u.apply(
                    "Patient",
                    Change::CreateWithId {
                        id: new_id.clone(),
                        body,
                    },
                )?;
                w.push(r);
                new_id.clone()
            }
        };
        w.extend(enroll_in(u, &pid, &e, &cm)?);
        u.audit_request()?;
        Ok(w)
    })?;
    widened.mark_audited();
    ctx.mark_audited();
    Ok(answer(ctx, &written))
}

fn url_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The answer of an enrollment: a transaction-response-like Bundle naming what was written.
fn answer(ctx: &RequestContext, written: &[WriteResult]) -> Value {
    bundle(
        "transaction-response",
        None,
        &[],
        written.iter().map(|r| created(r, &ctx.base)).collect(),
    )
}

/// Patient/{id}/$disenroll: finish the current episode(s) of the program (or of every program
/// when none is named) with the reason; complete (goals met) or revoke the linked CarePlans —
/// whose open Tasks the care rules then cancel — and set the episode's care teams inactive.
pub fn disenroll(
    store: &Store,
    ctx: &RequestContext,
    patient: &str,
    params: &Value,
) -> ApiResult<Value> {
    if params["resourceType"] != "Parameters" {
        return Err(ApiError::invalid_at(
            "$disenroll takes a Parameters resource",
            "resourceType",
        ));
    }
    let reason = code_param(params, "reason")
        .ok_or_else(|| {
            bad_param(
                "reason",
                format!("reason is required: one of {}", REASONS.join(", ")),
            )
        })?
        .to_string();
    if !REASONS.contains(&reason.as_str()) {
        return Err(bad_param(
            "reason",
            format!("reason '{reason}' is not one of {}", REASONS.join(", ")),
        ));
    }
    let program = code_param(params, "program").map(str::to_string);
    let written = run(store, ctx, |u| {
        let c = u.ctx;
        super::read::read(u.conn(), c, "Patient", patient)?;
        let mut q = format!("patient=Patient/{patient}&status=planned,waitlist,active,onhold");
        if let Some(p) = &program {
            q.push_str(&format!("&type={PROGRAM}|{p}"));
        }
        let c = u.ctx;
        let ids = criteria_ids(u.conn(), c, "EpisodeOfCare", &q)?;
        if ids.is_empty() {
            return Err(ApiError::NotFound(format!(
                "Patient/{patient} has no current enrollment{}",
                program
                    .as_deref()
                    .map(|p| format!(" in the {p} program"))
                    .unwrap_or_default()
            )));
        }
        let now = format_instant(now_micros());
        let mut out = Vec::new();
        for row in load_many(u.conn(), c, "EpisodeOfCare", &ids)? {
            let mut ep = row.content;
            let active = matches!(ep["status"].as_str(), Some("active" | "onhold"));
            ep["status"] = json!(if active { "finished" } else { "cancelled" });
            ep["period"]["end"] = json!(now);
            let ext = json!({"url": DISENROLLMENT_EXT, "valueCoding": {"system": DISENROLLMENT, "code": reason}});
            match ep["extension"].as_array_mut() {
                Some(a) => a.push(ext),
                None => ep["extension"] = json!([ext]),
            }
            let teams: Vec<String> = ep["team"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["reference"].as_str().and_then(local_target))
                .filter(|(t, _)| *t == "CareTeam")
                .map(|(_, i)| i.to_string())
                .collect();
            out.push(u.apply(
                "EpisodeOfCare",
                Change::Update {
                    id: row.id.clone(),
                    body: ep,
                    if_match: None,
                },
            )?);
            // The plans linked to the episode.
            let plans = criteria_ids(
                u.conn(),
                c,
                "CarePlan",
                &format!("subject=Patient/{patient}&status=draft,active,on-hold"),
            )?;
            for p in load_many(u.conn(), c, "CarePlan", &plans)? {
                if !crate::care::supported_by(&p.content, "EpisodeOfCare", &row.id) {
                    continue;
                }
                let mut plan = p.content;
                plan["status"] = json!(if reason == "goals-met" && plan["status"] != "draft" {
                    "completed"
                } else {
                    "revoked"
                });
                out.push(u.apply(
                    "CarePlan",
                    Change::Update {
                        id: p.id.clone(),
                        body: plan,
                        if_match: None,
                    },
                )?);
            }
            for t in load_many(u.conn(), c, "CareTeam", &teams)? {
                if t.content["status"] != "active" && t.content["status"] != "suspended" {
                    continue;
                }
                let mut team = t.content;
                team["status"] = json!("inactive");
                team["period"]["end"] = json!(now);
                out.push(u.apply(
                    "CareTeam",
                    Change::Update {
                        id: t.id.clone(),
                        body: team,
                        if_match: None,
                    },
                )?);
            }
        }
        u.audit_request()?;
        Ok(out)
    })?;
    ctx.mark_audited();
    Ok(answer(ctx, &written))
}
