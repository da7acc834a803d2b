//! POST /fhir (transaction and batch Bundles) and the conditional interactions: conditional
//! create (If-None-Exist), update (PUT /Type?criteria) and delete (DELETE /Type?criteria);
//! conditional PATCH is in http::patch.
//! Parse and render only: the work is service::bundle and the unit of work's conditional forms.
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::interactions::write_response;
use super::negotiate::{
    check_content_type, if_match, prefer_return, read_body, FhirBody, ReturnPref, JSON_TYPES,
};
use super::{blocking, State};
use crate::error::{ApiError, ApiResult};
use crate::fhir::outcome::{Issue, OperationOutcome};
use crate::service::write::conditional::Created;
use crate::service::write::{self, UnitOfWork};
use crate::store::write::WriteKind;

/// POST /fhir (a body of at most ICM_MAX_BUNDLE_BODY bytes)
pub async fn transaction_or_batch(
    req: HttpRequest,
    state: State,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    check_content_type(&req, JSON_TYPES)?;
    let body = read_body(
        &req,
        &mut payload.into_inner(),
        state.config.max_bundle_body,
    )
    .await?;
    let minimal = prefer_return(&req) == ReturnPref::Minimal;
    let ctx = super::auth::ctx(&req)?;
    let st = state.clone();
    let b = blocking(move || {
        crate::service::bundle::process(
            &st.store,
            &ctx,
            body,
            st.config.max_bundle_entries,
            minimal,
        )
    })
    .await?;
    Ok(super::response::stored_body(
        &req,
        &mut HttpResponse::Ok(),
        b,
    ))
}

/// The search criteria of a conditional request (the whole query string); 405 when empty.
pub fn criteria(req: &HttpRequest, what: &str) -> ApiResult<String> {
    let q = req.query_string();
    if q.trim().is_empty() {
        return Err(ApiError::MethodNotAllowed(format!(
            "{what} on a resource type needs search criteria (e.g. ?identifier=system|value)"
        )));
    }
    Ok(q.to_string())
}

/// POST /fhir/{type} with If-None-Exist: 0 matches → create, 1 → 200 with the existing one,
/// more → 412; matches only outside the caller's access → 403.
pub async fn conditional_create_handler(
    req: HttpRequest,
    state: State,
    ty: String,
    criteria: String,
    body: Value,
) -> ApiResult<HttpResponse> {
    let st = state.clone();
    let ctx = super::auth::ctx(&req)?;
    let out = blocking(move || {
        let created = write::run(&st.store, &ctx, |u: &mut UnitOfWork| {
            let c = u.conditional_create(
                &ty,
                &criteria,
                uuid::Uuid::new_v4().to_string(),
                body.clone(),
            )?;
            if let Created::Written(r) = &c {
                u.audit_write(r)?;
            }
            Ok(c)
        })?;
        if let Created::Written(_) = &created {
            ctx.mark_audited();
        }
        Ok(match created {
            Created::Written(r) => (Some(r), None),
            Created::Existing { ty, id } => {
                let row = crate::service::read::read(&mut *st.store.conn()?, &ctx, &ty, &id)?;
                (None, Some((ty, id, row)))
            }
        })
    })
    .await?;
    match out {
        (Some(r), _) => Ok(write_response(&req, &state, r)),
        (None, Some((ty, id, row))) => {
            let mut b = HttpResponse::Ok();
            super::response::version_headers(&mut b, row.version_id, row.last_updated);
            let ctx = super::auth::ctx(&req)?;
            let loc = format!("{}/{ty}/{id}/_history/{}", ctx.base, row.version_id);
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
    let ctx = super::auth::ctx(&req)?;
    let r = blocking(move || {
        let r = write::run(&st.store, &ctx, |u| {
            let r = u.conditional_update(&ty, &criteria, body.0.clone(), if_match)?;
            u.audit_write(&r)?;
            Ok(r)
        })?;
        ctx.mark_audited();
        Ok(r)
    })
    .await?;
    Ok(write_response(&req, &state, r))
}

/// DELETE /fhir/{type}?criteria: deletes every visible match; 204 (or 200 with an
/// OperationOutcome saying how many when Prefer: return=OperationOutcome).
pub async fn conditional_delete(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let ty = state.resource_type(&path)?.to_string();
    let criteria = criteria(&req, "DELETE")?;
    let st = state.clone();
    let t2 = ty.clone();
    let ctx = super::auth::ctx(&req)?;
    let rs = blocking(move || {
        let rs = write::run(&st.store, &ctx, |u| {
            let rs = u.conditional_delete(&t2, &criteria)?;
            u.audit_request()?;
            Ok(rs)
        })?;
        ctx.mark_audited();
        Ok(rs)
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
