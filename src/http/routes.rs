//! The whole route table on one screen, plus the interaction lists the CapabilityStatement reports.
use actix_web::body::EitherBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::future::{ready, Either, LocalBoxFuture};
use futures_util::FutureExt;

use super::{auth, capabilities, health, history, interactions, negotiate, search, State};
use crate::error::ApiError;

/// Type-level and instance-level interactions served for every supported type.
pub const TYPE_INTERACTIONS: &[&str] = &[
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
];

/// System-level interactions.
pub const SYSTEM_INTERACTIONS: &[&str] = &["history-system"];

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    HttpResponse::from_error(ApiError::MethodNotAllowed(format!(
        "{} is not supported on {}",
        req.method(),
        req.path()
    )))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    HttpResponse::from_error(ApiError::NotFound(format!(
        "no FHIR endpoint at {}",
        req.path()
    )))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .service(
            web::scope("/fhir")
                .wrap_fn(fhir_guard)
                .wrap(auth::SecurityLayer)
                .service(resource("/metadata").get(capabilities::metadata))
                .service(
                    resource("/.well-known/smart-configuration")
                        .get(auth::smart::smart_configuration),
                )
                .service(resource("/_history").get(history::system))
                .service(resource("/{type}/_history").get(history::type_level))
                .service(resource("/{type}/{id}/_history/{vid}").get(interactions::vread))
                .service(resource("/{type}/{id}/_history").get(history::instance))
                .service(resource("/{type}/_search").post(search::search_post))
                .service(
                    resource("/{type}/{id}")
                        .get(interactions::read)
                        .put(interactions::update)
                        .delete(interactions::delete),
                )
                .service(
                    resource("/{type}")
                        .get(search::search_get)
                        .post(interactions::create),
                )
                .default_service(web::to(not_found)),
        )
        .default_service(web::to(not_found));
}

/// A resource path whose unmatched methods answer 405 with an OperationOutcome.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// Checks that apply to every /fhir request before it reaches a handler:
/// the database is migrated (503 otherwise) and the client accepts JSON (406 otherwise).
fn fhir_guard<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> LocalBoxFuture<'static, Result<ServiceResponse<EitherBody<B>>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: 'static,
{
    let check = || -> Result<(), ApiError> {
        negotiate::check_acceptable(req.request())?;
        if let Some(state) = req.app_data::<State>() {
            if !state.is_ready() {
                return Err(ApiError::Unavailable(
                    "the server is starting and the database is not ready yet".into(),
                ));
            }
        }
        Ok(())
    };
    match check() {
        Ok(()) => Either::Left(
            srv.call(req)
                .map(|r| r.map(ServiceResponse::map_into_left_body)),
        ),
        Err(e) => {
            let resp = HttpResponse::from_error(e).map_into_right_body();
            Either::Right(ready(Ok(req.into_response(resp))))
        }
    }
    .boxed_local()
}
