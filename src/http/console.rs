//! The reference care-manager console (/console): static files embedded in the binary (the
//! sources in console/, plain ES modules and CSS, no build step), and the development sign-in
//! (/auth/dev/…) that mints a short-lived token for a chosen Practitioner — served only when
//! ICM_DEV_CONSOLE is on, ICM_BIND is a loopback address and the caller is on loopback.
//! Everything else the console does goes through the documented /fhir API with its token.
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::{blocking, State};
use crate::error::{ApiError, ApiResult};
use crate::service::context::RequestContext;

/// Lifetime of a development token, in seconds.
pub const DEV_TOKEN_TTL: u64 = 30 * 60;

/// The Content-Security-Policy of the console's pages: its own scripts, styles and images, API
/// calls to the same origin only.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The embedded files: name, content type, bytes.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../console/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../console/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/api.js"),
    ),
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/ui.js"),
    ),
    (
        "views.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/views.js"),
    ),
    (
        "assess.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/assess.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../../console/favicon.svg"),
    ),
];

/// The embedded file of that name, if any: content type and bytes.
pub fn file(name: &str) -> Option<(&'static str, &'static str)> {
    FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, t, b)| (*t, *b))
}

/// GET /console → /console/ (relative module URLs resolve under it).
pub async fn redirect() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/console/"))
        .finish()
}

/// GET /console/{file} (empty: index.html).
pub async fn asset(path: web::Path<String>) -> HttpResponse {
    let name = path.into_inner();
    let name = if name.is_empty() { "index.html" } else { &name };
    #[cfg(debug_assertions)]
    if let (Ok(dir), Some((ty, _))) = (std::env::var("ICM_CONSOLE_DIR"), file(name)) {
        // Debug builds only: serve the files from disk while working on them.
        if let Ok(body) = std::fs::read_to_string(std::path::Path::new(&dir).join(name)) {
            return HttpResponse::Ok()
                .insert_header((header::CONTENT_TYPE, ty))
                .body(body);
        }
    }
    match file(name) {
        Some((ty, body)) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, ty))
            .body(body),
        None => HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body(format!("no console file '{name}'")),
    }
}

/// The development sign-in is served to this request: 404 when it is not enabled (flag off,
/// non-loopback bind, authentication off), 403 for a caller that is not on loopback.
fn dev_allowed(req: &HttpRequest, state: &State) -> ApiResult<()> {
    if !state.config.dev_console_enabled() {
        return Err(ApiError::NotFound(
            "the development sign-in is off (ICM_DEV_CONSOLE=on on a loopback ICM_BIND enables it)"
                .into(),
        ));
    }
    let loopback = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
    if !loopback {
        return Err(ApiError::Forbidden(
            "the development sign-in answers loopback clients only".into(),
        ));
    }
    Ok(())
}

/// A Practitioner's name as one line of text.
fn display_name(p: &Value) -> String {
    let n = &p["name"][0];
    if let Some(t) = n["text"].as_str() {
        return t.to_string();
    }
    let given: Vec<&str> = n["given"]
        .as_array()
        .map(|g| g.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut s = given.join(" ");
    if let Some(f) = n["family"].as_str() {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(f);
    }
    if s.is_empty() {
        format!("Practitioner/{}", p["id"].as_str().unwrap_or_default())
    } else {
        s
    }
}

/// Practitioners (up to 200) as the development sign-in lists them.
fn practitioners(state: &State, id: Option<&str>) -> ApiResult<Vec<Value>> {
    let ctx = RequestContext::internal(state.auth.policy.clone(), "");
    let mut params = vec![("_count".to_string(), "200".to_string())];
    if let Some(id) = id {
        params.push(("_id".into(), id.into()));
    }
    let mut conn = state.store.read_conn(&ctx.reader_key())?;
    let b = crate::service::search::search(&mut conn, &ctx, "Practitioner", &params, false)?;
    Ok(b["entry"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter(|e| e["resource"]["resourceType"] == "Practitioner")
                .map(|e| {
                    let p = &e["resource"];
                    let id = p["id"].as_str().unwrap_or_default();
                    json!({"id": id, "reference": format!("Practitioner/{id}"), "name": display_name(p)})
                })
                .collect()
        })
        .unwrap_or_default())
}

/// GET /auth/dev/practitioners: who the development sign-in can sign in as.
pub async fn dev_practitioners(req: HttpRequest, state: State) -> ApiResult<HttpResponse> {
    dev_allowed(&req, &state)?;
    let st = state.clone();
    let list = blocking(move || practitioners(&st, None)).await?;
    Ok(HttpResponse::Ok().json(json!({ "practitioners": list })))
}

/// POST /auth/dev/token {"practitioner": "id"}: a token for that Practitioner (user/*.cruds,
/// fhirUser Practitioner/id), valid for [`DEV_TOKEN_TTL`] seconds.
pub async fn dev_token(
    req: HttpRequest,
    state: State,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    dev_allowed(&req, &state)?;
    let bad = |m: &str| ApiError::BadRequest {
        code: crate::fhir::outcome::IssueType::Invalid,
        msg: m.to_string(),
        expression: None,
    };
    let v: Value = serde_json::from_slice(&body)
        .map_err(|_| bad("the body must be JSON: {\"practitioner\": \"<id>\"}"))?;
    let id = v["practitioner"]
        .as_str()
        .map(|s| s.trim_start_matches("Practitioner/").to_string())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        })
        .ok_or_else(|| bad("'practitioner' must be a Practitioner id"))?;
    let st = state.clone();
    let id2 = id.clone();
    let found = blocking(move || practitioners(&st, Some(&id2))).await?;
    if found.is_empty() {
        return Err(ApiError::NotFound(format!("no Practitioner/{id}")));
    }
    let verifier = state
        .auth
        .verifier
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("authentication is off".into()))?;
    let spec = super::auth::jwt::TokenSpec {
        sub: format!("dev-console:{id}"),
        fhir_user: Some(format!("Practitioner/{id}")),
        scope: "user/*.cruds".into(),
        ttl_secs: DEV_TOKEN_TTL,
        patient: None,
        role: None,
        client_id: Some("icm-console".into()),
    };
    let token = verifier
        .mint(&verifier.claims(&spec))
        .map_err(|e| ApiError::BusinessRule(format!("cannot mint a development token: {e}")))?;
    log::warn!("development sign-in: minted a token for Practitioner/{id}");
    Ok(HttpResponse::Ok().json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": DEV_TOKEN_TTL,
        "scope": spec.scope,
        "fhirUser": format!("Practitioner/{id}"),
        "name": found[0]["name"],
    })))
}
