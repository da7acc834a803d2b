//! The reads: read, vread and history (instance, type, system), for the REST interactions and
//! the GET entries of batch and transaction Bundles alike. Rows outside the caller's access
//! are restricted in the SQL (store::lookup, store::history); an old version, which the index
//! does not describe, is also checked on its own content.
use serde_json::{json, Value};

use super::context::RequestContext;
use crate::error::{ApiError, ApiResult};
use crate::fhir::bundle::bundle;
use crate::fhir::datetime::{format_instant, parse_lower_bound};
use crate::fhir::resource::{check_id, etag};
use crate::store::history::{Cursor, HistoryQuery, HistoryRow};
use crate::store::lookup::{read_current, read_version};
use crate::store::read::StoredVersion;
use crate::store::visibility::Visibility;
use crate::store::{DbConn, Store};

/// The current version of ty/id: 404 when absent or outside the caller's access, 410 when
/// deleted (only callers who may see every row of the type learn of deletions).
pub fn read(
    conn: &mut DbConn,
    ctx: &RequestContext,
    ty: &str,
    id: &str,
) -> ApiResult<StoredVersion> {
    check_id(id)?;
    let row = read_current(conn, ctx, ty, id)?
        .ok_or_else(|| ApiError::NotFound(format!("{ty}/{id} is not known")))?;
    if row.deleted {
        return Err(ApiError::Gone(format!(
            "{ty}/{id} was deleted (version {})",
            row.version_id
        )));
    }
    note(ctx, ty, &row);
    Ok(row)
}

/// Version `version` of ty/id (404 / 410 as for [`read`]).
pub fn vread(
    conn: &mut DbConn,
    ctx: &RequestContext,
    ty: &str,
    id: &str,
    version: i64,
) -> ApiResult<StoredVersion> {
    check_id(id)?;
    let Some(row) = read_version(conn, ctx, ty, id, version)? else {
        // Whether the resource itself is known decides the message.
        return Err(match read_current(conn, ctx, ty, id)? {
            None => ApiError::NotFound(format!("{ty}/{id} is not known")),
            Some(_) => ApiError::NotFound(format!("{ty}/{id} has no version {version}")),
        });
    };
    if row.deleted {
        return Err(ApiError::Gone(format!(
            "version {version} of {ty}/{id} is a deletion"
        )));
    }
    if !content_visible(ctx, ty, row.content.as_deref()) {
        return Err(ApiError::NotFound(format!(
            "{ty}/{id} has no version {version}"
        )));
    }
    note(ctx, ty, &row);
    Ok(row)
}

fn note(ctx: &RequestContext, ty: &str, row: &StoredVersion) {
    if !ctx.wants_patients() {
        return;
    }
    if let Some(v) = row
        .content
        .as_deref()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
    {
        ctx.note(ty, &v);
    }
}

/// Whether a stored version's content lies inside the caller's access.
fn content_visible(ctx: &RequestContext, ty: &str, content: Option<&str>) -> bool {
    if !ctx.restricted() {
        return true;
    }
    match content.and_then(|t| serde_json::from_str::<Value>(t).ok()) {
        Some(v) => ctx.may_see(ty, &v),
        // A deletion carries no content.
        None => true,
    }
}

/// The value of a decoded query parameter.
pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A date or instant parameter as its lower bound (400 when it is not one).
pub fn instant_param(params: &[(String, String)], name: &str) -> ApiResult<Option<i64>> {
    match param(params, name) {
        None => Ok(None),
        Some(s) => parse_lower_bound(s).map(Some).ok_or_else(|| {
            ApiError::invalid_at(format!("{name} '{s}' is not a FHIR date or instant"), name)
        }),
    }
}

/// `_count` of a listing (bounded by the server maximum).
pub fn count_param(ctx: &RequestContext, params: &[(String, String)]) -> ApiResult<i64> {
    match param(params, "_count") {
        None => Ok(ctx.limits.default_count),
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| n.min(ctx.limits.max_count))
            .ok_or_else(|| {
                ApiError::invalid_at(
                    format!("_count '{c}' is not a non-negative integer"),
                    "_count",
                )
            }),
    }
}

fn cursor(params: &[(String, String)]) -> ApiResult<Cursor> {
    let Some(p) = param(params, "_page") else {
        return Ok(Cursor::First);
    };
    let bad = || {
        ApiError::invalid_at(
            format!("_page '{p}' is not a page token from a link of this server"),
            "_page",
        )
    };
    let (dir, n) = p.split_at_checked(1).ok_or_else(bad)?;
    let n: i64 = n.parse().map_err(|_| bad())?;
    match dir {
        "b" => Ok(Cursor::Before(n)),
        "a" => Ok(Cursor::After(n)),
        _ => Err(bad()),
    }
}

