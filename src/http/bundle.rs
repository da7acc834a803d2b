//! POST /fhir (transaction and batch Bundles) and the conditional interactions: conditional
//! create (If-None-Exist), update (PUT /Type?criteria) and delete (DELETE /Type?criteria).
//! Every write goes through `store::write::apply`; a transaction is one database transaction.
use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::interactions::write_response;
use super::negotiate::{if_match, prefer_return, FhirBody, ReturnPref};
use super::response::{base_url, etag, fhir_json};
use super::{blocking, State};
use crate::error::{ApiError, ApiResult};
use crate::fhir::bundle::bundle;
use crate::fhir::datetime::format_instant;
use crate::fhir::outcome::{Issue, OperationOutcome};
use crate::fhir::transaction::{self as tx, Entry, Kind, Method};
use crate::store::backend::DbConn;
use crate::store::lookup::{find_ids, lock_criteria, read_current, read_version};
use crate::store::write::{apply, Change, WriteKind, WriteResult};
use crate::store::Store;

/// What one entry did.
enum Outcome {
    Written(WriteResult),
    /// Conditional create that matched one existing resource.
    Existing {
        ty: String,
        id: String,
    },
    Read {
        ty: String,
        id: String,
        version: i64,
        last_updated: i64,
        content: Option<String>,
        head: bool,
    },
    /// A search entry: the searchset Bundle.
    Search(Value),
    Failed(ApiError),
}

/// Prefix an error's messages with the entry it came from, keeping its status.
pub fn at_entry(e: ApiError, label: &str) -> ApiError {
    let p = |m: String| format!("{label}: {m}");
    match e {
        ApiError::BadRequest {
            code,
            msg,
            expression,
        } if !msg.starts_with("Bundle.entry[") => ApiError::BadRequest {
            code,
            msg: p(msg),
            expression,
        },
        ApiError::NotFound(m) => ApiError::NotFound(p(m)),
        ApiError::MethodNotAllowed(m) => ApiError::MethodNotAllowed(p(m)),
        ApiError::Conflict(m) => ApiError::Conflict(p(m)),
        ApiError::BusinessRule(m) => ApiError::BusinessRule(p(m)),
        ApiError::Gone(m) => ApiError::Gone(p(m)),
        ApiError::PreconditionFailed(m) => ApiError::PreconditionFailed(p(m)),
        ApiError::Forbidden(m) => ApiError::Forbidden(p(m)),
        ApiError::Unprocessable(issues) => ApiError::Unprocessable(
            issues
                .into_iter()
                .map(|mut i| {
                    if !i.diagnostics.starts_with("Bundle.entry[") {
                        i.diagnostics = p(i.diagnostics);
                    }
                    i
                })
                .collect(),
        ),
        other => other,
    }
}

/// Resolve a single match for conditional criteria (0 → None, 1 → id, more → 412).
fn single_match(conn: &mut DbConn, ty: &str, q: &str) -> ApiResult<Option<String>> {
    let ids = find_ids(conn, ty, q)?;
    match ids.len() {
        0 => Ok(None),
        1 => Ok(ids.into_iter().next()),
        n => Err(ApiError::PreconditionFailed(format!(
            "{n} {ty} resources match '{q}'; the criteria must select at most one"
        ))),
    }
}

/// Conditional create inside the caller's transaction: the existing id when one matches.
fn conditional_create(
    conn: &mut DbConn,
    ty: &str,
    criteria: &str,
    id: String,
    body: Value,
) -> ApiResult<Outcome> {
    lock_criteria(conn, ty, criteria)?;
    match single_match(conn, ty, criteria)? {
        Some(existing) => Ok(Outcome::Existing {
            ty: ty.to_string(),
            id: existing,
        }),
        None => Ok(Outcome::Written(apply(
            conn,
            ty,
            Change::CreateWithId { id, body },
        )?)),
    }
}

