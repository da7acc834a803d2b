//! The security layer of /fhir: bearer-token authentication, SMART scope checks, the patient
//! and care-team boundary (reads filtered and refused here, writes checked in the one write
//! path through `WriteHooks`), the AuditEvent trail, and the SMART configuration document.
//! Handlers only pass the request's `Access` to `Store::write_in`.
pub mod audit;
pub mod jwt;
pub mod policy;
pub mod scope;
pub mod smart;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use actix_web::body::{BoxBody, MessageBody};
use std::rc::Rc;

use actix_web::dev::{forward_ready, Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::{header, StatusCode};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError};
use futures_util::future::{ready, LocalBoxFuture, Ready};
use futures_util::StreamExt;
use serde_json::Value;

use self::audit::{audit_record, AuditFacts, AuditSink};
use self::jwt::Verifier;
use self::policy::{
    boundary_rule, care_team_patients, check_bundle_entries, classify, compartment_membership,
    decide, is_server_owned, Boundary, BoundaryRule, Interaction, Membership, Principal, Refusal,
    Target,
};
use self::scope::{Context, C, D, R, S, U};
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::http::{blocking, AppState, State};
use crate::store::write::{WriteHooks, WriteResult};

/// Process-wide security state.
pub struct AuthState {
    /// None when ICM_AUTH=off.
    pub verifier: Option<Verifier>,
    /// The background audit writer (unset when ICM_AUDIT=off).
    pub audit: OnceLock<AuditSink>,
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
        })
    }
}

/// Start the audit writer once the state is shared.
pub fn start_audit(state: &Arc<AppState>) {
    if state.config.audit_enabled() {
        let _ = state
            .auth
            .audit
            .set(AuditSink::start(Arc::downgrade(state)));
    }
}

/// What the current request may do; lives in the request extensions.
pub struct Access {
    pub principal: Principal,
    boundaries: Vec<(Context, Boundary)>,
    facts: Mutex<AuditFacts>,
    audit_on: bool,
    audited: AtomicBool,
}

impl Access {
    /// Everything allowed, nothing audited (server-internal use).
    pub fn unrestricted() -> Access {
        Access {
            principal: Principal::anonymous_superuser(),
            boundaries: vec![(Context::System, Boundary::Unrestricted)],
            facts: Mutex::new(AuditFacts::default()),
            audit_on: false,
            audited: AtomicBool::new(false),
        }
    }

    /// The boundary that applies to `perm` on `ty` (None: no scope grants it).
    pub fn boundary(&self, ty: &str, perm: u8) -> Option<&Boundary> {
        let ctx = self.principal.granting_context(ty, perm)?;
        self.boundaries
            .iter()
            .find(|(c, _)| *c == ctx)
            .map(|(_, b)| b)
    }

    /// Whether a resource may appear in a response to this caller.
    pub fn visible(&self, ty: &str, res: &Value) -> bool {
        if ty == "AuditEvent"
            && !self.principal.admin
            && self.principal.granting_context(ty, R) != Some(Context::System)
            && self.principal.granting_context(ty, S) != Some(Context::System)
        {
            return false;
        }
        [R, S]
            .iter()
            .filter_map(|p| self.boundary(ty, *p))
            .any(|b| b.admits(ty, res))
    }

    /// Whether responses must be filtered (some boundary, or not every type readable).
    fn filters(&self) -> bool {
        let all_types = self
            .principal
            .scopes
            .iter()
            .any(|s| s.resource_type.is_none() && s.perms & (R | S) == (R | S));
        !all_types || self.restricted()
    }

    /// Whether some boundary restricts this caller to certain patients.
    pub fn restricted(&self) -> bool {
        self.boundaries.iter().any(|(_, b)| b.is_restricted())
    }

    /// The patient ids a search for `ty` must be limited to (None: unrestricted) — the place
    /// a search implementation plugs the boundary into `SearchQuery.compartment`.
    pub fn search_compartment(&self, ty: &str) -> Option<&BTreeSet<String>> {
        if !policy::is_compartment_type(ty) {
            // Practitioner, Organization…: not patient data (included ones are still filtered).
            return None;
        }
        self.boundary(ty, S).and_then(Boundary::patient_ids)
    }
}

