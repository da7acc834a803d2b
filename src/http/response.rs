//! Building FHIR responses: JSON bodies (optionally pretty), version headers, base URL.
use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use serde_json::Value;

use super::negotiate::{wants_pretty, FHIR_JSON};
use super::AppState;
use crate::fhir::datetime::format_http_date;

/// The FHIR base URL for links: ICM_BASE_URL, else scheme://host/fhir of the request.
pub fn base_url(req: &HttpRequest, state: &AppState) -> String {
    if let Some(b) = &state.config.base_url {
        return b.trim_end_matches('/').to_string();
    }
    let ci = req.connection_info();
    format!("{}://{}/fhir", ci.scheme(), ci.host())
}

pub use crate::fhir::resource::etag;

/// Add ETag and Last-Modified for a resource version.
pub fn version_headers(b: &mut HttpResponseBuilder, version: i64, last_updated: i64) {
    b.insert_header((header::ETAG, etag(version)));
    b.insert_header((header::LAST_MODIFIED, format_http_date(last_updated)));
}

/// Serialize a JSON value as the response body, pretty when `_pretty=true`.
pub fn json_body(req: &HttpRequest, v: &Value) -> String {
    if wants_pretty(req) {
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    } else {
        v.to_string()
    }
}

/// A FHIR JSON response with the given status.
pub fn fhir_json(req: &HttpRequest, status: StatusCode, v: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, FHIR_JSON))
        .body(json_body(req, v))
}

/// A response whose body is stored resource text (re-serialized only when pretty is asked).
pub fn stored_body(req: &HttpRequest, b: &mut HttpResponseBuilder, text: String) -> HttpResponse {
    b.insert_header((header::CONTENT_TYPE, FHIR_JSON));
    if wants_pretty(req) {
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            return b.body(json_body(req, &v));
        }
    }
    b.body(text)
}

pub fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::OK)
}
