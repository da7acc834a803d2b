//! history-instance, history-type and history-system: Bundle type `history`, newest first
//! (service::read::history).
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::response::fhir_json;
use super::{blocking, State};
use crate::error::ApiResult;
use crate::service::search::pairs;

async fn history(
    req: HttpRequest,
    state: State,
    ty: Option<String>,
    id: Option<String>,
) -> ApiResult<HttpResponse> {
    let ctx = super::auth::ctx(&req)?;
    let params = pairs(req.query_string());
    let st = state.clone();
    let b = blocking(move || {
        crate::service::read::history(&st.store, &ctx, ty.as_deref(), id.as_deref(), &params)
    })
    .await?;
    Ok(fhir_json(&req, StatusCode::OK, &b))
}

/// GET /fhir/{type}/{id}/_history
pub async fn instance(
    req: HttpRequest,
    state: State,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (ty, id) = path.into_inner();
    history(req, state, Some(ty), Some(id)).await
}

/// GET /fhir/{type}/_history
pub async fn type_level(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    history(req, state, Some(path.into_inner()), None).await
}

/// GET /fhir/_history
pub async fn system(req: HttpRequest, state: State) -> ApiResult<HttpResponse> {
    history(req, state, None, None).await
}
