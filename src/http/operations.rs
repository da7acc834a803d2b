//! Care-management operations: Patient/$everything, Practitioner/$worklist,
//! Practitioner/$caseload, and the program's Patient/$enroll, $enroll, Patient/$disenroll,
//! $icm-metrics — parse, call the service with the request's context, render.
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::negotiate::FhirBody;
use super::response::fhir_json;
use super::{blocking, State};
use crate::error::ApiResult;
use crate::service::search::pairs;
use crate::service::{measures, operations, program};

/// GET /fhir/Patient/{id}/$everything
pub async fn everything(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = path.into_inner();
    let params = pairs(req.query_string());
    run_program(req, state, move |s, c| {
        operations::everything(&mut *s.read_conn(&c.reader_key())?, c, &id, &params)
    })
    .await
}

/// GET /fhir/Practitioner/{id}/$worklist
pub async fn worklist(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let pid = path.into_inner();
    let params = pairs(req.query_string());
    run_program(req, state, move |s, c| {
        operations::worklist(&mut *s.read_conn(&c.reader_key())?, c, &pid, &params)
    })
    .await
}

/// GET /fhir/Practitioner/{id}/$caseload
pub async fn caseload(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let pid = path.into_inner();
    run_program(req, state, move |s, c| {
        operations::caseload(&mut *s.read_conn(&c.reader_key())?, c, &pid)
    })
    .await
}

/// GET /fhir/$icm-metrics
pub async fn icm_metrics(req: HttpRequest, state: State) -> ApiResult<HttpResponse> {
    let params = pairs(req.query_string());
    run_program(req, state, move |s, c| {
        measures::icm_metrics(&mut *s.read_conn(&c.reader_key())?, s, c, &params)
    })
    .await
}

/// Run an operation on the blocking pool with the request's context; answer 200.
async fn run_program<F>(req: HttpRequest, state: State, f: F) -> ApiResult<HttpResponse>
where
    F: FnOnce(
            &crate::store::Store,
            &crate::service::context::RequestContext,
        ) -> ApiResult<serde_json::Value>
        + Send
        + 'static,
{
    let ctx = super::auth::ctx(&req)?;
    let st = state.clone();
    let b = blocking(move || f(&st.store, &ctx)).await?;
    Ok(fhir_json(&req, StatusCode::OK, &b))
}

/// POST /fhir/Patient/{id}/$enroll
pub async fn enroll(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
    body: FhirBody,
) -> ApiResult<HttpResponse> {
    let id = path.into_inner();
    run_program(req, state, move |s, c| program::enroll(s, c, &id, &body.0)).await
}

/// POST /fhir/$enroll (intake of a new patient)
pub async fn intake(req: HttpRequest, state: State, body: FhirBody) -> ApiResult<HttpResponse> {
    run_program(req, state, move |s, c| program::intake(s, c, &body.0)).await
}

/// POST /fhir/Patient/{id}/$disenroll
pub async fn disenroll(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
    body: FhirBody,
) -> ApiResult<HttpResponse> {
    let id = path.into_inner();
    run_program(req, state, move |s, c| {
        program::disenroll(s, c, &id, &body.0)
    })
    .await
}

/// POST /fhir/Patient/{id}/$stratify
pub async fn stratify(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = path.into_inner();
    run_program(req, state, move |s, c| program::stratify(s, c, &id)).await
}
