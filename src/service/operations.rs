//! The care-management operations — Patient/$everything, Practitioner/$worklist,
//! Practitioner/$caseload — and the delete mode of $validate. Each reads through the search
//! index with the request's context, so it sees exactly what the caller may see; ordering and
//! summaries are pure functions in care/.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::context::RequestContext;
use super::read::{instant_param, param};
use crate::care::{caseload, worklist};
use crate::error::{ApiError, ApiResult};
use crate::fhir::bundle::bundle;
use crate::fhir::datetime::now_micros;
use crate::fhir::reference::local_target;
use crate::fhir::resource::{check_id, is_valid_id};
use crate::service::search::{criteria_ids, matching};
use crate::store::lookup::{compartment_members, load_many, read_current, MemberFilter, Row};
use crate::store::DbConn;

/// 404 / 410 unless ty/id is a current resource the caller may see.
fn require(conn: &mut DbConn, ctx: &RequestContext, ty: &str, id: &str) -> ApiResult<()> {
    check_id(id)?;
    match read_current(conn, ctx, ty, id)? {
        None => Err(ApiError::NotFound(format!("{ty}/{id} is not known"))),
        Some(r) if r.deleted => Err(ApiError::Gone(format!("{ty}/{id} was deleted"))),
        Some(_) => Ok(()),
    }
}

/// Local references to the given types anywhere in a resource.
fn referenced(v: &Value, types: &[&str], out: &mut BTreeSet<(String, String)>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                if let ("reference", Value::String(s)) = (k.as_str(), x) {
                    if let Some((t, id)) = local_target(s) {
                        if types.contains(&t) && is_valid_id(id) {
                            out.insert((t.to_string(), id.to_string()));
                        }
                    }
                } else {
                    referenced(x, types, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| referenced(x, types, out)),
        _ => {}
    }
}

fn entry(ctx: &RequestContext, r: &Row, mode: &str) -> Value {
    ctx.note(&r.ty, &r.content);
    json!({
        "fullUrl": format!("{}/{}/{}", ctx.base, r.ty, r.id),
        "resource": r.content,
        "search": {"mode": mode},
    })
}

/// The sort key of an $everything entry: the Patient first, then by type and id.
fn everything_key(r: &Row, pid: &str) -> (bool, String, String) {
    (r.ty != "Patient" || r.id != pid, r.ty.clone(), r.id.clone())
}

/// A page token of $everything: direction and the boundary entry (`aType/id`, `bType/id`).
fn everything_page(token: &str) -> ApiResult<(bool, String, String)> {
    let bad = || {
        ApiError::invalid_at(
            format!("_page '{token}' is not a page token of this server"),
            "_page",
        )
    };
    let (dir, rest) = token.split_at_checked(1).ok_or_else(bad)?;
    let after = match dir {
        "a" => true,
        "b" => false,
        _ => return Err(bad()),
    };
    let (t, i) = rest.split_once('/').ok_or_else(bad)?;
    Ok((after, t.to_string(), i.to_string()))
}

/// The types $everything adds when compartment resources reference them.
const REFERENCED: &[&str] = &["Practitioner", "PractitionerRole", "Organization"];

/// `start`/`end` of $everything as the care-date range `[low, high)`: `start` from the beginning
/// of its precision, `end` to the end of its (`end=2024` includes all of 2024); either may be
/// absent. 400 for a value that is not a FHIR date or dateTime, or a start after the end.
fn care_range(params: &[(String, String)]) -> ApiResult<Option<(i64, i64)>> {
    let bound = |name: &str| -> ApiResult<Option<(i64, i64)>> {
        match param(params, name) {
            None => Ok(None),
            Some(v) => crate::fhir::search::values::date_range(v)
                .map(Some)
                .ok_or_else(|| {
                    ApiError::invalid_at(format!("{name} '{v}' is not a FHIR date"), name)
                }),
        }
    };
    let (start, end) = (bound("start")?, bound("end")?);
    if start.is_none() && end.is_none() {
        return Ok(None);
    }
    let low = start.map_or(i64::MIN, |r| r.0);
    let high = end.map_or(i64::MAX, |r| r.1);
    if low >= high {
        return Err(ApiError::invalid_at(
            "start is after end".to_string(),
            "start",
        ));
    }
    Ok(Some((low, high)))
}

