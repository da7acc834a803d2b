//! Search SQL: a `SearchQuery` becomes one statement over `resources` (current versions only)
//! that intersects lookups in the search_* index tables, ordered by the sort keys and the row
//! pk, paged by keyset (the last row's keys), never OFFSET.
//!
//! Every entry point takes the caller's [`Visibility`]; its restriction is part of the SQL
//! (restrict.rs), for the matches, chains, `_has`, includes and counts alike.
//! - [`find_ids`]`(conn, ty, query_string, vis)`: ids of every visible current match
//!   (conditional create/update/delete, conditional references). Unknown or malformed
//!   parameters are a 400 here, since guessing would change what gets written.
//! - [`search`]`(conn, &query, count, vis)`: one page plus included resources.
//! - [`count`]`(conn, &query, vis)`: how many visible matches.
//!
//! Files: predicates.rs (filters), restrict.rs (access), paging.rs (sort keys, page tokens),
//! includes.rs (`_include`/`_revinclude`), facts.rs (index values for aggregate reports).
pub mod facts;
mod includes;
mod paging;
mod predicates;
mod restrict;

use diesel::sql_types::{BigInt, Double, Nullable, Text};
use diesel::QueryableByName;
pub use restrict::{visible_any, visible_ids, visible_pks};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::fhir::search::params::ParamType;
use crate::fhir::search::query::{Filter, Modifier, Prefix, SearchQuery, SearchValue};
use crate::store::audit;
use crate::store::backend::{db_error, DbConn};
use crate::store::sql::{is_pg, load, Sql};
use crate::store::visibility::{Rows, Visibility};

use paging::{decode_page, encode_page, key_expr, key_kind, keyset, KeyKind};
use predicates::{table_of, Builder};

/// Upper bound appended to a prefix for range scans (sorts after any other character).
pub(crate) const TOP: char = '\u{10FFFF}';
/// Most resources added per `_include`/`_revinclude` step.
pub const MAX_INCLUDES: i64 = 1000;
/// Rounds of `:iterate`.
pub(crate) const MAX_ITERATE: usize = 3;

/// A current resource found by a search.
#[derive(Debug, Clone)]
pub struct Found {
    pub pk: i64,
    pub res_type: String,
    pub res_id: String,
    pub version_id: i64,
    pub last_updated: i64,
    pub content: String,
}

/// One page of results.
#[derive(Debug, Clone, Default)]
pub struct SearchPage {
    pub matches: Vec<Found>,
    pub included: Vec<Found>,
    pub total: Option<i64>,
    /// Page tokens for the next and previous pages, when there are such pages.
    pub next: Option<String>,
    pub previous: Option<String>,
}

#[derive(QueryableByName)]
pub(crate) struct Row {
    #[diesel(sql_type = BigInt)]
    pk: i64,
    #[diesel(sql_type = Text)]
    res_type: String,
    #[diesel(sql_type = Text)]
    res_id: String,
    #[diesel(sql_type = BigInt)]
    version_id: i64,
    #[diesel(sql_type = BigInt)]
    last_updated: i64,
    #[diesel(sql_type = Nullable<Text>)]
    content: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    k1_i: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    k1_t: Option<String>,
    #[diesel(sql_type = Nullable<Double>)]
    k1_f: Option<f64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    k2_i: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    k2_t: Option<String>,
    #[diesel(sql_type = Nullable<Double>)]
    k2_f: Option<f64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    k3_i: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    k3_t: Option<String>,
    #[diesel(sql_type = Nullable<Double>)]
    k3_f: Option<f64>,
}

impl Row {
    fn key(&self, n: usize, kind: KeyKind) -> Value {
        let (i, t, f) = match n {
            0 => (self.k1_i, &self.k1_t, self.k1_f),
            1 => (self.k2_i, &self.k2_t, self.k2_f),
            _ => (self.k3_i, &self.k3_t, self.k3_f),
        };
        match kind {
            KeyKind::Int => json!(i),
            KeyKind::Text => json!(t),
            KeyKind::Float => json!(f),
        }
    }
    fn found(self) -> Found {
        Found {
            pk: self.pk,
            res_type: self.res_type,
            res_id: self.res_id,
            version_id: self.version_id,
            last_updated: self.last_updated,
            content: self.content.unwrap_or_default(),
        }
    }
}

