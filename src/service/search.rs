//! The one search service: parse → plan → execute → searchset Bundle. Used by `GET /{type}`,
//! `POST /{type}/_search`, the GET entries of batch and transaction Bundles, and the
//! operations, so every door applies the same access restriction (in the SQL, through the
//! request context), the same page limits, result parameters (`_summary`, `_elements`,
//! `_total`, `_count=0`, includes) and the same paging links.
use serde_json::{json, Map, Value};

use super::context::RequestContext;
use crate::error::{ApiError, ApiResult};
use crate::fhir::bundle::bundle;
use crate::fhir::outcome::{Issue, IssueType, OperationOutcome};
use crate::fhir::registry::Registry;
use crate::fhir::search::{SearchQuery, Summary, Total};
use crate::store::search::{count, search as run_search, Found};
use crate::store::DbConn;

const SUBSETTED: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

/// Decode an `application/x-www-form-urlencoded` string into pairs.
pub fn pairs(s: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(s.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The link for a page: the applied parameters, `_count`, and the page token.
fn link(base: &str, q: &SearchQuery, count: i64, page: Option<&str>) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &q.applied {
        if k != "_count" {
            ser.append_pair(k, v);
        }
    }
    ser.append_pair("_count", &count.to_string());
    if let Some(p) = page {
        ser.append_pair("_page", p);
    }
    format!("{base}/{}?{}", q.ty, ser.finish())
}

fn mark_subsetted(o: &mut Map<String, Value>) {
    if let Some(m) = o.entry("meta").or_insert_with(|| json!({})).as_object_mut() {
        if let Some(a) = m.entry("tag").or_insert_with(|| json!([])).as_array_mut() {
            a.push(json!({"system": SUBSETTED, "code": "SUBSETTED"}));
        }
    }
}

/// Apply `_summary` / `_elements` to a resource.
pub fn subset(v: Value, summary: Option<Summary>, elements: Option<&[String]>) -> Value {
    let Value::Object(mut o) = v else { return v };
    let ty = o
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let info = Registry::get().type_info(&ty);
    let always = ["resourceType", "id", "meta"];
    let keep: Option<Vec<String>> = match (summary, elements) {
        (Some(Summary::True), _) => info.map(|i| i.summary.clone()),
        (Some(Summary::Text), _) => info.map(|i| {
            let mut k = i.mandatory.clone();
            k.push("text".into());
            k
        }),
        (Some(Summary::Data), _) => {
            o.remove("text");
            mark_subsetted(&mut o);
            return Value::Object(o);
        }
        (_, Some(list)) => {
            let mut k: Vec<String> = list.to_vec();
            if let Some(i) = info {
                k.extend(i.mandatory.iter().cloned());
            }
            Some(k)
        }
        _ => None,
    };
    let Some(keep) = keep else {
        return Value::Object(o);
    };
    o.retain(|k, _| always.contains(&k.as_str()) || keep.iter().any(|x| x == k));
    mark_subsetted(&mut o);
    Value::Object(o)
}

fn entry(ctx: &RequestContext, f: Found, mode: &str, q: &SearchQuery) -> Value {
    let full_url = format!("{}/{}/{}", ctx.base, f.res_type, f.res_id);
    let resource = serde_json::from_str::<Value>(&f.content).unwrap_or(Value::Null);
    ctx.note(&f.res_type, &resource);
    let resource = if q.summary.is_some() || q.elements.is_some() {
        subset(resource, q.summary, q.elements.as_deref())
    } else {
        resource
    };
    json!({"fullUrl": full_url, "resource": resource, "search": {"mode": mode}})
}

/// Run a search of `ty` with the given parameters for the request `ctx` and answer with a
/// searchset Bundle. `strict` (Prefer: handling=strict) refuses unknown parameters.
pub fn search(
    conn: &mut DbConn,
    ctx: &RequestContext,
    ty: &str,
    params: &[(String, String)],
    strict: bool,
) -> ApiResult<Value> {
    if !Registry::get().is_supported(ty) {
        return Err(ApiError::NotFound(format!(
            "'{ty}' is not a resource type this server supports"
        )));
    }
    let mut q = SearchQuery::from_pairs(ty, params);
    q.set_base(&ctx.base);
    if !q.invalid.is_empty() {
        return Err(ApiError::BadRequest {
            code: IssueType::Invalid,
            msg: format!(
                "search parameter values not understood: {}",
                q.invalid.join("; ")
            ),
            expression: None,
        });
    }
    if strict && !q.issues.is_empty() {
        return Err(ApiError::BadRequest {
            code: IssueType::Invalid,
            msg: format!("search parameters not accepted: {}", q.issues.join("; ")),
            expression: None,
        });
    }
    let count_limit = ctx.limits.page_size(q.count);
    // R4 search: `_count=0` is treated as `_summary=count` (the total, no entries).
    let only_count = q.summary == Some(Summary::Count) || q.count == Some(0);
    let mut page = if only_count {
        Default::default()
    } else {
        run_search(conn, &q, count_limit, ctx)?
    };
    page.total = match q.total {
        Some(Total::Estimate) => Some(crate::store::search::estimate(conn, &q, ctx)?),
        _ if only_count => Some(count(conn, &q, ctx)?),
        Some(Total::Accurate) => Some(count(conn, &q, ctx)?),
        Some(Total::None) => None,
        // Free when everything fits on the first page.
        None if q.page.is_none() && page.next.is_none() => Some(page.matches.len() as i64),
        None => None,
    };
    let base = &ctx.base;
    let mut links = vec![("self", link(base, &q, count_limit, q.page.as_deref()))];
    if let Some(n) = &page.next {
        links.push(("next", link(base, &q, count_limit, Some(n))));
    }
    if let Some(p) = &page.previous {
        links.push(("previous", link(base, &q, count_limit, Some(p))));
    }
    let mut entries: Vec<Value> = Vec::new();
    for f in page.matches {
        entries.push(entry(ctx, f, "match", &q));
    }
    for f in page.included {
        entries.push(entry(ctx, f, "include", &q));
    }
    if !q.issues.is_empty() {
        let oo = OperationOutcome {
            issues: q
                .issues
                .iter()
                .map(|m| Issue::warning(IssueType::NotSupported, format!("ignored: {m}")))
                .collect(),
        };
        entries.push(json!({"resource": oo.to_json(), "search": {"mode": "outcome"}}));
    }
    Ok(bundle(
        "searchset",
        page.total.map(|t| t.max(0) as u64),
        &links,
        entries,
    ))
}

/// The current `ty` resources matching criteria that `vis` may see (the ids, then the rows).
pub fn matching(
    conn: &mut DbConn,
    vis: &dyn crate::store::visibility::Visibility,
    ty: &str,
    criteria: &str,
) -> ApiResult<Vec<crate::store::lookup::Row>> {
    let ids = criteria_ids(conn, vis, ty, criteria)?;
    crate::store::lookup::load_many(conn, vis, ty, &ids)
}

/// Ids of current `ty` resources matching conditional criteria, as the caller sees them.
/// Criteria naming no search parameter are refused (412) rather than read as "match
/// everything"; unknown or malformed ones are a 400 (guessing would change what is written).
pub fn criteria_ids(
    conn: &mut DbConn,
    vis: &dyn crate::store::visibility::Visibility,
    ty: &str,
    criteria: &str,
) -> ApiResult<Vec<String>> {
    let has_criteria = url::form_urlencoded::parse(criteria.as_bytes())
        .any(|(k, _)| !matches!(k.as_ref(), "_format" | "_pretty"));
    if !has_criteria {
        return Err(ApiError::PreconditionFailed(
            "the criteria name no search parameter".into(),
        ));
    }
    crate::store::search::find_ids(conn, ty, criteria, vis)
}

/// The search of one resource type for bulk export (`$export`): the filters of a `_typeFilter`
/// query (none: every resource of the type) and the export's own `_lastUpdated` bounds. What
/// the search engine does not understand is a 400 here (an export must not silently widen),
/// and so are result parameters (`_include`, `_sort`, `_count`, `_summary`, …), which have no
/// meaning in an NDJSON file.
pub fn export_query(ty: &str, params: &[(String, String)], base: &str) -> ApiResult<SearchQuery> {
    let mut q = SearchQuery::from_pairs(ty, params);
    q.set_base(base);
    let problems: Vec<String> = q.invalid.iter().chain(&q.issues).cloned().collect();
    if !problems.is_empty() {
        return Err(ApiError::invalid_at(
            format!(
                "_typeFilter for {ty} not understood: {}",
                problems.join("; ")
            ),
            "_typeFilter",
        ));
    }
    let result_params = !q.sort.is_empty()
        || !q.includes.is_empty()
        || !q.revincludes.is_empty()
        || q.count.is_some()
        || q.total.is_some()
        || q.summary.is_some()
        || q.elements.is_some()
        || q.page.is_some();
    if result_params {
        return Err(ApiError::invalid_at(
            format!("_typeFilter for {ty} may hold search parameters only, not result parameters (_sort, _include, _count, _summary, _elements, _total, _page)"),
            "_typeFilter",
        ));
    }
    Ok(q)
}

/// One page of the matches of an export query that `vis` may see, in pk order (keyset paging:
/// `page` is the token of the previous call), as stored; with the token of the next page.
pub fn export_page(
    conn: &mut DbConn,
    vis: &dyn crate::store::visibility::Visibility,
    q: &SearchQuery,
    page: Option<String>,
    count: i64,
) -> ApiResult<(Vec<crate::store::search::Found>, Option<String>)> {
    let mut q = q.clone();
    q.page = page;
    let p = run_search(conn, &q, count, vis)?;
    Ok((p.matches, p.next))
}
