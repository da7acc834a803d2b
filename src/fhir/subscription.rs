//! R4 Subscriptions (4.0.1, criteria-based): what a Subscription resource asks for — the search
//! criteria, the channel (rest-hook or websocket), the headers and payload — and the server's
//! rules for `status` on a write. Pure: the unit of work runs [`before_write`] on every write of
//! a Subscription; service::subscriptions matches writes and delivers notifications.
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::fhir::outcome::IssueType;
use crate::fhir::search::query::SearchQuery;

/// The channel types this server delivers.
pub const CHANNEL_TYPES: &[&str] = &["rest-hook", "websocket"];

/// How notifications reach the subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// POST (no payload) or PUT `[endpoint]/[type]/[id]` (with the resource) to the endpoint,
    /// with the given headers (each `Name: value`).
    RestHook {
        endpoint: String,
        headers: Vec<(String, String)>,
        /// The MIME type of the payload (None: no body).
        payload: Option<String>,
    },
    /// A client bound to the subscription over the server's websocket gets `ping <id>`.
    Websocket,
}

/// What a Subscription asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The resource type of the criteria.
    pub criteria_type: String,
    /// The criteria's query string (may be empty: every resource of the type).
    pub criteria_query: String,
    pub channel: Channel,
    pub status: String,
}

fn bad(msg: impl Into<String>, at: &str) -> ApiError {
    ApiError::invalid_at(msg, at)
}

fn not_supported(msg: impl Into<String>, at: &str) -> ApiError {
    ApiError::BadRequest {
        code: IssueType::NotSupported,
        msg: msg.into(),
        expression: Some(at.to_string()),
    }
}

/// Split criteria `Type?query` and check it is a search this server can run: a supported
/// type and parameters the one search parser understands (no paging, sorting or includes,
/// which mean nothing to a single resource).
pub fn parse_criteria(criteria: &str) -> ApiResult<(String, String)> {
    const AT: &str = "Subscription.criteria";
    let criteria = criteria.trim();
    let criteria = criteria.strip_prefix('/').unwrap_or(criteria);
    let (ty, query) = criteria.split_once('?').unwrap_or((criteria, ""));
    if ty.is_empty() || !ty.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad(
            format!("criteria '{criteria}' must be a search URL like 'Task?status=requested'"),
            AT,
        ));
    }
    if ty == "AuditEvent" {
        return Err(not_supported(
            "subscriptions to the audit trail (AuditEvent) are not supported",
            AT,
        ));
    }
    let q = SearchQuery::parse(ty, query).map_err(|_| {
        not_supported(
            format!("'{ty}' is not a resource type this server supports"),
            AT,
        )
    })?;
    let mut problems: Vec<String> = q.issues.iter().chain(&q.invalid).cloned().collect();
    for (k, _) in url::form_urlencoded::parse(query.as_bytes()) {
        if matches!(
            k.as_ref(),
            "_count"
                | "_sort"
                | "_include"
                | "_revinclude"
                | "_summary"
                | "_elements"
                | "_total"
                | "_page"
                | "_format"
                | "_pretty"
                | "_contained"
                | "_containedType"
        ) || k.starts_with("_include:")
            || k.starts_with("_revinclude:")
        {
            problems.push(format!("'{k}' is not a matching criterion"));
        }
    }
    if !problems.is_empty() {
        return Err(bad(
            format!("criteria not understood: {}", problems.join("; ")),
            AT,
        ));
    }
    Ok((ty.to_string(), query.to_string()))
}