/// `_type` of $everything: every type named in every `_type` parameter (R4: "one or more
/// parameters, each containing one or more comma-delimited FHIR resource types"); None when
/// absent. 400 for a type this server does not support.
fn type_param(params: &[(String, String)]) -> ApiResult<Option<Vec<String>>> {
    let mut types: Option<Vec<String>> = None;
    for (_, v) in params.iter().filter(|(k, _)| k == "_type") {
        let list = types.get_or_insert_with(Vec::new);
        for t in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if !crate::fhir::registry::Registry::get().is_supported(t) {
                return Err(ApiError::invalid_at(
                    format!("_type '{t}' is not a supported resource type"),
                    "_type",
                ));
            }
            if !list.iter().any(|x| x == t) {
                list.push(t.to_string());
            }
        }
    }
    Ok(types)
}

/// Patient/$everything: the Patient, its compartment, and the Practitioners,
/// PractitionerRoles and Organizations they reference — as far as the caller may see them.
/// `start`/`end` (care dates: a compartment resource whose care date, per
/// fhir::compartment::care_date_params, lies outside the range is left out — in the query —
/// and so are the resources only it references; resources without a care date stay),
/// `_since` (lastUpdated ≥), `_type` (comma lists, repeatable), `_count` (page size; 0: the
/// total only), `_page` (a keyset token from the next/previous links). Order: the Patient
/// first, then by type and id.
pub fn everything(
    conn: &mut DbConn,
    ctx: &RequestContext,
    id: &str,
    params: &[(String, String)],
) -> ApiResult<Value> {
    let count = super::read::count_param(ctx, params)? as usize;
    let since = instant_param(params, "_since")?;
    let care = care_range(params)?;
    let types = type_param(params)?;
    let page = param(params, "_page").map(everything_page).transpose()?;
    require(conn, ctx, "Patient", id)?;
    // Members are listed with every condition in the query, unless they are also needed for
    // the Practitioners and Organizations they reference: then `_type` and `_since` apply to
    // the whole set below.
    let wants_referenced = types
        .as_ref()
        .is_none_or(|ts| ts.iter().any(|t| REFERENCED.contains(&t.as_str())));
    let filter = if wants_referenced {
        MemberFilter {
            types: None,
            since: None,
            care,
        }
    } else {
        MemberFilter {
            types: types.as_deref(),
            since,
            care,
        }
    };
    let mut members = compartment_members(conn, ctx, id, &filter)?;
    members.insert(0, ("Patient".to_string(), id.to_string()));
    let mut rows: Vec<Row> = vec![];
    let mut by_type: BTreeMap<String, Vec<String>> = Default::default();
    for (t, i) in members {
        by_type.entry(t).or_default().push(i);
    }
    for (t, ids) in &by_type {
        rows.extend(load_many(conn, ctx, t, ids)?);
    }
    if wants_referenced {
        let mut refs = BTreeSet::new();
        for r in &rows {
            referenced(&r.content, REFERENCED, &mut refs);
        }
        let mut extra: BTreeMap<String, Vec<String>> = Default::default();
        for (t, i) in refs {
            if !by_type.get(&t).is_some_and(|v| v.contains(&i)) {
                extra.entry(t).or_default().push(i);
            }
        }
        for (t, ids) in &extra {
            rows.extend(load_many(conn, ctx, t, ids)?);
        }
    }
    rows.retain(|r| since.is_none_or(|s| r.last_updated >= s));
    rows.retain(|r| types.as_ref().is_none_or(|ts| ts.contains(&r.ty)));
    rows.sort_by_key(|r| everything_key(r, id));
    let total = rows.len();
    // Keyset paging on (Patient first, type, id).
    let (start, end) = match &page {
        None => (0, count.min(total)),
        Some((true, t, i)) => {
            let k = (t != "Patient" || i != id, t.clone(), i.clone());
            let s = rows.partition_point(|r| everything_key(r, id) <= k);
            (s, (s + count).min(total))
        }
        Some((false, t, i)) => {
            let k = (t != "Patient" || i != id, t.clone(), i.clone());
            let e = rows.partition_point(|r| everything_key(r, id) < k);
            (e.saturating_sub(count), e)
        }
    };
    let keep: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "start" | "end" | "_since" | "_type"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let link = |page: Option<String>| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &keep {
            q.append_pair(k, v);
        }
        q.append_pair("_count", &count.to_string());
        if let Some(p) = page {
            q.append_pair("_page", &p);
        }
        format!("{}/Patient/{id}/$everything?{}", ctx.base, q.finish())
    };
    let mut links = vec![("self", link(param(params, "_page").map(str::to_string)))];
    if end < total {
        if let Some(r) = rows.get(end.wrapping_sub(1)).filter(|_| end > 0) {
            links.push(("next", link(Some(format!("a{}/{}", r.ty, r.id)))));
        }
    }
    if start > 0 {
        if let Some(r) = rows.get(start) {
            links.push(("previous", link(Some(format!("b{}/{}", r.ty, r.id)))));
        }
    }
    let entries: Vec<Value> = rows[start..end]
        .iter()
        .map(|r| entry(ctx, r, "match"))
        .collect();
    Ok(bundle("searchset", Some(total as u64), &links, entries))
}

