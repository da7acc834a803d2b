//! The one write path: every create, update and delete (from any interaction) goes through
//! `apply`, inside one database transaction that writes the resource and its history row.
use diesel::prelude::*;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::fhir::datetime::{format_instant, now_micros};
use crate::fhir::resource;
use crate::store::backend::{db_error, DbConn, Store};
use crate::store::integrity;
use crate::store::schema::{resource_history, resources};

/// What a client asked to change.
#[derive(Debug, Clone)]
pub enum Change {
    /// POST: server assigns the id.
    Create { body: Value },
    /// Create with an id the server already chose (transaction entries whose urn:uuid
    /// references were rewritten before any write).
    CreateWithId { id: String, body: Value },
    /// PUT: update, or create with the client's id when absent.
    Update {
        id: String,
        body: Value,
        if_match: Option<i64>,
    },
    /// PATCH: a JSON Patch applied to the current version, then stored like an update.
    Patch {
        id: String,
        patch: Value,
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
    /// Tasks cancelled by this write (a CarePlan became revoked or completed), as "Task/id".
    pub cancelled_tasks: Vec<String>,
}

#[derive(Queryable)]
struct Current {
    pk: i64,
    version_id: i64,
    last_updated: i64,
    deleted: bool,
    content: Option<String>,
}

/// The current row of ty/id. On PostgreSQL the row is locked (`FOR UPDATE`) so concurrent
/// writers of one resource queue up instead of failing their version check and retrying; a
/// deadlock between two multi-resource transactions is retried like any concurrent write.
fn current(conn: &mut DbConn, ty: &str, id: &str) -> ApiResult<Option<Current>> {
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
        DbConn::Pg(c) => q.for_update().first::<Current>(c),
        DbConn::Sqlite(c) => q.first::<Current>(c),
    };
    r.optional().map_err(|e| match &e {
        diesel::result::Error::DatabaseError(_, info) if info.message().contains("deadlock") => {
            ApiError::ConcurrentWrite
        }
        _ => db_error(e),
    })
}

