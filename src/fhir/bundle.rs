//! Bundle assembly (history, searchset, transaction-response) from already-built entries.
use serde_json::{json, Map, Value};

/// A Bundle of the given type with optional total, links (relation, url) and entries.
pub fn bundle(
    kind: &str,
    total: Option<u64>,
    links: &[(&str, String)],
    entries: Vec<Value>,
) -> Value {
    let mut b = Map::new();
    b.insert("resourceType".into(), json!("Bundle"));
    b.insert("id".into(), json!(uuid::Uuid::new_v4().to_string()));
    b.insert(
        "meta".into(),
        json!({"lastUpdated": crate::fhir::datetime::format_instant(crate::fhir::datetime::now_micros())}),
    );
    b.insert("type".into(), json!(kind));
    if let Some(t) = total {
        b.insert("total".into(), json!(t));
    }
    if !links.is_empty() {
        let l: Vec<Value> = links
            .iter()
            .map(|(rel, url)| json!({"relation": rel, "url": url}))
            .collect();
        b.insert("link".into(), Value::Array(l));
    }
    if !entries.is_empty() {
        b.insert("entry".into(), Value::Array(entries));
    }
    Value::Object(b)
}
