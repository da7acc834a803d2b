//! Care-management operations: Patient/$everything, Practitioner/$worklist, Practitioner/$caseload.
use actix_web::{web, HttpRequest, HttpResponse};

use super::State;
use crate::error::{ApiError, ApiResult};

pub async fn everything(
    _req: HttpRequest,
    _state: State,
    _p: web::Path<String>,
) -> ApiResult<HttpResponse> {
    Err(ApiError::MethodNotAllowed("not yet".into()))
}
pub async fn worklist(
    _req: HttpRequest,
    _state: State,
    _p: web::Path<String>,
) -> ApiResult<HttpResponse> {
    Err(ApiError::MethodNotAllowed("not yet".into()))
}
pub async fn caseload(
    _req: HttpRequest,
    _state: State,
    _p: web::Path<String>,
) -> ApiResult<HttpResponse> {
    Err(ApiError::MethodNotAllowed("not yet".into()))
}
