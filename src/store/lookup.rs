//! Reads inside a caller's connection or transaction: current rows, versions, sets of current
//! resources by id and the members of a Patient compartment. Each takes the caller's
//! [`Visibility`]; a row outside it is answered as absent.
use diesel::prelude::*;
use serde_json::Value;

use crate::error::ApiResult;
use crate::store::backend::{db_error, DbConn};
use crate::store::read::StoredVersion;
use crate::store::schema::{resource_history, resources};
use crate::store::search::visible_ids;
use crate::store::visibility::{Rows, Visibility};

/// Whether the current ty/id is visible (checked in SQL, before any content is read).
fn visible(conn: &mut DbConn, vis: &dyn Visibility, ty: &str, id: &str) -> ApiResult<bool> {
    Ok(match vis.rows(ty) {
        Rows::All => true,
        Rows::Hidden => false,
        Rows::Patients(_) | Rows::Ids(_) => {
            !visible_ids(conn, vis, ty, &[id.to_string()])?.is_empty()
        }
    })
}

/// The current row of ty/id (deleted included, except for callers restricted to certain
/// patients: to them a deleted resource is simply absent).
pub fn read_current(
    conn: &mut DbConn,
    vis: &dyn Visibility,
    ty: &str,
    id: &str,
) -> ApiResult<Option<StoredVersion>> {
    if !visible(conn, vis, ty, id)? {
        return Ok(None);
    }
    if crate::store::audit::is_audit_log(ty) {
        return crate::store::audit::read(conn, id);
    }
    // (res_type, res_id) is unique: `get_result`, not `first` — diesel binds `first`'s LIMIT,
    // and SQLite re-prepares a statement with a bound LIMIT on every execution (the planner
    // reads the bound value), which made a cached read cost four times as much.
    resources::table
        .filter(resources::res_type.eq(ty))
        .filter(resources::res_id.eq(id))
        .select((
            resources::version_id,
            resources::last_updated,
            resources::deleted,
            resources::content,
        ))
        .get_result::<StoredVersion>(conn)
        .optional()
        .map_err(db_error)?
        .map(|mut v| {
            if ty == "Group" && !v.deleted {
                v.content = crate::store::members::fill(conn, ty, v.content.take())?;
            }
            Ok(v)
        })
        .transpose()
}

/// A specific version of ty/id, when the resource's current version is visible (whether the
/// old version's own content is, the caller decides: the index describes current versions).
pub fn read_version(
    conn: &mut DbConn,
    vis: &dyn Visibility,
    ty: &str,
    id: &str,
    version: i64,
) -> ApiResult<Option<StoredVersion>> {
    if !visible(conn, vis, ty, id)? {
        return Ok(None);
    }
    if crate::store::audit::is_audit_log(ty) {
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
        .get_result::<StoredVersion>(conn)
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

/// Current resources of `ty` with the given ids that the caller may see (missing, deleted
/// and invisible ones left out).
pub fn load_many(
    conn: &mut DbConn,
    vis: &dyn Visibility,
    ty: &str,
    ids: &[String],
) -> ApiResult<Vec<Row>> {
    let visible;
    let ids = match vis.rows(ty) {
        Rows::All => ids,
        Rows::Hidden => return Ok(vec![]),
        Rows::Patients(_) | Rows::Ids(_) => {
            visible = visible_ids(conn, vis, ty, ids)?;
            &visible[..]
        }
    };
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
    for r in out.iter_mut() {
        crate::store::members::fill_value(conn, &r.ty, &mut r.content)?;
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
pub(crate) fn fnv1a(s: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// Which members of a Patient compartment to list (`$everything`), as conditions in the query.
#[derive(Debug, Clone, Default)]
pub struct MemberFilter<'a> {
    /// Only resources of these types (None: every type).
    pub types: Option<&'a [String]>,
    /// Only resources last updated at or after this instant (microseconds).
    pub since: Option<i64>,
    /// Only resources whose care date (fhir::compartment::care_date_params) overlaps
    /// `[low, high)`, and those without one.
    pub care: Option<(i64, i64)>,
}

/// Current resources in the Patient compartment of `patient_id` (by the compartment's
/// reference parameters, through the search index), as (type, id), without the Patient itself,
/// limited to the types the caller may read, to rows it may see, and to `filter`.
pub fn compartment_members(
    conn: &mut DbConn,
    vis: &dyn Visibility,
    patient_id: &str,
    filter: &MemberFilter,
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
    .push(" AND c.target_type = 'Patient' AND NOT r.deleted AND ");
    crate::store::search::visible_any(&mut s, vis, "r.res_type", "r.res_id", "r.pk");
    if let Some(types) = filter.types {
        if types.is_empty() {
            return Ok(vec![]);
        }
        s.push(" AND r.res_type IN ").text_list(types);
    }
    if let Some(since) = filter.since {
        s.push(" AND r.last_updated >= ").int(since);
    }
    if let Some((low, high)) = filter.care {
        s.push(" AND ");
        care_date_overlaps(&mut s, "r", low, high, filter.types);
    }
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

/// `CASE r.res_type WHEN 'Condition' THEN … ELSE 1 = 1 END`: row `r`'s care date — the first of
/// its type's care-date parameters it has index rows for — overlaps `[low, high)`; true for
/// types and resources without a care date. Only the branches of `types` when given.
fn care_date_overlaps(
    s: &mut crate::store::sql::Sql,
    r: &str,
    low: i64,
    high: i64,
    types: Option<&[String]>,
) {
    let dated: Vec<_> = crate::fhir::compartment::care_dated_types()
        .iter()
        .filter(|(t, _)| types.is_none_or(|ts| ts.iter().any(|x| x == t)))
        .collect();
    if dated.is_empty() {
        s.push("1 = 1");
        return;
    }
    s.push(&format!("(CASE {r}.res_type"));
    for (ty, params) in dated {
        s.push(" WHEN ").text(*ty).push(" THEN (CASE");
        for p in params.iter() {
            s.push(&format!(
                " WHEN EXISTS (SELECT 1 FROM search_date cd WHERE cd.resource_pk = {r}.pk AND cd.param = "
            ))
            .text(*p)
            .push(&format!(
                ") THEN EXISTS (SELECT 1 FROM search_date cd WHERE cd.resource_pk = {r}.pk AND cd.param = "
            ))
            .text(*p)
            .push(" AND cd.low < ")
            .int(high)
            .push(" AND cd.high > ")
            .int(low)
            .push(")");
        }
        s.push(" ELSE 1 = 1 END)");
    }
    s.push(" ELSE 1 = 1 END)");
}