/// Conditional update: 0 matches → create (the body's id, or a new one), 1 → update it,
/// more → 412.
fn cond_update_tx(
    conn: &mut DbConn,
    ty: &str,
    criteria: &str,
    mut body: Value,
    if_match: Option<i64>,
) -> ApiResult<WriteResult> {
    lock_criteria(conn, ty, criteria)?;
    let body_id = crate::fhir::resource::body_id(&body)?.map(str::to_string);
    match single_match(conn, ty, criteria)? {
        Some(id) => {
            if body_id.as_ref().is_some_and(|b| *b != id) {
                return Err(ApiError::invalid_at(
                    format!(
                        "the resource id '{}' differs from the matching {ty}/{id}",
                        body_id.unwrap_or_default()
                    ),
                    "id",
                ));
            }
            body["id"] = Value::String(id.clone());
            apply(conn, ty, Change::Update { id, body, if_match })
        }
        None => match body_id {
            Some(id) => apply(conn, ty, Change::Update { id, body, if_match }),
            None => apply(conn, ty, Change::Create { body }),
        },
    }
}

/// Conditional delete: every match is deleted (0 → nothing to do). More than one match is
/// allowed (this server supports `conditionalDelete: multiple`).
fn cond_delete_tx(conn: &mut DbConn, ty: &str, criteria: &str) -> ApiResult<Vec<WriteResult>> {
    lock_criteria(conn, ty, criteria)?;
    let ids = find_ids(conn, ty, criteria)?;
    ids.into_iter()
        .map(|id| apply(conn, ty, Change::Delete { id, if_match: None }))
        .collect()
}

/// Run one entry (references already rewritten) inside the caller's transaction.
fn run_entry(
    conn: &mut DbConn,
    e: &Entry,
    resource: Option<Value>,
    new_id: Option<&String>,
    base: &str,
) -> ApiResult<Outcome> {
    let ty = e.target.ty.as_str();
    let id = e.target.id.clone();
    let q = e.target.query.as_deref();
    let body = || resource.clone().expect("checked in parse");
    Ok(match e.method {
        Method::Delete => match (id, q) {
            (Some(id), _) => Outcome::Written(apply(
                conn,
                ty,
                Change::Delete {
                    id,
                    if_match: e.if_match,
                },
            )?),
            (None, Some(q)) => {
                let n = cond_delete_tx(conn, ty, q)?;
                match n.into_iter().last() {
                    Some(r) => Outcome::Written(r),
                    None => Outcome::Written(WriteResult {
                        ty: ty.to_string(),
                        id: String::new(),
                        version: 0,
                        last_updated: 0,
                        resource: None,
                        kind: WriteKind::NoChange,
                        cancelled_tasks: vec![],
                    }),
                }
            }
            _ => unreachable!("checked in parse"),
        },
        Method::Post => {
            let id = new_id
                .cloned()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            match &e.if_none_exist {
                Some(c) => conditional_create(conn, ty, c, id, body())?,
                None => {
                    Outcome::Written(apply(conn, ty, Change::CreateWithId { id, body: body() })?)
                }
            }
        }
        Method::Put => match (id, q) {
            (Some(id), _) => Outcome::Written(apply(
                conn,
                ty,
                Change::Update {
                    id,
                    body: body(),
                    if_match: e.if_match,
                },
            )?),
            (None, Some(q)) => Outcome::Written(cond_update_tx(conn, ty, q, body(), e.if_match)?),
            _ => unreachable!("checked in parse"),
        },
        Method::Patch => {
            let id = match (id, q) {
                (Some(id), _) => id,
                (None, Some(q)) => single_match(conn, ty, q)?
                    .ok_or_else(|| ApiError::NotFound(format!("no {ty} matches '{q}'")))?,
                _ => unreachable!("checked in parse"),
            };
            let patch = tx::patch_document(e)?;
            Outcome::Written(apply(
                conn,
                ty,
                Change::Patch {
                    id,
                    patch,
                    if_match: e.if_match,
                },
            )?)
        }
        Method::Get | Method::Head if id.is_none() => {
            Outcome::Search(search_entry(conn, ty, q.unwrap_or(""), base)?)
        }
        Method::Get | Method::Head => {
            let id = id.expect("checked above");
            let row = match &e.target.version {
                None => read_current(conn, ty, &id)?,
                Some(v) => match v.parse::<i64>() {
                    Ok(n) => read_version(conn, ty, &id, n)?,
                    Err(_) => None,
                },
            }
            .ok_or_else(|| ApiError::NotFound(format!("{ty}/{id} is not known")))?;
            if row.deleted {
                return Err(ApiError::Gone(format!("{ty}/{id} was deleted")));
            }
            Outcome::Read {
                ty: ty.to_string(),
                id,
                version: row.version_id,
                last_updated: row.last_updated,
                content: row.content,
                head: e.method == Method::Head,
            }
        }
    })
}

