//! Bulk Data export (FHIR Bulk Data Access IG v2, the asynchronous request pattern):
//! `$export` at the base, on Patient and on a Group. The kick-off is checked here (parameters,
//! scopes, the Group), recorded as a job (store::export, so every process can answer for it)
//! and run on a background thread with the caller's own [`RequestContext`]: every page of every
//! type is a search through the one search service, the caller's access in its SQL, paged by
//! keyset, written to one NDJSON file per type as it goes — nothing is held in memory but a
//! page. Status, manifest, files and cancellation are answered from the job row.
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use super::context::RequestContext;
use super::search::{export_page, export_query, pairs};
use crate::error::{ApiError, ApiResult};
use crate::fhir::compartment::is_member_type;
use crate::fhir::datetime::{format_instant, now_micros, parse_lower_bound};
use crate::fhir::reference::local_target;
use crate::fhir::registry::Registry;
use crate::fhir::search::SearchQuery;
use crate::store::export::{self as jobs, Job, COMPLETED, FAILED, IN_PROGRESS};
use crate::store::visibility::{Rows, Visibility};
use crate::store::Store;

/// The output formats accepted for `_outputFormat` (all mean NDJSON of FHIR resources).
pub const OUTPUT_FORMATS: &[&str] = &["application/fhir+ndjson", "application/ndjson", "ndjson"];
/// Resources per page read from the database.
const PAGE: i64 = 1000;
/// Patients per query when exporting a Group (the compartment restriction binds their ids).
const MEMBER_CHUNK: usize = 500;
/// A running job whose process gave no sign of life for this long is reported failed.
const STALE_MICROS: i64 = 10 * 60 * 1_000_000;
/// The file of a job's errors (NDJSON OperationOutcomes).
const ERROR_FILE: &str = "errors";

/// Which $export was called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Level {
    System,
    Patient,
    Group(String),
}

/// A kick-off request as the HTTP layer saw it.
pub struct Kickoff {
    pub level: Level,
    pub params: Vec<(String, String)>,
    /// `Prefer: handling=lenient`: unsupported parameters are ignored rather than refused.
    pub lenient: bool,
    /// The full kick-off URL (reported in the manifest).
    pub request_url: String,
    /// Whether the files need the caller's token (authentication on).
    pub requires_token: bool,
}

/// What a job will export, decided at kick-off.
#[derive(Debug, Clone)]
pub struct Plan {
    types: Vec<String>,
    /// Per type, the `_typeFilter` queries (any match is exported; none: every resource).
    filters: BTreeMap<String, Vec<SearchQuery>>,
    since: Option<String>,
    /// A Group export: the patients whose compartments are exported.
    members: Option<BTreeSet<String>>,
    /// Types the caller named but may not read (reported in the error file).
    refused: Vec<String>,
    requires_token: bool,
}

/// The answer to a status request.
pub enum Status {
    InProgress { progress: String },
    Completed(Value),
    Failed(String),
}

fn bad(msg: impl Into<String>, param: &str) -> ApiError {
    ApiError::invalid_at(msg, param)
}

/// Split a `_typeFilter` value into its queries: commas separate queries, but a comma inside a
/// query (`status=active,completed`) belongs to it — a query starts with `Type?`.
fn split_type_filters(v: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in v.split(',') {
        let starts_query = piece
            .split_once('?')
            .is_some_and(|(t, _)| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphabetic()));
        match out.last_mut() {
            Some(last) if !starts_query => {
                last.push(',');
                last.push_str(piece);
            }
            _ => out.push(piece.to_string()),
        }
    }
    out.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

/// Whether the caller may run a system-level export: SMART backend services use `system/`
/// scopes, and `user/` scopes export what that user may see; a `patient/` token exports its
/// own compartment through `Patient/$export` only.
fn may_export_system(ctx: &RequestContext) -> bool {
    use super::access::scope::Context;
    ctx.is_internal()
        || ctx.principal.admin
        || ctx
            .principal
            .scopes
            .iter()
            .any(|s| matches!(s.context, Context::System | Context::User))
}

