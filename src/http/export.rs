//! Bulk Data export (`$export`, Bulk Data Access IG v2 asynchronous pattern): the kick-off
//! (`Prefer: respond-async` → 202 + Content-Location), the status URL (202 + X-Progress and
//! Retry-After while running, 200 + manifest when done, DELETE to cancel) and the NDJSON files.
//! The service (service::export) does the work with the request's context.
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::stream;

use super::response::fhir_json;
use super::{auth, blocking, State};
use crate::error::{ApiError, ApiResult};
use crate::fhir::outcome::{Issue, IssueType, OperationOutcome};
use crate::service::export::{self, Kickoff, Level, Status};
use crate::service::search::pairs;

/// Seconds a client is asked to wait between status requests.
const RETRY_AFTER: &str = "2";

/// Whether the request carries `Prefer: respond-async`.
fn respond_async(req: &HttpRequest) -> bool {
    req.headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .any(|t| t.trim().eq_ignore_ascii_case("respond-async"))
}

async fn kick_off(req: HttpRequest, state: State, level: Level) -> ApiResult<HttpResponse> {
    if !respond_async(&req) {
        return Err(ApiError::invalid_at(
            "$export is asynchronous: send Prefer: respond-async",
            "Prefer",
        ));
    }
    let ctx = auth::ctx(&req)?;
    let lenient = super::negotiate::prefer_value(&req, "handling").as_deref() == Some("lenient");
    let base = ctx.base.clone();
    let request_url = match req.query_string() {
        "" => format!("{base}{}", path_below_base(&req)),
        q => format!("{base}{}?{q}", path_below_base(&req)),
    };
    let k = Kickoff {
        level,
        params: pairs(req.query_string()),
        lenient,
        request_url,
        requires_token: state.config.auth_enabled(),
    };
    let store = state.store.clone();
    let dir = state.config.export_dir_path();
    let id = blocking(move || export::kick_off(store, ctx, &k, dir)).await?;
    let oo = OperationOutcome {
        issues: vec![Issue::information(format!(
            "export {id} started; poll the Content-Location URL for its status"
        ))],
    };
    Ok(HttpResponse::Accepted()
        .insert_header(("Content-Location", format!("{base}/$export-status/{id}")))
        .content_type("application/fhir+json")
        .body(oo.to_json().to_string()))
}

/// The request path below `/fhir` (e.g. `/Patient/$export`).
fn path_below_base(req: &HttpRequest) -> String {
    let p = req.path();
    p.strip_prefix("/fhir").unwrap_or(p).to_string()
}

/// GET /fhir/$export
pub async fn system(req: HttpRequest, state: State) -> ApiResult<HttpResponse> {
    kick_off(req, state, Level::System).await
}

/// GET /fhir/Patient/$export
pub async fn patient(req: HttpRequest, state: State) -> ApiResult<HttpResponse> {
    kick_off(req, state, Level::Patient).await
}

/// GET /fhir/Group/{id}/$export
pub async fn group(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = path.into_inner();
    kick_off(req, state, Level::Group(id)).await
}

/// GET /fhir/$export-status/{job}
pub async fn status(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let ctx = auth::ctx(&req)?;
    let id = path.into_inner();
    let store = state.store.clone();
    match blocking(move || export::status(&store, &ctx, &id)).await? {
        Status::InProgress { progress } => Ok(HttpResponse::Accepted()
            .insert_header(("X-Progress", progress))
            .insert_header(("Retry-After", RETRY_AFTER))
            .finish()),
        Status::Completed(manifest) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(manifest.to_string())),
        Status::Failed(msg) => {
            let oo = OperationOutcome {
                issues: vec![Issue::error(IssueType::Exception, msg)],
            };
            Ok(fhir_json(
                &req,
                StatusCode::INTERNAL_SERVER_ERROR,
                &oo.to_json(),
            ))
        }
    }
}

/// DELETE /fhir/$export-status/{job}: cancel (or clean up) a job.
pub async fn cancel(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let ctx = auth::ctx(&req)?;
    let id = path.into_inner();
    let store = state.store.clone();
    let dir = state.config.export_dir_path();
    let shown = id.clone();
    blocking(move || export::cancel(&store, &ctx, &id, &dir)).await?;
    let oo = OperationOutcome {
        issues: vec![Issue::information(format!(
            "export {shown} cancelled and its files removed"
        ))],
    };
    Ok(fhir_json(&req, StatusCode::ACCEPTED, &oo.to_json()))
}

/// GET /fhir/$export-file/{job}/{name}: an NDJSON file, streamed.
pub async fn file(
    req: HttpRequest,
    state: State,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let ctx = auth::ctx(&req)?;
    let (id, name) = path.into_inner();
    let store = state.store.clone();
    let dir = state.config.export_dir_path();
    let p = blocking(move || export::file(&store, &ctx, &id, &name, &dir)).await?;
    let f = std::fs::File::open(&p)
        .map_err(|e| ApiError::internal(format!("export file {}: {e}", p.display())))?;
    let body = stream::unfold(Some(f), |f| async move {
        let mut f = f?;
        let read = web::block(move || {
            use std::io::Read;
            let mut buf = vec![0u8; 256 * 1024];
            let n = f.read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((buf, f))
        })
        .await;
        match read {
            Ok(Ok((buf, _))) if buf.is_empty() => None,
            Ok(Ok((buf, f))) => Some((Ok(web::Bytes::from(buf)), Some(f))),
            Ok(Err(e)) => Some((Err(ApiError::internal(format!("export file: {e}"))), None)),
            Err(e) => Some((Err(ApiError::internal(format!("export file: {e}"))), None)),
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/fhir+ndjson")
        .streaming(body))
}