/// Read what a Subscription asks for, refusing what this server cannot do.
pub fn spec(sub: &Value) -> ApiResult<Spec> {
    let criteria = sub["criteria"]
        .as_str()
        .ok_or_else(|| bad("a Subscription needs criteria", "Subscription.criteria"))?;
    let (criteria_type, criteria_query) = parse_criteria(criteria)?;
    let ch = &sub["channel"];
    let ctype = ch["type"].as_str().ok_or_else(|| {
        bad(
            "a Subscription needs channel.type",
            "Subscription.channel.type",
        )
    })?;
    let channel = match ctype {
        "rest-hook" => {
            let endpoint = ch["endpoint"].as_str().unwrap_or_default().to_string();
            let url = url::Url::parse(&endpoint).map_err(|_| {
                bad(
                    "a rest-hook channel needs an absolute http(s) endpoint URL",
                    "Subscription.channel.endpoint",
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(not_supported(
                    "rest-hook endpoints must be http or https URLs",
                    "Subscription.channel.endpoint",
                ));
            }
            let mut headers = vec![];
            for h in ch["header"].as_array().into_iter().flatten() {
                let text = h.as_str().unwrap_or_default();
                let (name, value) = text.split_once(':').ok_or_else(|| {
                    bad(
                        format!("header '{text}' must have the form 'Name: value'"),
                        "Subscription.channel.header",
                    )
                })?;
                let name = name.trim();
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
                    || value.contains(['\r', '\n'])
                {
                    return Err(bad(
                        format!("header '{text}' is not a valid HTTP header"),
                        "Subscription.channel.header",
                    ));
                }
                headers.push((name.to_string(), value.trim().to_string()));
            }
            let payload = match ch["payload"].as_str().map(str::trim) {
                None | Some("") => None,
                Some(p) => {
                    let mime = p.split(';').next().unwrap_or_default().trim();
                    if !matches!(mime, "application/fhir+json" | "application/json") {
                        return Err(not_supported(
                            format!("payload '{p}' is not supported (use application/fhir+json, or none)"),
                            "Subscription.channel.payload",
                        ));
                    }
                    Some("application/fhir+json".to_string())
                }
            };
            Channel::RestHook {
                endpoint,
                headers,
                payload,
            }
        }
        "websocket" => Channel::Websocket,
        other => {
            return Err(not_supported(
                format!(
                    "channel type '{other}' is not supported (supported: {})",
                    CHANNEL_TYPES.join(", ")
                ),
                "Subscription.channel.type",
            ))
        }
    };
    Ok(Spec {
        criteria_type,
        criteria_query,
        channel,
        status: sub["status"].as_str().unwrap_or_default().to_string(),
    })
}

/// The server's rules on a write of a Subscription: the request must be one it can serve
/// (400 otherwise), and `status` is the server's: a `requested` (or `active`) subscription
/// becomes `active` at once (R4 defines no handshake for these channels) and any earlier
/// `error` text is removed; `off` stays off; `error` is set by the server after repeated
/// delivery failures (a client may also set it, which stops delivery like `off`).
pub fn before_write(next: &mut Value) -> ApiResult<()> {
    spec(next)?;
    match next["status"].as_str() {
        Some("requested") | Some("active") => {
            next["status"] = Value::String("active".into());
            if let Some(m) = next.as_object_mut() {
                m.remove("error");
            }
        }
        Some("off") | Some("error") => {}
        Some(other) => {
            return Err(bad(
                format!("status '{other}' is not a Subscription status"),
                "Subscription.status",
            ))
        }
        None => return Err(bad("a Subscription needs a status", "Subscription.status")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sub(criteria: &str, channel: Value) -> Value {
        json!({"resourceType": "Subscription", "status": "requested", "reason": "r",
               "criteria": criteria, "channel": channel})
    }

    #[test]
    fn criteria_must_be_a_search_this_server_runs() {
        assert_eq!(
            parse_criteria("Task?owner=Practitioner/x&status=requested").unwrap(),
            (
                "Task".into(),
                "owner=Practitioner/x&status=requested".into()
            )
        );
        assert_eq!(
            parse_criteria("Encounter").unwrap(),
            ("Encounter".into(), String::new())
        );
        assert!(parse_criteria("Nope?x=1").is_err());
        assert!(parse_criteria("Task?nonsense=1").is_err());
        assert!(parse_criteria("Task?_count=3").is_err());
        assert!(parse_criteria("?status=active").is_err());
        assert!(parse_criteria("AuditEvent").is_err());
    }

    #[test]
    fn channels() {
        let s = spec(&sub(
            "Task?status=requested",
            json!({"type": "rest-hook", "endpoint": "http://h/x", "payload": "application/fhir+json",
                   "header": ["Authorization: Bearer abc"]}),
        ))
        .unwrap();
        assert_eq!(
            s.channel,
            Channel::RestHook {
                endpoint: "http://h/x".into(),
                headers: vec![("Authorization".into(), "Bearer abc".into())],
                payload: Some("application/fhir+json".into())
            }
        );
        assert!(spec(&sub(
            "Task",
            json!({"type": "email", "endpoint": "mailto:a@b"})
        ))
        .is_err());
        assert!(spec(&sub(
            "Task",
            json!({"type": "rest-hook", "endpoint": "ftp://h"})
        ))
        .is_err());
        assert!(spec(&sub("Task", json!({"type": "rest-hook"}))).is_err());
        assert!(spec(&sub(
            "Task",
            json!({"type": "rest-hook", "endpoint": "http://h", "header": ["bad\nheader: x"]})
        ))
        .is_err());
        assert!(spec(&sub(
            "Task",
            json!({"type": "rest-hook", "endpoint": "http://h", "payload": "application/xml"})
        ))
        .is_err());
        assert_eq!(
            spec(&sub("Task", json!({"type": "websocket"})))
                .unwrap()
                .channel,
            Channel::Websocket
        );
    }

    #[test]
    fn status_is_the_servers() {
        let mut s = sub("Task", json!({"type": "websocket"}));
        s["error"] = json!("old");
        before_write(&mut s).unwrap();
        assert_eq!(s["status"], "active");
        assert!(s.get("error").is_none());
        let mut off = sub("Task", json!({"type": "websocket"}));
        off["status"] = json!("off");
        before_write(&mut off).unwrap();
        assert_eq!(off["status"], "off");
        let mut bad = sub("Task", json!({"type": "websocket"}));
        bad["status"] = json!("sleeping");
        assert!(before_write(&mut bad).is_err());
    }
}
