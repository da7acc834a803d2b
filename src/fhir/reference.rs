//! The one reference parser: every place that reads a FHIR `Reference.reference` string
//! (validation, search indexing, referential integrity, the access boundary, care rules and
//! operations) classifies it here, so they all agree on what is local.
//!
//! The rule: only a relative `Type/id` (optionally `/_history/vid`) names a resource on this
//! server. An absolute URL is a foreign reference, even when its tail looks like `Patient/1`:
//! `https://elsewhere.example/fhir/Patient/1` is never taken for the local Patient/1 (a client
//! that means a local resource sends the relative form; transactions rewrite their `fullUrl`s
//! to it). `urn:uuid:`/`urn:oid:` stand for resources in the same Bundle, `#id` for a
//! contained resource, `Type?criteria` for a conditional reference in a transaction.
use serde_json::Value;

/// A classified reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference<'a> {
    /// `Type/id` or `Type/id/_history/vid`: a resource on this server.
    Local {
        ty: &'a str,
        id: &'a str,
        version: Option<&'a str>,
    },
    /// An absolute URL (`http(s)://…` or any other scheme but `urn:`): another server's
    /// resource or a canonical.
    Absolute(&'a str),
    /// `urn:uuid:…` or `urn:oid:…`: a Bundle-internal identity.
    Urn(&'a str),
    /// `#id` (`#` alone is the containing resource).
    Contained(&'a str),
    /// `Type?criteria`: a conditional reference (transactions resolve these before writing).
    Conditional { ty: &'a str, query: &'a str },
    /// No `reference` string: identifier-only or display-only.
    Logical,
    /// Anything else (not a valid reference).
    Invalid(&'a str),
}

fn is_type_name(t: &str) -> bool {
    t.starts_with(|c: char| c.is_ascii_uppercase()) && t.chars().all(|c| c.is_ascii_alphanumeric())
}

impl<'a> Reference<'a> {
    /// Classify a `Reference.reference` string.
    pub fn parse(s: &'a str) -> Reference<'a> {
        if let Some(id) = s.strip_prefix('#') {
            return Reference::Contained(id);
        }
        if s.starts_with("urn:uuid:") || s.starts_with("urn:oid:") {
            return Reference::Urn(s);
        }
        if let Some((ty, query)) = s.split_once('?') {
            if is_type_name(ty) {
                return Reference::Conditional { ty, query };
            }
            return Reference::Invalid(s);
        }
        if s.contains(':') {
            return Reference::Absolute(s);
        }
        let segs: Vec<&str> = s.split('/').collect();
        match segs.as_slice() {
            [ty, id] if is_type_name(ty) && !id.is_empty() => Reference::Local {
                ty,
                id,
                version: None,
            },
            [ty, id, "_history", v] if is_type_name(ty) && !id.is_empty() && !v.is_empty() => {
                Reference::Local {
                    ty,
                    id,
                    version: Some(v),
                }
            }
            _ => Reference::Invalid(s),
        }
    }

    /// Classify a Reference element (a JSON object with `reference`, `identifier`, …).
    pub fn of_element(v: &'a Value) -> Reference<'a> {
        match v.get("reference").and_then(Value::as_str) {
            Some(s) => Reference::parse(s),
            None => Reference::Logical,
        }
    }

    /// The local (type, id) this reference names, if it names one.
    pub fn local(&self) -> Option<(&'a str, &'a str)> {
        match *self {
            Reference::Local { ty, id, .. } => Some((ty, id)),
            _ => None,
        }
    }

    /// The resource type a reference points at, for checking allowed targets: the type of a
    /// local reference, or of an absolute URL ending in `Type/id[/_history/v]` (another
    /// server's RESTful URL). Not a claim that the resource is here.
    pub fn target_type(&self) -> Option<&'a str> {
        match *self {
            Reference::Local { ty, .. } => Some(ty),
            Reference::Absolute(url) => {
                let core = url.split(['?', '#']).next().unwrap_or(url);
                let segs: Vec<&str> = core.trim_end_matches('/').split('/').collect();
                let n = segs.len();
                let p = if n >= 4 && segs[n - 2] == "_history" {
                    n - 4
                } else {
                    n.checked_sub(2)?
                };
                is_type_name(segs[p]).then_some(segs[p])
            }
            _ => None,
        }
    }
}

/// The local (type, id) of a reference string (None for every other form).
pub fn local_target(s: &str) -> Option<(&str, &str)> {
    Reference::parse(s).local()
}

/// Whether a reference string names the local resource ty/id (any version).
pub fn refers_to(s: &str, ty: &str, id: &str) -> bool {
    local_target(s) == Some((ty, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn forms() {
        assert_eq!(local_target("Patient/1"), Some(("Patient", "1")));
        assert_eq!(local_target("Patient/1/_history/3"), Some(("Patient", "1")));
        assert_eq!(
            local_target("https://elsewhere.example/fhir/Patient/1"),
            None
        );
        assert_eq!(local_target("http://localhost/fhir/Patient/1"), None);
        assert_eq!(
            local_target("urn:uuid:0b8e3d6a-1b3c-4b8e-9c1d-2a3b4c5d6e7f"),
            None
        );
        assert_eq!(local_target("#c1"), None);
        assert_eq!(local_target("Patient?identifier=x|1"), None);
        assert_eq!(local_target("patient/1"), None);
        assert_eq!(local_target("Patient/"), None);
        assert_eq!(local_target("a/b/c"), None);
        assert!(matches!(
            Reference::parse("Patient?identifier=x|1"),
            Reference::Conditional { ty: "Patient", .. }
        ));
        assert_eq!(Reference::parse("#"), Reference::Contained(""));
        assert_eq!(
            Reference::of_element(&json!({"identifier": {"value": "1"}})),
            Reference::Logical
        );
        assert!(refers_to("CarePlan/p/_history/2", "CarePlan", "p"));
        assert!(!refers_to("http://x/fhir/CarePlan/p", "CarePlan", "p"));
    }

    #[test]
    fn target_types() {
        let t = |s: &str| Reference::parse(s).target_type().map(str::to_string);
        assert_eq!(t("Patient/1").as_deref(), Some("Patient"));
        assert_eq!(t("http://x/fhir/Patient/1").as_deref(), Some("Patient"));
        assert_eq!(
            t("http://x/fhir/Patient/1/_history/2").as_deref(),
            Some("Patient")
        );
        assert_eq!(t("http://x/fhir/").as_deref(), None);
        assert_eq!(t("urn:uuid:1").as_deref(), None);
    }
}