/// Whether a current, not-deleted resource exists (inside the caller's transaction).
pub fn exists(conn: &mut DbConn, ty: &str, id: &str) -> ApiResult<bool> {
    Ok(current(conn, ty, id)?.is_some_and(|c| !c.deleted))
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

/// Validate a body for storage under `ty` (rules that hold for every write): shape, id, the R4
/// definitions and ICM profiles (422 with every problem), then referential integrity.
fn prepare_body(conn: &mut DbConn, ty: &str, own_id: Option<&str>, body: &Value) -> ApiResult<()> {
    resource::check_resource_type(body, Some(ty))?;
    resource::body_id(body)?;
    let policy = integrity::current();
    let refs = integrity::validate_for_write(body, &policy)?;
    // AuditEvents record what was accessed, including unknown and deleted resources.
    if policy.referential_integrity
        && ty != "AuditEvent"
        && !integrity::defer_references(ty, own_id, &refs)
    {
        integrity::check_references(conn, (ty, own_id), &refs)?;
    }
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
fn next_timestamp(prev: Option<&Current>) -> i64 {
    let now = now_micros();
    match prev {
        Some(c) if c.last_updated >= now => c.last_updated + 1000,
        _ => now,
    }
}

fn result(ty: &str, id: String, v: (i64, i64, Option<Value>), kind: WriteKind) -> WriteResult {
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

/// A new resource with a known id (no current row, or a deleted one being re-created).
fn create(
    conn: &mut DbConn,
    ty: &str,
    id: String,
    mut body: Value,
    prev: Option<&Current>,
    method: &str,
) -> ApiResult<WriteResult> {
    prepare_body(conn, ty, Some(&id), &body)?;
    let ts = next_timestamp(prev);
    crate::care::before_write(ty, None, &mut body, &format_instant(ts))?;
    let v = write_version(conn, ty, &id, prev, method, Some(body), ts)?;
    Ok(result(ty, id, v, WriteKind::Created))
}

/// An update's body must carry the id of the URL.
fn check_body_id(body: &Value, id: &str) -> ApiResult<()> {
    match resource::body_id(body)? {
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
    Ok(())
}

/// Store `body` as the next version of ty/id (update, update-as-create, patch), applying the
/// care rules against the previous content.
fn put(
    conn: &mut DbConn,
    ty: &str,
    id: String,
    mut body: Value,
    cur: Option<Current>,
    method: &str,
) -> ApiResult<WriteResult> {
    prepare_body(conn, ty, Some(&id), &body)?;
    check_body_id(&body, &id)?;
    let prev: Option<Value> = match &cur {
        Some(c) if !c.deleted => c
            .content
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok()),
        _ => None,
    };
    if prev.is_none() {
        return create(conn, ty, id, body, cur.as_ref(), method);
    }
    let ts = next_timestamp(cur.as_ref());
    let effects = crate::care::before_write(ty, prev.as_ref(), &mut body, &format_instant(ts))?;
    let v = write_version(conn, ty, &id, cur.as_ref(), method, Some(body), ts)?;
    let mut r = result(ty, id, v, WriteKind::Updated);
    if effects.cancel_tasks_based_on {
        let status = r
            .resource
            .as_ref()
            .and_then(|b| b.get("status"))
            .and_then(Value::as_str)
            .unwrap_or("closed")
            .to_string();
        r.cancelled_tasks = cancel_tasks_based_on(conn, &r.id, &status)?;
    }
    Ok(r)
}

/// Cancel, through this same write path, every open Task whose basedOn references CarePlan/plan_id.
fn cancel_tasks_based_on(
    conn: &mut DbConn,
    plan_id: &str,
    plan_status: &str,
) -> ApiResult<Vec<String>> {
    // The search index finds the Tasks based on the plan; the parsed basedOn is checked again.
    let ids =
        crate::store::search::find_ids(conn, "Task", &format!("based-on=CarePlan/{plan_id}"))?;
    let rows: Vec<(String, Option<String>)> = crate::store::lookup::load_many(conn, "Task", &ids)?
        .into_iter()
        .map(|r| (r.id, Some(r.content.to_string())))
        .collect();
    let mut cancelled = vec![];
    for (tid, text) in rows {
        let Some(mut task) = text.and_then(|t| serde_json::from_str::<Value>(&t).ok()) else {
            continue;
        };
        if !crate::care::task::cancel_for_closed_plan(&mut task, plan_id, plan_status) {
            continue;
        }
        apply(
            conn,
            "Task",
            Change::Update {
                id: tid.clone(),
                body: task,
                if_match: None,
            },
        )?;
        cancelled.push(format!("Task/{tid}"));
    }
    Ok(cancelled)
}

/// Per-request hooks run inside the write transaction: the access policy check and the
/// AuditEvent stored together with the change (see http::auth).
pub trait WriteHooks {
    /// Refuse the change: `current` is the stored resource (None when absent or deleted),
    /// `new` the incoming body (None for a delete). Runs before If-Match is evaluated.
    fn check(&self, ty: &str, current: Option<&Value>, new: Option<&Value>) -> ApiResult<()>;
    /// The AuditEvent to store in the same transaction, if any.
    fn audit(&self, result: &WriteResult) -> Option<crate::store::audit::Record>;
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

/// Apply one change inside the caller's transaction (server-internal writes need no hooks).
///
/// Within `with_request_hooks` (transaction and batch entries, PATCH, conditional writes) the
/// request's access check applies to every change, including the Tasks a closed CarePlan cancels.
pub fn apply(conn: &mut DbConn, ty: &str, change: Change) -> ApiResult<WriteResult> {
    let hooks = REQUEST_HOOKS.with(|h| h.borrow().clone());
    apply_inner(
        conn,
        ty,
        change,
        hooks.as_deref().map(|h| h as &dyn WriteHooks),
    )
}

/// Shared request hooks (the request's access policy).
pub type SharedHooks = std::sync::Arc<dyn WriteHooks + Send + Sync>;

thread_local! {
    static REQUEST_HOOKS: std::cell::RefCell<Option<SharedHooks>> = const { std::cell::RefCell::new(None) };
}

/// Run `f` with `hooks` checking every `apply` on this thread (the AuditEvent of such a request is
/// written once for the whole request by the security layer).
pub fn with_request_hooks<T>(hooks: SharedHooks, f: impl FnOnce() -> T) -> T {
    let prev = REQUEST_HOOKS.with(|h| h.replace(Some(hooks)));
    struct Restore(Option<SharedHooks>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let p = self.0.take();
            REQUEST_HOOKS.with(|h| *h.borrow_mut() = p);
        }
    }
    let _restore = Restore(prev);
    f()
}

/// Apply one change of a client request: its access check and audit run in this transaction.
pub fn apply_in(
    conn: &mut DbConn,
    ty: &str,
    change: Change,
    hooks: &dyn WriteHooks,
) -> ApiResult<WriteResult> {
    let r = apply_inner(conn, ty, change, Some(hooks))?;
    if let Some(rec) = hooks.audit(&r) {
        // The server's own event (its shape is checked by http::auth::audit's tests).
        crate::store::audit::write(conn, std::slice::from_ref(&rec))?;
    }
    Ok(r)
}

fn apply_inner(
    conn: &mut DbConn,
    ty: &str,
    change: Change,
    hooks: Option<&dyn WriteHooks>,
) -> ApiResult<WriteResult> {
    if ty == crate::store::audit::TYPE {
        return write_audit_event(conn, change);
    }
    if let Some(h) = hooks {
        match &change {
            Change::Create { body } => h.check(ty, None, Some(body))?,
            Change::CreateWithId { id, body } | Change::Update { id, body, .. } => {
                let cur = current_content(conn, ty, id)?;
                h.check(ty, cur.as_ref(), Some(body))?
            }
            Change::Delete { id, .. } => {
                let cur = current_content(conn, ty, id)?;
                h.check(ty, cur.as_ref(), None)?
            }
            // The current content now; the patched content once it is known (below).
            Change::Patch { id, .. } => {
                let cur = current_content(conn, ty, id)?;
                h.check(ty, cur.as_ref(), cur.as_ref())?
            }
        }
    }
    match change {
        Change::Create { body } => {
            let id = uuid::Uuid::new_v4().to_string();
            create(conn, ty, id, body, None, "POST")
        }
        Change::CreateWithId { id, body } => {
            let cur = current(conn, ty, &id)?;
            if cur.as_ref().is_some_and(|c| !c.deleted) {
                return Err(ApiError::Conflict(format!("{ty}/{id} already exists")));
            }
            create(conn, ty, id, body, cur.as_ref(), "POST")
        }
        Change::Update { id, body, if_match } => {
            check_body_id(&body, &id)?;
            let cur = current(conn, ty, &id)?;
            check_if_match(if_match, cur.as_ref(), ty, &id)?;
            put(conn, ty, id, body, cur, "PUT")
        }
        Change::Patch {
            id,
            patch,
            if_match,
        } => {
            let cur = current(conn, ty, &id)?;
            let text = match &cur {
                None => return Err(ApiError::NotFound(format!("{ty}/{id} is not known"))),
                Some(c) if c.deleted => {
                    return Err(ApiError::Gone(format!(
                        "{ty}/{id} was deleted (version {})",
                        c.version_id
                    )))
                }
                Some(c) => c.content.clone().unwrap_or_default(),
            };
            check_if_match(if_match, cur.as_ref(), ty, &id)?;
            let doc: Value = serde_json::from_str(&text)
                .map_err(|e| ApiError::internal(format!("stored {ty}/{id} is not JSON: {e}")))?;
            let patched = crate::fhir::patch::apply(&doc, &patch).map_err(|e| match e {
                crate::fhir::patch::PatchError::Malformed(m) => ApiError::bad_request(m),
                crate::fhir::patch::PatchError::Failed(m) => {
                    ApiError::Unprocessable(vec![crate::fhir::outcome::Issue::error(
                        crate::fhir::outcome::IssueType::Processing,
                        m,
                    )])
                }
            })?;
            if !patched.is_object() {
                return Err(ApiError::Unprocessable(vec![
                    crate::fhir::outcome::Issue::error(
                        crate::fhir::outcome::IssueType::Structure,
                        "the patched document is not a resource",
                    ),
                ]));
            }
            if let Some(h) = hooks {
                h.check(ty, Some(&doc), Some(&patched))?;
            }
            put(conn, ty, id, patched, cur, "PATCH")
        }
        Change::Delete { id, if_match } => {
            let cur = current(conn, ty, &id)?;
            match &cur {
                Some(c) if !c.deleted => {
                    check_if_match(if_match, cur.as_ref(), ty, &id)?;
                    if integrity::current().referential_integrity {
                        integrity::check_not_referenced(conn, ty, &id)?;
                    }
                    let ts = next_timestamp(cur.as_ref());
                    let v = write_version(conn, ty, &id, cur.as_ref(), "DELETE", None, ts)?;
                    Ok(result(ty, id, v, WriteKind::Deleted))
                }
                _ => {
                    let v = (
                        cur.as_ref().map_or(0, |c| c.version_id),
                        cur.as_ref().map_or(0, |c| c.last_updated),
                        None,
                    );
                    Ok(result(ty, id, v, WriteKind::NoChange))
                }
            }
        }
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

/// Create many resources with ids chosen by the caller (bulk import) inside the caller's
/// transaction: the same validation, integrity and care rules as a create through [`apply`], but
/// one bulk INSERT per table for the whole set instead of a few statements per resource.
/// Returns, per item, whether it was created (`false`: a current version already exists and was
/// left alone). Deleted resources are re-created through `apply`. Any error fails the whole set
/// (the caller retries item by item to isolate it).
pub fn create_many(conn: &mut DbConn, items: &[(&str, &str, &Value)]) -> ApiResult<Vec<bool>> {
    // Items may reference each other in any order: check references once all are written.
    integrity::with_deferred_references(conn, |c| create_many_now(c, items))
}

fn create_many_now(conn: &mut DbConn, items: &[(&str, &str, &Value)]) -> ApiResult<Vec<bool>> {
    use crate::store::sql::{bulk_insert, execute, load, Column, Sql};
    let mut present: std::collections::HashMap<(String, String), bool> = Default::default();
    for chunk in items.chunks(500) {
        let mut q = Sql::new();
        let ids: Vec<String> = chunk.iter().map(|(_, id, _)| id.to_string()).collect();
        q.push("SELECT res_type, res_id, deleted FROM resources WHERE res_id IN ")
            .text_list(&ids);
        let rows: Vec<PresentRow> = load(conn, &q).map_err(db_error)?;
        for r in rows {
            present.insert((r.res_type, r.res_id), r.deleted);
        }
    }
    let ts = now_micros();
    let stamp_time = format_instant(ts);
    let mut created = Vec::with_capacity(items.len());
    let mut fresh: Vec<(&str, &str, Value)> = Vec::new();
    for (ty, id, body) in items {
        if *ty == crate::store::audit::TYPE {
            let new = !crate::store::audit::exists(conn, id)?;
            if new {
                check_body_id(body, id)?;
                store_audit_event(conn, Some(id.to_string()), (*body).clone())?;
            }
            created.push(new);
            continue;
        }
        match present.get(&(ty.to_string(), id.to_string())) {
            Some(false) => created.push(false),
            Some(true) => {
                apply(
                    conn,
                    ty,
                    Change::Update {
                        id: id.to_string(),
                        body: (*body).clone(),
                        if_match: None,
                    },
                )?;
                created.push(true);
            }
            None => {
                check_body_id(body, id)?;
                prepare_body(conn, ty, Some(id), body)?;
                let mut b = (*body).clone();
                crate::care::before_write(ty, None, &mut b, &stamp_time)?;
                fresh.push((ty, id, resource::stamp(b, id, 1, ts)));
                created.push(true);
            }
        }
    }
    if fresh.is_empty() {
        return Ok(created);
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
            columns.push(Column::Text(vec![Some("PUT".to_string()); n]));
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
    for (ty, id, v) in &fresh {
        let pk = keys
            .get(&(ty.to_string(), id.to_string()))
            .ok_or_else(|| ApiError::internal("bulk create: inserted rows do not match"))?;
        by_type.entry(ty).or_default().push((*pk, v));
    }
    for (ty, rows) in by_type {
        crate::store::index::insert_index_bulk(conn, ty, &rows)?;
    }
    Ok(created)
}

/// AuditEvents (the audit trail, store::audit) can be created (by the server, or by an import)
/// but never changed.
fn write_audit_event(conn: &mut DbConn, change: Change) -> ApiResult<WriteResult> {
    let (id, body) = match change {
        Change::Create { body } => (None, body),
        Change::CreateWithId { id, body } => {
            if crate::store::audit::exists(conn, &id)? {
                return Err(ApiError::Conflict(format!(
                    "AuditEvent/{id} already exists"
                )));
            }
            (Some(id), body)
        }
        _ => {
            return Err(ApiError::MethodNotAllowed(
                "AuditEvents are part of the audit trail and can never be changed or deleted"
                    .into(),
            ))
        }
    };
    store_audit_event(conn, id, body)
}

/// Validate and store a new AuditEvent (a new id for None; the caller checked a given one).
fn store_audit_event(conn: &mut DbConn, id: Option<String>, body: Value) -> ApiResult<WriteResult> {
    resource::check_resource_type(&body, Some(crate::store::audit::TYPE))?;
    integrity::validate_for_write(&body, &integrity::current())?;
    let now = now_micros();
    let stored = crate::store::audit::insert(conn, vec![(id, body, now)])?
        .pop()
        .ok_or_else(|| ApiError::internal("audit insert returned nothing"))?;
    let id = stored["id"].as_str().unwrap_or_default().to_string();
    Ok(result(
        crate::store::audit::TYPE,
        id,
        (1, now, Some(stored)),
        WriteKind::Created,
    ))
}

impl Store {
    /// Run `f` in one write transaction (SQLite: under the writer lock), retrying a few times
    /// when a concurrent writer got there first.
    pub fn write_tx<T>(&self, mut f: impl FnMut(&mut DbConn) -> ApiResult<T>) -> ApiResult<T> {
        let _guard = self.writer_guard();
        let mut conn = self.conn()?;
        let mut attempt = 0;
        loop {
            let r = integrity::with_policy(&self.policy, || {
                conn.transaction::<T, TxError, _>(|c| f(c).map_err(TxError::Api))
            });
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