impl WriteHooks for Access {
    fn check(&self, ty: &str, current: Option<&Value>, new: Option<&Value>) -> ApiResult<()> {
        if is_server_owned(ty) {
            return Err(ApiError::Forbidden(format!(
                "{ty} resources are written by the server only"
            )));
        }
        let b = match (current, new) {
            (_, None) => self.boundary(ty, D),
            (Some(_), Some(_)) => self.boundary(ty, U),
            (None, Some(_)) => self.boundary(ty, C).or_else(|| self.boundary(ty, U)),
        }
        .ok_or_else(|| {
            ApiError::Forbidden(format!("the token's scopes do not allow writing {ty}"))
        })?;
        if let Some(c) = current {
            if !b.admits(ty, c) {
                let id = c["id"].as_str().unwrap_or("");
                return Err(ApiError::NotFound(format!("{ty}/{id} is not known")));
            }
        }
        if let Some(n) = new {
            if !b.admits(ty, n) {
                return Err(ApiError::Forbidden(format!(
                    "this {ty} would belong to a patient this token may not access"
                )));
            }
        }
        Ok(())
    }

    fn audit(&self, r: &WriteResult) -> Option<crate::store::audit::Record> {
        if !self.audit_on {
            return None;
        }
        let mut f = self.facts.lock().ok()?.clone();
        f.version_ref = Some(format!("{}/{}/_history/{}", r.ty, r.id, r.version));
        f.id = Some(r.id.clone());
        f.status = match r.kind {
            crate::store::write::WriteKind::Created => 201,
            crate::store::write::WriteKind::Updated => 200,
            _ => 204,
        };
        if let Some(res) = &r.resource {
            f.patients = patients_of(&r.ty, res);
        }
        self.audited.store(true, Ordering::Release);
        Some(audit_record(&f, crate::fhir::datetime::now_micros()))
    }
}

fn patients_of(ty: &str, res: &Value) -> Vec<String> {
    match compartment_membership(ty, res) {
        Membership::Patients(p) => p.into_iter().collect(),
        Membership::NotACompartmentType => Vec::new(),
    }
}

/// The request's Access (an unrestricted one outside the security layer).
pub fn access(req: &HttpRequest) -> Arc<Access> {
    req.extensions()
        .get::<Arc<Access>>()
        .cloned()
        .unwrap_or_else(|| Arc::new(Access::unrestricted()))
}