/// Worklist entry extension: a community referral needing attention (`rejected`, `no-response`).
pub const REFERRAL_ATTENTION: &str = "http://icm-fhir.org/StructureDefinition/referral-attention";
/// Worklist entry extension: the Task's patient is in hospital now (the Encounter).
pub const PATIENT_ADMITTED: &str = "http://icm-fhir.org/StructureDefinition/patient-admitted";

/// The patient's inpatient or emergency stay under way (an admission), as a reference.
fn current_admission(
    conn: &mut DbConn,
    ctx: &RequestContext,
    patient: &str,
) -> ApiResult<Option<String>> {
    Ok(matching(
        conn,
        ctx,
        "Encounter",
        &format!("patient=Patient/{patient}&status=in-progress"),
    )?
    .into_iter()
    .find(|e| {
        e.content["class"]["code"]
            .as_str()
            .is_some_and(crate::care::transitions::is_acute_class)
    })
    .map(|e| format!("Encounter/{}", e.id)))
}

/// Active CareTeams the caller may see on which the practitioner is a participant.
fn teams_of(conn: &mut DbConn, ctx: &RequestContext, pid: &str) -> ApiResult<Vec<Row>> {
    let ids = criteria_ids(
        conn,
        ctx,
        "CareTeam",
        &format!("participant=Practitioner/{pid}"),
    )?;
    Ok(load_many(conn, ctx, "CareTeam", &ids)?
        .into_iter()
        .filter(|t| t.content.get("status").and_then(Value::as_str) == Some("active"))
        .collect())
}