/// A search inside a Bundle: one page (`_count`, default 20) as a searchset Bundle.
fn search_entry(conn: &mut DbConn, ty: &str, query: &str, base: &str) -> ApiResult<Value> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut q = crate::fhir::search::SearchQuery::from_pairs(ty, &pairs);
    q.set_base(base);
    let limit = q.count.unwrap_or(20).clamp(0, 1000);
    let page = crate::store::search::search(conn, &q, limit)?;
    let total = (q.page.is_none() && page.next.is_none()).then_some(page.matches.len() as u64);
    let to_entry = |f: crate::store::search::Found, mode: &str| {
        json!({
            "fullUrl": format!("{base}/{}/{}", f.res_type, f.res_id),
            "resource": serde_json::from_str::<Value>(&f.content).unwrap_or(Value::Null),
            "search": {"mode": mode},
        })
    };
    let mut entries: Vec<Value> = page
        .matches
        .into_iter()
        .map(|f| to_entry(f, "match"))
        .collect();
    entries.extend(page.included.into_iter().map(|f| to_entry(f, "include")));
    let mut links = vec![("self", format!("{base}/{ty}?{query}"))];
    if let Some(n) = page.next {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &q.applied {
            if k != "_count" {
                ser.append_pair(k, v);
            }
        }
        ser.append_pair("_count", &limit.to_string());
        ser.append_pair("_page", &n);
        links.push(("next", format!("{base}/{ty}?{}", ser.finish())));
    }
    Ok(bundle("searchset", total, &links, entries))
}

/// The server-assigned id and reference map of a transaction: POST entries get their ids
/// now (so every urn:uuid can be rewritten before any write); PUT entries map to Type/id.
fn assign_ids(entries: &[Entry]) -> (HashMap<usize, String>, HashMap<String, String>) {
    let mut ids = HashMap::new();
    let mut refs = HashMap::new();
    for e in entries {
        let target = match e.method {
            Method::Post => {
                let id = uuid::Uuid::new_v4().to_string();
                ids.insert(e.index, id.clone());
                Some(format!("{}/{id}", e.target.ty))
            }
            Method::Put | Method::Patch => e
                .target
                .id
                .as_ref()
                .map(|id| format!("{}/{id}", e.target.ty)),
            _ => None,
        };
        if let (Some(full), Some(t)) = (&e.full_url, target) {
            refs.insert(full.clone(), t);
        }
    }
    (ids, refs)
}

/// Resolve conditional references (`Type?criteria`) in a resource to `Type/id` (exactly one
/// match required).
fn resolve_conditional_refs(
    conn: &mut DbConn,
    resource: &mut Value,
    cache: &mut HashMap<String, String>,
) -> ApiResult<()> {
    let mut found = vec![];
    tx::conditional_references(resource, &mut found);
    if found.is_empty() {
        return Ok(());
    }
    let mut map = HashMap::new();
    for r in found {
        if let Some(t) = cache.get(&r) {
            map.insert(r, t.clone());
            continue;
        }
        let (ty, q) = r.split_once('?').expect("checked");
        let ids = find_ids(conn, ty, q)?;
        let t = match ids.as_slice() {
            [one] => format!("{ty}/{one}"),
            [] => {
                return Err(ApiError::PreconditionFailed(format!(
                    "conditional reference '{r}' matches no resource"
                )))
            }
            _ => {
                return Err(ApiError::PreconditionFailed(format!(
                    "conditional reference '{r}' matches {} resources",
                    ids.len()
                )))
            }
        };
        cache.insert(r.clone(), t.clone());
        map.insert(r, t);
    }
    tx::rewrite_references(resource, &map);
    Ok(())
}

