//! The terminology operations (CodeSystem/$lookup, CodeSystem/$subsumes, ValueSet/$expand,
//! ValueSet/$validate-code), at type and instance level, by GET (arguments in the URL) or POST
//! (a Parameters body): parse, call the service with the request's context, render.
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::negotiate::FhirBody;
use super::response::fhir_json;
use super::{blocking, State};
use crate::error::{ApiError, ApiResult};
use crate::fhir::resource::check_id;
use crate::service::context::RequestContext;
use crate::service::search::pairs;
use crate::service::terminology::{self, Args};
use crate::store::DbConn;

type Op = fn(&mut DbConn, &RequestContext, Option<&str>, &Args) -> ApiResult<Value>;

async fn run(
    req: HttpRequest,
    state: State,
    id: Option<String>,
    body: Option<Value>,
    op: Op,
) -> ApiResult<HttpResponse> {
    if let Some(id) = &id {
        check_id(id)?;
    }
    let mut args = Args::from_query(pairs(req.query_string()));
    if let Some(b) = &body {
        args.0.extend(Args::from_parameters(b)?.0);
    }
    let ctx = super::auth::ctx(&req)?;
    let st = state.clone();
    let out = blocking(move || {
        let mut conn = st.store.read_conn(&ctx.reader_key())?;
        op(&mut conn, &ctx, id.as_deref(), &args)
    })
    .await?;
    Ok(fhir_json(&req, StatusCode::OK, &out))
}

fn op_named(name: &str) -> ApiResult<Op> {
    Ok(match name {
        "lookup" => terminology::lookup,
        "subsumes" => terminology::subsumes,
        "expand" => terminology::expand,
        "validate-code" => terminology::validate_code,
        other => return Err(ApiError::NotFound(format!("no operation ${other}"))),
    })
}

/// GET /fhir/{CodeSystem|ValueSet}/${op}
pub async fn type_get(
    req: HttpRequest,
    state: State,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (_, op) = path.into_inner();
    run(req, state, None, None, op_named(&op)?).await
}

/// POST /fhir/{CodeSystem|ValueSet}/${op} with a Parameters body
pub async fn type_post(
    req: HttpRequest,
    state: State,
    path: web::Path<(String, String)>,
    body: FhirBody,
) -> ApiResult<HttpResponse> {
    let (_, op) = path.into_inner();
    run(req, state, None, Some(body.0), op_named(&op)?).await
}

/// GET /fhir/{CodeSystem|ValueSet}/{id}/${op}
pub async fn instance_get(
    req: HttpRequest,
    state: State,
    path: web::Path<(String, String, String)>,
) -> ApiResult<HttpResponse> {
    let (_, id, op) = path.into_inner();
    run(req, state, Some(id), None, op_named(&op)?).await
}

/// POST /fhir/{CodeSystem|ValueSet}/{id}/${op} with a Parameters body
pub async fn instance_post(
    req: HttpRequest,
    state: State,
    path: web::Path<(String, String, String)>,
    body: FhirBody,
) -> ApiResult<HttpResponse> {
    let (_, id, op) = path.into_inner();
    run(req, state, Some(id), Some(body.0), op_named(&op)?).await
}
