//! Reads inside a caller's transaction for bundle processing, conditional interactions and the
//! care operations: current rows, versions, scans of current resources by type.
use diesel::prelude::*;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::store::backend::{db_error, DbConn};
use crate::store::read::StoredVersion;
use crate::store::schema::{resource_history, resources};

/// The current row of ty/id (deleted included).
pub fn read_current(conn: &mut DbConn, ty: &str, id: &str) -> ApiResult<Option<StoredVersion>> {
    if ty == crate::store::audit::TYPE {
        return crate::store::audit::read(conn, id);
    }
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
    if ty == crate::store::audit::TYPE {
        // An AuditEvent has exactly one version.
        return Ok(crate::store::audit::read(conn, id)?.filter(|v| v.version_id == version));
    }
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
/// delete and conditional references), through the search index. Criteria naming no search
/// parameter are refused (412) rather than read as "match everything".
pub fn find_ids(conn: &mut DbConn, ty: &str, query: &str) -> ApiResult<Vec<String>> {
    let has_criteria = url::form_urlencoded::parse(query.as_bytes())
        .any(|(k, _)| !matches!(k.as_ref(), "_format" | "_pretty"));
    if !has_criteria {
        return Err(ApiError::PreconditionFailed(format!(
            "the criteria '{query}' name no search parameter"
        )));
    }
    crate::store::search::find_ids(conn, ty, query)
}

/// Current resources of `ty` with the given ids (missing and deleted ones left out).
pub fn load_many(conn: &mut DbConn, ty: &str, ids: &[String]) -> ApiResult<Vec<Row>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let rows: Vec<(String, String, i64, i64, Option<String>)> = resources::table
            .filter(resources::res_type.eq(ty))
            .filter(resources::res_id.eq_any(chunk.to_vec()))
            .filter(resources::deleted.eq(false))
            .select((
                resources::res_type,
                resources::res_id,
                resources::version_id,
                resources::last_updated,
                resources::content,
            ))
            .load(conn)
            .map_err(db_error)?;
        out.extend(
            rows.into_iter()
                .filter_map(|(ty, id, version, last_updated, c)| {
                    Some(Row {
                        ty,
                        id,
                        version,
                        last_updated,
                        content: serde_json::from_str(c.as_deref()?).ok()?,
                    })
                }),
        );
    }
    Ok(out)
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

/// Current resources in the Patient compartment of `patient_id` (by the compartment's
/// reference parameters, through the search index), as (type, id), without the Patient itself.
pub fn compartment_members(
    conn: &mut DbConn,
    patient_id: &str,
) -> ApiResult<Vec<(String, String)>> {
    use diesel::sql_types::Text;
    #[derive(diesel::QueryableByName)]
    struct M {
        #[diesel(sql_type = Text)]
        res_type: String,
        #[diesel(sql_type = Text)]
        res_id: String,
        #[diesel(sql_type = Text)]
        param: String,
    }
    let mut s = crate::store::sql::Sql::new();
    s.push(
        "SELECT DISTINCT r.res_type, r.res_id, c.param FROM search_reference c \
         JOIN resources r ON r.pk = c.resource_pk \
         WHERE c.target_id = ",
    )
    .text(patient_id)
    .push(" AND c.target_type = 'Patient' AND NOT r.deleted");
    let rows: Vec<M> = crate::store::sql::load(conn, &s).map_err(db_error)?;
    let params = crate::fhir::search::params::SearchParams::get();
    let mut out: Vec<(String, String)> = rows
        .into_iter()
        .filter(|m| {
            params
                .patient_compartment_params(&m.res_type)
                .contains(&m.param)
        })
        .map(|m| (m.res_type, m.res_id))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}
