//! The security layer of /fhir: bearer-token authentication and the SMART scope decision per
//! request (and per Bundle entry), then the one [`RequestContext`] of the request — principal,
//! boundaries, policy, base URL, audit facts — which handlers take with [`ctx`] and pass
//! explicitly to the services. Nothing is filtered here after the fact: every read and write
//! below applies the context in its own queries. Also the AuditEvent of requests that did not
//! store theirs with a write, and the SMART configuration document.
pub mod jwt;
pub mod smart;

pub use crate::service::access::{policy, scope};
pub use crate::service::audit;

use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{forward_ready, Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, ResponseError};
use futures_util::future::{ready, LocalBoxFuture, Ready};
use futures_util::StreamExt;
use serde_json::Value;

use self::jwt::Verifier;
use crate::config::Config;
use crate::error::ApiError;
use crate::http::{blocking, State};
use crate::service::access::policy::{
    check_bundle_entries, classify, decide, Interaction, Principal, Refusal,
};
use crate::service::audit::{AuditFacts, AuditSink};
use crate::service::context::{needs_lookup, resolve_boundaries, RequestContext};

/// Process-wide security state.
pub struct AuthState {
    /// None when ICM_AUTH=off.
    pub verifier: Option<Verifier>,
    /// The background audit writer (unset when ICM_AUDIT=off).
    pub audit: OnceLock<AuditSink>,
    /// The write policy and page limits every request context carries (from the configuration,
    /// decided once).
    pub policy: crate::config::WritePolicy,
    pub limits: crate::service::context::Limits,
}

impl AuthState {
    pub fn from_config(config: &Config) -> Result<AuthState, String> {
        let verifier = if config.auth_enabled() {
            Some(Verifier::from_config(config)?)
        } else {
            None
        };
        Ok(AuthState {
            verifier,
            audit: OnceLock::new(),
            policy: config.write_policy(),
            limits: crate::service::context::Limits::from_config(config),
        })
    }
}

/// Start the audit writer once the state is shared.
pub fn start_audit(state: &Arc<crate::http::AppState>) {
    if state.config.audit_enabled() {
        let _ = state.auth.audit.set(AuditSink::start(
            state.store.clone(),
            state.config.audit_spool_path(),
        ));
    }
}

/// The request's context, as the security layer built it. Every /fhir handler takes it; a
/// request that did not pass the layer has none and is refused.
pub fn ctx(req: &HttpRequest) -> Result<Arc<RequestContext>, ApiError> {
    req.extensions()
        .get::<Arc<RequestContext>>()
        .cloned()
        .ok_or_else(|| ApiError::internal("request without a security context"))
}

fn bearer(req: &ServiceRequest) -> Option<&str> {
    let h = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = h.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The security layer, as actix middleware on the /fhir scope.
pub struct SecurityLayer;

impl<S, B> Transform<S, ServiceRequest> for SecurityLayer
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Transform = SecurityMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(SecurityMiddleware {
            service: Rc::new(service),
        }))
    }
}

pub struct SecurityMiddleware<S> {
    service: Rc<S>,
}

impl<S, B> Service<ServiceRequest> for SecurityMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, actix_web::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let svc = self.service.clone();
        Box::pin(handle(svc, req))
    }
}

