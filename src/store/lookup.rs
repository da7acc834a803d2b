//! Reads inside a caller's transaction for bundle processing, conditional interactions and the
//! care operations: current rows, versions, scans of current resources by type.
use diesel::prelude::*;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::fhir::outcome::{Issue, IssueType};
use crate::store::backend::{db_error, DbConn};
use crate::store::read::StoredVersion;
use crate::store::schema::{resource_history, resources};

/// The current row of ty/id (deleted included).
pub fn read_current(conn: &mut DbConn, ty: &str, id: &str) -> ApiResult<Option<StoredVersion>> {
    resources::table
        .filter(resources::res_type.eq(ty))
        .filter(resources::res_id.eq(id))
        .select((
            resources::version_id,
            resources::last_updated,
            resources::deleted,
            resources::content,
        ))
        .first::<StoredVersion>(conn)
        .optional()
        .map_err(db_error)
}

/// A specific version of ty/id.
pub fn read_version(
    conn: &mut DbConn,
    ty: &str,
    id: &str,
    version: i64,
) -> ApiResult<Option<StoredVersion>> {
    resource_history::table
        .filter(resource_history::res_type.eq(ty))
        .filter(resource_history::res_id.eq(id))
        .filter(resource_history::version_id.eq(version))
        .select((
            resource_history::version_id,
            resource_history::last_updated,
            resource_history::deleted,
            resource_history::content,
        ))
        .first::<StoredVersion>(conn)
        .optional()
        .map_err(db_error)
}

/// One current (not deleted) resource.
#[derive(Debug, Clone)]
pub struct Row {
    pub ty: String,
    pub id: String,
    pub version: i64,
    pub last_updated: i64,
    pub content: Value,
}

/// Current resources of the given types whose text contains `needle` (all when None),
/// ordered by (last_updated, type, id).
pub fn scan(
    conn: &mut DbConn,
    types: &[&str],
    needle: Option<&str>,
    since: Option<i64>,
) -> ApiResult<Vec<Row>> {
    let mut q = resources::table
        .filter(resources::deleted.eq(false))
        .select((
            resources::res_type,
            resources::res_id,
            resources::version_id,
            resources::last_updated,
            resources::content,
        ))
        .order((
            resources::last_updated,
            resources::res_type,
            resources::res_id,
        ))
        .into_boxed();
    if !types.is_empty() {
        q = q.filter(resources::res_type.eq_any(types.to_vec()));
    }
    if let Some(n) = needle {
        q = q.filter(resources::content.like(format!("%{}%", escape_like(n))));
    }
    if let Some(s) = since {
        q = q.filter(resources::last_updated.ge(s));
    }
    let rows: Vec<(String, String, i64, i64, Option<String>)> = q.load(conn).map_err(db_error)?;
    Ok(rows
        .into_iter()
        .filter_map(|(ty, id, version, last_updated, c)| {
            let content = serde_json::from_str(c.as_deref()?).ok()?;
            Some(Row {
                ty,
                id,
                version,
                last_updated,
                content,
            })
        })
        .collect())
}

fn escape_like(s: &str) -> String {
    // FHIR ids and the references we look for never contain % or _ except in odd data;
    // those characters then simply widen the text filter, and callers check exactly.
    s.to_string()
}

/// Ids of current `ty` resources matching a search query string (conditional create, update,
/// delete and conditional references). Until the search index is merged, this supports `_id`
/// and `identifier` (`[system]|value`, `value`), combined with AND; anything else is refused.
pub fn find_ids(conn: &mut DbConn, ty: &str, query: &str) -> ApiResult<Vec<String>> {
    let mut conds: Vec<(String, String)> = vec![];
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let k = k.into_owned();
        if k.starts_with('_') && k != "_id" {
            continue; // _format, _pretty …: not criteria
        }
        if k != "_id" && k != "identifier" {
            return Err(ApiError::Unprocessable(vec![Issue::error(
                IssueType::NotSupported,
                format!("search parameter '{k}' is not supported in conditional criteria yet (supported: _id, identifier)"),
            )]));
        }
        conds.push((k, v.into_owned()));
    }
    if conds.is_empty() {
        return Err(ApiError::PreconditionFailed(format!(
            "the criteria '{query}' name no search parameter"
        )));
    }
    let needle = conds
        .iter()
        .map(|(_, v)| v.rsplit('|').next().unwrap_or(v).to_string())
        .max_by_key(String::len);
    let rows = scan(conn, &[ty], needle.as_deref(), None)?;
    Ok(rows
        .into_iter()
        .filter(|r| {
            conds
                .iter()
                .all(|(k, v)| matches_param(&r.id, &r.content, k, v))
        })
        .map(|r| r.id)
        .collect())
}

fn matches_param(id: &str, content: &Value, k: &str, v: &str) -> bool {
    v.split(',').any(|alt| match k {
        "_id" => alt == id,
        _ => {
            let (sys, val) = match alt.split_once('|') {
                Some((s, v)) => (Some(s), v),
                None => (None, alt),
            };
            content
                .get("identifier")
                .and_then(Value::as_array)
                .is_some_and(|ids| {
                    ids.iter().any(|i| {
                        let isys = i.get("system").and_then(Value::as_str);
                        let ival = i.get("value").and_then(Value::as_str);
                        let sys_ok = match sys {
                            None => true,
                            Some("") => isys.is_none(),
                            Some(s) => isys == Some(s),
                        };
                        sys_ok && (val.is_empty() || ival == Some(val))
                    })
                })
        }
    })
}

/// Serialise conditional writes with the same type and criteria: on PostgreSQL a transaction-
/// scoped advisory lock keyed by a stable hash; SQLite writers are already serialised.
pub fn lock_criteria(conn: &mut DbConn, ty: &str, criteria: &str) -> ApiResult<()> {
    if let DbConn::Pg(c) = conn {
        let key = fnv1a(&format!("{ty}?{criteria}"));
        diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
            .bind::<diesel::sql_types::BigInt, _>(key)
            .execute(c)
            .map_err(db_error)?;
    }
    Ok(())
}

/// FNV-1a, 64 bit: stable across processes and builds (unlike std's hasher).
fn fnv1a(s: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}