#[derive(QueryableByName)]
struct CountRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The WHERE clause (without the keyset) for the matches of a query, on `resources r`.
fn where_clause(q: &SearchQuery, vis: &dyn Visibility, pg: bool) -> Sql {
    let mut s = Sql::new();
    let mut b = Builder { n: 0, vis, pg };
    s.push("r.res_type = ")
        .text(q.ty.clone())
        .push(" AND NOT r.deleted");
    for f in &q.filters {
        s.push(" AND ");
        b.filter(&mut s, f, &q.ty, "r");
    }
    b.and_visible(&mut s, &q.ty, "r");
    s
}

/// The filter that can drive a search from its index table alone, if any: a selective parameter
/// filter on one of the search_* tables, when nothing else in the query needs the resource row
/// itself (`_id`, `_lastUpdated`, `_has`, a Patient compartment, `_id`/`_lastUpdated` sort keys)
/// and no chain is better left to the planner.
/// Index rows exist only for current, non-deleted resources of their `res_type`, so the
/// resource row adds nothing to such a search but one probe per match.
fn driving_filter(q: &SearchQuery, vis: &dyn Visibility) -> Option<usize> {
    if audit::is_audit_log(&q.ty)
        || (q.ty == "Patient" && vis.rows("Patient") != Rows::All)
        || q.sort
            .iter()
            .any(|k| matches!(k.param.as_str(), "_id" | "_lastUpdated"))
        || q.filters.iter().any(|f| {
            matches!(
                f,
                Filter::Id { .. } | Filter::LastUpdated(_) | Filter::Has { .. }
            )
        })
    {
        return None;
    }
    if q.filters.iter().any(|f| matches!(f, Filter::Chain { .. })) {
        return None;
    }
    // Only filters that are selective by their nature: a reference names one resource (a
    // patient's tasks, an owner's worklist), a date equal to at most a month is a short span.
    // Broad ones (a name prefix, a status, a year) are better left to the planner, which can
    // walk `resources` in pk order and stop at the page's end.
    const MONTH: i64 = 31 * 24 * 3600 * 1_000_000;
    let selective = |f: &Filter| {
        match f {
        Filter::Param {
            ptype: ParamType::Reference,
            modifier,
            ..
        } => matches!(modifier, Modifier::None | Modifier::Type(_)),
        Filter::Param {
            ptype: ParamType::Date,
            modifier: Modifier::None,
            values,
            ..
        } => values.iter().all(|v| {
            matches!(v, SearchValue::Date { prefix: Prefix::Eq, low, high } if high - low <= MONTH)
        }),
        _ => false,
    }
    };
    q.filters
        .iter()
        .position(|f| {
            matches!(
                f,
                Filter::Param {
                    ptype: ParamType::Reference,
                    ..
                }
            ) && selective(f)
        })
        .or_else(|| q.filters.iter().position(selective))
}

/// ` FROM … r WHERE …`: the matches of a query as rows `r` with a `pk` column. Driven by the
/// index table of one filter when possible ([`driving_filter`]), otherwise by `resources`.
fn from_where(q: &SearchQuery, table: &str, vis: &dyn Visibility, pg: bool) -> Sql {
    let Some(n) = driving_filter(q, vis) else {
        let mut s = Sql::new();
        s.push(&format!(" FROM {table} r WHERE "))
            .append(where_clause(q, vis, pg));
        return s;
    };
    let mut s = Sql::new();
    let mut b = Builder { n: 0, vis, pg };
    if let Filter::Param {
        param,
        ptype,
        modifier,
        values,
    } = &q.filters[n]
    {
        let t = table_of(*ptype).unwrap_or("search_token");
        s.push(&format!(
            " FROM (SELECT DISTINCT x.resource_pk AS pk FROM {t} x WHERE x.res_type = "
        ))
        .text(q.ty.clone())
        .push(" AND x.param = ")
        .text(param.clone())
        .push(" AND (");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                s.push(" OR ");
            }
            Builder::value_cond(&mut s, "x", modifier, v);
        }
        s.push(")) r WHERE 1 = 1");
    }
    for (i, f) in q.filters.iter().enumerate() {
        if i != n {
            s.push(" AND ");
            b.filter(&mut s, f, &q.ty, "r");
        }
    }
    b.and_visible(&mut s, &q.ty, "r");
    s
}

/// The table a type's resources are searched in.
pub(crate) fn table(ty: &str) -> &'static str {
    if audit::is_audit_log(ty) {
        audit::TABLE
    } else {
        "resources"
    }
}