fn bearer(req: &ServiceRequest) -> Option<&str> {
    let h = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = h.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Resolve every boundary the caller's scopes can need.
async fn boundaries(state: &State, p: &Principal) -> ApiResult<Vec<(Context, Boundary)>> {
    let mut out = Vec::new();
    let contexts: BTreeSet<Context> = p.scopes.iter().map(|s| s.context).collect();
    for ctx in contexts {
        let b = match boundary_rule(p, ctx, state.config.care_team_enabled()) {
            BoundaryRule::Unrestricted => Boundary::Unrestricted,
            BoundaryRule::Patient(pat) => Boundary::Patients(pat.into_iter().collect()),
            BoundaryRule::Nobody => Boundary::Patients(BTreeSet::new()),
            BoundaryRule::CareTeam { practitioner } => {
                let st = state.clone();
                let ids = blocking(move || {
                    let (roles, teams) = st.store.care_team_candidates(&practitioner)?;
                    Ok(care_team_patients(
                        &practitioner,
                        roles.iter(),
                        teams.iter(),
                    ))
                })
                .await?;
                Boundary::Patients(ids)
            }
        };
        out.push((ctx, b));
    }
    Ok(out)
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
        let max_body = state.config.max_body;
        let mut payload = req.take_payload();
        let mut bytes = Vec::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk?;
            if bytes.len() + chunk.len() > max_body {
                let e = ApiError::PayloadTooLarge(format!("request body exceeds {max_body} bytes"));
                return refuse(req, facts, e);
            }
            bytes.extend_from_slice(&chunk);
        }
        if let Ok(bundle) = serde_json::from_slice::<Value>(&bytes) {
            if let Err(Refusal::Forbidden(why)) = check_bundle_entries(&principal, &bundle) {
                return refuse(req, facts, ApiError::Forbidden(why));
            }
        }
        req.set_payload(Payload::from(bytes));
    }

    // 3. Boundaries.
    let b = match boundaries(&state, &principal).await {
        Ok(b) => b,
        Err(e) => return refuse(req, facts, e),
    };
    let access = Arc::new(Access {
        principal,
        boundaries: b,
        facts: Mutex::new(facts.clone()),
        audit_on,
        audited: AtomicBool::new(false),
    });
    if access.restricted() {
        // A 304 would reveal that a resource outside the boundary exists.
        req.headers_mut().remove(header::IF_NONE_MATCH);
        req.headers_mut().remove(header::IF_MODIFIED_SINCE);
    }
    req.extensions_mut().insert(access.clone());

    // 4. The handler, then the response filter. A look at the audit trail first waits for the
    // events of earlier requests still queued for the writer.
    if target.ty.as_deref() == Some("AuditEvent") {
        if let Some(sink) = state.auth.audit.get() {
            sink.flush(std::time::Duration::from_secs(5)).await;
        }
    }
    let resp = svc.call(req).await?;
    let status = resp.status();
    // The audit needs the patient of a read; a Patient's is the id in the URL.
    let needs_body = access.filters()
        || (audit_on
            && matches!(target.interaction, Interaction::Read | Interaction::Vread)
            && facts.patients.is_empty())
        || (status == StatusCode::GONE && access.restricted());
    let (req, resp) = resp.into_parts();
    let resp = if needs_body {
        let (head, body) = resp.into_parts();
        let bytes = actix_web::body::to_bytes(body)
            .await
            .map_err(|_| actix_web::error::ErrorInternalServerError("response body"))?;
        let (replaced, patients) = filter_body(&access, &target, status, &bytes);
        if !patients.is_empty() {
            facts.patients = patients;
        }
        match replaced {
            Some((st, body)) => {
                let mut r = HttpResponse::build(st);
                r.insert_header((header::CONTENT_TYPE, crate::http::negotiate::FHIR_JSON));
                if st.is_success() {
                    for (k, v) in head.headers().iter() {
                        if k != header::CONTENT_LENGTH {
                            r.append_header((k.clone(), v.clone()));
                        }
                    }
                }
                facts.status = st.as_u16();
                r.body(body)
            }
            None => head.set_body(BoxBody::new(bytes)),
        }
    } else {
        resp.map_into_boxed_body()
    };
    let final_status = resp.status().as_u16();
    if !(access.audited.load(Ordering::Acquire) && resp.status().is_success()) {
        finish_audit(&state, facts, final_status);
    }
    Ok(ServiceResponse::new(req, resp))
}

/// Write the AuditEvent of a request that did not write one inside its own transaction.
fn finish_audit(state: &State, mut facts: AuditFacts, status: u16) {
    facts.status = status;
    if let Some(sink) = state.auth.audit.get() {
        sink.enqueue(facts);
    }
}