/// Check a kick-off and decide what it exports (400 for bad parameters, 403/404 for a Group
/// the caller may not see).
pub fn plan(conn: &mut crate::store::DbConn, ctx: &RequestContext, k: &Kickoff) -> ApiResult<Plan> {
    let reg = Registry::get();
    let patient_level = k.level != Level::System;
    if k.level == Level::System && !may_export_system(ctx) {
        return Err(ApiError::Forbidden(
            "a system-level $export needs system/ or user/ scopes; with patient/ scopes use Patient/$export".into(),
        ));
    }
    let mut named: Option<Vec<String>> = None;
    let mut filter_texts: Vec<String> = Vec::new();
    let mut since = None;
    let mut format_seen = false;
    for (key, v) in &k.params {
        match key.as_str() {
            "_outputFormat" => {
                if format_seen {
                    return Err(bad("_outputFormat may be given once", "_outputFormat"));
                }
                format_seen = true;
                if !OUTPUT_FORMATS.contains(&v.trim()) {
                    return Err(bad(
                        format!(
                            "_outputFormat '{v}' is not supported; use one of {}",
                            OUTPUT_FORMATS.join(", ")
                        ),
                        "_outputFormat",
                    ));
                }
            }
            "_since" => {
                if since.is_some() {
                    return Err(bad("_since may be given once", "_since"));
                }
                if parse_lower_bound(v).is_none() {
                    return Err(bad(
                        format!("_since '{v}' is not a FHIR instant"),
                        "_since",
                    ));
                }
                since = Some(v.trim().replace(' ', "+"));
            }
            "_type" => {
                let list = named.get_or_insert_with(Vec::new);
                for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if !reg.is_supported(t) {
                        return Err(bad(
                            format!("_type '{t}' is not a resource type this server supports"),
                            "_type",
                        ));
                    }
                    if patient_level && !is_member_type(t) {
                        return Err(bad(
                            format!("_type '{t}' is not in the Patient compartment, which a Patient or Group export is limited to"),
                            "_type",
                        ));
                    }
                    if !list.iter().any(|x| x == t) {
                        list.push(t.to_string());
                    }
                }
            }
            "_typeFilter" => filter_texts.extend(split_type_filters(v)),
            "_format" | "_pretty" => {}
            other if k.lenient => {
                log::info!("$export: ignoring unsupported parameter {other} (handling=lenient)")
            }
            other => {
                return Err(bad(
                    format!("$export parameter '{other}' is not supported (send Prefer: handling=lenient to have it ignored)"),
                    other,
                ))
            }
        }
    }
    // Every type the export would cover, before access.
    let candidates: Vec<String> = match &named {
        Some(list) => list.clone(),
        None => reg
            .type_names()
            .filter(|t| !super::access::policy::is_audit_trail(t))
            .filter(|t| !patient_level || is_member_type(t))
            .map(str::to_string)
            .collect(),
    };
    let mut filters: BTreeMap<String, Vec<SearchQuery>> = BTreeMap::new();
    for f in &filter_texts {
        let (ty, query) = f.split_once('?').ok_or_else(|| {
            bad(
                format!("_typeFilter '{f}' is not a search URL ResourceType?params"),
                "_typeFilter",
            )
        })?;
        if !reg.is_supported(ty) {
            return Err(bad(
                format!("_typeFilter '{f}': '{ty}' is not a resource type this server supports"),
                "_typeFilter",
            ));
        }
        if !candidates.iter().any(|c| c == ty) {
            return Err(bad(
                format!("_typeFilter '{f}': {ty} is not one of the types this export covers"),
                "_typeFilter",
            ));
        }
        let q = export_query(ty, &pairs(query), &ctx.base)?;
        filters.entry(ty.to_string()).or_default().push(q);
    }
    // The types the caller may read; those named but not readable are reported.
    let mut types = Vec::new();
    let mut refused = Vec::new();
    for t in candidates {
        if ctx.rows(&t) == Rows::Hidden {
            if named.is_some() {
                refused.push(t);
            }
        } else {
            types.push(t);
        }
    }
    let members = match &k.level {
        Level::Group(id) => {
            let g = super::read::read(conn, ctx, "Group", id)?;
            let g: Value = serde_json::from_str(g.content.as_deref().unwrap_or("{}"))
                .map_err(|e| ApiError::internal(format!("stored Group/{id}: {e}")))?;
            Some(active_members(&g, now_micros()))
        }
        _ => None,
    };
    Ok(Plan {
        types,
        filters,
        since,
        members,
        refused,
        requires_token: k.requires_token,
    })
}

