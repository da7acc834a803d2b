//! Transaction and batch Bundles, the pure part: parsing entries and their request URLs, the
//! processing order of the spec (DELETE, POST, PUT/PATCH, GET/HEAD), and rewriting `urn:uuid:`
//! full URLs into the references the server assigned.
use std::collections::HashMap;

use base64::Engine;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::fhir::patch::PatchFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Transaction,
    Batch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    Delete,
    Post,
    Put,
    Patch,
    Get,
    Head,
}

impl Method {
    /// Processing rank in a transaction (http://hl7.org/fhir/R4/http.html#trules).
    pub fn rank(self) -> u8 {
        match self {
            Method::Delete => 0,
            Method::Post => 1,
            Method::Put | Method::Patch => 2,
            Method::Get | Method::Head => 3,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Delete => "DELETE",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Get => "GET",
            Method::Head => "HEAD",
        }
    }
}

/// An entry's request URL, relative to the base: `Type`, `Type/id`, `Type/id/_history/vid`,
/// or `Type?criteria`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub ty: String,
    pub id: Option<String>,
    pub version: Option<String>,
    pub query: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// Position in the request Bundle.
    pub index: usize,
    pub method: Method,
    pub url: String,
    pub target: Target,
    pub full_url: Option<String>,
    /// The entry's resource as received (parsed when the entry is processed, so a large
    /// Bundle is never held as a JSON tree whole).
    pub resource: Option<Box<RawValue>>,
    pub if_match: Option<i64>,
    pub if_none_exist: Option<String>,
}

impl Entry {
    /// The entry's resource, parsed.
    pub fn resource(&self) -> Option<Value> {
        self.resource
            .as_ref()
            .and_then(|r| serde_json::from_str(r.get()).ok())
    }

    pub fn label(&self) -> String {
        format!(
            "Bundle.entry[{}] ({} {})",
            self.index,
            self.method.as_str(),
            self.url
        )
    }
}

/// Parse a request URL relative to the FHIR base (an absolute URL containing `/fhir/` or the
/// given base is cut down to the relative part).
pub fn parse_target(url: &str, base: &str) -> Result<Target, String> {
    let mut u = url.trim();
    if let Some(rest) = u.strip_prefix(base.trim_end_matches('/')) {
        u = rest;
    } else if u.starts_with("http://") || u.starts_with("https://") {
        match u.find("/fhir/") {
            Some(i) => u = &u[i + 5..],
            None => return Err(format!("request.url '{url}' is not on this server")),
        }
    }
    let u = u.trim_start_matches('/');
    let (path, query) = match u.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (u, None),
    };
    let segs: Vec<&str> = path.split('/').collect();
    let bad = || {
        format!("request.url '{url}' is not Type, Type/id, Type/id/_history/vid or Type?criteria")
    };
    if segs.is_empty() || segs[0].is_empty() {
        return Err(bad());
    }
    let t = |id: Option<&str>, v: Option<&str>| Target {
        ty: segs[0].to_string(),
        id: id.map(str::to_string),
        version: v.map(str::to_string),
        query: query.clone(),
    };
    match segs.len() {
        1 => Ok(t(None, None)),
        2 if !segs[1].is_empty() => Ok(t(Some(segs[1]), None)),
        4 if segs[2] == "_history" => Ok(t(Some(segs[1]), Some(segs[3]))),
        _ => Err(bad()),
    }
}

fn entry_error(index: usize, msg: impl Into<String>) -> ApiError {
    ApiError::invalid_at(
        format!("Bundle.entry[{index}]: {}", msg.into()),
        format!("Bundle.entry[{index}]"),
    )
}

/// The members of a JSON object, each kept as raw JSON (borrowed from the request body).
type Members<'a> = HashMap<String, &'a RawValue>;

fn member(m: &Members, name: &str) -> Option<Value> {
    m.get(name).and_then(|r| serde_json::from_str(r.get()).ok())
}

