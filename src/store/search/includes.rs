//! `_include` and `_revinclude` (with `:iterate`): the resources a page's matches reach, found
//! through the reference index and restricted to what the caller may see.
use crate::error::ApiResult;
use crate::fhir::search::params::{ParamType, SearchParams};
use crate::fhir::search::query::{Include, SearchQuery};
use crate::store::backend::{db_error, DbConn};
use crate::store::sql::{load, Sql};
use crate::store::visibility::{Rows, Visibility};

use super::{Found, Row, MAX_INCLUDES, MAX_ITERATE};

const FOUND_COLS: &str = "t.pk, t.res_type, t.res_id, t.version_id, t.last_updated, t.content, \
    CAST(NULL AS BIGINT) AS k1_i, CAST(NULL AS TEXT) AS k1_t, CAST(NULL AS DOUBLE PRECISION) AS k1_f, \
    CAST(NULL AS BIGINT) AS k2_i, CAST(NULL AS TEXT) AS k2_t, CAST(NULL AS DOUBLE PRECISION) AS k2_f, \
    CAST(NULL AS BIGINT) AS k3_i, CAST(NULL AS TEXT) AS k3_t, CAST(NULL AS DOUBLE PRECISION) AS k3_f";

/// Resources that `_include` (`reverse` false) or `_revinclude` reach from `from`.
fn include_step(
    conn: &mut DbConn,
    inc: &Include,
    from: &[&Found],
    reverse: bool,
) -> ApiResult<Vec<Found>> {
    let mut s = Sql::new();
    if reverse {
        // Resources of inc.source_type whose param points at one of `from`.
        let mut by_type: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for f in from {
            if inc.target_type.as_deref().is_none_or(|t| t == f.res_type) {
                by_type
                    .entry(&f.res_type)
                    .or_default()
                    .push(f.res_id.clone());
            }
        }
        if by_type.is_empty() {
            return Ok(vec![]);
        }
        s.push(&format!(
            "SELECT DISTINCT {FOUND_COLS} FROM search_reference i JOIN resources t ON t.pk = i.resource_pk WHERE i.res_type = "
        ))
        .text(inc.source_type.clone());
        if let Some(p) = &inc.param {
            s.push(" AND i.param = ").text(p.clone());
        } else {
            reference_params(&mut s, &inc.source_type);
        }
        s.push(" AND NOT t.deleted AND (");
        for (n, (t, ids)) in by_type.iter().enumerate() {
            if n > 0 {
                s.push(" OR ");
            }
            s.push("(i.target_type = ")
                .text(*t)
                .push(" AND i.target_id IN ")
                .text_list(ids)
                .push(")");
        }
        s.push(")");
    } else {
        let pks: Vec<i64> = from
            .iter()
            .filter(|f| f.res_type == inc.source_type)
            .map(|f| f.pk)
            .collect();
        if pks.is_empty() {
            return Ok(vec![]);
        }
        let pg = crate::store::sql::is_pg(conn);
        s.push(&format!(
            "SELECT DISTINCT {FOUND_COLS} FROM search_reference i JOIN resources t ON t.res_type = {} AND t.res_id = {} WHERE i.res_type = ",
            crate::store::sql::as_resource_key(pg, "i.target_type"),
            crate::store::sql::as_resource_key(pg, "i.target_id"),
        ))
        .text(inc.source_type.clone())
        .push(" AND i.resource_pk IN (");
        for (n, pk) in pks.iter().enumerate() {
            if n > 0 {
                s.push(", ");
            }
            s.int(*pk);
        }
        s.push(")");
        if let Some(p) = &inc.param {
            s.push(" AND i.param = ").text(p.clone());
        } else {
            reference_params(&mut s, &inc.source_type);
        }
        if let Some(t) = &inc.target_type {
            s.push(" AND i.target_type = ").text(t.clone());
        }
        s.push(" AND NOT t.deleted");
    }
    s.push(" ORDER BY t.pk").limit(MAX_INCLUDES);
    let rows: Vec<Row> = load(conn, &s).map_err(db_error)?;
    let mut found: Vec<Found> = rows.into_iter().map(Row::found).collect();
    crate::store::members::fill_found(conn, &mut found)?;
    Ok(found)
}

/// `AND i.param IN (every reference parameter of ty)` for `*` includes.
fn reference_params(s: &mut Sql, ty: &str) {
    let names: Vec<String> = SearchParams::get()
        .for_type(ty)
        .map(|m| {
            m.values()
                .filter(|d| d.ptype == ParamType::Reference)
                .map(|d| d.code.clone())
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        s.push(" AND 1 = 0");
    } else {
        s.push(" AND i.param IN ").text_list(&names);
    }
}

pub(super) fn includes(
    conn: &mut DbConn,
    q: &SearchQuery,
    vis: &dyn Visibility,
    matches: &[Found],
) -> ApiResult<Vec<Found>> {
    if (q.includes.is_empty() && q.revincludes.is_empty()) || matches.is_empty() {
        return Ok(vec![]);
    }
    let mut seen: std::collections::HashSet<i64> = matches.iter().map(|f| f.pk).collect();
    let mut out: Vec<Found> = Vec::new();
    let mut frontier: Vec<Found> = matches.to_vec();
    for round in 0..=MAX_ITERATE {
        let mut added = Vec::new();
        let from: Vec<&Found> = frontier.iter().collect();
        for (list, reverse) in [(&q.includes, false), (&q.revincludes, true)] {
            for inc in list.iter().filter(|i| round == 0 || i.iterate) {
                if reverse && vis.rows(&inc.source_type) == Rows::Hidden {
                    continue;
                }
                for f in include_step(conn, inc, &from, reverse)? {
                    if seen.insert(f.pk) {
                        added.push(f);
                    }
                }
            }
        }
        // Only what the caller may see (a second statement per type, restriction in its WHERE).
        let rows: Vec<(String, i64)> = added.iter().map(|f| (f.res_type.clone(), f.pk)).collect();
        let keep = super::restrict::visible_pks(conn, vis, &rows)?;
        let added: Vec<Found> = added.into_iter().filter(|f| keep.contains(&f.pk)).collect();
        if added.is_empty() {
            break;
        }
        out.extend(added.iter().cloned());
        frontier = added;
        if out.len() as i64 >= MAX_INCLUDES {
            break;
        }
    }
    Ok(out)
}
