//! The one write path: every create, update and delete (from any interaction) goes through
//! `apply`, inside one database transaction that writes the resource and its history row.
use diesel::prelude::*;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::fhir::datetime::now_micros;
use crate::fhir::resource;
use crate::store::backend::{db_error, DbConn, Store};
use crate::store::schema::{resource_history, resources};

/// What a client asked to change.
#[derive(Debug, Clone)]
pub enum Change {
    /// POST: server assigns the id.
    Create { body: Value },
    /// PUT: update, or create with the client's id when absent.
    Update {
        id: String,
        body: Value,
        if_match: Option<i64>,
    },
    /// DELETE: idempotent.
    Delete { id: String, if_match: Option<i64> },
}

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
}

#[derive(Queryable)]
struct Current {
    pk: i64,
    version_id: i64,
    last_updated: i64,
    deleted: bool,
}

fn current(conn: &mut DbConn, ty: &str, id: &str) -> ApiResult<Option<Current>> {
    resources::table
        .filter(resources::res_type.eq(ty))
        .filter(resources::res_id.eq(id))
        .select((
            resources::pk,
            resources::version_id,
            resources::last_updated,
            resources::deleted,
        ))
        .first::<Current>(conn)
        .optional()
        .map_err(db_error)
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

fn check_if_match(
    if_match: Option<i64>,
    cur: Option<&Current>,
    ty: &str,
    id: &str,
) -> ApiResult<()> {
    match (if_match, cur) {
        (None, _) => Ok(()),
        (Some(v), Some(c)) if c.version_id == v => Ok(()),
        (Some(v), Some(c)) => Err(ApiError::PreconditionFailed(format!(
            "If-Match names version {v} but the current version of {ty}/{id} is {}",
            c.version_id
        ))),
        (Some(v), None) => Err(ApiError::PreconditionFailed(format!(
            "If-Match names version {v} but {ty}/{id} does not exist"
        ))),
    }
}

/// Validate and normalise a body for storage under `ty` (rules that hold for every write).
fn prepare_body(ty: &str, body: &Value) -> ApiResult<()> {
    resource::check_resource_type(body, Some(ty))?;
    resource::body_id(body)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn write_version(
    conn: &mut DbConn,
    ty: &str,
    id: &str,
    prev: Option<&Current>,
    method: &str,
    body: Option<Value>,
) -> ApiResult<(i64, i64, Option<Value>)> {
    let version = prev.map_or(1, |c| c.version_id + 1);
    let now = now_micros();
    let last_updated = match prev {
        Some(c) if c.last_updated >= now => c.last_updated + 1000,
        _ => now,
    };
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

/// Per-request hooks run inside the write transaction: the access policy check and the
/// AuditEvent stored together with the change (see http::auth).
pub trait WriteHooks {
    /// Refuse the change: `current` is the stored resource (None when absent or deleted),
    /// `new` the incoming body (None for a delete). Runs before If-Match is evaluated.
    fn check(&self, ty: &str, current: Option<&Value>, new: Option<&Value>) -> ApiResult<()>;
    /// The AuditEvent to store in the same transaction, if any.
    fn audit(&self, result: &WriteResult) -> Option<Value>;
}

fn current_content(conn: &mut DbConn, ty: &str, id: &str) -> ApiResult<Option<Value>> {
    let text: Option<Option<String>> = resources::table
        .filter(resources::res_type.eq(ty))
        .filter(resources::res_id.eq(id))
        .filter(resources::deleted.eq(false))
        .select(resources::content)
        .first::<Option<String>>(conn)
        .optional()
        .map_err(db_error)?;
    Ok(text.flatten().and_then(|t| serde_json::from_str(&t).ok()))
}

/// Apply one change inside the caller's transaction (no request hooks: server-internal writes).
pub fn apply(conn: &mut DbConn, ty: &str, change: Change) -> ApiResult<WriteResult> {
    apply_inner(conn, ty, change, None)
}

/// Apply one change of a client request: its access check and audit run in this transaction.
pub fn apply_in(
    conn: &mut DbConn,
    ty: &str,
    change: Change,
    hooks: &dyn WriteHooks,
) -> ApiResult<WriteResult> {
    let r = apply_inner(conn, ty, change, Some(hooks))?;
    if let Some(ev) = hooks.audit(&r) {
        apply_inner(conn, "AuditEvent", Change::Create { body: ev }, None)?;
    }
    Ok(r)
}

fn apply_inner(
    conn: &mut DbConn,
    ty: &str,
    change: Change,
    hooks: Option<&dyn WriteHooks>,
) -> ApiResult<WriteResult> {
    if let Some(h) = hooks {
        match &change {
            Change::Create { body } => h.check(ty, None, Some(body))?,
            Change::Update { id, body, .. } => {
                let cur = current_content(conn, ty, id)?;
                h.check(ty, cur.as_ref(), Some(body))?
            }
            Change::Delete { id, .. } => {
                let cur = current_content(conn, ty, id)?;
                h.check(ty, cur.as_ref(), None)?
            }
        }
    }
    match change {
        Change::Create { body } => {
            prepare_body(ty, &body)?;
            let id = uuid::Uuid::new_v4().to_string();
            let (version, last_updated, stored) =
                write_version(conn, ty, &id, None, "POST", Some(body))?;
            Ok(WriteResult {
                ty: ty.to_string(),
                id,
                version,
                last_updated,
                resource: stored,
                kind: WriteKind::Created,
            })
        }
        Change::Update { id, body, if_match } => {
            prepare_body(ty, &body)?;
            match resource::body_id(&body)? {
                None => {
                    return Err(ApiError::invalid_at(
                        "the resource in an update must carry an id equal to the id in the URL",
                        "id",
                    ))
                }
                Some(bid) if bid != id => {
                    return Err(ApiError::invalid_at(
                        format!("resource id '{bid}' does not match the id '{id}' in the URL"),
                        "id",
                    ))
                }
                Some(_) => {}
            }
            let cur = current(conn, ty, &id)?;
            check_if_match(if_match, cur.as_ref(), ty, &id)?;
            let kind = match &cur {
                Some(c) if !c.deleted => WriteKind::Updated,
                _ => WriteKind::Created,
            };
            let (version, last_updated, stored) =
                write_version(conn, ty, &id, cur.as_ref(), "PUT", Some(body))?;
            Ok(WriteResult {
                ty: ty.to_string(),
                id,
                version,
                last_updated,
                resource: stored,
                kind,
            })
        }
        Change::Delete { id, if_match } => {
            let cur = current(conn, ty, &id)?;
            match &cur {
                Some(c) if !c.deleted => {
                    check_if_match(if_match, cur.as_ref(), ty, &id)?;
                    let (version, last_updated, _) =
                        write_version(conn, ty, &id, cur.as_ref(), "DELETE", None)?;
                    Ok(WriteResult {
                        ty: ty.to_string(),
                        id,
                        version,
                        last_updated,
                        resource: None,
                        kind: WriteKind::Deleted,
                    })
                }
                _ => Ok(WriteResult {
                    ty: ty.to_string(),
                    id,
                    version: cur.as_ref().map_or(0, |c| c.version_id),
                    last_updated: cur.as_ref().map_or(0, |c| c.last_updated),
                    resource: None,
                    kind: WriteKind::NoChange,
                }),
            }
        }
    }
}

impl Store {
    /// Run `f` in one write transaction (SQLite: under the writer lock), retrying a few times
    /// when a concurrent writer got there first.
    pub fn write_tx<T>(&self, mut f: impl FnMut(&mut DbConn) -> ApiResult<T>) -> ApiResult<T> {
        let _guard = self.writer_guard();
        let mut conn = self.conn()?;
        let mut attempt = 0;
        loop {
            let r = conn.transaction::<T, TxError, _>(|c| f(c).map_err(TxError::Api));
            match r {
                Ok(v) => return Ok(v),
                Err(TxError::Api(ApiError::ConcurrentWrite)) if attempt < 4 => attempt += 1,
                Err(TxError::Api(e)) => return Err(e),
                Err(TxError::Db(e)) => return Err(db_error(e)),
            }
        }
    }

    /// One change in its own transaction.
    pub fn write(&self, ty: &str, change: Change) -> ApiResult<WriteResult> {
        self.write_tx(|c| apply(c, ty, change.clone()))
    }

    /// One change of a client request in its own transaction, with the request's hooks.
    pub fn write_in(
        &self,
        ty: &str,
        change: Change,
        hooks: &dyn WriteHooks,
    ) -> ApiResult<WriteResult> {
        self.write_tx(|c| apply_in(c, ty, change.clone(), hooks))
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
