//! Instance and type interactions: create, read, vread, update, delete — parse, call the
//! service with the request's context, render.
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::negotiate::{if_match, parse_version_tag, prefer_return, FhirBody, ReturnPref};
use super::response::{base_url, fhir_json, stored_body, version_headers};
use super::{blocking, State};
use crate::error::{ApiError, ApiResult};
use crate::fhir::datetime::parse_http_date;
use crate::fhir::outcome::{Issue, OperationOutcome};
use crate::fhir::resource::check_id;
use crate::service::write::{self, Change};
use crate::store::write::{WriteKind, WriteResult};

/// Turn a write result into the response the Prefer header asks for.
pub fn write_response(req: &HttpRequest, state: &State, r: WriteResult) -> HttpResponse {
    let base = base_url(req, state);
    let status = match r.kind {
        WriteKind::Created => StatusCode::CREATED,
        WriteKind::Updated => StatusCode::OK,
        WriteKind::Deleted | WriteKind::NoChange => StatusCode::NO_CONTENT,
    };
    let mut b = HttpResponse::build(status);
    if r.kind != WriteKind::NoChange {
        version_headers(&mut b, r.version, r.last_updated);
    }
    if matches!(r.kind, WriteKind::Created | WriteKind::Updated) {
        let loc = format!("{base}/{}/{}/_history/{}", r.ty, r.id, r.version);
        b.insert_header((header::LOCATION, loc.clone()));
        b.insert_header((header::CONTENT_LOCATION, loc));
    }
    let message = match r.kind {
        WriteKind::Created => format!("created {}/{} version {}", r.ty, r.id, r.version),
        WriteKind::Updated => format!("updated {}/{} to version {}", r.ty, r.id, r.version),
        WriteKind::Deleted => format!("deleted {}/{}", r.ty, r.id),
        WriteKind::NoChange => format!("{}/{} did not exist or was already deleted", r.ty, r.id),
    };
    if !r.cancelled_tasks.is_empty() {
        b.insert_header((
            crate::care::CANCELLED_TASKS_HEADER,
            r.cancelled_tasks.len().to_string(),
        ));
    }
    match (prefer_return(req), r.resource) {
        (ReturnPref::OperationOutcome, _) => {
            let mut issues = vec![Issue::information(message)];
            if !r.cancelled_tasks.is_empty() {
                issues.push(Issue::information(crate::care::cancelled_message(
                    &r.cancelled_tasks,
                )));
            }
            let oo = OperationOutcome { issues }.to_json();
            b.status(if status == StatusCode::NO_CONTENT {
                StatusCode::OK
            } else {
                status
            });
            b.insert_header((header::CONTENT_TYPE, super::negotiate::FHIR_JSON));
            b.body(super::response::json_body(req, &oo))
        }
        (ReturnPref::Representation, Some(res)) => {
            b.insert_header((header::CONTENT_TYPE, super::negotiate::FHIR_JSON));
            b.body(super::response::json_body(req, &res))
        }
        _ => b.finish(),
    }
}

/// POST /fhir/{type}
pub async fn create(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
    body: FhirBody,
) -> ApiResult<HttpResponse> {
    let ty = state.resource_type(&path)?.to_string();
    refuse_create_criteria(&req, &ty)?;
    if let Some(c) = req.headers().get("if-none-exist") {
        let c = c.to_str().unwrap_or_default();
        let c = c.split_once('?').map_or(c, |(_, q)| q).to_string();
        return super::bundle::conditional_create_handler(req, state, ty, c, body.0).await;
    }
    let st = state.clone();
    let ctx = super::auth::ctx(&req)?;
    let r =
        blocking(move || write::one(&st.store, &ctx, &ty, Change::Create { body: body.0 })).await?;
    Ok(write_response(&req, &state, r))
}

