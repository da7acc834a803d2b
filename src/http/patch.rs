//! PATCH /fhir/{type}/{id} and the conditional PATCH /fhir/{type}?criteria, with a JSON Patch
//! (application/json-patch+json), a JSON Merge Patch (application/merge-patch+json, RFC 7386)
//! or a FHIRPath Patch (a Parameters resource as application/fhir+json or application/json).
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::interactions::write_response;
use super::negotiate::{check_content_type, if_match, read_body};
use super::{blocking, State};
use crate::error::{ApiError, ApiResult};
use crate::fhir::patch::PatchFormat;
use crate::fhir::resource::check_id;
use crate::service::write::{self, Change};

pub const JSON_PATCH: &str = "application/json-patch+json";
pub const MERGE_PATCH: &str = "application/merge-patch+json";
/// The patch formats the CapabilityStatement lists (`application/fhir+json`: FHIRPath Patch).
pub const PATCH_FORMATS: &[&str] = &[JSON_PATCH, MERGE_PATCH, "application/fhir+json"];
/// The media types of a FHIRPath Patch body (a Parameters resource).
const FHIRPATH_PATCH: &[&str] = &[
    "application/fhir+json",
    "application/json",
    "application/json+fhir",
];

/// The patch document of a PATCH request and its format (from the Content-Type).
async fn patch_body(
    req: &HttpRequest,
    state: &State,
    payload: web::Payload,
) -> ApiResult<(PatchFormat, Value)> {
    let mut accepted = vec![JSON_PATCH, MERGE_PATCH];
    accepted.extend_from_slice(FHIRPATH_PATCH);
    let Some(ct) = req.headers().get("content-type") else {
        return Err(ApiError::UnsupportedMediaType(format!(
            "PATCH needs Content-Type: {JSON_PATCH}, {MERGE_PATCH}, or application/fhir+json with a FHIRPath Patch (Parameters)"
        )));
    };
    check_content_type(req, &accepted)?;
    let ct = ct.to_str().unwrap_or("").trim().to_ascii_lowercase();
    let format = if ct.starts_with(MERGE_PATCH) {
        PatchFormat::Merge
    } else if ct.starts_with(JSON_PATCH) {
        PatchFormat::Json
    } else {
        PatchFormat::FhirPath
    };
    let bytes = read_body(req, &mut payload.into_inner(), state.config.max_body).await?;
    let patch: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::structure(format!(
            "the patch document is not valid JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    Ok((format, patch))
}

/// PATCH /fhir/{type}/{id}
pub async fn patch(
    req: HttpRequest,
    state: State,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let (ty, id) = path.into_inner();
    state.resource_type(&ty)?;
    check_id(&id)?;
    let (format, patch) = patch_body(&req, &state, payload).await?;
    let if_match = if_match(&req)?;
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
                format,
            },
        )
    })
    .await?;
    Ok(write_response(&req, &state, r))
}

/// PATCH /fhir/{type}?criteria: patches the one visible match (none → 404, more → 412).
pub async fn conditional_patch(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let ty = state.resource_type(&path)?.to_string();
    let criteria = super::bundle::criteria(&req, "PATCH")?;
    let (format, patch) = patch_body(&req, &state, payload).await?;
    let if_match = if_match(&req)?;
    let st = state.clone();
    let ctx = super::auth::ctx(&req)?;
    let r = blocking(move || {
        let r = write::run(&st.store, &ctx, |u| {
            let r = u.conditional_patch(&ty, &criteria, patch.clone(), format, if_match)?;
            u.audit_write(&r)?;
            Ok(r)
        })?;
        ctx.mark_audited();
        Ok(r)
    })
    .await?;
    Ok(write_response(&req, &state, r))
}
