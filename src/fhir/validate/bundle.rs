//! The Bundle rules (pure): the R4 bdl-* invariants, `fullUrl` form and agreement with the
//! entry's resource, one-per-Bundle link relations, and references inside a document that must
//! resolve within it. Applied to a Bundle resource (and Bundles nested in its entries) on every
//! write and by `$validate`; transaction processing uses [`full_url_problem`] and
//! [`duplicate_full_urls`] for the rules that also bind a transaction or batch.
use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::fhir::outcome::{Issue, IssueType};
use crate::fhir::reference::Reference;

/// Link relations that may appear at most once in a Bundle (R4 paging links and `self`).
const SINGLE_RELATIONS: &[&str] = &["self", "first", "previous", "prev", "next", "last"];

fn inv(key: &str, path: String, msg: impl Into<String>) -> Issue {
    Issue::error(
        IssueType::Invariant,
        format!("constraint {key} failed: {}", msg.into()),
    )
    .at(path)
}

/// Whether `s` is a UUID in the canonical lowercase 8-4-4-4-12 form.
fn is_lower_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Whether `s` is an OID (`0`, `1` or `2`, then dot-separated numbers without leading zeros).
fn is_oid(s: &str) -> bool {
    let arcs: Vec<&str> = s.split('.').collect();
    arcs.len() >= 2
        && matches!(arcs[0], "0" | "1" | "2")
        && arcs.iter().all(|a| {
            !a.is_empty()
                && a.bytes().all(|b| b.is_ascii_digit())
                && (a.len() == 1 || !a.starts_with('0'))
        })
}

/// What is wrong with a `urn:uuid:` / `urn:oid:` value, if anything (None for other URIs).
pub fn urn_problem(s: &str) -> Option<String> {
    if let Some(u) = s.strip_prefix("urn:uuid:") {
        (!is_lower_uuid(u)).then(|| {
            format!("'{s}' is not a valid urn:uuid (a lowercase UUID, 8-4-4-4-12 hex digits)")
        })
    } else if let Some(o) = s.strip_prefix("urn:oid:") {
        (!is_oid(o)).then(|| format!("'{s}' is not a valid urn:oid"))
    } else {
        None
    }
}