/// A transaction: all entries in one database transaction, in the spec's order; the first
/// failure rolls everything back and is reported naming its entry.
fn run_transaction(
    store: &Store,
    parsed: Vec<Result<Entry, ApiError>>,
    base: &str,
) -> ApiResult<Vec<Outcome>> {
    let entries: Vec<Entry> = parsed.into_iter().collect::<Result<_, _>>()?;
    let order = tx::processing_order(&entries);
    store.write_tx(|conn| {
        let (ids, refs) = assign_ids(&entries);
        let mut cache = HashMap::new();
        // Conditional creates that match an existing resource point their fullUrl at it.
        let mut refs = refs;
        let mut pre: HashMap<usize, Outcome> = HashMap::new();
        for e in entries.iter().filter(|e| e.method == Method::Post) {
            if let Some(c) = &e.if_none_exist {
                lock_criteria(conn, &e.target.ty, c).map_err(|x| at_entry(x, &e.label()))?;
                if let Some(existing) =
                    single_match(conn, &e.target.ty, c).map_err(|x| at_entry(x, &e.label()))?
                {
                    if let Some(f) = &e.full_url {
                        refs.insert(f.clone(), format!("{}/{existing}", e.target.ty));
                    }
                    pre.insert(
                        e.index,
                        Outcome::Existing {
                            ty: e.target.ty.clone(),
                            id: existing,
                        },
                    );
                }
            }
        }
        let mut out: Vec<Option<Outcome>> = (0..entries.len()).map(|_| None).collect();
        let mut touched: std::collections::HashSet<(String, String)> = Default::default();
        // Entries reference each other in any order: their references are checked at the end.
        crate::store::integrity::with_deferred_references(conn, |conn| {
            for &i in &order {
                let e = &entries[i];
                if let Some(o) = pre.remove(&e.index) {
                    out[i] = Some(o);
                    continue;
                }
                let mut resource = e.resource.clone();
                if let Some(r) = resource.as_mut() {
                    tx::rewrite_references(r, &refs);
                    resolve_conditional_refs(conn, r, &mut cache)
                        .map_err(|x| at_entry(x, &e.label()))?;
                }
                let o = run_entry(conn, e, resource, ids.get(&e.index), base)
                    .map_err(|x| at_entry(x, &e.label()))?;
                // The spec: resource identities changed by two entries fail the transaction.
                if let Outcome::Written(r) = &o {
                    if !r.id.is_empty() && !touched.insert((r.ty.clone(), r.id.clone())) {
                        return Err(ApiError::invalid_at(
                            format!(
                                "{}: {}/{} is changed by more than one entry of the transaction",
                                e.label(),
                                r.ty,
                                r.id
                            ),
                            format!("Bundle.entry[{}]", e.index),
                        ));
                    }
                }
                out[i] = Some(o);
            }
            Ok(())
        })?;
        Ok(out
            .into_iter()
            .map(|o| o.expect("every entry ran"))
            .collect())
    })
}

/// A batch: every entry on its own, in its own transaction; failures are reported per entry.
fn run_batch(store: &Store, parsed: Vec<Result<Entry, ApiError>>, base: &str) -> Vec<Outcome> {
    parsed
        .into_iter()
        .map(|p| {
            let e = match p {
                Ok(e) => e,
                Err(err) => return Outcome::Failed(err),
            };
            store
                .write_tx(|conn| {
                    let mut resource = e.resource.clone();
                    if let Some(r) = resource.as_mut() {
                        resolve_conditional_refs(conn, r, &mut HashMap::new())?;
                    }
                    run_entry(conn, &e, resource, None, base)
                })
                .unwrap_or_else(|err| Outcome::Failed(at_entry(err, &e.label())))
        })
        .collect()
}

fn status_line(code: u16) -> String {
    let s = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    format!("{} {}", s.as_u16(), s.canonical_reason().unwrap_or(""))
}

/// Reads the current (version, lastUpdated, content) of a resource for a response entry.
type CurrentReader<'a> = dyn FnMut(&str, &str) -> Option<(i64, i64, Option<String>)> + 'a;