/// The Patients of a Group's current members (not `inactive`, membership period not ended).
pub fn active_members(group: &Value, now: i64) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for m in group["member"].as_array().into_iter().flatten() {
        if m["inactive"] == true {
            continue;
        }
        let ended = m["period"]["end"]
            .as_str()
            .and_then(parse_lower_bound)
            .is_some_and(|end| end <= now);
        if ended {
            continue;
        }
        if let Some(("Patient", id)) = m["entity"]["reference"].as_str().and_then(local_target) {
            out.insert(id.to_string());
        }
    }
    out
}

/// Where the files of a job live.
fn job_dir(dir: &Path, job: &str) -> PathBuf {
    dir.join(job)
}

/// Record the job and start it on a background thread; its id.
pub fn kick_off(
    store: Arc<Store>,
    ctx: Arc<RequestContext>,
    k: &Kickoff,
    dir: PathBuf,
) -> ApiResult<String> {
    let plan = plan(&mut *store.conn()?, &ctx, k)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let now = now_micros();
    let job = Job {
        id: id.clone(),
        owner: ctx.reader_key(),
        status: IN_PROGRESS.into(),
        request: k.request_url.clone(),
        transaction_time: now,
        progress: Some("queued".into()),
        manifest: None,
        error: None,
        heartbeat: now,
        created: now,
    };
    jobs::insert(&mut *store.conn()?, &job)?;
    let job_id = id.clone();
    std::thread::Builder::new()
        .name(format!("export-{}", &id[..8]))
        .spawn(move || {
            let work = std::panic::AssertUnwindSafe(|| run(&store, &ctx, &plan, &job, &dir));
            let outcome = match std::panic::catch_unwind(work) {
                Ok(r) => r,
                Err(_) => Err(ApiError::internal("export thread panicked")),
            };
            let done = |status: &str, manifest: Option<&str>, error: Option<&str>| {
                store.conn().and_then(|mut c| {
                    jobs::finish(&mut c, &job.id, status, manifest, error, now_micros())
                })
            };
            let finished = match outcome {
                Ok(Some(manifest)) => done(COMPLETED, Some(&manifest.to_string()), None),
                Ok(None) => Ok(false),
                Err(e) => {
                    log::error!("export {}: {e}", job.id);
                    let msg = match e {
                        ApiError::Internal(_) | ApiError::Unavailable(_) => {
                            "the export failed on a server error (see the server log)".to_string()
                        }
                        other => other.to_string(),
                    };
                    done(FAILED, None, Some(&msg))
                }
            };
            // Cancelled meanwhile (or the database is gone): leave no files behind.
            if !matches!(finished, Ok(true)) {
                let _ = std::fs::remove_dir_all(job_dir(&dir, &job.id));
            }
        })
        .map_err(|e| ApiError::internal(format!("cannot start the export thread: {e}")))?;
    Ok(job_id)
}

/// The caller's visibility narrowed to a set of patients (a Group's members): compartment
/// types are limited to those patients' compartments, within what the caller may see.
struct Cohort<'a> {
    ctx: &'a RequestContext,
    patients: BTreeSet<String>,
    /// The caller's patient boundaries (by address) intersected with `patients`.
    narrowed: Vec<(usize, BTreeSet<String>)>,
}

static NOBODY: BTreeSet<String> = BTreeSet::new();

impl<'a> Cohort<'a> {
    fn new(ctx: &'a RequestContext, patients: BTreeSet<String>, types: &[String]) -> Cohort<'a> {
        let mut narrowed: Vec<(usize, BTreeSet<String>)> = Vec::new();
        for t in types {
            if let Rows::Patients(p) = ctx.rows(t) {
                let key = p as *const _ as usize;
                if !narrowed.iter().any(|(k, _)| *k == key) {
                    narrowed.push((key, p.intersection(&patients).cloned().collect()));
                }
            }
        }
        Cohort {
            ctx,
            patients,
            narrowed,
        }
    }
}

impl Visibility for Cohort<'_> {
    fn rows(&self, ty: &str) -> Rows<'_> {
        match self.ctx.rows(ty) {
            Rows::Hidden => Rows::Hidden,
            Rows::Ids(ids) => Rows::Ids(ids),
            Rows::All if is_member_type(ty) => Rows::Patients(&self.patients),
            Rows::All => Rows::All,
            Rows::Patients(p) if is_member_type(ty) => {
                let key = p as *const _ as usize;
                Rows::Patients(
                    self.narrowed
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map_or(&NOBODY, |(_, s)| s),
                )
            }
            Rows::Patients(p) => Rows::Patients(p),
        }
    }
}