fn history_entry(base: &str, row: HistoryRow) -> Value {
    let full_url = format!("{base}/{}/{}", row.res_type, row.res_id);
    let (url, status) = match row.method.as_str() {
        "POST" => (row.res_type.clone(), "201 Created"),
        "DELETE" => (format!("{}/{}", row.res_type, row.res_id), "204 No Content"),
        _ if row.version_id == 1 => (format!("{}/{}", row.res_type, row.res_id), "201 Created"),
        _ => (format!("{}/{}", row.res_type, row.res_id), "200 OK"),
    };
    let mut e = serde_json::Map::new();
    e.insert("fullUrl".into(), json!(full_url));
    if let Some(text) = row.content.filter(|_| !row.deleted) {
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            e.insert("resource".into(), v);
        }
    }
    e.insert("request".into(), json!({"method": row.method, "url": url}));
    e.insert(
        "response".into(),
        json!({"status": status, "etag": etag(row.version_id), "lastModified": format_instant(row.last_updated)}),
    );
    Value::Object(e)
}

/// This listing's link with `_page` replaced.
fn history_link(
    base: &str,
    path: &str,
    params: &[(String, String)],
    page: Option<String>,
) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        if k != "_page" {
            ser.append_pair(k, v);
        }
    }
    if let Some(p) = page {
        ser.append_pair("_page", &p);
    }
    let q = ser.finish();
    if q.is_empty() {
        format!("{base}/{path}")
    } else {
        format!("{base}/{path}?{q}")
    }
}

/// history-instance (ty and id), history-type (ty) or history-system (neither): a `history`
/// Bundle, newest first, paged by keyset. `params`: `_count`, `_since`, `_at`, `_page`.
pub fn history(
    store: &Store,
    ctx: &RequestContext,
    ty: Option<&str>,
    id: Option<&str>,
    params: &[(String, String)],
) -> ApiResult<Value> {
    if let Some(t) = ty {
        if !crate::fhir::registry::Registry::get().is_supported(t) {
            return Err(ApiError::NotFound(format!(
                "'{t}' is not a resource type this server supports"
            )));
        }
    }
    if let Some(i) = id {
        check_id(i)?;
    }
    let count = count_param(ctx, params)?;
    let since = instant_param(params, "_since")?;
    let at = instant_param(params, "_at")?;
    let cursor = cursor(params)?;
    let not_known = || {
        ApiError::NotFound(format!(
            "{}/{} is not known",
            ty.unwrap_or_default(),
            id.unwrap_or_default()
        ))
    };
    let total = match (ty, id) {
        (Some(t), Some(i)) => {
            if ctx.restricted() {
                if read_current(&mut *store.conn()?, ctx, t, i)?.is_none() {
                    return Err(not_known());
                }
                // Only the versions the caller may see count (old versions are judged on their
                // own content; an instance has few).
                let all = HistoryQuery {
                    ty,
                    id,
                    since: None,
                    at_or_before: None,
                    cursor: Cursor::First,
                    count: i64::from(u32::MAX),
                };
                let vis: &dyn Visibility = ctx;
                let rows = store.history(&all, vis)?;
                Some(
                    rows.iter()
                        .filter(|r| content_visible(ctx, t, r.content.as_deref()))
                        .count() as i64,
                )
            } else {
                Some(store.history_count(t, i)?)
            }
        }
        _ => None,
    };
    if total == Some(0) {
        return Err(not_known());
    }
    let q = HistoryQuery {
        ty,
        id,
        since,
        at_or_before: at,
        cursor,
        count,
    };
    let vis: &dyn Visibility = ctx;
    let mut rows = store.history(&q, vis)?;
    // One extra row was fetched to learn whether another page exists in the paging direction.
    let more = rows.len() as i64 > count;
    if more {
        match cursor {
            Cursor::After(_) => {
                rows.remove(0);
            }
            _ => {
                rows.truncate(count as usize);
            }
        }
    }
    let base = &ctx.base;
    let path = match (ty, id) {
        (Some(t), Some(i)) => format!("{t}/{i}/_history"),
        (Some(t), None) => format!("{t}/_history"),
        _ => "_history".to_string(),
    };
    let mut links = vec![(
        "self",
        history_link(
            base,
            &path,
            params,
            param(params, "_page").map(str::to_string),
        ),
    )];
    let (newest, oldest) = (rows.first().map(|r| r.hid), rows.last().map(|r| r.hid));
    let has_next = match cursor {
        Cursor::After(_) => true,
        _ => more,
    };
    let has_prev = match cursor {
        Cursor::First => false,
        Cursor::Before(_) => true,
        Cursor::After(_) => more,
    };
    if has_next {
        if let Some(o) = oldest {
            links.push((
                "next",
                history_link(base, &path, params, Some(format!("b{o}"))),
            ));
        }
    }
    if has_prev {
        if let Some(n) = newest {
            links.push((
                "previous",
                history_link(base, &path, params, Some(format!("a{n}"))),
            ));
        }
    }
    let entries: Vec<Value> = rows
        .into_iter()
        .filter(|r| content_visible(ctx, &r.res_type, r.content.as_deref()))
        .map(|r| {
            if let Some(v) = r
                .content
                .as_deref()
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
            {
                ctx.note(&r.res_type, &v);
            }
            history_entry(base, r)
        })
        .collect();
    Ok(bundle("history", total.map(|t| t as u64), &links, entries))
}