/// Practitioner/$worklist: open Tasks the practitioner owns, or owned by an active CareTeam
/// the practitioner coordinates — those the caller may see — in worklist order (see
/// care::worklist). `status` (comma list; default every open status), `due-before`, `_count`.
/// Overdue entries carry the extension `http://icm-fhir.org/StructureDefinition/task-overdue`.
pub fn worklist(
    conn: &mut DbConn,
    ctx: &RequestContext,
    pid: &str,
    params: &[(String, String)],
) -> ApiResult<Value> {
    let count = super::read::count_param(ctx, params)? as usize;
    let due_before = instant_param(params, "due-before")?;
    let statuses: Option<Vec<String>> =
        param(params, "status").map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    if let Some(ss) = &statuses {
        for s in ss {
            if !crate::care::task::MACHINE.is_state(s) {
                return Err(ApiError::invalid_at(
                    format!("status '{s}' is not a Task status"),
                    "status",
                ));
            }
        }
    }
    require(conn, ctx, "Practitioner", pid)?;
    // The status filter goes into the search, so closed Tasks (most of a long-served caseload)
    // are neither loaded nor parsed.
    let wanted: Vec<&str> = match &statuses {
        Some(ss) => ss.iter().map(String::as_str).collect(),
        None => crate::care::task::open_states(),
    };
    let status = format!("&status={}", wanted.join(","));
    let mut ids = criteria_ids(
        conn,
        ctx,
        "Task",
        &format!("owner=Practitioner/{pid}{status}"),
    )?;
    let teams: Vec<String> = teams_of(conn, ctx, pid)?
        .into_iter()
        .filter(|t| worklist::coordinates(&t.content, pid))
        .map(|t| format!("CareTeam/{}", t.id))
        .collect();
    if !teams.is_empty() {
        ids.extend(criteria_ids(
            conn,
            ctx,
            "Task",
            &format!("owner={}{status}", teams.join(",")),
        )?);
    }
    ids.sort();
    ids.dedup();
    let tasks = load_many(conn, ctx, "Task", &ids)?;
    let now = now_micros();
    // (the searches matched the statuses wanted)
    let mut tasks: Vec<Value> = tasks
        .into_iter()
        .map(|r| r.content)
        .filter(|t| due_before.is_none_or(|d| worklist::due(t).is_some_and(|x| x < d)))
        .collect();
    // Community referrals this practitioner sent that need attention: rejected, or without
    // a response after ICM_REFERRAL_RESPONSE_DAYS days (default 3).
    let mut attention: BTreeMap<String, &'static str> = Default::default();
    if statuses.is_none() {
        let sent = criteria_ids(
            conn,
            ctx,
            "Task",
            &format!(
                "requester=Practitioner/{pid}&code={}|community-referral",
                crate::care::transitions::WORKFLOW
            ),
        )?;
        let wait = ctx.limits.referral_response_days * 86_400_000_000;
        for r in load_many(conn, ctx, "Task", &sent)? {
            let s = r.content["status"].as_str().unwrap_or_default();
            let authored = r.content["authoredOn"]
                .as_str()
                .and_then(crate::fhir::datetime::parse_lower_bound)
                .unwrap_or(r.last_updated);
            let why = match s {
                "rejected" => "rejected",
                "requested" | "received" if now - authored > wait => "no-response",
                _ => continue,
            };
            attention.insert(r.id.clone(), why);
            if !tasks.iter().any(|t| t["id"] == r.id.as_str()) {
                tasks.push(r.content);
            }
        }
    }
    worklist::sort(&mut tasks, now);
    // Patients in hospital now (an inpatient or emergency stay under way), for the page shown.
    let mut admitted: BTreeMap<String, Option<String>> = Default::default();
    for t in tasks.iter().take(count) {
        if let Some(("Patient", p)) = t["for"]["reference"].as_str().and_then(local_target) {
            if !admitted.contains_key(p) {
                let stay = current_admission(conn, ctx, p)?;
                admitted.insert(p.to_string(), stay);
            }
        }
    }
    let total = tasks.len();
    let entries: Vec<Value> = tasks
        .into_iter()
        .take(count)
        .map(|t| {
            ctx.note("Task", &t);
            let overdue = worklist::is_overdue(&t, now);
            let mut search = json!({"mode": "match"});
            let mut ext = Vec::new();
            if overdue {
                ext.push(json!({"url": worklist::OVERDUE_EXTENSION, "valueBoolean": true}));
            }
            if let Some(why) = t["id"].as_str().and_then(|i| attention.get(i)) {
                ext.push(json!({"url": REFERRAL_ATTENTION, "valueCode": why}));
            }
            let stay = t["for"]["reference"]
                .as_str()
                .and_then(local_target)
                .and_then(|(_, p)| admitted.get(p).cloned().flatten());
            if let Some(e) = stay {
                ext.push(json!({"url": PATIENT_ADMITTED, "valueReference": {"reference": e}}));
            }
            if !ext.is_empty() {
                search["extension"] = Value::Array(ext);
            }
            json!({
                "fullUrl": format!("{}/Task/{}", ctx.base, t["id"].as_str().unwrap_or("")),
                "resource": t,
                "search": search,
            })
        })
        .collect();
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    let q = ser.finish();
    let self_link = if q.is_empty() {
        format!("{}/Practitioner/{pid}/$worklist", ctx.base)
    } else {
        format!("{}/Practitioner/{pid}/$worklist?{q}", ctx.base)
    };
    Ok(bundle(
        "searchset",
        Some(total as u64),
        &[("self", self_link)],
        entries,
    ))
}

