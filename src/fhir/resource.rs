//! Rules every resource body follows regardless of type: shape, resourceType, id, server-owned meta.
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::fhir::datetime::format_instant;

/// FHIR `id`: 1 to 64 characters from `[A-Za-z0-9\-\.]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A URL id that is not a FHIR id is a 400 at `id`.
pub fn check_id(id: &str) -> Result<(), ApiError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::invalid_at(
            format!("'{id}' is not a valid FHIR id"),
            "id",
        ))
    }
}

/// Parse a request body into a JSON object, reporting the line and column of a syntax error.
pub fn parse_body(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::structure(
            "request body is empty; a FHIR JSON resource was expected",
        ));
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::structure(format!(
            "request body is not valid JSON: {} (line {}, column {})",
            e,
            e.line(),
            e.column()
        ))
    })?;
    if !v.is_object() {
        return Err(ApiError::structure(
            "request body must be a JSON object (a FHIR resource)",
        ));
    }
    Ok(v)
}

/// The `resourceType` of a parsed body, checked against the type in the URL when one is given.
pub fn check_resource_type<'a>(
    body: &'a Value,
    expected: Option<&str>,
) -> Result<&'a str, ApiError> {
    let rt = match body.get("resourceType") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(ApiError::invalid_at(
                "resourceType must be a string",
                "resourceType",
            ))
        }
        None => {
            return Err(ApiError::invalid_at(
                "the resource has no resourceType",
                "resourceType",
            ))
        }
    };
    if let Some(exp) = expected {
        if rt != exp {
            return Err(ApiError::invalid_at(
                format!("resourceType '{rt}' does not match the type '{exp}' in the URL"),
                "resourceType",
            ));
        }
    }
    Ok(rt)
}

/// The body's `id`, if it has one, checked for format.
pub fn body_id(body: &Value) -> Result<Option<&str>, ApiError> {
    match body.get("id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if is_valid_id(s) => Ok(Some(s)),
        Some(Value::String(s)) => Err(ApiError::invalid_at(
            format!("'{s}' is not a valid FHIR id (1-64 of A-Z a-z 0-9 - .)"),
            "id",
        )),
        Some(_) => Err(ApiError::invalid_at("id must be a string", "id")),
    }
}

/// Rewrite the server-owned parts: `id`, `meta.versionId`, `meta.lastUpdated`. Everything else,
/// in its original order, is kept; `resourceType`, `id` and `meta` are placed first.
pub fn stamp(body: Value, id: &str, version: i64, last_updated: i64) -> Value {
    let Value::Object(src) = body else {
        return body;
    };
    let mut out = Map::with_capacity(src.len() + 2);
    let mut meta = Map::new();
    let mut rest = Map::new();
    let mut rt = Value::Null;
    for (k, v) in src {
        match k.as_str() {
            "resourceType" => rt = v,
            "id" => {}
            "meta" => {
                if let Value::Object(m) = v {
                    meta = m;
                }
            }
            _ => {
                rest.insert(k, v);
            }
        }
    }
    let mut new_meta = Map::with_capacity(meta.len() + 2);
    new_meta.insert("versionId".into(), Value::String(version.to_string()));
    new_meta.insert(
        "lastUpdated".into(),
        Value::String(format_instant(last_updated)),
    );
    for (k, v) in meta {
        if k != "versionId" && k != "lastUpdated" {
            new_meta.insert(k, v);
        }
    }
    out.insert("resourceType".into(), rt);
    out.insert("id".into(), Value::String(id.to_string()));
    out.insert("meta".into(), Value::Object(new_meta));
    out.extend(rest);
    Value::Object(out)
}

/// The version in an ETag or If-Match value (`W/"3"`, `"3"`, `3`).
pub fn parse_version_tag(v: &str) -> Option<i64> {
    let v = v.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    v.trim_matches('"').parse().ok()
}

/// The weak ETag of a version (`W/"3"`).
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids() {
        assert!(is_valid_id("a-B.9"));
        assert!(is_valid_id(&"x".repeat(64)));
        assert!(!is_valid_id(&"x".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a_b"));
        assert!(!is_valid_id("a/b"));
    }

    #[test]
    fn stamp_keeps_order_and_precision() {
        let body: Value = serde_json::from_str(
            r#"{"name":[{"family":"X"}],"resourceType":"Observation","valueQuantity":{"value":1.50},"meta":{"tag":[{"code":"t"}],"versionId":"9"},"id":"old"}"#,
        )
        .unwrap();
        let out = stamp(body, "new", 2, 0);
        let text = out.to_string();
        assert_eq!(
            text,
            r#"{"resourceType":"Observation","id":"new","meta":{"versionId":"2","lastUpdated":"1970-01-01T00:00:00.000Z","tag":[{"code":"t"}]},"name":[{"family":"X"}],"valueQuantity":{"value":1.50}}"#
        );
    }

    #[test]
    fn parse_errors_say_where() {
        let e = parse_body(b"{\n \"a\": }").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(parse_body(b"[1]").is_err());
        assert!(parse_body(b"  ").is_err());
        assert_eq!(
            check_resource_type(&json!({"resourceType":"Patient"}), Some("Patient")).unwrap(),
            "Patient"
        );
        assert!(check_resource_type(&json!({"resourceType":"Patient"}), Some("Task")).is_err());
    }
}