/// AuditEvents (store::audit) carry no search-index rows: no chain, `_has` or include reaches
/// into or out of them. Refused rather than answered with nothing.
fn check_supported(q: &SearchQuery) -> ApiResult<()> {
    fn touches_audit(f: &Filter, ty: &str) -> bool {
        match f {
            Filter::Chain { targets, .. } => {
                audit::is_audit_log(ty)
                    || targets
                        .iter()
                        .any(|(t, inner)| audit::is_audit_log(t) || touches_audit(inner, t))
            }
            Filter::Has {
                source_type, inner, ..
            } => {
                audit::is_audit_log(ty)
                    || audit::is_audit_log(source_type)
                    || touches_audit(inner, source_type)
            }
            _ => false,
        }
    }
    let includes = q.includes.iter().chain(&q.revincludes).any(|i| {
        audit::is_audit_log(&q.ty)
            || audit::is_audit_log(&i.source_type)
            || i.target_type.as_deref().is_some_and(audit::is_audit_log)
    });
    if includes || q.filters.iter().any(|f| touches_audit(f, &q.ty)) {
        return Err(ApiError::BadRequest {
            code: crate::fhir::outcome::IssueType::NotSupported,
            msg: "chains, _has, _include and _revinclude do not reach AuditEvents (the audit \
                  trail is searched by its own parameters only)"
                .into(),
            expression: None,
        });
    }
    Ok(())
}

/// Count the matches of a query.
pub fn count(conn: &mut DbConn, q: &SearchQuery, vis: &dyn Visibility) -> ApiResult<i64> {
    let s = count_plan(q, vis, is_pg(conn))?;
    if vis.rows(&q.ty) == Rows::Hidden {
        return Ok(0);
    }
    let rows: Vec<CountRow> = load(conn, &s).map_err(db_error)?;
    Ok(rows.first().map_or(0, |r| r.n))
}

#[derive(QueryableByName)]
struct PlanRow {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    plan: String,
}

/// The planner's estimate of the matches of a query (`_total=estimate`) on PostgreSQL, from
/// `EXPLAIN` of the same statement a count would run (the caller's visibility included); the
/// exact count on SQLite, whose planner gives no row estimate.
pub fn estimate(conn: &mut DbConn, q: &SearchQuery, vis: &dyn Visibility) -> ApiResult<i64> {
    if !is_pg(conn) {
        return count(conn, q, vis);
    }
    check_supported(q)?;
    if vis.rows(&q.ty) == Rows::Hidden {
        return Ok(0);
    }
    let mut s = Sql::new();
    s.push("EXPLAIN (FORMAT JSON) SELECT r.pk")
        .append(from_where(q, table(&q.ty), vis, is_pg(conn)));
    let rows: Vec<PlanRow> = load(conn, &s).map_err(db_error)?;
    let rows_planned = rows
        .first()
        .and_then(|r| serde_json::from_str::<Value>(&r.plan).ok())
        .and_then(|v| v[0]["Plan"]["Plan Rows"].as_f64());
    match rows_planned {
        Some(n) => Ok(n.round() as i64),
        None => count(conn, q, vis),
    }
}

/// A decoded `_page` token: the direction (true = after) and the boundary row's keys then pk.
pub type PageBoundary = (bool, Vec<Value>);

/// The statement of one page of a search (`count_limit` rows plus one, to tell whether there is
/// a next page) on PostgreSQL (`pg`) or SQLite, with the decoded `_page` token (direction,
/// boundary keys). Pure (no connection): the search-plan fuzz target (fuzz/) drives it with any
/// query string.
pub fn plan(
    q: &SearchQuery,
    count_limit: i64,
    vis: &dyn Visibility,
    pg: bool,
) -> ApiResult<(Option<PageBoundary>, Sql)> {
    check_supported(q)?;
    let table = table(&q.ty);
    let keys = &q.sort;
    let page = match &q.page {
        Some(t) => Some(decode_page(t, keys)?),
        None => None,
    };
    let forward = page.as_ref().is_none_or(|(after, _)| *after);
    let mut s = Sql::new();
    // Two stages: find the page's pks and sort keys from the indexes alone (index-only scans,
    // no resource bodies read for non-page matches), then join the page's rows.
    let order = |alias: &str| {
        let mut o = String::from(" ORDER BY ");
        for (n, k) in keys.iter().enumerate() {
            let suffix = match key_kind(k) {
                KeyKind::Int => "i",
                KeyKind::Text => "t",
                KeyKind::Float => "f",
            };
            let desc = k.descending == forward;
            o.push_str(&format!(
                "{alias}.k{}_{suffix}{}, ",
                n + 1,
                if desc { " DESC" } else { "" }
            ));
        }
        o.push_str(&format!("{alias}.pk{}", if forward { "" } else { " DESC" }));
        o
    };
    s.push(
        "SELECT r.pk, r.res_type, r.res_id, r.version_id, r.last_updated, r.content, \
         p.k1_i, p.k1_t, p.k1_f, p.k2_i, p.k2_t, p.k2_f, p.k3_i, p.k3_t, p.k3_f \
         FROM (SELECT q.* FROM (SELECT r.pk",
    );
    for n in 0..3 {
        let k = keys.get(n);
        for (suffix, kind, cast) in [
            ("i", KeyKind::Int, "BIGINT"),
            ("t", KeyKind::Text, "TEXT"),
            ("f", KeyKind::Float, "DOUBLE PRECISION"),
        ] {
            s.push(", ");
            match k {
                Some(k) if key_kind(k) == kind => key_expr(&mut s, &q.ty, k),
                _ => {
                    s.push(&format!("CAST(NULL AS {cast})"));
                }
            }
            s.push(&format!(" AS k{}_{suffix}", n + 1));
        }
    }
    s.append(from_where(q, table, vis, pg));
    s.push(") q");
    if let Some((_, vals)) = &page {
        s.push(" WHERE ");
        keyset(&mut s, keys, vals, forward);
    }
    s.push(&order("q"));
    s.limit(count_limit + 1);
    s.push(&format!(") p JOIN {table} r ON r.pk = p.pk"));
    s.push(&order("p"));
    Ok((page, s))
}