/// Practitioner/$caseload: the patients (CareTeam.subject) of the practitioner's active
/// CareTeams that the caller may see, each with active CarePlans, open and overdue Task counts
/// and the date of the last completed Task, as Parameters (see care::caseload).
pub fn caseload(conn: &mut DbConn, ctx: &RequestContext, pid: &str) -> ApiResult<Value> {
    require(conn, ctx, "Practitioner", pid)?;
    let mut patients: BTreeMap<String, Vec<String>> = Default::default();
    for t in teams_of(conn, ctx, pid)? {
        if let Some((_, p)) = t
            .content
            .pointer("/subject/reference")
            .and_then(Value::as_str)
            .and_then(local_target)
            .filter(|(ty, _)| *ty == "Patient")
        {
            patients
                .entry(p.to_string())
                .or_default()
                .push(format!("CareTeam/{}", t.id));
        }
    }
    let now = now_micros();
    let mut lines = vec![];
    for (p, teams) in patients {
        if read_current(conn, ctx, "Patient", &p)?.is_none() {
            continue;
        }
        let plans = criteria_ids(
            conn,
            ctx,
            "CarePlan",
            &format!("subject=Patient/{p}&status=active"),
        )?;
        let task_ids = criteria_ids(conn, ctx, "Task", &format!("patient=Patient/{p}"))?;
        let tasks: Vec<Value> = load_many(conn, ctx, "Task", &task_ids)?
            .into_iter()
            .map(|r| r.content)
            .collect();
        let mut line = caseload::summarise(
            format!("Patient/{p}"),
            teams,
            plans.into_iter().map(|c| format!("CarePlan/{c}")).collect(),
            &tasks,
            now,
        );
        line.risk = super::write::stratify::current_assessment(conn, ctx, &p)?.and_then(|r| {
            let tier = crate::care::tier_of(&r.content)?.to_string();
            Some((tier, format!("RiskAssessment/{}", r.id)))
        });
        line.admission = current_admission(conn, ctx, &p)?;
        lines.push(line);
    }
    caseload::sort(&mut lines);
    Ok(caseload::to_parameters(&lines))
}

/// $validate mode=delete: would deleting ty/id be refused because current resources refer to
/// it? An instance the caller may not see is unknown (404); only visible referrers are named.
pub fn validate_delete(
    conn: &mut DbConn,
    ctx: &RequestContext,
    ty: &str,
    id: &str,
) -> ApiResult<Option<String>> {
    require(conn, ctx, ty, id)?;
    if !ctx.policy.referential_integrity {
        return Ok(None);
    }
    let found = crate::store::references::referrers(conn, ctx, ty, id, 5)?;
    if found.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "{ty}/{id} cannot be deleted: {}",
        super::write::integrity::referrer_list(&found)
    )))
}