async fn handle<S, B>(
    svc: Rc<S>,
    mut req: ServiceRequest,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    let Some(state) = req.app_data::<State>().cloned() else {
        return svc.call(req).await.map(|r| r.map_into_boxed_body());
    };
    let path = req.path().to_string();
    let below = path.strip_prefix("/fhir").unwrap_or(&path).to_string();
    let segs: Vec<&str> = below.split('/').filter(|s| !s.is_empty()).collect();
    let target = classify(req.method().as_str(), &segs);
    let audit_on = state.auth.audit.get().is_some();
    let mut facts = AuditFacts {
        interaction: Some(target.interaction),
        method: req.method().to_string(),
        path: path.clone(),
        query: req.query_string().to_string(),
        ty: target.ty.clone(),
        id: target.id.clone(),
        ip: req.peer_addr().map(|a| a.ip().to_string()),
        ..AuditFacts::default()
    };
    let refuse = |req: ServiceRequest, facts: AuditFacts, e: ApiError| {
        let resp = req.into_response(e.error_response());
        finish_audit(&state, facts, resp.status().as_u16());
        Ok(resp)
    };

    // 1. Authentication (public endpoints need none).
    if target.interaction == Interaction::Public && req.method() == "GET" {
        let resp = svc.call(req).await?;
        finish_audit(&state, facts, resp.status().as_u16());
        return Ok(resp.map_into_boxed_body());
    }
    let principal = match &state.auth.verifier {
        None => Principal::anonymous_superuser(),
        Some(v) => match bearer(&req).map(|t| v.verify(t)) {
            Some(Ok(p)) => p,
            Some(Err(why)) => return refuse(req, facts, ApiError::Unauthorized(why)),
            None => {
                return refuse(
                    req,
                    facts,
                    ApiError::Unauthorized(
                        "this endpoint needs an Authorization: Bearer token".into(),
                    ),
                )
            }
        },
    };
    facts = facts.with_principal(&principal);
    if let (Some("Patient"), Some(id)) = (target.ty.as_deref(), target.id.as_deref()) {
        facts.patients = vec![id.to_string()];
    }

    // 2. Scopes (batch/transaction entries one by one).
    if let Err(Refusal::Forbidden(why)) = decide(&principal, &target) {
        return refuse(req, facts, ApiError::Forbidden(why));
    }
    if target.interaction == Interaction::Bundle {
        let max_body = state.config.max_bundle_body;
        let too_large = || {
            ApiError::PayloadTooLarge(format!(
                "the Bundle exceeds {max_body} bytes (ICM_MAX_BUNDLE_BODY)"
            ))
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > max_body) {
            return refuse(req, facts, too_large());
        }
        let mut payload = req.take_payload();
        let read = async {
            // Exactly the declared size (within the limit): no doubling of a tens-of-megabytes
            // buffer (pages are only committed as the body arrives).
            let mut bytes = Vec::with_capacity(declared.unwrap_or(0));
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| {
                    ApiError::bad_request(format!("could not read the request body: {e}"))
                })?;
                if bytes.len() + chunk.len() > max_body {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(bytes)
        };
        let secs = state.config.body_timeout.max(1);
        let bytes =
            match actix_web::rt::time::timeout(std::time::Duration::from_secs(secs), read).await {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return refuse(req, facts, e),
                Err(_) => {
                    let e = ApiError::RequestTimeout(format!(
                        "the request body did not arrive within {secs} s (ICM_BODY_TIMEOUT)"
                    ));
                    return refuse(req, facts, e);
                }
            };
        // A transaction is refused whole when one of its entries is (nothing of it would be
        // stored anyway); a batch answers each refused entry with its own 403 (service::bundle).
        if let Some(bundle) = bundle_requests(&bytes) {
            if bundle["type"] == "transaction" {
                if let Err(Refusal::Forbidden(why)) = check_bundle_entries(&principal, &bundle) {
                    return refuse(req, facts, ApiError::Forbidden(why));
                }
            }
        }
        req.set_payload(Payload::from(bytes));
    }

    // 3. The request context: boundaries resolved once, here.
    // Only the care-team rule needs the database: the other boundaries are decided from the
    // token alone, without a hop to the blocking pool.
    let care_team = state.config.care_team_enabled();
    let b = if needs_lookup(&principal, care_team) {
        let st = state.clone();
        let p2 = principal.clone();
        blocking(move || resolve_boundaries(&st.store, &p2, care_team)).await
    } else {
        resolve_boundaries(&state.store, &principal, care_team)
    };
    let b = match b {
        Ok(b) => b,
        Err(e) => return refuse(req, facts, e),
    };
    let base = crate::http::response::base_url(req.request(), &state);
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let ctx = Arc::new(RequestContext::new(
        principal,
        b,
        &state.auth.policy,
        state.auth.limits,
        base,
        request_id,
        audit_on.then(|| facts.clone()),
    ));
    if ctx.restricted() {
        // Conditional reads answer in full to callers bound to patients: a 304 is decided on
        // a version alone, and the full answer goes through the same restricted read.
        req.headers_mut().remove(header::IF_NONE_MATCH);
        req.headers_mut().remove(header::IF_MODIFIED_SINCE);
    }
    req.extensions_mut().insert(ctx.clone());

    // 4. The handler. A look at the audit trail first waits for the events of earlier
    // requests still queued for the writer.
    if target
        .ty
        .as_deref()
        .is_some_and(crate::service::access::policy::is_audit_trail)
    {
        if let Some(sink) = state.auth.audit.get() {
            sink.flush(std::time::Duration::from_secs(5)).await;
        }
    }
    let resp = svc.call(req).await?;
    let status = resp.status();
    if audit_on && !(ctx.audited() && status.is_success()) {
        finish_audit(&state, ctx.facts().unwrap_or(facts), status.as_u16());
    }
    Ok(resp.map_into_boxed_body())
}