/// The statement counting the matches of a query (as [`count`] runs it). Pure, like [`plan`].
pub fn count_plan(q: &SearchQuery, vis: &dyn Visibility, pg: bool) -> ApiResult<Sql> {
    check_supported(q)?;
    let mut s = Sql::new();
    s.push("SELECT COUNT(*) AS n")
        .append(from_where(q, table(&q.ty), vis, pg));
    Ok(s)
}

/// One page of a search (`count` rows at most) with its included resources.
pub fn search(
    conn: &mut DbConn,
    q: &SearchQuery,
    count_limit: i64,
    vis: &dyn Visibility,
) -> ApiResult<SearchPage> {
    let (page, s) = plan(q, count_limit, vis, is_pg(conn))?;
    let keys = &q.sort;
    let forward = page.as_ref().is_none_or(|(after, _)| *after);
    log::debug!("search SQL: {} -- binds: {:?}", s.text, s.binds);
    let mut rows: Vec<Row> = if count_limit == 0 || vis.rows(&q.ty) == Rows::Hidden {
        vec![]
    } else {
        load(conn, &s).map_err(db_error)?
    };
    let more = rows.len() as i64 > count_limit;
    rows.truncate(count_limit.max(0) as usize);
    if !forward {
        rows.reverse();
    }
    let (has_next, has_prev) = match &page {
        None => (more, false),
        Some((true, _)) => (more, true),
        Some((false, _)) => (true, more),
    };
    let next = if has_next {
        rows.last().map(|r| encode_page(true, r, keys))
    } else {
        None
    };
    let previous = if has_prev {
        rows.first().map(|r| encode_page(false, r, keys))
    } else {
        None
    };
    let mut matches: Vec<Found> = rows.into_iter().map(Row::found).collect();
    crate::store::members::fill_found(conn, &mut matches)?;
    let included = includes::includes(conn, q, vis, &matches)?;
    Ok(SearchPage {
        matches,
        included,
        total: None,
        next,
        previous,
    })
}

/// Ids of every current, non-deleted resource of `ty` matching `query_string` that the caller
/// may see (conditional create/update/delete, conditional references, the care operations).
pub fn find_ids(
    conn: &mut DbConn,
    ty: &str,
    query_string: &str,
    vis: &dyn Visibility,
) -> ApiResult<Vec<String>> {
    let q = SearchQuery::parse(ty, query_string)?;
    if !q.issues.is_empty() || !q.invalid.is_empty() {
        let all: Vec<&str> = q
            .issues
            .iter()
            .chain(&q.invalid)
            .map(String::as_str)
            .collect();
        return Err(ApiError::invalid_at(
            format!("search criteria not understood: {}", all.join("; ")),
            ty,
        ));
    }
    #[derive(QueryableByName)]
    struct IdRow {
        #[diesel(sql_type = Text)]
        res_id: String,
    }
    check_supported(&q)?;
    // The same plan as a search (driven by a selective index when there is one).
    let table = table(&q.ty);
    let mut s2 = Sql::new();
    s2.push(&format!(
        "SELECT t.res_id FROM {table} t WHERE t.pk IN (SELECT r.pk"
    ))
    .append(from_where(&q, table, vis, is_pg(conn)))
    .push(") ORDER BY t.pk");
    let rows: Vec<IdRow> = load(conn, &s2).map_err(db_error)?;
    Ok(rows.into_iter().map(|r| r.res_id).collect())
}
