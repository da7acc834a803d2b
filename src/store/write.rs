//! Persistence of writes: the current row locked for a write, a new version (resource row,
//! history row, index rows), bulk inserts for import, the write transaction with its retries.
//! No rules live here: validation, access, care rules and integrity are the service layer's
//! unit of work (service::write), which calls these inside its transaction.
use diesel::prelude::*;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::fhir::datetime::now_micros;
use crate::fhir::resource;
use crate::store::backend::{db_error, DbConn, Store};
use crate::store::schema::{resource_history, resources};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Created,
    Updated,
    Deleted,
    /// Delete of a resource that was missing or already deleted.
    NoChange,
}

#[derive(Debug, Clone)]
pub struct WriteResult {
    pub ty: String,
    pub id: String,
    pub version: i64,
    pub last_updated: i64,
    /// The stored resource (None after a delete).
    pub resource: Option<Value>,
    pub kind: WriteKind,
    /// Tasks cancelled by this write (a CarePlan became revoked or completed), as "Task/id".
    pub cancelled_tasks: Vec<String>,
}

/// The current row of a resource, as locked for a write.
#[derive(Queryable)]
pub struct Current {
    pub pk: i64,
    pub version_id: i64,
    pub last_updated: i64,
    pub deleted: bool,
    pub content: Option<String>,
}

impl Current {
    /// The stored resource, unless deleted.
    pub fn resource(&self) -> Option<Value> {
        if self.deleted {
            return None;
        }
        self.content
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
    }
}

/// The current row of ty/id. On PostgreSQL the row is locked (`FOR UPDATE`) so concurrent
/// writers of one resource queue up instead of failing their version check and retrying; a
/// deadlock between two multi-resource transactions is retried like any concurrent write.
pub fn current(conn: &mut DbConn, ty: &str, id: &str) -> ApiResult<Option<Current>> {
    let q = resources::table
        .filter(resources::res_type.eq(ty))
        .filter(resources::res_id.eq(id))
        .select((
            resources::pk,
            resources::version_id,
            resources::last_updated,
            resources::deleted,
            resources::content,
        ));
    let r = match conn {
        DbConn::Pg(c) => q.for_update().get_result::<Current>(c),
        DbConn::Sqlite(c) => q.get_result::<Current>(c),
    };
    r.optional().map_err(|e| match &e {
        diesel::result::Error::DatabaseError(_, info) if info.message().contains("deadlock") => {
            ApiError::ConcurrentWrite
        }
        _ => db_error(e),
    })
}

fn unique_violation(e: diesel::result::Error) -> ApiError {
    match e {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ) => ApiError::ConcurrentWrite,
        other => db_error(other),
    }
}

/// Store the next version of ty/id after `prev` (None: a new resource): `body` None is a
/// deletion. Returns (version, lastUpdated, stored resource).
pub fn write_version(
    conn: &mut DbConn,
    ty: &str,
    id: &str,
    prev: Option<&Current>,
    method: &str,
    body: Option<Value>,
    last_updated: i64,
) -> ApiResult<(i64, i64, Option<Value>)> {
    let version = prev.map_or(1, |c| c.version_id + 1);
    let stamped = body.map(|b| resource::stamp(b, id, version, last_updated));
    let text = stamped.as_ref().map(|v| v.to_string());
    let deleted = stamped.is_none();
    let pk = match prev {
        None => diesel::insert_into(resources::table)
            .values((
                resources::res_type.eq(ty),
                resources::res_id.eq(id),
                resources::version_id.eq(version),
                resources::last_updated.eq(last_updated),
                resources::deleted.eq(deleted),
                resources::content.eq(text.as_deref()),
            ))
            .returning(resources::pk)
            .get_result::<i64>(conn)
            .map_err(unique_violation)?,
        Some(c) => {
            let n = diesel::update(
                resources::table
                    .filter(resources::pk.eq(c.pk))
                    .filter(resources::version_id.eq(c.version_id)),
            )
            .set((
                resources::version_id.eq(version),
                resources::last_updated.eq(last_updated),
                resources::deleted.eq(deleted),
                resources::content.eq(text.as_deref()),
            ))
            .execute(conn)
            .map_err(db_error)?;
            if n != 1 {
                return Err(ApiError::ConcurrentWrite);
            }
            c.pk
        }
    };
    if prev.is_some() {
        crate::store::index::write_index(conn, pk, ty, stamped.as_ref())?;
    } else {
        crate::store::index::insert_index(conn, pk, ty, stamped.as_ref())?;
    }
    diesel::insert_into(resource_history::table)
        .values((
            resource_history::res_type.eq(ty),
            resource_history::res_id.eq(id),
            resource_history::version_id.eq(version),
            resource_history::last_updated.eq(last_updated),
            resource_history::method.eq(method),
            resource_history::deleted.eq(deleted),
            resource_history::content.eq(text.as_deref()),
        ))
        .execute(conn)
        .map_err(unique_violation)?;
    Ok((version, last_updated, stamped))
}

/// The lastUpdated of the next version: now, but always after the previous version.
pub fn next_timestamp(prev: Option<&Current>) -> i64 {
    let now = now_micros();
    match prev {
        Some(c) if c.last_updated >= now => c.last_updated + 1000,
        _ => now,
    }
}

/// A write's result.
pub fn result(ty: &str, id: String, v: (i64, i64, Option<Value>), kind: WriteKind) -> WriteResult {
    WriteResult {
        ty: ty.to_string(),
        id,
        version: v.0,
        last_updated: v.1,
        resource: v.2,
        kind,
        cancelled_tasks: vec![],
    }
}

#[derive(diesel::QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pk: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    res_type: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    res_id: String,
}

#[derive(diesel::QueryableByName)]
struct PresentRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    res_type: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    res_id: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    deleted: bool,
}

