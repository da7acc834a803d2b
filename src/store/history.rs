//! History queries at instance, type and system level, newest first, paged by keyset on `hid`.
use diesel::prelude::*;

use crate::error::ApiResult;
use crate::store::backend::{db_error, DbConn, Store};
use crate::store::schema::resource_history as h;
use crate::store::sql::{load, Sql};
use crate::store::visibility::{Rows, Visibility};

#[derive(Debug, Clone, Queryable)]
pub struct HistoryRow {
    pub hid: i64,
    pub res_type: String,
    pub res_id: String,
    pub version_id: i64,
    pub last_updated: i64,
    pub method: String,
    pub deleted: bool,
    pub content: Option<String>,
}

/// Which page of a history listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    First,
    /// Entries older than this hid (the "next" page).
    Before(i64),
    /// Entries newer than this hid (the "previous" page).
    After(i64),
}

#[derive(Debug, Clone)]
pub struct HistoryQuery<'a> {
    pub ty: Option<&'a str>,
    pub id: Option<&'a str>,
    pub since: Option<i64>,
    pub at_or_before: Option<i64>,
    pub cursor: Cursor,
    pub count: i64,
}

impl Store {
    /// Up to `count + 1` rows (the extra one tells the caller a next/previous page exists),
    /// always returned newest first, of resources the caller may see.
    pub fn history(&self, q: &HistoryQuery, vis: &dyn Visibility) -> ApiResult<Vec<HistoryRow>> {
        let mut conn = self.conn()?;
        history_rows(&mut conn, q, vis)
    }

    /// Total number of versions of one resource (the caller checked it may see it).
    pub fn history_count(&self, ty: &str, id: &str) -> ApiResult<i64> {
        let mut conn = self.conn()?;
        if crate::store::audit::is_audit_log(ty) {
            return crate::store::audit::history_count(&mut conn, id);
        }
        h::table
            .filter(h::res_type.eq(ty))
            .filter(h::res_id.eq(id))
            .count()
            .get_result(&mut *conn)
            .map_err(db_error)
    }
}

/// One page of history rows from `query` (a boxed select of `HistoryRow` columns over `$table`,
/// which has `res_id` and `last_updated`), filtered by the query's id and time bounds and paged by
/// keyset on `$table::$key`; returned newest first. Shared by `resource_history` and the audit
/// trail (store::audit), whose diesel query types differ.
macro_rules! history_page {
    ($query:expr, $table:ident, $key:ident, $q:expr, $conn:expr) => {{
        let q: &$crate::store::history::HistoryQuery = $q;
        let mut query = $query;
        if let Some(i) = q.id {
            query = query.filter($table::res_id.eq(i.to_string()));
        }
        if let Some(s) = q.since {
            query = query.filter($table::last_updated.ge(s));
        }
        if let Some(t) = q.at_or_before {
            query = query.filter($table::last_updated.le(t));
        }
        let limit = q.count + 1;
        use $crate::store::history::Cursor;
        let mut rows: Vec<$crate::store::history::HistoryRow> = match q.cursor {
            Cursor::First => query.order($table::$key.desc()).limit(limit).load($conn),
            Cursor::Before(b) => query
                .filter($table::$key.lt(b))
                .order($table::$key.desc())
                .limit(limit)
                .load($conn),
            Cursor::After(x) => query
                .filter($table::$key.gt(x))
                .order($table::$key.asc())
                .limit(limit)
                .load($conn),
        }
        .map_err($crate::store::backend::db_error)?;
        if let Cursor::After(_) = q.cursor {
            rows.reverse();
        }
        Ok(rows)
    }};
}
pub(crate) use history_page;

fn history_rows(
    conn: &mut DbConn,
    q: &HistoryQuery,
    vis: &dyn Visibility,
) -> ApiResult<Vec<HistoryRow>> {
    // AuditEvents are kept apart (store::audit); the system-level history does not list them.
    if let Some(t) = q.ty.filter(|t| crate::store::audit::is_audit_log(t)) {
        if vis.rows(t) == Rows::Hidden {
            return Ok(vec![]);
        }
        return crate::store::audit::history(conn, q);
    }
    let everything = match q.ty {
        Some(t) => vis.rows(t) == Rows::All,
        None => crate::fhir::registry::Registry::get()
            .type_names()
            .all(|t| vis.rows(t) == Rows::All),
    };
    if !everything {
        return visible_history_rows(conn, q, vis);
    }
    let mut query = h::table.into_boxed();
    if let Some(t) = q.ty {
        query = query.filter(h::res_type.eq(t.to_string()));
    }
    history_page!(query, h, hid, q, conn)
}

#[derive(diesel::QueryableByName)]
struct RawRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    hid: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    res_type: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    res_id: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    version_id: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    last_updated: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    method: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    deleted: bool,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    content: Option<String>,
}

/// History for a caller restricted to certain patients or types: the versions of resources
/// whose current version it may see (the restriction in the SQL, on the current row).
fn visible_history_rows(
    conn: &mut DbConn,
    q: &HistoryQuery,
    vis: &dyn Visibility,
) -> ApiResult<Vec<HistoryRow>> {
    let mut s = Sql::new();
    s.push(
        "SELECT h.hid, h.res_type, h.res_id, h.version_id, h.last_updated, h.method, h.deleted, \
         h.content FROM resource_history h LEFT JOIN resources r ON r.res_type = h.res_type \
         AND r.res_id = h.res_id AND NOT r.deleted WHERE ",
    );
    crate::store::search::visible_any(&mut s, vis, "h.res_type", "h.res_id", "r.pk");
    if let Some(t) = q.ty {
        s.push(" AND h.res_type = ").text(t);
    }
    if let Some(i) = q.id {
        s.push(" AND h.res_id = ").text(i);
    }
    if let Some(x) = q.since {
        s.push(" AND h.last_updated >= ").int(x);
    }
    if let Some(x) = q.at_or_before {
        s.push(" AND h.last_updated <= ").int(x);
    }
    let order = match q.cursor {
        Cursor::First => " ORDER BY h.hid DESC",
        Cursor::Before(b) => {
            s.push(" AND h.hid < ").int(b);
            " ORDER BY h.hid DESC"
        }
        Cursor::After(a) => {
            s.push(" AND h.hid > ").int(a);
            " ORDER BY h.hid ASC"
        }
    };
    s.push(order).limit(q.count + 1);
    let mut rows: Vec<HistoryRow> = load::<RawRow>(conn, &s)
        .map_err(db_error)?
        .into_iter()
        .map(|r| HistoryRow {
            hid: r.hid,
            res_type: r.res_type,
            res_id: r.res_id,
            version_id: r.version_id,
            last_updated: r.last_updated,
            method: r.method,
            deleted: r.deleted,
            content: r.content,
        })
        .collect();
    if let Cursor::After(_) = q.cursor {
        rows.reverse();
    }
    Ok(rows)
}