/// The response entry for one outcome.
fn response_entry(
    o: Outcome,
    base: &str,
    minimal: bool,
    conn_reads: &mut CurrentReader<'_>,
) -> Value {
    match o {
        Outcome::Written(r) => {
            let code = match r.kind {
                WriteKind::Created => 201,
                WriteKind::Updated => 200,
                WriteKind::Deleted | WriteKind::NoChange => 204,
            };
            let mut resp = json!({"status": status_line(code)});
            let mut entry = serde_json::Map::new();
            if matches!(r.kind, WriteKind::Created | WriteKind::Updated) {
                entry.insert("fullUrl".into(), json!(format!("{base}/{}/{}", r.ty, r.id)));
                resp["location"] = json!(format!("{}/{}/_history/{}", r.ty, r.id, r.version));
            }
            if r.kind != WriteKind::NoChange {
                resp["etag"] = json!(etag(r.version));
                resp["lastModified"] = json!(format_instant(r.last_updated));
            }
            if !r.cancelled_tasks.is_empty() {
                resp["outcome"] = OperationOutcome::single(Issue::information(
                    crate::care::cancelled_message(&r.cancelled_tasks),
                ))
                .to_json();
            }
            if let (false, Some(res)) = (minimal, r.resource) {
                entry.insert("resource".into(), res);
            }
            entry.insert("response".into(), resp);
            Value::Object(entry)
        }
        Outcome::Existing { ty, id } => {
            let mut entry = json!({"fullUrl": format!("{base}/{ty}/{id}")});
            let mut resp = json!({"status": status_line(200)});
            if let Some((v, lu, content)) = conn_reads(&ty, &id) {
                resp["location"] = json!(format!("{ty}/{id}/_history/{v}"));
                resp["etag"] = json!(etag(v));
                resp["lastModified"] = json!(format_instant(lu));
                if let (false, Some(c)) = (
                    minimal,
                    content.and_then(|c| serde_json::from_str::<Value>(&c).ok()),
                ) {
                    entry["resource"] = c;
                }
            }
            entry["response"] = resp;
            entry
        }
        Outcome::Read {
            ty,
            id,
            version,
            last_updated,
            content,
            head,
        } => {
            let mut entry = json!({"fullUrl": format!("{base}/{ty}/{id}")});
            if !head {
                if let Some(c) = content.and_then(|c| serde_json::from_str::<Value>(&c).ok()) {
                    entry["resource"] = c;
                }
            }
            entry["response"] = json!({
                "status": status_line(200),
                "etag": etag(version),
                "lastModified": format_instant(last_updated),
            });
            entry
        }
        Outcome::Search(b) => json!({
            "resource": b,
            "response": {"status": status_line(200)},
        }),
        Outcome::Failed(e) => {
            use actix_web::ResponseError;
            json!({"response": {
                "status": status_line(e.status_code().as_u16()),
                "outcome": e.outcome().to_json(),
            }})
        }
    }
}

/// POST /fhir
pub async fn transaction_or_batch(
    req: HttpRequest,
    state: State,
    body: FhirBody,
) -> ApiResult<HttpResponse> {
    let base = base_url(&req, &state);
    let (kind, entries) = tx::parse(&body.0, &base, state.config.max_bundle_entries)?;
    let minimal = prefer_return(&req) == ReturnPref::Minimal;
    let st = state.clone();
    let b2 = base.clone();
    let entries_json = blocking(move || {
        let outcomes = match kind {
            Kind::Transaction => run_transaction(&st.store, entries, &b2)?,
            Kind::Batch => run_batch(&st.store, entries, &b2),
        };
        let mut reads = |ty: &str, id: &str| {
            st.store
                .read(ty, id)
                .ok()
                .flatten()
                .map(|r| (r.version_id, r.last_updated, r.content))
        };
        Ok(outcomes
            .into_iter()
            .map(|o| response_entry(o, &b2, minimal, &mut reads))
            .collect::<Vec<Value>>())
    })
    .await?;
    let kind_name = match kind {
        Kind::Transaction => "transaction-response",
        Kind::Batch => "batch-response",
    };
    Ok(fhir_json(
        &req,
        StatusCode::OK,
        &bundle(kind_name, None, &[], entries_json),
    ))
}