/// R4 create is `POST [base]/[type] {?_format}`: search criteria in its URL are not a
/// conditional create (that is `If-None-Exist`). Ignoring them would silently make a duplicate
/// for a client that meant one (fhirpy's `get_or_create` sends `POST Patient?identifier=…`),
/// so they are a 400, as in a transaction's POST entry.
fn refuse_create_criteria(req: &HttpRequest, ty: &str) -> ApiResult<()> {
    let names: Vec<String> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .map(|(k, _)| k.into_owned())
        .filter(|k| k != "_format" && k != "_pretty")
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "POST {ty} takes no search parameters in its URL (got {}); for a conditional create \
         send the criteria in the If-None-Exist header",
        names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// PUT /fhir/{type}/{id}
pub async fn update(
    req: HttpRequest,
    state: State,
    path: web::Path<(String, String)>,
    body: FhirBody,
) -> ApiResult<HttpResponse> {
    let (ty, id) = path.into_inner();
    state.resource_type(&ty)?;
    check_id(&id)?;
    let if_match = if_match(&req)?;
    let st = state.clone();
    let ctx = super::auth::ctx(&req)?;
    let r = blocking(move || {
        write::one(
            &st.store,
            &ctx,
            &ty,
            Change::Update {
                id,
                body: body.0,
                if_match,
            },
        )
    })
    .await?;
    Ok(write_response(&req, &state, r))
}

/// DELETE /fhir/{type}/{id}
pub async fn delete(
    req: HttpRequest,
    state: State,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (ty, id) = path.into_inner();
    state.resource_type(&ty)?;
    check_id(&id)?;
    let if_match = if_match(&req)?;
    let cascade = match web::Query::<std::collections::HashMap<String, String>>::from_query(
        req.query_string(),
    )
    .ok()
    .and_then(|q| q.get("_cascade").cloned())
    {
        None => false,
        Some(v) if v == "delete" && state.auth.policy.allow_cascade_delete => true,
        Some(v) if v == "delete" => {
            return Err(ApiError::bad_request(
                "cascading delete is disabled on this server (ICM_ALLOW_CASCADE_DELETE=off)",
            ))
        }
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "_cascade must be 'delete', not '{v}'"
            )))
        }
    };
    let st = state.clone();
    let ctx = super::auth::ctx(&req)?;
    let r = blocking(move || {
        if cascade {
            let r = write::run(&st.store, &ctx, |u| {
                let r = u.cascade_delete(&ty, &id, if_match)?;
                u.audit_write(&r)?;
                Ok(r)
            })?;
            ctx.mark_audited();
            Ok(r)
        } else {
            write::one(&st.store, &ctx, &ty, Change::Delete { id, if_match })
        }
    })
    .await?;
    Ok(write_response(&req, &state, r))
}

/// Whether If-None-Match / If-Modified-Since let us answer 304.
fn not_modified(req: &HttpRequest, version: i64, last_updated: i64) -> bool {
    if let Some(v) = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|h| h.to_str().ok())
    {
        return v
            .split(',')
            .any(|t| t.trim() == "*" || parse_version_tag(t) == Some(version));
    }
    if let Some(since) = req
        .headers()
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|h| h.to_str().ok())
        .and_then(parse_http_date)
    {
        // HTTP dates have one-second precision.
        return last_updated / 1_000_000 <= since / 1_000_000;
    }
    false
}

/// GET /fhir/{type}/{id}
pub async fn read(
    req: HttpRequest,
    state: State,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (ty, id) = path.into_inner();
    state.resource_type(&ty)?;
    check_id(&id)?;
    let st = state.clone();
    let ctx = super::auth::ctx(&req)?;
    // A conditional read names a version the client has seen: only the primary surely has it.
    let primary = req
        .headers()
        .contains_key(actix_web::http::header::IF_NONE_MATCH)
        || req
            .headers()
            .contains_key(actix_web::http::header::IF_MODIFIED_SINCE);
    let row = blocking(move || {
        let mut conn = if primary {
            st.store.conn()?
        } else {
            st.store.read_conn(&ctx.reader_key())?
        };
        crate::service::read::read(&mut conn, &ctx, &ty, &id)
    })
    .await?;
    let mut b = HttpResponse::Ok();
    version_headers(&mut b, row.version_id, row.last_updated);
    if not_modified(&req, row.version_id, row.last_updated) {
        return Ok(b.status(StatusCode::NOT_MODIFIED).finish());
    }
    Ok(stored_body(&req, &mut b, row.content.unwrap_or_default()))
}

/// GET /fhir/{type}/{id}/_history/{vid}
pub async fn vread(
    req: HttpRequest,
    state: State,
    path: web::Path<(String, String, String)>,
) -> ApiResult<HttpResponse> {
    let (ty, id, vid) = path.into_inner();
    state.resource_type(&ty)?;
    check_id(&id)?;
    let version: i64 = vid
        .parse()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::NotFound(format!("{ty}/{id} has no version '{vid}'")))?;
    let st = state.clone();
    let ctx = super::auth::ctx(&req)?;
    let row = blocking(move || {
        crate::service::read::vread(&mut *st.store.conn()?, &ctx, &ty, &id, version)
    })
    .await?;
    let mut b = HttpResponse::Ok();
    version_headers(&mut b, row.version_id, row.last_updated);
    Ok(stored_body(&req, &mut b, row.content.unwrap_or_default()))
}

/// An OperationOutcome response (used for 2xx informational answers).
pub fn outcome_response(
    req: &HttpRequest,
    status: StatusCode,
    oo: &OperationOutcome,
) -> HttpResponse {
    fhir_json(req, status, &oo.to_json())
}

/// Re-export for handlers that build resource JSON.
pub type Json = Value;
