//! search-type: GET /fhir/{type}?… and POST /fhir/{type}/_search (form body) → searchset Bundle,
//! through the one search service (service::search).
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::negotiate::{check_content_type, prefer_value, read_body};
use super::response::fhir_json;
use super::{blocking, State};
use crate::error::{ApiError, ApiResult};
use crate::service::search::pairs;

async fn run(
    req: HttpRequest,
    state: State,
    ty: String,
    params: Vec<(String, String)>,
) -> ApiResult<HttpResponse> {
    state.resource_type(&ty)?;
    let ctx = super::auth::ctx(&req)?;
    let strict = prefer_value(&req, "handling").is_some_and(|v| v.eq_ignore_ascii_case("strict"));
    let st = state.clone();
    let b = blocking(move || {
        let mut conn = st.store.read_conn(&ctx.reader_key())?;
        crate::service::search::search(&mut conn, &ctx, &ty, &params, strict)
    })
    .await?;
    Ok(fhir_json(&req, StatusCode::OK, &b))
}

/// GET /fhir/{type}?…
pub async fn search_get(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let params = pairs(req.query_string());
    run(req, state, path.into_inner(), params).await
}

/// POST /fhir/{type}/_search with an application/x-www-form-urlencoded body (URL parameters
/// are added to the body's).
pub async fn search_post(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    check_content_type(&req, &["application/x-www-form-urlencoded"])?;
    let mut pl: Payload = payload.into_inner();
    let body = read_body(&req, &mut pl, state.config.max_body).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the form body is not UTF-8"))?;
    let mut params = pairs(req.query_string());
    params.extend(pairs(text));
    run(req, state, path.into_inner(), params).await
}

/// `rest.resource.searchParam` of the CapabilityStatement: every parameter the search code
/// accepts for a type, from the same registry.
pub fn capability_search_params(ty: &str) -> Vec<Value> {
    crate::fhir::search::SearchParams::get()
        .for_type(ty)
        .map(|m| {
            m.values()
                .filter(|d| d.supported())
                .map(|d| json!({"name": d.code, "definition": d.url, "type": d.ptype.as_str()}))
                .collect()
        })
        .unwrap_or_default()
}