/// Parse a transaction or batch Bundle from its bytes. The entries' resources stay raw JSON
/// until each entry is processed. Entry-level problems come back per entry (a batch answers
/// them one by one; a transaction fails on the first).
#[allow(clippy::type_complexity)]
pub fn parse(
    body: &[u8],
    base: &str,
    max_entries: usize,
) -> ApiResult<(Kind, Vec<Result<Entry, ApiError>>)> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::structure(
            "request body is empty; a Bundle was expected",
        ));
    }
    let top: Members = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::structure("request body must be a JSON object (a Bundle)")
        }
        _ => ApiError::structure(format!(
            "request body is not valid JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        )),
    })?;
    if member(&top, "resourceType")
        .as_ref()
        .and_then(Value::as_str)
        != Some("Bundle")
    {
        return Err(ApiError::invalid_at(
            "POST to the base URL takes a Bundle of type transaction or batch",
            "resourceType",
        ));
    }
    let kind = match member(&top, "type").as_ref().and_then(Value::as_str) {
        Some("transaction") => Kind::Transaction,
        Some("batch") => Kind::Batch,
        other => {
            return Err(ApiError::invalid_at(
                format!(
                    "Bundle.type must be 'transaction' or 'batch' here, not {}",
                    other.map_or("absent".to_string(), |s| format!("'{s}'"))
                ),
                "Bundle.type",
            ))
        }
    };
    let entries: Vec<&RawValue> = match top.get("entry") {
        None => vec![],
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|_| ApiError::invalid_at("Bundle.entry must be an array", "Bundle.entry"))?,
    };
    drop(top);
    if entries.len() > max_entries {
        return Err(ApiError::PayloadTooLarge(format!(
            "the Bundle has {} entries; at most {max_entries} are accepted (ICM_MAX_BUNDLE_ENTRIES)",
            entries.len()
        )));
    }
    let mut parsed: Vec<Result<Entry, ApiError>> = entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| parse_entry(i, e, base))
        .collect();
    // bdl-7: one entry per fullUrl (a reference to it would be ambiguous).
    let dups = crate::fhir::validate::bundle::duplicate_full_urls(
        parsed
            .iter()
            .map(|e| (e.as_ref().ok().and_then(|e| e.full_url.as_deref()), None)),
    );
    for (i, f) in dups {
        parsed[i] = Err(ApiError::invalid_at(
            format!("Bundle.entry[{i}]: constraint bdl-7 failed: fullUrl '{f}' appears in more than one entry"),
            format!("Bundle.entry[{i}].fullUrl"),
        ));
    }
    Ok((kind, parsed))
}

fn parse_entry(index: usize, raw: &RawValue, base: &str) -> ApiResult<Entry> {
    let mut e: Members =
        serde_json::from_str(raw.get()).map_err(|_| entry_error(index, "is not a JSON object"))?;
    let resource = e.remove("resource").map(ToOwned::to_owned);
    let req = member(&e, "request").ok_or_else(|| entry_error(index, "has no request"))?;
    let method = match req.get("method").and_then(Value::as_str) {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") => Method::Post,
        Some("PUT") => Method::Put,
        Some("PATCH") => Method::Patch,
        Some("DELETE") => Method::Delete,
        other => {
            return Err(entry_error(
                index,
                format!("request.method {other:?} is not GET, HEAD, POST, PUT, PATCH or DELETE"),
            ))
        }
    };
    let url = req
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| entry_error(index, "request.url is missing"))?
        .to_string();
    let target = parse_target(&url, base).map_err(|m| entry_error(index, m))?;
    let if_match = match req.get("ifMatch").and_then(Value::as_str) {
        None => None,
        Some(s) => Some(crate::fhir::resource::parse_version_tag(s).ok_or_else(|| {
            entry_error(index, format!("request.ifMatch '{s}' is not a version tag"))
        })?),
    };
    let needs_resource = matches!(method, Method::Post | Method::Put | Method::Patch);
    if needs_resource && resource.is_none() {
        return Err(entry_error(
            index,
            format!("{} needs a resource", method.as_str()),
        ));
    }
    let needs_id = matches!(method, Method::Put | Method::Patch | Method::Delete);
    if needs_id && target.id.is_none() && target.query.is_none() {
        return Err(entry_error(
            index,
            format!(
                "{} needs Type/id or Type?criteria in request.url",
                method.as_str()
            ),
        ));
    }
    if method == Method::Post && (target.id.is_some() || target.query.is_some()) {
        return Err(entry_error(
            index,
            "POST request.url must be just the resource type",
        ));
    }
    let full_url = match member(&e, "fullUrl") {
        None => None,
        Some(Value::String(f)) => {
            if let Some(msg) = crate::fhir::validate::bundle::full_url_problem(&f, false) {
                return Err(entry_error(index, msg));
            }
            Some(f)
        }
        Some(_) => return Err(entry_error(index, "fullUrl must be a string")),
    };
    Ok(Entry {
        index,
        method,
        url,
        target,
        full_url,
        resource,
        if_match,
        if_none_exist: req
            .get("ifNoneExist")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// Indexes of `entries` in transaction processing order (stable within a rank).
pub fn processing_order(entries: &[Entry]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..entries.len()).collect();
    idx.sort_by_key(|&i| entries[i].method.rank());
    idx
}

/// Replace every string in `v` that equals a key of `map` (Reference.reference, uri, canonical,
/// url values naming a fullUrl), also `urn:uuid:x/_history/n`-free forms only.
pub fn rewrite_references(v: &mut Value, map: &HashMap<String, String>) -> usize {
    match v {
        Value::String(s) => match map.get(s.as_str()) {
            Some(r) => {
                *s = r.clone();
                1
            }
            None => 0,
        },
        Value::Array(a) => a.iter_mut().map(|x| rewrite_references(x, map)).sum(),
        Value::Object(o) => o.values_mut().map(|x| rewrite_references(x, map)).sum(),
        _ => 0,
    }
}

/// Every `Type?criteria` conditional reference in a resource (Reference.reference values only).
pub fn conditional_references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match (k.as_str(), x) {
                    ("reference", Value::String(s)) if is_conditional_reference(s) => {
                        out.push(s.clone())
                    }
                    _ => conditional_references(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| conditional_references(x, out)),
        _ => {}
    }
}

