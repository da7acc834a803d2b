//! PATCH /fhir/{type}/{id} with a JSON Patch document (application/json-patch+json) or a JSON
//! Merge Patch (application/merge-patch+json, RFC 7386).
use actix_web::{web, HttpRequest, HttpResponse};

use super::interactions::write_response;
use super::negotiate::{check_content_type, if_match, read_body};
use super::{blocking, State};
use crate::error::{ApiError, ApiResult};
use crate::fhir::resource::check_id;
use crate::service::write::{self, Change};

pub const JSON_PATCH: &str = "application/json-patch+json";
pub const MERGE_PATCH: &str = "application/merge-patch+json";

pub async fn patch(
    req: HttpRequest,
    state: State,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let (ty, id) = path.into_inner();
    state.resource_type(&ty)?;
    check_id(&id)?;
    if req.headers().get("content-type").is_none() {
        return Err(ApiError::UnsupportedMediaType(format!(
            "PATCH needs Content-Type: {JSON_PATCH} or {MERGE_PATCH}"
        )));
    }
    check_content_type(&req, &[JSON_PATCH, MERGE_PATCH])?;
    let merge = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with(MERGE_PATCH));
    let if_match = if_match(&req)?;
    let bytes = read_body(&req, &mut payload.into_inner(), state.config.max_body).await?;
    let patch: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::structure(format!(
            "the patch document is not valid JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let st = state.clone();
    let ctx = super::auth::ctx(&req)?;
    let r = blocking(move || {
        write::one(
            &st.store,
            &ctx,
            &ty,
            Change::Patch {
                id,
                patch,
                if_match,
                merge,
            },
        )
    })
    .await?;
    Ok(write_response(&req, &state, r))
}