/// Write the AuditEvent of a request that did not write one inside its own transaction.
fn finish_audit(state: &State, mut facts: AuditFacts, status: u16) {
    facts.status = status;
    if let Some(sink) = state.auth.audit.get() {
        sink.enqueue(facts);
    }
}

/// CORS for browser front ends: only the origins in ICM_CORS_ORIGINS (None: CORS off).
pub fn cors(config: &Config) -> Option<actix_cors::Cors> {
    let origins = config.cors_origin_list();
    if origins.is_empty() {
        return None;
    }
    let mut c = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::HeaderName::from_static("if-none-exist"),
            header::HeaderName::from_static("prefer"),
        ])
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::CONTENT_LOCATION,
            header::LAST_MODIFIED,
            header::WWW_AUTHENTICATE,
        ])
        .max_age(600);
    if origins.iter().any(|o| o == "*") {
        c = c.allow_any_origin();
    } else {
        for o in &origins {
            c = c.allowed_origin(o);
        }
    }
    Some(c)
}

/// Security headers on every response.
/// The Content-Security-Policy of the Swagger UI pages (/docs): its own scripts, styles and
/// images only. Set before `security_headers`, whose strict default then leaves it alone.
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

/// Middleware: give /docs responses the Swagger UI policy and /console responses the console's
/// (http::console::CONSOLE_CSP) instead of the API's `default-src 'none'`.
pub fn docs_csp<S, B>(
    req: actix_web::dev::ServiceRequest,
    srv: &S,
) -> LocalBoxFuture<'static, Result<ServiceResponse<B>, actix_web::Error>>
where
    S: Service<
        actix_web::dev::ServiceRequest,
        Response = ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    S::Future: 'static,
    B: 'static,
{
    let csp = if req.path().starts_with("/docs") {
        Some(DOCS_CSP)
    } else if req.path() == "/console" || req.path().starts_with("/console/") {
        Some(crate::http::console::CONSOLE_CSP)
    } else {
        None
    };
    let fut = srv.call(req);
    Box::pin(async move {
        let mut res = fut.await?;
        if let Some(csp) = csp {
            res.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                actix_web::http::header::HeaderValue::from_static(csp),
            );
        }
        Ok(res)
    })
}

pub fn security_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .add((header::CACHE_CONTROL, "no-store"))
}

/// A Bundle's type and its entries' requests, for the scope decision: the resources are
/// skipped, not built (a Synthea history is tens of megabytes of them). None when the body is
/// not a JSON Bundle of that shape (the handler answers for it).
fn bundle_requests(bytes: &[u8]) -> Option<Value> {
    #[derive(serde::Deserialize)]
    struct Requests {
        #[serde(rename = "type", default)]
        kind: Value,
        #[serde(default)]
        entry: Vec<EntryRequest>,
    }
    #[derive(serde::Deserialize)]
    struct EntryRequest {
        #[serde(default)]
        request: Value,
    }
    match serde_json::from_slice::<Requests>(bytes) {
        Ok(b) => Some(serde_json::json!({
            "type": b.kind,
            "entry": b.entry.into_iter().map(|e| serde_json::json!({"request": e.request})).collect::<Vec<_>>(),
        })),
        // Not of that shape (an entry that is not an object, …): read it whole.
        Err(_) => serde_json::from_slice::<Value>(bytes).ok(),
    }
}