/// One line of NDJSON for a stored resource (stored text is kept as received: re-serialised
/// only when it spans lines).
fn ndjson_line(content: &str) -> String {
    if content.contains('\n') || content.contains('\r') {
        serde_json::from_str::<Value>(content)
            .map(|v| v.to_string())
            .unwrap_or_else(|_| content.replace(['\n', '\r'], " "))
    } else {
        content.to_string()
    }
}

/// Run a job; the manifest, or None when it was cancelled while running.
fn run(
    store: &Store,
    ctx: &RequestContext,
    plan: &Plan,
    job: &Job,
    dir: &Path,
) -> ApiResult<Option<Value>> {
    let out_dir = job_dir(dir, &job.id);
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| ApiError::internal(format!("export directory {}: {e}", out_dir.display())))?;
    let io = |e: std::io::Error| ApiError::internal(format!("export file: {e}"));
    let tt = format_instant(job.transaction_time);
    let file_url = |name: &str| format!("{}/$export-file/{}/{name}.ndjson", ctx.base, job.id);
    // The visibilities the export reads with: the caller's, or the caller's narrowed to each
    // chunk of a Group's members.
    let cohorts: Vec<Cohort> = match &plan.members {
        Some(m) => {
            let list: Vec<String> = m.iter().cloned().collect();
            list.chunks(MEMBER_CHUNK)
                .map(|c| Cohort::new(ctx, c.iter().cloned().collect(), &plan.types))
                .collect()
        }
        None => Vec::new(),
    };
    let views: Vec<&dyn Visibility> = if plan.members.is_some() {
        cohorts.iter().map(|c| c as &dyn Visibility).collect()
    } else {
        vec![ctx as &dyn Visibility]
    };
    let mut output = Vec::new();
    let mut total: u64 = 0;
    for ty in &plan.types {
        // The queries of this type, each bounded by the transaction time (and _since).
        let mut bounds = vec![("_lastUpdated".to_string(), format!("le{tt}"))];
        if let Some(s) = &plan.since {
            bounds.push(("_lastUpdated".to_string(), format!("ge{s}")));
        }
        let bound = export_query(ty, &bounds, &ctx.base)?;
        let queries: Vec<SearchQuery> = match plan.filters.get(ty) {
            Some(list) => list
                .iter()
                .map(|q| {
                    let mut q = q.clone();
                    q.filters.extend(bound.filters.iter().cloned());
                    q
                })
                .collect(),
            None => vec![bound],
        };
        // A resource matching two filters, or in two members' compartments in different
        // chunks, is written once.
        let dedupe = queries.len() > 1 || views.len() > 1;
        let mut seen: HashSet<i64> = HashSet::new();
        let mut file: Option<std::io::BufWriter<std::fs::File>> = None;
        let mut count: u64 = 0;
        for q in &queries {
            for vis in &views {
                let mut page = None;
                loop {
                    let (rows, next) = {
                        let mut conn = store.conn()?;
                        export_page(&mut conn, *vis, q, page.take(), PAGE)?
                    };
                    for f in rows {
                        if dedupe && !seen.insert(f.pk) {
                            continue;
                        }
                        let w = match &mut file {
                            Some(w) => w,
                            None => {
                                let path = out_dir.join(format!("{ty}.ndjson"));
                                file.insert(std::io::BufWriter::new(
                                    std::fs::File::create(path).map_err(io)?,
                                ))
                            }
                        };
                        w.write_all(ndjson_line(&f.content).as_bytes())
                            .and_then(|_| w.write_all(b"\n"))
                            .map_err(io)?;
                        count += 1;
                        total += 1;
                    }
                    let text = format!("{ty}: {count} resources; {total} exported in all");
                    if !jobs::progress(&mut *store.conn()?, &job.id, &text, now_micros())? {
                        return Ok(None);
                    }
                    match next {
                        Some(n) => page = Some(n),
                        None => break,
                    }
                }
            }
        }
        if let Some(mut w) = file {
            w.flush().map_err(io)?;
            output.push(json!({"type": ty, "url": file_url(ty), "count": count}));
        }
    }
    let mut errors = Vec::new();
    if !plan.refused.is_empty() {
        let path = out_dir.join(format!("{ERROR_FILE}.ndjson"));
        let mut w = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
        for t in &plan.refused {
            let oo = json!({"resourceType": "OperationOutcome", "issue": [{
                "severity": "error", "code": "forbidden",
                "diagnostics": format!("{t} was not exported: the token's scopes do not allow reading it"),
            }]});
            writeln!(w, "{oo}").map_err(io)?;
        }
        w.flush().map_err(io)?;
        errors.push(json!({"type": "OperationOutcome", "url": file_url(ERROR_FILE), "count": plan.refused.len()}));
    }
    Ok(Some(json!({
        "transactionTime": tt,
        "request": job.request,
        "requiresAccessToken": plan.requires_token,
        "output": output,
        "error": errors,
    })))
}

