//! Content negotiation: Accept / _format (406), Content-Type (415), body size (413), Prefer, _pretty.
use actix_web::http::header;
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde_json::Value;

use crate::error::ApiError;
use crate::fhir::resource::parse_body;

pub use crate::fhir::FHIR_JSON;

/// The media types of a FHIR JSON body.
pub const JSON_TYPES: &[&str] = &[
    "application/fhir+json",
    "application/json",
    "application/json+fhir",
];
const JSON_FORMATS: &[&str] = &[
    "json",
    "application/fhir+json",
    "application/json",
    "application/json+fhir",
];

/// The value of a query parameter (first occurrence), percent-decoded.
pub fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn media_type(s: &str) -> String {
    s.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Check that the client can accept JSON (`_format` wins over `Accept`).
pub fn check_acceptable(req: &HttpRequest) -> Result<(), ApiError> {
    if let Some(f) = query_param(req, "_format") {
        // `_format=application/fhir+json` typed without encoding arrives as `fhir json`.
        let f = media_type(&f.replace(' ', "+"));
        if JSON_FORMATS.contains(&f.as_str()) {
            return Ok(());
        }
        return Err(ApiError::NotAcceptable(format!(
            "_format '{f}' is not supported; this server speaks FHIR JSON only (_format=json)"
        )));
    }
    let Some(accept) = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    if accept.trim().is_empty() {
        return Ok(());
    }
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let mt = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if refused {
            continue;
        }
        if mt == "*/*" || mt == "application/*" || JSON_TYPES.contains(&mt.as_str()) {
            return Ok(());
        }
        // Bulk Data export files are NDJSON.
        if req.path().contains("/$export-file/")
            && crate::service::export::OUTPUT_FORMATS.contains(&mt.as_str())
        {
            return Ok(());
        }
    }
    Err(ApiError::NotAcceptable(format!(
        "none of the media types in Accept ('{accept}') can be produced; this server returns application/fhir+json"
    )))
}

/// Whether the response should be pretty-printed (`_pretty=true`).
pub fn wants_pretty(req: &HttpRequest) -> bool {
    query_param(req, "_pretty").is_some_and(|v| v == "true")
}

/// The `return=` preference of a Prefer header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnPref {
    Minimal,
    Representation,
    OperationOutcome,
}

pub fn prefer_return(req: &HttpRequest) -> ReturnPref {
    prefer_value(req, "return")
        .map(|v| match v.as_str() {
            "minimal" => ReturnPref::Minimal,
            "OperationOutcome" => ReturnPref::OperationOutcome,
            _ => ReturnPref::Representation,
        })
        .unwrap_or(ReturnPref::Representation)
}

/// A `key=value` token from the Prefer header(s).
pub fn prefer_value(req: &HttpRequest, key: &str) -> Option<String> {
    req.headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|tok| tok.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
}

/// Check a request's Content-Type against the accepted media types (415 otherwise).
/// A missing Content-Type is read as JSON.
pub fn check_content_type(req: &HttpRequest, accepted: &[&str]) -> Result<(), ApiError> {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().map(media_type).unwrap_or_default();
    if accepted.contains(&ct.as_str()) {
        return Ok(());
    }
    Err(ApiError::UnsupportedMediaType(format!(
        "Content-Type '{ct}' is not supported here; send {}",
        accepted.join(" or ")
    )))
}

/// Read the whole body, refusing more than `limit` bytes with 413.
pub async fn read_body(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "request body exceeds the limit of {limit} bytes (ICM_MAX_BODY)"
        ))
    };
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(too_large());
        }
    }
    let secs = req
        .app_data::<super::State>()
        .map_or(60, |s| s.config.body_timeout.max(1));
    match actix_web::rt::time::timeout(
        std::time::Duration::from_secs(secs),
        read_all(payload, limit, too_large),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(ApiError::RequestTimeout(format!(
            "the request body did not arrive within {secs} s (ICM_BODY_TIMEOUT)"
        ))),
    }
}

