//! history-instance, history-type and history-system: Bundle type `history`, newest first.
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::negotiate::query_param;
use super::response::{base_url, etag, fhir_json};
use super::{blocking, State};
use crate::error::{ApiError, ApiResult};
use crate::fhir::bundle::bundle;
use crate::fhir::datetime::{format_instant, parse_lower_bound};
use crate::fhir::resource::check_id;
use crate::store::history::{Cursor, HistoryQuery, HistoryRow};

/// Parse `_count` (bounded by the server maximum).
pub fn parse_count(req: &HttpRequest, state: &State) -> ApiResult<i64> {
    match query_param(req, "_count") {
        None => Ok(state.config.default_count),
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| n.min(state.config.max_count))
            .ok_or_else(|| {
                ApiError::invalid_at(
                    format!("_count '{c}' is not a non-negative integer"),
                    "_count",
                )
            }),
    }
}

fn parse_instant_param(req: &HttpRequest, name: &str) -> ApiResult<Option<i64>> {
    match query_param(req, name) {
        None => Ok(None),
        Some(s) => parse_lower_bound(&s).map(Some).ok_or_else(|| {
            ApiError::invalid_at(format!("{name} '{s}' is not a valid FHIR instant"), name)
        }),
    }
}

fn parse_cursor(req: &HttpRequest) -> ApiResult<Cursor> {
    let Some(p) = query_param(req, "_page") else {
        return Ok(Cursor::First);
    };
    let bad = || {
        ApiError::invalid_at(
            format!("_page '{p}' is not a page token from a link of this server"),
            "_page",
        )
    };
    let (dir, n) = p.split_at(p.len().min(1));
    let n: i64 = n.parse().map_err(|_| bad())?;
    match dir {
        "b" => Ok(Cursor::Before(n)),
        "a" => Ok(Cursor::After(n)),
        _ => Err(bad()),
    }
}

fn entry(base: &str, row: HistoryRow) -> Value {
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

/// Rebuild this request's link with `_page` replaced.
fn link(base: &str, path: &str, req: &HttpRequest, page: Option<String>) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        if k != "_page" {
            ser.append_pair(&k, &v);
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

async fn history(
    req: HttpRequest,
    state: State,
    ty: Option<String>,
    id: Option<String>,
) -> ApiResult<HttpResponse> {
    if let Some(t) = &ty {
        state.resource_type(t)?;
    }
    if let Some(i) = &id {
        check_id(i)?;
    }
    let count = parse_count(&req, &state)?;
    let since = parse_instant_param(&req, "_since")?;
    let at = parse_instant_param(&req, "_at")?;
    let cursor = parse_cursor(&req)?;
    let st = state.clone();
    let (t2, i2) = (ty.clone(), id.clone());
    let (mut rows, total) = blocking(move || {
        let q = HistoryQuery {
            ty: t2.as_deref(),
            id: i2.as_deref(),
            since,
            at_or_before: at,
            cursor,
            count,
        };
        let rows = st.store.history(&q)?;
        let total = match (&t2, &i2) {
            (Some(t), Some(i)) => Some(st.store.history_count(t, i)?),
            _ => None,
        };
        Ok((rows, total))
    })
    .await?;
    if total == Some(0) {
        let (t, i) = (ty.unwrap_or_default(), id.unwrap_or_default());
        return Err(ApiError::NotFound(format!("{t}/{i} is not known")));
    }
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
    let base = base_url(&req, &state);
    let path = match (&ty, &id) {
        (Some(t), Some(i)) => format!("{t}/{i}/_history"),
        (Some(t), None) => format!("{t}/_history"),
        _ => "_history".to_string(),
    };
    let mut links = vec![("self", link(&base, &path, &req, query_param(&req, "_page")))];
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
            links.push(("next", link(&base, &path, &req, Some(format!("b{o}")))));
        }
    }
    if has_prev {
        if let Some(n) = newest {
            links.push(("previous", link(&base, &path, &req, Some(format!("a{n}")))));
        }
    }
    let entries: Vec<Value> = rows.into_iter().map(|r| entry(&base, r)).collect();
    let b = bundle("history", total.map(|t| t as u64), &links, entries);
    Ok(fhir_json(&req, StatusCode::OK, &b))
}

/// GET /fhir/{type}/{id}/_history
pub async fn instance(
    req: HttpRequest,
    state: State,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (ty, id) = path.into_inner();
    history(req, state, Some(ty), Some(id)).await
}

/// GET /fhir/{type}/_history
pub async fn type_level(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    history(req, state, Some(path.into_inner()), None).await
}

/// GET /fhir/_history
pub async fn system(req: HttpRequest, state: State) -> ApiResult<HttpResponse> {
    history(req, state, None, None).await
}