/// The caller's job (404 for an unknown job and for someone else's: they learn nothing).
fn own_job(conn: &mut crate::store::DbConn, ctx: &RequestContext, id: &str) -> ApiResult<Job> {
    match jobs::get(conn, id)? {
        Some(j) if j.owner == ctx.reader_key() => Ok(j),
        _ => Err(ApiError::NotFound(format!("no export job {id}"))),
    }
}

/// The status of a job: in progress, its manifest, or why it failed. A job whose process has
/// stopped (a restart) is reported failed.
pub fn status(store: &Store, ctx: &RequestContext, id: &str) -> ApiResult<Status> {
    let mut conn = store.conn()?;
    let j = own_job(&mut conn, ctx, id)?;
    match j.status.as_str() {
        COMPLETED => {
            let m: Value = serde_json::from_str(j.manifest.as_deref().unwrap_or("{}"))
                .map_err(|e| ApiError::internal(format!("export manifest: {e}")))?;
            Ok(Status::Completed(m))
        }
        IN_PROGRESS if now_micros() - j.heartbeat > STALE_MICROS => {
            let msg = "the export was interrupted (the server process running it stopped); kick it off again";
            jobs::finish(&mut conn, id, FAILED, None, Some(msg), now_micros())?;
            Ok(Status::Failed(msg.into()))
        }
        IN_PROGRESS => Ok(Status::InProgress {
            progress: j.progress.unwrap_or_default(),
        }),
        _ => Ok(Status::Failed(j.error.unwrap_or_default())),
    }
}

/// Cancel a job (or delete a finished one) and its files; 404 when there is none.
pub fn cancel(store: &Store, ctx: &RequestContext, id: &str, dir: &Path) -> ApiResult<()> {
    let mut conn = store.conn()?;
    own_job(&mut conn, ctx, id)?;
    jobs::delete(&mut conn, id)?;
    let _ = std::fs::remove_dir_all(job_dir(dir, id));
    Ok(())
}

/// The path of an output file of a completed job of the caller's.
pub fn file(
    store: &Store,
    ctx: &RequestContext,
    id: &str,
    name: &str,
    dir: &Path,
) -> ApiResult<PathBuf> {
    let not_found = || ApiError::NotFound(format!("no export file {id}/{name}"));
    let stem = name.strip_suffix(".ndjson").ok_or_else(not_found)?;
    if stem.is_empty() || !stem.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(not_found());
    }
    let j = own_job(&mut *store.conn()?, ctx, id)?;
    if j.status != COMPLETED {
        return Err(not_found());
    }
    let path = job_dir(dir, id).join(name);
    if !path.is_file() {
        return Err(not_found());
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_filters_split_on_queries_not_on_value_lists() {
        assert_eq!(
            split_type_filters("Observation?status=final,amended,Condition?clinical-status=active"),
            vec![
                "Observation?status=final,amended".to_string(),
                "Condition?clinical-status=active".to_string()
            ]
        );
    }

    #[test]
    fn members_leave_when_inactive_or_ended() {
        let g = json!({"member": [
            {"entity": {"reference": "Patient/a"}},
            {"entity": {"reference": "Patient/b"}, "inactive": true},
            {"entity": {"reference": "Patient/c"}, "period": {"end": "2001-01-01"}},
            {"entity": {"reference": "Practitioner/d"}},
        ]});
        assert_eq!(
            active_members(&g, now_micros()),
            ["a".to_string()].into_iter().collect()
        );
    }
}