pub fn is_conditional_reference(s: &str) -> bool {
    match s.split_once('?') {
        Some((ty, q)) => {
            !q.is_empty()
                && !ty.is_empty()
                && ty.bytes().all(|b| b.is_ascii_alphabetic())
                && ty.as_bytes()[0].is_ascii_uppercase()
        }
        None => false,
    }
}

/// The patch of a PATCH entry (its resource, references already rewritten): a Parameters
/// resource is a FHIRPath Patch; a Binary holds a JSON Patch (or, with contentType
/// `application/merge-patch+json`, a JSON Merge Patch) as base64 `data`.
pub fn patch_document(e: &Entry, r: Value) -> ApiResult<(PatchFormat, Value)> {
    let bad = |m: &str| {
        ApiError::invalid_at(
            format!("{}: {m}", e.label()),
            format!("Bundle.entry[{}].resource", e.index),
        )
    };
    match r.get("resourceType").and_then(Value::as_str) {
        Some("Parameters") => Ok((PatchFormat::FhirPath, r)),
        Some("Binary") => {
            let data = r
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("the Binary has no data"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|_| bad("Binary.data is not base64"))?;
            let format = match r.get("contentType").and_then(Value::as_str) {
                Some(ct) if ct.trim().starts_with("application/merge-patch+json") => {
                    PatchFormat::Merge
                }
                _ => PatchFormat::Json,
            };
            let doc = serde_json::from_slice(&bytes)
                .map_err(|_| bad("Binary.data is not a JSON document"))?;
            Ok((format, doc))
        }
        _ => Err(bad(
            "a PATCH entry carries a Parameters resource (FHIRPath Patch) or a Binary holding a JSON Patch",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn targets() {
        let b = "http://h/fhir";
        let t = parse_target("Patient/1", b).unwrap();
        assert_eq!((t.ty.as_str(), t.id.as_deref()), ("Patient", Some("1")));
        let t = parse_target("http://h/fhir/Patient/1/_history/2", b).unwrap();
        assert_eq!(t.version.as_deref(), Some("2"));
        let t = parse_target("Patient?identifier=a|b", b).unwrap();
        assert_eq!(t.query.as_deref(), Some("identifier=a|b"));
        assert!(t.id.is_none());
        assert!(parse_target("Patient/1/x", b).is_err());
        assert!(parse_target("http://other/x", b).is_err());
    }

    #[test]
    fn order_is_delete_post_put_get() {
        let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "GET", "url": "Patient/1"}},
            {"request": {"method": "PUT", "url": "Patient/2"}, "resource": {"resourceType": "Patient", "id": "2"}},
            {"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient"}},
            {"request": {"method": "DELETE", "url": "Patient/3"}},
            {"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient"}},
        ]});
        let (k, e) = parse(b.to_string().as_bytes(), "http://h/fhir", 10).unwrap();
        assert_eq!(k, Kind::Transaction);
        let e: Vec<Entry> = e.into_iter().map(Result::unwrap).collect();
        assert_eq!(processing_order(&e), vec![3, 2, 4, 1, 0]);
        assert!(matches!(
            parse(b.to_string().as_bytes(), "x", 4),
            Err(ApiError::PayloadTooLarge(_))
        ));
    }

    #[test]
    fn rewrites_everywhere() {
        let mut map = HashMap::new();
        map.insert("urn:uuid:a".to_string(), "Patient/1".to_string());
        let mut r = json!({"subject": {"reference": "urn:uuid:a"}, "x": ["urn:uuid:a", "urn:uuid:b"], "instantiatesCanonical": ["urn:uuid:a"]});
        assert_eq!(rewrite_references(&mut r, &map), 3);
        assert_eq!(r["subject"]["reference"], "Patient/1");
        assert_eq!(r["x"][1], "urn:uuid:b");
        let mut out = vec![];
        conditional_references(
            &json!({"a": {"reference": "Patient?identifier=x|1"}, "b": {"reference": "Patient/1"}}),
            &mut out,
        );
        assert_eq!(out, vec!["Patient?identifier=x|1".to_string()]);
    }

    #[test]
    fn entry_errors() {
        let b = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "FROB", "url": "Patient"}},
            {"resource": {}},
        ]});
        let (_, e) = parse(b.to_string().as_bytes(), "x", 10).unwrap();
        assert!(e.iter().all(Result::is_err));
        assert!(parse(
            json!({"resourceType": "Bundle", "type": "collection"})
                .to_string()
                .as_bytes(),
            "x",
            1
        )
        .is_err());
    }
}
