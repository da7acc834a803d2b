//! Care-management operations: Patient/$everything, Practitioner/$worklist, Practitioner/$caseload.
//! Each reads in one connection through the search index; ordering and summaries are in care/.
use std::collections::BTreeSet;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::history::parse_count;
use super::negotiate::query_param;
use super::response::{base_url, fhir_json};
use super::{blocking, State};
use crate::care::{caseload, worklist};
use crate::error::{ApiError, ApiResult};
use crate::fhir::bundle::bundle;
use crate::fhir::datetime::{now_micros, parse_lower_bound};
use crate::fhir::resource::{check_id, is_valid_id};
use crate::store::backend::DbConn;
use crate::store::lookup::{compartment_members, find_ids, load_many, read_current, Row};

/// 404 / 410 unless ty/id is a current resource.
fn require(conn: &mut DbConn, ty: &str, id: &str) -> ApiResult<()> {
    check_id(id)?;
    match read_current(conn, ty, id)? {
        None => Err(ApiError::NotFound(format!("{ty}/{id} is not known"))),
        Some(r) if r.deleted => Err(ApiError::Gone(format!("{ty}/{id} was deleted"))),
        Some(_) => Ok(()),
    }
}

fn instant_param(req: &HttpRequest, name: &str) -> ApiResult<Option<i64>> {
    match query_param(req, name) {
        None => Ok(None),
        Some(s) => parse_lower_bound(&s).map(Some).ok_or_else(|| {
            ApiError::invalid_at(format!("{name} '{s}' is not a FHIR date or instant"), name)
        }),
    }
}