/// Filter a response body for a restricted caller; returns the new response and the patients
/// whose data it carries.
pub fn filter_body(
    access: &Access,
    target: &Target,
    status: StatusCode,
    body: &[u8],
) -> (Option<(StatusCode, Vec<u8>)>, Vec<String>) {
    let filters = access.filters();
    if status == StatusCode::GONE && access.restricted() {
        let e = ApiError::NotFound(format!(
            "{}/{} is not known",
            target.ty.as_deref().unwrap_or(""),
            target.id.as_deref().unwrap_or("")
        ));
        return (
            Some((e.status_code(), e.outcome().to_json_string().into_bytes())),
            Vec::new(),
        );
    }
    if !status.is_success() || body.is_empty() {
        return (None, Vec::new());
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return (None, Vec::new());
    };
    let ty = v["resourceType"].as_str().unwrap_or("").to_string();
    match ty.as_str() {
        "OperationOutcome" | "CapabilityStatement" | "" => (None, Vec::new()),
        "Bundle" if target.ty.as_deref() != Some("Bundle") => {
            let restricted = access.restricted();
            let kind = v["type"].as_str().unwrap_or("").to_string();
            let mut patients = BTreeSet::new();
            let mut changed = false;
            if let Some(entries) = v["entry"].as_array_mut() {
                let before = entries.len();
                // Nested Bundles (batch/transaction responses carrying search results) are
                // filtered the same way.
                for e in entries.iter_mut() {
                    if let Some(r) = e.get_mut("resource") {
                        if r["resourceType"] == "Bundle" {
                            filter_nested(access, r);
                        }
                    }
                }
                entries.retain(|e| match e.get("resource") {
                    Some(r) => {
                        let rt = r["resourceType"].as_str().unwrap_or("");
                        let ok = !filters || access.visible(rt, r);
                        if ok && patients.len() < 50 {
                            patients.extend(patients_of(rt, r));
                        }
                        ok
                    }
                    // Deleted versions carry no content to decide on.
                    None => !(restricted && matches!(kind.as_str(), "history" | "searchset")),
                });
                changed = entries.len() != before;
                if changed
                    && entries.is_empty()
                    && target.interaction == Interaction::HistoryInstance
                {
                    // The whole instance lies outside the boundary: do not reveal it exists.
                    let e = ApiError::NotFound(format!(
                        "{}/{} is not known",
                        target.ty.as_deref().unwrap_or(""),
                        target.id.as_deref().unwrap_or("")
                    ));
                    return (
                        Some((e.status_code(), e.outcome().to_json_string().into_bytes())),
                        Vec::new(),
                    );
                }
            }
            let out = changed.then(|| (status, serde_json::to_vec(&v).unwrap_or_default()));
            (out, patients.into_iter().collect())
        }
        _ => {
            // A write's own representation was checked by the write path.
            if filters && !target.interaction.is_write() && !access.visible(&ty, &v) {
                let e = ApiError::NotFound(format!(
                    "{ty}/{} is not known",
                    v["id"].as_str().unwrap_or("")
                ));
                return (
                    Some((e.status_code(), e.outcome().to_json_string().into_bytes())),
                    Vec::new(),
                );
            }
            (None, patients_of(&ty, &v))
        }
    }
}

/// Drop every entry a caller may not see from a Bundle nested in a response, recursively.
fn filter_nested(access: &Access, bundle: &mut Value) {
    let restricted = access.restricted();
    if let Some(entries) = bundle["entry"].as_array_mut() {
        for e in entries.iter_mut() {
            if let Some(r) = e.get_mut("resource") {
                if r["resourceType"] == "Bundle" {
                    filter_nested(access, r);
                }
            }
        }
        entries.retain(|e| match e.get("resource") {
            Some(r) => {
                let rt = r["resourceType"].as_str().unwrap_or("");
                rt == "Bundle" || rt == "OperationOutcome" || access.visible(rt, r)
            }
            None => !restricted,
        });
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

/// Middleware: give /docs responses the Swagger UI policy instead of the API's `default-src 'none'`.
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
    let docs = req.path().starts_with("/docs");
    let fut = srv.call(req);
    Box::pin(async move {
        let mut res = fut.await?;
        if docs {
            res.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                actix_web::http::header::HeaderValue::from_static(DOCS_CSP),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_bundles_are_filtered() {
        let access = Access {
            principal: Principal {
                sub: "p".into(),
                scopes: scope::parse_scopes("patient/*.rs").0,
                patient: Some("a".into()),
                ..Principal::default()
            },
            boundaries: vec![(
                Context::Patient,
                Boundary::Patients(["a".to_string()].into()),
            )],
            facts: Mutex::new(AuditFacts::default()),
            audit_on: false,
            audited: AtomicBool::new(false),
        };
        let body = json!({"resourceType": "Bundle", "type": "batch-response", "entry": [
            {"resource": {"resourceType": "Bundle", "type": "searchset", "entry": [
                {"resource": {"resourceType": "Observation", "id": "oa", "subject": {"reference": "Patient/a"}}},
                {"resource": {"resourceType": "Observation", "id": "ob", "subject": {"reference": "Patient/b"}}}]}},
            {"resource": {"resourceType": "Patient", "id": "b"}}]});
        let target = classify("POST", &[]);
        let (out, _) = filter_body(
            &access,
            &target,
            StatusCode::OK,
            body.to_string().as_bytes(),
        );
        let text = String::from_utf8(out.unwrap().1).unwrap();
        assert!(text.contains("\"oa\""), "{text}");
        assert!(
            !text.contains("\"ob\"") && !text.contains("\"b\""),
            "{text}"
        );
    }
}