/// Which of the given (type, id) have a row, and whether it is deleted (bulk import).
pub fn present(
    conn: &mut DbConn,
    items: &[(&str, &str)],
) -> ApiResult<std::collections::HashMap<(String, String), bool>> {
    use crate::store::sql::{load, Sql};
    let mut present: std::collections::HashMap<(String, String), bool> = Default::default();
    for chunk in items.chunks(500) {
        let mut q = Sql::new();
        q.push("SELECT res_type, res_id, deleted FROM resources WHERE ");
        if crate::store::sql::is_pg(conn) {
            // One (res_type, res_id) pair per key: PostgreSQL probes the unique key once per
            // pair (a BitmapOr). With `res_type IN (…) AND res_id IN (…)` it scanned every row
            // of the batch's types and filtered the ids: quadratic over an import.
            q.push("(res_type, res_id) IN (");
            for (i, (t, id)) in chunk.iter().enumerate() {
                if i > 0 {
                    q.push(", ");
                }
                q.push("(")
                    .text(t.to_string())
                    .push(", ")
                    .text(id.to_string())
                    .push(")");
            }
            q.push(")");
        } else {
            // SQLite scans the table for a row-value IN list, but probes the (res_type, res_id)
            // key for every combination of two IN lists.
            let ids: Vec<String> = chunk.iter().map(|(_, id)| id.to_string()).collect();
            let mut types: Vec<String> = chunk.iter().map(|(t, _)| t.to_string()).collect();
            types.sort();
            types.dedup();
            q.push("res_type IN ")
                .text_list(&types)
                .push(" AND res_id IN ")
                .text_list(&ids);
        }
        let rows: Vec<PresentRow> = load(conn, &q).map_err(db_error)?;
        for r in rows {
            present.insert((r.res_type, r.res_id), r.deleted);
        }
    }
    Ok(present)
}

/// Insert new resources (version 1, already validated and stamped at `ts`) with one bulk
/// INSERT per table: resources, history (recording `method`), index rows.
pub fn insert_new(
    conn: &mut DbConn,
    fresh: &[(&str, &str, &Value)],
    ts: i64,
    method: &str,
) -> ApiResult<()> {
    use crate::store::sql::{bulk_insert, execute, load, Column};
    if fresh.is_empty() {
        return Ok(());
    }
    let n = fresh.len();
    let types: Vec<Option<String>> = fresh.iter().map(|(t, _, _)| Some(t.to_string())).collect();
    let ids: Vec<Option<String>> = fresh.iter().map(|(_, i, _)| Some(i.to_string())).collect();
    let texts: Vec<Option<String>> = fresh.iter().map(|(_, _, v)| Some(v.to_string())).collect();
    let cols = |history: bool| {
        let mut names = vec![
            "res_type",
            "res_id",
            "version_id",
            "last_updated",
            "deleted",
            "content",
        ];
        let mut columns = vec![
            Column::Text(types.clone()),
            Column::Text(ids.clone()),
            Column::Int(vec![1; n]),
            Column::Int(vec![ts; n]),
            Column::Bool(vec![false; n]),
            Column::Text(texts.clone()),
        ];
        if history {
            names.push("method");
            columns.push(Column::Text(vec![Some(method.to_string()); n]));
        }
        (names, columns)
    };
    let (names, columns) = cols(false);
    let mut keys: std::collections::HashMap<(String, String), i64> = Default::default();
    for q in bulk_insert(
        conn,
        "resources",
        &names,
        columns,
        " RETURNING pk, res_type, res_id",
    ) {
        for r in load::<KeyRow>(conn, q).map_err(db_error)? {
            keys.insert((r.res_type, r.res_id), r.pk);
        }
    }
    let (names, columns) = cols(true);
    for q in bulk_insert(conn, "resource_history", &names, columns, "") {
        execute(conn, q).map_err(db_error)?;
    }
    let mut by_type: std::collections::BTreeMap<&str, Vec<(i64, &Value)>> = Default::default();
    for (ty, id, v) in fresh.iter() {
        let pk = keys
            .get(&(ty.to_string(), id.to_string()))
            .ok_or_else(|| ApiError::internal("bulk create: inserted rows do not match"))?;
        by_type.entry(ty).or_default().push((*pk, *v));
    }
    for (ty, rows) in by_type {
        crate::store::index::insert_index_bulk(conn, ty, &rows)?;
    }
    Ok(())
}

impl Store {
    /// Run `f` in one write transaction (SQLite: under the writer lock), retrying a few times
    /// when a concurrent writer got there first.
    pub fn write_tx<T>(&self, mut f: impl FnMut(&mut DbConn) -> ApiResult<T>) -> ApiResult<T> {
        let _guard = self.writer_guard();
        let mut conn = self.conn()?;
        let mut attempt = 0;
        loop {
            let r =
                crate::store::backend::write_transaction(&mut conn, |c| f(c).map_err(TxError::Api));
            match r {
                Ok(v) => return Ok(v),
                Err(TxError::Api(ApiError::ConcurrentWrite)) if attempt < 12 => {
                    // Back off a little, with jitter, so a burst of writers to one resource
                    // (validation makes each transaction a bit longer) all get through.
                    attempt += 1;
                    let jitter = (uuid::Uuid::new_v4().as_u128() % 4000) as u64;
                    std::thread::sleep(std::time::Duration::from_micros(
                        500 * attempt.min(6) + jitter,
                    ));
                }
                Err(TxError::Api(e)) => return Err(e),
                Err(TxError::Db(e)) => return Err(db_error(e)),
            }
        }
    }
}

/// Error carried through diesel's transaction: ours, or diesel's own (begin/commit failures).
enum TxError {
    Api(ApiError),
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError::Db(e)
    }
}