/// The body's chunks, together (at most `limit` bytes).
async fn read_all(
    payload: &mut Payload,
    limit: usize,
    too_large: impl Fn() -> ApiError,
) -> Result<web::Bytes, ApiError> {
    // A body that arrives as one chunk (or was buffered whole by the security layer) is used
    // as it is; only a body in several chunks is copied together.
    let mut first: Option<web::Bytes> = None;
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        let have = first.as_ref().map_or(0, |f| f.len()) + buf.len();
        if have + chunk.len() > limit {
            return Err(too_large());
        }
        match first.take() {
            None if buf.is_empty() => first = Some(chunk),
            Some(f) => {
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&chunk);
            }
            None => buf.extend_from_slice(&chunk),
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// A FHIR JSON body: Content-Type checked (415), at most `limit` bytes (413), parsed (400 says
/// where).
pub async fn fhir_json_body(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> Result<Value, ApiError> {
    check_content_type(req, JSON_TYPES)?;
    let bytes = read_body(req, payload, limit).await?;
    parse_body(&bytes)
}

/// A FHIR JSON resource body: Content-Type checked, size-limited (ICM_MAX_BODY), parsed.
pub struct FhirBody(pub Value);

impl FromRequest for FhirBody {
    type Error = ApiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let limit = req
                .app_data::<super::State>()
                .map_or(16 * 1024 * 1024, |s| s.config.max_body);
            Ok(FhirBody(fhir_json_body(&req, &mut payload, limit).await?))
        })
    }
}

pub use crate::fhir::resource::parse_version_tag;

/// The If-Match version, if present (400 when it is not a version tag).
pub fn if_match(req: &HttpRequest) -> Result<Option<i64>, ApiError> {
    match req.headers().get(header::IF_MATCH) {
        None => Ok(None),
        Some(h) => {
            let s = h.to_str().unwrap_or("");
            parse_version_tag(s).map(Some).ok_or_else(|| {
                ApiError::bad_request(format!("If-Match '{s}' is not a version tag like W/\"3\""))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn accept_rules() {
        let ok = |a: &str| {
            check_acceptable(
                &TestRequest::default()
                    .insert_header(("accept", a))
                    .to_http_request(),
            )
            .is_ok()
        };
        assert!(ok("application/fhir+json"));
        assert!(ok("application/json;q=0.9"));
        assert!(ok("text/html,application/xhtml+xml,*/*;q=0.8"));
        assert!(!ok("application/fhir+xml"));
        assert!(!ok("application/fhir+json;q=0, application/xml"));
        let fmt = |f: &str| {
            check_acceptable(
                &TestRequest::with_uri(&format!("/fhir/Patient?_format={f}")).to_http_request(),
            )
            .is_ok()
        };
        assert!(fmt("json"));
        assert!(
            fmt("application/fhir+json"),
            "unencoded + decodes to a space"
        );
        assert!(fmt("application%2Ffhir%2Bjson"));
        assert!(!fmt("xml"));
    }

    #[test]
    fn version_tags() {
        assert_eq!(parse_version_tag("W/\"3\""), Some(3));
        assert_eq!(parse_version_tag("\"12\""), Some(12));
        assert_eq!(parse_version_tag("7"), Some(7));
        assert_eq!(parse_version_tag("W/\"x\""), None);
    }

    #[test]
    fn prefer() {
        let r = TestRequest::default()
            .insert_header(("prefer", "return=minimal"))
            .to_http_request();
        assert_eq!(prefer_return(&r), ReturnPref::Minimal);
        let r = TestRequest::default()
            .insert_header(("prefer", "handling=strict, return=OperationOutcome"))
            .to_http_request();
        assert_eq!(prefer_return(&r), ReturnPref::OperationOutcome);
        assert_eq!(prefer_value(&r, "handling").as_deref(), Some("strict"));
    }
}