/// The search criteria of a conditional request (the whole query string); 400 when empty.
fn criteria(req: &HttpRequest, what: &str) -> ApiResult<String> {
    let q = req.query_string();
    if q.trim().is_empty() {
        return Err(ApiError::MethodNotAllowed(format!(
            "{what} on a resource type needs search criteria (e.g. ?identifier=system|value)"
        )));
    }
    Ok(q.to_string())
}

/// POST /fhir/{type} with If-None-Exist: 0 matches → create, 1 → 200 with the existing one,
/// more → 412.
pub async fn conditional_create_handler(
    req: HttpRequest,
    state: State,
    ty: String,
    criteria: String,
    body: Value,
) -> ApiResult<HttpResponse> {
    let st = state.clone();
    let t2 = ty.clone();
    let out = blocking(move || {
        st.store.write_tx(|conn| {
            conditional_create(
                conn,
                &t2,
                &criteria,
                uuid::Uuid::new_v4().to_string(),
                body.clone(),
            )
        })
    })
    .await?;
    match out {
        Outcome::Written(r) => Ok(write_response(&req, &state, r)),
        Outcome::Existing { ty, id } => {
            let st = state.clone();
            let (t2, i2) = (ty.clone(), id.clone());
            let row = blocking(move || st.store.read(&t2, &i2))
                .await?
                .ok_or_else(|| ApiError::internal("matched resource vanished"))?;
            let mut b = HttpResponse::Ok();
            super::response::version_headers(&mut b, row.version_id, row.last_updated);
            let loc = format!(
                "{}/{ty}/{id}/_history/{}",
                base_url(&req, &state),
                row.version_id
            );
            b.insert_header((actix_web::http::header::LOCATION, loc));
            Ok(match prefer_return(&req) {
                ReturnPref::Minimal => b.finish(),
                ReturnPref::OperationOutcome => {
                    b.insert_header((
                        actix_web::http::header::CONTENT_TYPE,
                        super::negotiate::FHIR_JSON,
                    ));
                    b.body(
                        OperationOutcome::single(Issue::information(format!(
                            "{ty}/{id} matches If-None-Exist; nothing was created"
                        )))
                        .to_json_string(),
                    )
                }
                ReturnPref::Representation => {
                    super::response::stored_body(&req, &mut b, row.content.unwrap_or_default())
                }
            })
        }
        _ => Err(ApiError::internal("unexpected conditional create outcome")),
    }
}

/// PUT /fhir/{type}?criteria
pub async fn conditional_update(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
    body: FhirBody,
) -> ApiResult<HttpResponse> {
    let ty = state.resource_type(&path)?.to_string();
    let criteria = criteria(&req, "PUT")?;
    let if_match = if_match(&req)?;
    let st = state.clone();
    let r = blocking(move || {
        st.store
            .write_tx(|conn| cond_update_tx(conn, &ty, &criteria, body.0.clone(), if_match))
    })
    .await?;
    Ok(write_response(&req, &state, r))
}

/// DELETE /fhir/{type}?criteria: deletes every match; 204 (or 200 with an OperationOutcome
/// saying how many when Prefer: return=OperationOutcome).
pub async fn conditional_delete(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let ty = state.resource_type(&path)?.to_string();
    let criteria = criteria(&req, "DELETE")?;
    let st = state.clone();
    let t2 = ty.clone();
    let rs = blocking(move || {
        st.store
            .write_tx(|conn| cond_delete_tx(conn, &t2, &criteria))
    })
    .await?;
    let n = rs.iter().filter(|r| r.kind == WriteKind::Deleted).count();
    if prefer_return(&req) == ReturnPref::OperationOutcome {
        return Ok(super::interactions::outcome_response(
            &req,
            StatusCode::OK,
            &OperationOutcome::single(Issue::information(format!("deleted {n} {ty} resource(s)"))),
        ));
    }
    Ok(HttpResponse::NoContent().finish())
}