/// Relative literal references to the given types anywhere in a resource.
fn referenced(v: &Value, types: &[&str], out: &mut BTreeSet<(String, String)>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                if let ("reference", Value::String(s)) = (k.as_str(), x) {
                    let mut parts = s.split('/');
                    if let (Some(t), Some(id), None) = (parts.next(), parts.next(), parts.next()) {
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

fn entry(base: &str, r: &Row, mode: &str) -> Value {
    json!({
        "fullUrl": format!("{base}/{}/{}", r.ty, r.id),
        "resource": r.content,
        "search": {"mode": mode},
    })
}

/// GET /fhir/Patient/{id}/$everything: the Patient, its compartment, and the Practitioners,
/// PractitionerRoles and Organizations they reference. `_since` (lastUpdated ≥), `_type`
/// (comma list), `_count` with `_page` (an offset token from the next/previous links).
/// Order: the Patient first, then by type and id.
pub async fn everything(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = path.into_inner();
    let count = parse_count(&req, &state)?.max(1);
    let since = instant_param(&req, "_since")?;
    let types: Option<Vec<String>> = query_param(&req, "_type").map(|t| {
        t.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    });
    if let Some(ts) = &types {
        for t in ts {
            state.resource_type(t).map_err(|_| {
                ApiError::invalid_at(
                    format!("_type '{t}' is not a supported resource type"),
                    "_type",
                )
            })?;
        }
    }
    let offset: usize = match query_param(&req, "_page") {
        None => 0,
        Some(p) => p.parse().map_err(|_| {
            ApiError::invalid_at(
                format!("_page '{p}' is not a page token of this server"),
                "_page",
            )
        })?,
    };
    let st = state.clone();
    let pid = id.clone();
    let rows = blocking(move || {
        let mut conn = st.store.conn()?;
        let conn = &mut *conn;
        require(conn, "Patient", &pid)?;
        let mut members = compartment_members(conn, &pid)?;
        members.insert(0, ("Patient".to_string(), pid.clone()));
        let mut rows: Vec<Row> = vec![];
        let mut by_type: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (t, i) in members {
            by_type.entry(t).or_default().push(i);
        }
        for (t, ids) in &by_type {
            rows.extend(load_many(conn, t, ids)?);
        }
        let mut refs = BTreeSet::new();
        for r in &rows {
            referenced(
                &r.content,
                &["Practitioner", "PractitionerRole", "Organization"],
                &mut refs,
            );
        }
        let mut extra_by_type: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (t, i) in refs {
            if !by_type.get(&t).is_some_and(|v| v.contains(&i)) {
                extra_by_type.entry(t).or_default().push(i);
            }
        }
        for (t, ids) in &extra_by_type {
            rows.extend(load_many(conn, t, ids)?);
        }
        rows.sort_by(|a, b| {
            (a.ty != "Patient" || a.id != pid, &a.ty, &a.id).cmp(&(
                b.ty != "Patient" || b.id != pid,
                &b.ty,
                &b.id,
            ))
        });
        Ok(rows)
    })
    .await?;
    let rows: Vec<Row> = rows
        .into_iter()
        .filter(|r| since.is_none_or(|s| r.last_updated >= s))
        .filter(|r| types.as_ref().is_none_or(|ts| ts.contains(&r.ty)))
        .collect();
    let total = rows.len();
    let base = base_url(&req, &state);
    let mut keep: Vec<(String, String)> = vec![];
    for k in ["_since", "_type"] {
        if let Some(v) = query_param(&req, k) {
            keep.push((k.into(), v));
        }
    }
    let link = |off: usize| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &keep {
            q.append_pair(k, v);
        }
        q.append_pair("_count", &count.to_string());
        q.append_pair("_page", &off.to_string());
        format!("{base}/Patient/{id}/$everything?{}", q.finish())
    };
    let count = count as usize;
    let mut links = vec![("self", link(offset))];
    if offset + count < total {
        links.push(("next", link(offset + count)));
    }
    if offset > 0 {
        links.push(("previous", link(offset.saturating_sub(count))));
    }
    let entries: Vec<Value> = rows
        .iter()
        .skip(offset)
        .take(count)
        .map(|r| entry(&base, r, "match"))
        .collect();
    Ok(fhir_json(
        &req,
        StatusCode::OK,
        &bundle("searchset", Some(total as u64), &links, entries),
    ))
}

/// CareTeams (active) on which the practitioner is a participant.
fn teams_of(conn: &mut DbConn, pid: &str) -> ApiResult<Vec<Row>> {
    let ids = find_ids(conn, "CareTeam", &format!("participant=Practitioner/{pid}"))?;
    Ok(load_many(conn, "CareTeam", &ids)?
        .into_iter()
        .filter(|t| t.content.get("status").and_then(Value::as_str) == Some("active"))
        .collect())
}

/// GET /fhir/Practitioner/{id}/$worklist: open Tasks the practitioner owns, or owned by an
/// active CareTeam the practitioner coordinates, in worklist order (see care::worklist).
/// `status` (comma list; default every open status), `due-before` (restriction.period.end
/// before the date), `_count`. Overdue entries carry the extension
/// `http://icm-fhir.org/StructureDefinition/task-overdue` (valueBoolean true) on entry.search.
pub async fn worklist(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let pid = path.into_inner();
    let count = parse_count(&req, &state)? as usize;
    let due_before = instant_param(&req, "due-before")?;
    let statuses: Option<Vec<String>> =
        query_param(&req, "status").map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
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
    let st = state.clone();
    let p2 = pid.clone();
    let tasks = blocking(move || {
        let mut conn = st.store.conn()?;
        let conn = &mut *conn;
        require(conn, "Practitioner", &p2)?;
        let mut ids = find_ids(conn, "Task", &format!("owner=Practitioner/{p2}"))?;
        let teams: Vec<String> = teams_of(conn, &p2)?
            .into_iter()
            .filter(|t| worklist::coordinates(&t.content, &p2))
            .map(|t| format!("CareTeam/{}", t.id))
            .collect();
        if !teams.is_empty() {
            ids.extend(find_ids(
                conn,
                "Task",
                &format!("owner={}", teams.join(",")),
            )?);
        }
        ids.sort();
        ids.dedup();
        load_many(conn, "Task", &ids)
    })
    .await?;
    let now = now_micros();
    let mut tasks: Vec<Value> = tasks
        .into_iter()
        .map(|r| r.content)
        .filter(|t| {
            let s = t.get("status").and_then(Value::as_str).unwrap_or("");
            match &statuses {
                Some(ss) => ss.iter().any(|x| x == s),
                None => crate::care::task::is_open(s),
            }
        })
        .filter(|t| due_before.is_none_or(|d| worklist::due(t).is_some_and(|x| x < d)))
        .collect();
    worklist::sort(&mut tasks, now);
    let total = tasks.len();
    let base = base_url(&req, &state);
    let entries: Vec<Value> = tasks
        .into_iter()
        .take(count)
        .map(|t| {
            let overdue = worklist::is_overdue(&t, now);
            let mut search = json!({"mode": "match"});
            if overdue {
                search["extension"] =
                    json!([{"url": worklist::OVERDUE_EXTENSION, "valueBoolean": true}]);
            }
            json!({
                "fullUrl": format!("{base}/Task/{}", t["id"].as_str().unwrap_or("")),
                "resource": t,
                "search": search,
            })
        })
        .collect();
    let self_link = match req.query_string() {
        "" => format!("{base}/Practitioner/{pid}/$worklist"),
        q => format!("{base}/Practitioner/{pid}/$worklist?{q}"),
    };
    Ok(fhir_json(
        &req,
        StatusCode::OK,
        &bundle(
            "searchset",
            Some(total as u64),
            &[("self", self_link)],
            entries,
        ),
    ))
}

/// GET /fhir/Practitioner/{id}/$caseload: the patients (CareTeam.subject) of the
/// practitioner's active CareTeams, each with active CarePlans, open and overdue Task counts
/// and the date of the last completed Task, as Parameters (see care::caseload).
pub async fn caseload(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let pid = path.into_inner();
    let st = state.clone();
    let lines = blocking(move || {
        let mut conn = st.store.conn()?;
        let conn = &mut *conn;
        require(conn, "Practitioner", &pid)?;
        let mut patients: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for t in teams_of(conn, &pid)? {
            if let Some(r) = t
                .content
                .pointer("/subject/reference")
                .and_then(Value::as_str)
            {
                if let Some(p) = r.strip_prefix("Patient/").filter(|p| is_valid_id(p)) {
                    patients
                        .entry(p.to_string())
                        .or_default()
                        .push(format!("CareTeam/{}", t.id));
                }
            }
        }
        let now = now_micros();
        let mut lines = vec![];
        for (p, teams) in patients {
            let plans = find_ids(
                conn,
                "CarePlan",
                &format!("subject=Patient/{p}&status=active"),
            )?;
            let task_ids = find_ids(conn, "Task", &format!("patient=Patient/{p}"))?;
            let tasks: Vec<Value> = load_many(conn, "Task", &task_ids)?
                .into_iter()
                .map(|r| r.content)
                .collect();
            lines.push(caseload::summarise(
                format!("Patient/{p}"),
                teams,
                plans.into_iter().map(|c| format!("CarePlan/{c}")).collect(),
                &tasks,
                now,
            ));
        }
        Ok(lines)
    })
    .await?;
    Ok(fhir_json(
        &req,
        StatusCode::OK,
        &caseload::to_parameters(&lines),
    ))
}