/// Whether `s` is an absolute URI (a scheme, then ':').
pub fn is_absolute_uri(s: &str) -> bool {
    match s.split_once(':') {
        Some((scheme, rest)) => {
            !rest.is_empty()
                && scheme.len() > 1
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

/// What is wrong with an entry's `fullUrl`, if anything: it must be absolute (or a valid
/// `urn:uuid` / `urn:oid`) and not version-specific (bdl-8). `strict_urn` also checks the
/// UUID/OID form (transaction processing accepts any `urn:uuid:` label, as HAPI does; for a
/// Bundle resource the `uri` primitive check reports it).
pub fn full_url_problem(full_url: &str, strict_urn: bool) -> Option<String> {
    if full_url.contains("/_history/") {
        return Some(format!(
            "constraint bdl-8 failed: fullUrl cannot be a version specific reference ('{full_url}')"
        ));
    }
    if !is_absolute_uri(full_url) {
        return Some(format!(
            "fullUrl '{full_url}' must be an absolute URL, a urn:uuid or a urn:oid"
        ));
    }
    if strict_urn {
        return urn_problem(full_url);
    }
    None
}

/// Indexes of entries whose `fullUrl` (and `meta.versionId`) repeat an earlier entry's (bdl-7).
pub fn duplicate_full_urls<'a>(
    entries: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>,
) -> Vec<(usize, String)> {
    let mut seen: HashSet<(&str, Option<&str>)> = HashSet::new();
    let mut out = Vec::new();
    for (i, (full, version)) in entries.enumerate() {
        if let Some(f) = full {
            if !seen.insert((f, version)) {
                out.push((i, f.to_string()));
            }
        }
    }
    out
}

/// Every problem of a Bundle resource at `path` (`Bundle`, or `Bundle.entry[0].resource`).
pub fn check(bundle: &Value, path: &str) -> Vec<Issue> {
    let mut issues = Vec::new();
    let ty = bundle["type"].as_str().unwrap_or_default();
    let entries: &[Value] = bundle["entry"].as_array().map_or(&[], Vec::as_slice);
    // bdl-1
    if bundle.get("total").is_some() && !matches!(ty, "searchset" | "history") {
        issues.push(inv(
            "bdl-1",
            format!("{path}.total"),
            "total only when a search or history",
        ));
    }
    // bdl-9, bdl-10, bdl-11 (document), bdl-12 (message)
    if ty == "document" {
        let id = &bundle["identifier"];
        if id["system"].as_str().is_none() || id["value"].as_str().is_none() {
            issues.push(inv(
                "bdl-9",
                format!("{path}.identifier"),
                "a document must have an identifier with a system and a value",
            ));
        }
        if bundle.get("timestamp").is_none() {
            issues.push(inv(
                "bdl-10",
                format!("{path}.timestamp"),
                "a document must have a date (timestamp)",
            ));
        }
        if entries.first().map(|e| &e["resource"]["resourceType"])
            != Some(&Value::from("Composition"))
        {
            issues.push(inv(
                "bdl-11",
                format!("{path}.entry[0]"),
                "a document must have a Composition as the first resource",
            ));
        }
    }
    if ty == "message"
        && entries.first().map(|e| &e["resource"]["resourceType"])
            != Some(&Value::from("MessageHeader"))
    {
        issues.push(inv(
            "bdl-12",
            format!("{path}.entry[0]"),
            "a message must have a MessageHeader as the first resource",
        ));
    }
    // Link relations that may appear once.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for l in bundle["link"].as_array().into_iter().flatten() {
        if let Some(r) = l["relation"].as_str() {
            *counts.entry(r).or_default() += 1;
        }
    }
    for r in SINGLE_RELATIONS {
        if counts.get(r).copied().unwrap_or(0) > 1 {
            issues.push(
                Issue::error(
                    IssueType::Invalid,
                    format!("link relation '{r}' may appear only once in a Bundle"),
                )
                .at(format!("{path}.link")),
            );
        }
    }
    for (i, e) in entries.iter().enumerate() {
        let at = format!("{path}.entry[{i}]");
        // bdl-5
        if e.get("resource").is_none() && e.get("request").is_none() && e.get("response").is_none()
        {
            issues.push(inv(
                "bdl-5",
                at.clone(),
                "an entry must have a resource, a request or a response",
            ));
        }
        // bdl-2
        if e.get("search").is_some() && ty != "searchset" {
            issues.push(inv(
                "bdl-2",
                format!("{at}.search"),
                "entry.search only when a search",
            ));
        }
        // bdl-3: entry.request exactly in batch/transaction/history; bdl-4: entry.response
        // exactly in batch-response/transaction-response/history.
        for (key, elem, needed_in) in [
            ("bdl-3", "request", &["batch", "transaction", "history"][..]),
            (
                "bdl-4",
                "response",
                &["batch-response", "transaction-response", "history"][..],
            ),
        ] {
            let needed = needed_in.contains(&ty);
            if needed != e.get(elem).is_some() {
                let how = if needed { "mandatory" } else { "not allowed" };
                issues.push(inv(
                    key,
                    format!("{at}.{elem}"),
                    format!("entry.{elem} is {how} in a {ty} Bundle"),
                ));
            }
        }
        if let Some(full) = e["fullUrl"].as_str() {
            if let Some(msg) = full_url_problem(full, false) {
                let key_issue = if msg.starts_with("constraint") {
                    Issue::error(IssueType::Invariant, msg)
                } else {
                    Issue::error(IssueType::Value, msg)
                };
                issues.push(key_issue.at(format!("{at}.fullUrl")));
            } else if let Some(p) = disagreement(full, &e["resource"]) {
                issues.push(Issue::error(IssueType::Invalid, p).at(format!("{at}.fullUrl")));
            }
        }
        if e["resource"]["resourceType"] == "Bundle" {
            issues.extend(check(&e["resource"], &format!("{at}.resource")));
        }
    }
    // bdl-7 (not for history, where one resource appears in several versions)
    if ty != "history" {
        let dups = duplicate_full_urls(entries.iter().map(|e| {
            (
                e["fullUrl"].as_str(),
                e["resource"]["meta"]["versionId"].as_str(),
            )
        }));
        for (i, f) in dups {
            issues.push(inv(
                "bdl-7",
                format!("{path}.entry[{i}].fullUrl"),
                format!("fullUrl '{f}' appears in more than one entry (with the same versionId)"),
            ));
        }
    }
    if ty == "document" {
        issues.extend(unresolved_in_document(entries, path));
    }
    issues
}

/// A RESTful fullUrl (`…/Type/id`) must name the entry's resource type and id.
fn disagreement(full: &str, resource: &Value) -> Option<String> {
    if full.starts_with("urn:") || !resource.is_object() {
        return None;
    }
    let mut segs = full.trim_end_matches('/').rsplit('/');
    let (id, ty) = (segs.next()?, segs.next()?);
    let rty = resource["resourceType"].as_str()?;
    if !ty.starts_with(|c: char| c.is_ascii_uppercase())
        || !crate::fhir::registry::Registry::get().is_supported(ty)
    {
        return None; // not a RESTful URL: nothing to compare
    }
    if ty != rty {
        return Some(format!(
            "fullUrl '{full}' names a {ty}, but the entry's resource is a {rty}"
        ));
    }
    match resource["id"].as_str() {
        Some(rid) if rid != id => Some(format!(
            "fullUrl '{full}' disagrees with the resource id '{rid}'"
        )),
        _ => None,
    }
}

/// In a document, every literal reference must resolve to an entry of the Bundle (by fullUrl,
/// or `Type/id` against the fullUrls' base), or to a contained resource (`#id`).
fn unresolved_in_document(entries: &[Value], path: &str) -> Vec<Issue> {
    let mut full: HashSet<&str> = HashSet::new();
    let mut by_type_id: HashSet<(String, String)> = HashSet::new();
    for e in entries {
        if let Some(f) = e["fullUrl"].as_str() {
            full.insert(f);
        }
        if let (Some(t), Some(i)) = (
            e["resource"]["resourceType"].as_str(),
            e["resource"]["id"].as_str(),
        ) {
            by_type_id.insert((t.to_string(), i.to_string()));
        }
    }
    let mut issues = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let mut refs = Vec::new();
        collect_refs(
            &e["resource"],
            &format!("{path}.entry[{i}].resource"),
            &mut refs,
            true,
        );
        for (at, r) in refs {
            if r.starts_with('#') || full.contains(r.as_str()) {
                continue;
            }
            // Local and urn references must resolve here; an absolute URL that is no entry's
            // fullUrl names a resource elsewhere, and invalid forms are reported by the walk.
            let resolved = match Reference::parse(&r) {
                Reference::Local { ty, id, .. } => {
                    by_type_id.contains(&(ty.to_string(), id.to_string()))
                }
                Reference::Urn(_) => false,
                _ => true,
            };
            if !resolved {
                issues.push(
                    Issue::error(
                        IssueType::Invalid,
                        format!(
                            "reference '{r}' does not resolve to an entry of this document Bundle"
                        ),
                    )
                    .at(at),
                );
            }
        }
    }
    issues
}

/// Every `Reference.reference` string under `v`, with its path (not into contained resources
/// or nested Bundles, which resolve on their own).
fn collect_refs(v: &Value, path: &str, out: &mut Vec<(String, String)>, top: bool) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if !top && k == "resourceType" {
                    return;
                }
                match (k.as_str(), x) {
                    ("contained", _) => {}
                    ("reference", Value::String(s)) => {
                        out.push((format!("{path}.reference"), s.clone()))
                    }
                    _ => collect_refs(x, &format!("{path}.{k}"), out, false),
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                collect_refs(x, &format!("{path}[{i}]"), out, false);
            }
        }
        _ => {}
    }
}
