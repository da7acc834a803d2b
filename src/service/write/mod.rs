//! The one write unit of work. Every write — create, update, PATCH, delete, their conditional
//! forms, transaction and batch entries, import, cascade delete, and the Tasks a closed
//! CarePlan cancels — goes through [`UnitOfWork::apply`] inside one database transaction:
//! lock the current row → check access on it → If-Match → validate (R4 definitions, ICM
//! profiles) → care rules → referential integrity (now, or deferred to the end of a
//! transaction) → store the version with its history and index rows → (AuditEvent).
//! The unit carries the connection, the request context, the write policy and the deferred
//! reference checks as one explicit value; nothing travels in globals.
pub mod conditional;
pub mod effects;
pub mod integrity;
pub mod stratify;

use serde_json::Value;

use super::context::RequestContext;
use crate::config::WritePolicy;
use crate::error::{ApiError, ApiResult};
use crate::fhir::datetime::{format_instant, now_micros};
use crate::fhir::outcome::{Issue, IssueType};
use crate::fhir::patch::{PatchError, PatchFormat};
use crate::fhir::resource;
use crate::fhir::validate::LocalRef;
use crate::store::visibility::Everything;
use crate::store::write::{self as persist, Current, WriteKind, WriteResult};
use crate::store::{audit, DbConn, Store};

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
    /// PATCH: a JSON Patch, JSON Merge Patch or FHIRPath Patch applied to the current
    /// version, then stored like an update.
    Patch {
        id: String,
        patch: Value,
        if_match: Option<i64>,
        format: PatchFormat,
    },
    /// DELETE: idempotent.
    Delete { id: String, if_match: Option<i64> },
}

/// References of written resources whose check waits for the end of the transaction:
/// (type, own id, references).
type Deferred = Vec<(String, Option<String>, Vec<LocalRef>)>;

/// One database transaction's worth of writes for one request.
pub struct UnitOfWork<'a> {
    conn: &'a mut DbConn,
    pub ctx: &'a RequestContext,
    policy: WritePolicy,
    deferred: Option<Deferred>,
    /// The Subscriptions registered per resource type, read once per unit of work (a bulk
    /// import writes thousands of resources in one unit; the registry changes only when a
    /// Subscription is written, which clears it).
    subscriptions: std::collections::HashMap<
        String,
        std::rc::Rc<Vec<crate::store::subscriptions::Registered>>,
    >,
}

/// Run `f` as one unit of work in one write transaction (retried as a whole when a concurrent
/// writer got there first).
pub fn run<T>(
    store: &Store,
    ctx: &RequestContext,
    mut f: impl FnMut(&mut UnitOfWork) -> ApiResult<T>,
) -> ApiResult<T> {
    let r = store.write_tx(|conn| f(&mut UnitOfWork::new(conn, ctx)))?;
    // The caller's next reads must see this write (read replicas).
    store.note_write(&ctx.reader_key());
    Ok(r)
}

/// One change of a request in its own transaction, the request's AuditEvent stored with it.
pub fn one(
    store: &Store,
    ctx: &RequestContext,
    ty: &str,
    change: Change,
) -> ApiResult<WriteResult> {
    let r = run(store, ctx, |u| {
        let r = u.apply(ty, change.clone())?;
        u.audit_write(&r)?;
        Ok(r)
    })?;
    ctx.mark_audited();
    Ok(r)
}

/// An update's body must carry the id of the URL.
fn check_body_id(body: &Value, id: &str) -> ApiResult<()> {
    match resource::body_id(body)? {
        None => Err(ApiError::invalid_at(
            "the resource in an update must carry an id equal to the id in the URL",
            "id",
        )),
        Some(bid) if bid != id => Err(ApiError::invalid_at(
            format!("resource id '{bid}' does not match the id '{id}' in the URL"),
            "id",
        )),
        Some(_) => Ok(()),
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

fn not_known(ty: &str, id: &str) -> ApiError {
    ApiError::NotFound(format!("{ty}/{id} is not known"))
}

impl<'a> UnitOfWork<'a> {
    pub fn new(conn: &'a mut DbConn, ctx: &'a RequestContext) -> UnitOfWork<'a> {
        UnitOfWork {
            conn,
            ctx,
            policy: ctx.policy.clone(),
            deferred: None,
            subscriptions: Default::default(),
        }
    }

    /// The transaction's connection (for reads inside the unit).
    pub fn conn(&mut self) -> &mut DbConn {
        self.conn
    }

    /// Store the AuditEvent of a single-write request in this transaction.
    pub fn audit_write(&mut self, r: &WriteResult) -> ApiResult<()> {
        if let Some(rec) = self.ctx.audit_record(Some(r)) {
            audit::write(self.conn, std::slice::from_ref(&rec))?;
        }
        Ok(())
    }

    /// Store the AuditEvent of a multi-write request (a transaction Bundle) in this transaction.
    pub fn audit_request(&mut self) -> ApiResult<()> {
        if let Some(rec) = self.ctx.audit_record(None) {
            audit::write(self.conn, std::slice::from_ref(&rec))?;
        }
        Ok(())
    }

    /// Apply one change.
    pub fn apply(&mut self, ty: &str, change: Change) -> ApiResult<WriteResult> {
        if audit::is_audit_log(ty) {
            return self.write_audit_event(change);
        }
        // The body's type first: the access check reads it as that type.
        if let Change::Create { body }
        | Change::CreateWithId { body, .. }
        | Change::Update { body, .. } = &change
        {
            resource::check_resource_type(body, Some(ty))?;
        }
        match change {
            Change::Create { body } => {
                self.ctx.check_write(ty, None, Some(&body))?;
                let id = uuid::Uuid::new_v4().to_string();
                self.create(ty, id, body, None, "POST")
            }
            Change::CreateWithId { id, body } => {
                self.ctx.check_write(ty, None, Some(&body))?;
                let cur = persist::current(self.conn, ty, &id)?;
                if cur.as_ref().is_some_and(|c| !c.deleted) {
                    return Err(ApiError::Conflict(format!("{ty}/{id} already exists")));
                }
                self.create(ty, id, body, cur.as_ref(), "POST")
            }
            Change::Update { id, body, if_match } => {
                check_body_id(&body, &id)?;
                let cur = persist::current(self.conn, ty, &id)?;
                let prev = cur.as_ref().and_then(Current::resource);
                // Access first (on the locked row), so If-Match reveals nothing: a resource the
                // caller may not see is not known to it.
                if prev.as_ref().is_some_and(|p| !self.ctx.may_see(ty, p)) {
                    return Err(not_known(ty, &id));
                }
                self.ctx.check_write(ty, prev.as_ref(), Some(&body))?;
                check_if_match(if_match, cur.as_ref(), ty, &id)?;
                self.put(ty, id, body, cur, "PUT")
            }
            Change::Patch {
                id,
                patch,
                if_match,
                format,
            } => {
                let cur = persist::current(self.conn, ty, &id)?;
                let doc = match &cur {
                    None => return Err(not_known(ty, &id)),
                    Some(c) if c.deleted => {
                        if self.ctx.restricted() {
                            return Err(not_known(ty, &id));
                        }
                        return Err(ApiError::Gone(format!(
                            "{ty}/{id} was deleted (version {})",
                            c.version_id
                        )));
                    }
                    Some(c) => c.resource().ok_or_else(|| {
                        ApiError::internal(format!("stored {ty}/{id} is not JSON"))
                    })?,
                };
                // A patch applies to the resource as read (a cohort's members included).
                let mut doc = doc;
                crate::store::members::fill_value(self.conn, ty, &mut doc)?;
                if !self.ctx.may_see(ty, &doc) {
                    return Err(not_known(ty, &id));
                }
                self.ctx.check_write(ty, Some(&doc), Some(&doc))?;
                check_if_match(if_match, cur.as_ref(), ty, &id)?;
                let patched = format.apply(&doc, &patch).map_err(|e| match e {
                    PatchError::Malformed(m) => ApiError::bad_request(m),
                    PatchError::Failed(m) => {
                        ApiError::Unprocessable(vec![Issue::error(IssueType::Processing, m)])
                    }
                })?;
                if !patched.is_object() {
                    return Err(ApiError::Unprocessable(vec![Issue::error(
                        IssueType::Structure,
                        "the patched document is not a resource",
                    )]));
                }
                self.ctx.check_write(ty, Some(&doc), Some(&patched))?;
                self.put(ty, id, patched, cur, "PATCH")
            }
            Change::Delete { id, if_match } => {
                let cur = persist::current(self.conn, ty, &id)?;
                // A resource the caller may not see is deleted as if it were not there.
                match cur.as_ref().and_then(Current::resource) {
                    Some(res) if self.ctx.may_see(ty, &res) => {
                        self.ctx.check_write(ty, Some(&res), None)?;
                        check_if_match(if_match, cur.as_ref(), ty, &id)?;
                        if self.policy.referential_integrity {
                            self.check_not_referenced(ty, &id)?;
                        }
                        let ts = persist::next_timestamp(cur.as_ref());
                        let v = persist::write_version(
                            self.conn,
                            ty,
                            &id,
                            cur.as_ref(),
                            "DELETE",
                            None,
                            ts,
                        )?;
                        if ty == "Group" && crate::care::cohort::is_cohort_id(&id) {
                            crate::store::members::replace(self.conn, &id, &[])?;
                        }
                        Ok(persist::result(ty, id, v, WriteKind::Deleted))
                    }
                    // To a caller bound to patients, anything it cannot see — outside its
                    // access, deleted, or never there — is not known (so no answer differs).
                    Some(_) => Err(not_known(ty, &id)),
                    None if self.ctx.restricted() => Err(not_known(ty, &id)),
                    None => {
                        let v = match &cur {
                            Some(c) => (c.version_id, c.last_updated, None),
                            None => (0, 0, None),
                        };
                        Ok(persist::result(ty, id, v, WriteKind::NoChange))
                    }
                }
            }
        }
    }

    /// Validate a body for storage under `ty`: shape, id, the R4 definitions and ICM profiles
    /// (422 with every problem), then referential integrity (now, or at the end of the
    /// transaction when checks are deferred).
    fn prepare_body(&mut self, ty: &str, own_id: Option<&str>, body: &Value) -> ApiResult<()> {
        resource::check_resource_type(body, Some(ty))?;
        resource::body_id(body)?;
        let refs = integrity::validate_for_write(body, &self.policy)?;
        if self.policy.referential_integrity {
            match &mut self.deferred {
                Some(list) => {
                    if !refs.is_empty() {
                        list.push((ty.to_string(), own_id.map(str::to_string), refs));
                    }
                }
                None => self.check_references((ty, own_id), &refs)?,
            }
        }
        Ok(())
    }

    /// A new resource with a known id (no current row, or a deleted one being re-created).
    fn create(
        &mut self,
        ty: &str,
        id: String,
        mut body: Value,
        prev: Option<&Current>,
        method: &str,
    ) -> ApiResult<WriteResult> {
        self.prepare_body(ty, Some(&id), &body)?;
        let ts = persist::next_timestamp(prev);
        crate::care::before_write(ty, None, &mut body, &format_instant(ts))?;
        let members = self.cohort_members(ty, &id, &mut body);
        let v = persist::write_version(self.conn, ty, &id, prev, method, Some(body), ts)?;
        self.store_members(&id, members)?;
        let r = persist::result(ty, id, v, WriteKind::Created);
        self.after_write(ty, None, &r)?;
        Ok(r)
    }

    /// Store `body` as the next version of ty/id (update, update-as-create, patch), applying the
    /// care rules against the previous content.
    fn put(
        &mut self,
        ty: &str,
        id: String,
        mut body: Value,
        cur: Option<Current>,
        method: &str,
    ) -> ApiResult<WriteResult> {
        self.prepare_body(ty, Some(&id), &body)?;
        check_body_id(&body, &id)?;
        let Some(prev) = cur.as_ref().and_then(Current::resource) else {
            return self.create(ty, id, body, cur.as_ref(), method);
        };
        let ts = persist::next_timestamp(cur.as_ref());
        let effects = crate::care::before_write(ty, Some(&prev), &mut body, &format_instant(ts))?;
        let members = self.cohort_members(ty, &id, &mut body);
        let v = persist::write_version(self.conn, ty, &id, cur.as_ref(), method, Some(body), ts)?;
        self.store_members(&id, members)?;
        let mut r = persist::result(ty, id, v, WriteKind::Updated);
        if effects.cancel_tasks_based_on {
            let status = r
                .resource
                .as_ref()
                .and_then(|b| b.get("status"))
                .and_then(Value::as_str)
                .unwrap_or("closed")
                .to_string();
            r.cancelled_tasks = self.cancel_tasks_based_on(&r.id, &status)?;
        }
        self.after_write(ty, Some(&prev), &r)?;
        Ok(r)
    }

    /// A program cohort Group (care::cohort) keeps its members as rows, not in its stored JSON:
    /// take `member` out of the body. A client's write (or an import) of the whole Group
    /// replaces the rows with the members it lists (returned, to store after the version, and
    /// `quantity` counts them); the server's own writes (effects::move_members) change the rows
    /// themselves and leave them alone here (None).
    fn cohort_members(
        &self,
        ty: &str,
        id: &str,
        body: &mut Value,
    ) -> Option<Vec<crate::store::members::Member>> {
        if ty != "Group" || !crate::care::cohort::is_cohort_id(id) {
            return None;
        }
        let listed = crate::care::cohort::members_of(body);
        if let Some(o) = body.as_object_mut() {
            o.remove("member");
        }
        if std::ptr::eq(self.ctx, effects::server()) {
            return None;
        }
        let active = listed.iter().filter(|(_, m)| !m.inactive).count();
        body["quantity"] = serde_json::json!(active);
        Some(
            listed
                .into_iter()
                .map(|(p, m)| crate::store::members::Member {
                    patient_id: p,
                    inactive: m.inactive,
                    period_start: m.start,
                    period_end: m.end,
                })
                .collect(),
        )
    }

    /// Store the member rows [`Self::cohort_members`] took from a written body.
    fn store_members(
        &mut self,
        id: &str,
        members: Option<Vec<crate::store::members::Member>>,
    ) -> ApiResult<()> {
        match members {
            Some(m) => crate::store::members::replace(self.conn, id, &m),
            None => Ok(()),
        }
    }

    /// Cancel, through this same unit of work (with the request's access check), every open
    /// Task whose basedOn references CarePlan/plan_id.
    fn cancel_tasks_based_on(
        &mut self,
        plan_id: &str,
        plan_status: &str,
    ) -> ApiResult<Vec<String>> {
        // Every such Task, visible or not: a closed plan leaves none open (a Task outside the
        // caller's access fails the write with the plain 403).
        let ids = crate::store::search::find_ids(
            self.conn,
            "Task",
            &format!("based-on=CarePlan/{plan_id}"),
            &Everything,
        )?;
        let rows = crate::store::lookup::load_many(self.conn, &Everything, "Task", &ids)?;
        let mut cancelled = vec![];
        for row in rows {
            let mut task = row.content;
            if !crate::care::task::cancel_for_closed_plan(&mut task, plan_id, plan_status) {
                continue;
            }
            if !self.ctx.may_see("Task", &task) {
                return Err(super::context::outside_access());
            }
            self.apply(
                "Task",
                Change::Update {
                    id: row.id.clone(),
                    body: task,
                    if_match: None,
                },
            )?;
            cancelled.push(format!("Task/{}", row.id));
        }
        Ok(cancelled)
    }

    /// Run `f` (every entry of a transaction, or an import batch) with reference checks
    /// deferred to its end: entries may reference each other in any order, so the references
    /// of all written resources are checked once all of them exist, in the same transaction.
    pub fn with_deferred_references<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> ApiResult<T>,
    ) -> ApiResult<T> {
        let outer = self.deferred.replace(Vec::new());
        let r = f(self);
        let collected = std::mem::replace(&mut self.deferred, outer).unwrap_or_default();
        let v = r?;
        // Every target is looked up once, however many resources refer to it (a Synthea
        // history refers to its Patient thousands of times): at the end nothing changes them.
        let mut known = std::collections::HashMap::new();
        for (ty, own, refs) in &collected {
            self.check_references_with((ty, own.as_deref()), refs, &mut known)?;
        }
        Ok(v)
    }

    /// Create new resources with ids the server chose (the POST entries of a transaction): the
    /// same checks, care rules and effects as [`UnitOfWork::apply`] with
    /// [`Change::CreateWithId`], item by item, but stored with one bulk INSERT per table, at
    /// lastUpdated `ts`. On failure, the position of the item that failed and why.
    pub fn create_batch(
        &mut self,
        items: Vec<(String, String, Value)>,
        ts: i64,
    ) -> Result<Vec<WriteResult>, (usize, ApiError)> {
        let keys: Vec<(&str, &str)> = items
            .iter()
            .map(|(t, i, _)| (t.as_str(), i.as_str()))
            .collect();
        let present = persist::present(self.conn, &keys).map_err(|e| (0, e))?;
        let stamp_time = format_instant(ts);
        // Each item either joins the bulk insert or (AuditEvent, a re-created deleted id) goes
        // through `apply` on its own.
        let mut out: Vec<Option<WriteResult>> = Vec::with_capacity(items.len());
        let mut fresh: Vec<(usize, String, String, Value)> = Vec::new();
        for (n, (ty, id, body)) in items.into_iter().enumerate() {
            let single =
                audit::is_audit_log(&ty) || present.contains_key(&(ty.clone(), id.clone()));
            if single {
                let r = self
                    .apply(&ty, Change::CreateWithId { id, body })
                    .map_err(|e| (n, e))?;
                out.push(Some(r));
                continue;
            }
            let stamped = (|| {
                resource::check_resource_type(&body, Some(&ty))?;
                self.ctx.check_write(&ty, None, Some(&body))?;
                self.prepare_body(&ty, Some(&id), &body)?;
                let mut b = body;
                crate::care::before_write(&ty, None, &mut b, &stamp_time)?;
                Ok(resource::stamp(b, &id, 1, ts))
            })()
            .map_err(|e: ApiError| (n, e))?;
            fresh.push((n, ty, id, stamped));
            out.push(None);
        }
        let rows: Vec<(&str, &str, &Value)> = fresh
            .iter()
            .map(|(_, t, i, v)| (t.as_str(), i.as_str(), v))
            .collect();
        persist::insert_new(self.conn, &rows, ts, "POST").map_err(|e| (0, e))?;
        drop(rows);
        for (n, ty, id, v) in fresh {
            let r = persist::result(&ty, id, (1, ts, Some(v)), WriteKind::Created);
            self.after_write(&ty, None, &r).map_err(|e| (n, e))?;
            out[n] = Some(r);
        }
        Ok(out
            .into_iter()
            .map(|r| r.expect("every item written"))
            .collect())
    }

    /// Delete `ty/id` and, first, every current resource that refers to it (recursively).
    /// Only for unrestricted callers when the policy allows cascading deletes.
    pub fn cascade_delete(
        &mut self,
        ty: &str,
        id: &str,
        if_match: Option<i64>,
    ) -> ApiResult<WriteResult> {
        if self.ctx.restricted() {
            return Err(ApiError::Forbidden(
                "_cascade=delete needs unrestricted access (an admin or system/ token)".into(),
            ));
        }
        let mut stack = vec![(ty.to_string(), id.to_string())];
        let mut order: Vec<(String, String)> = Vec::new();
        while let Some(t) = stack.pop() {
            if order.contains(&t) || order.len() > 1000 {
                continue;
            }
            let found = crate::store::references::referrers(self.conn, self.ctx, &t.0, &t.1, 1000)?;
            for r in found.visible {
                if !order.contains(&r) {
                    stack.push(r);
                }
            }
            order.push(t);
        }
        // Delete the referrers (deepest last found first), then the target. References between
        // resources that are all being deleted do not block: integrity is checked per delete,
        // so delete without it and check nothing is left at the end.
        let saved = self.policy.referential_integrity;
        self.policy.referential_integrity = false;
        let r = (|| {
            for (t, i) in order.iter().skip(1).rev() {
                self.apply(
                    t,
                    Change::Delete {
                        id: i.clone(),
                        if_match: None,
                    },
                )?;
            }
            self.apply(
                ty,
                Change::Delete {
                    id: id.to_string(),
                    if_match,
                },
            )
        })();
        self.policy.referential_integrity = saved;
        let r = r?;
        self.check_not_referenced(ty, id)?;
        Ok(r)
    }

    /// Create many resources with ids chosen by the caller (bulk import): the same access,
    /// validation, integrity and care rules as [`UnitOfWork::apply`], but one bulk INSERT per
    /// table for the whole set. Returns, per item, whether it was created (`false`: a current
    /// version already exists and was left alone). Deleted resources are re-created through
    /// `apply`. Any error fails the whole set (the caller retries item by item to isolate it).
    pub fn create_many(&mut self, items: &[(&str, &str, &Value)]) -> ApiResult<Vec<bool>> {
        self.with_deferred_references(|u| u.create_many_now(items))
    }

    fn create_many_now(&mut self, items: &[(&str, &str, &Value)]) -> ApiResult<Vec<bool>> {
        let keys: Vec<(&str, &str)> = items.iter().map(|(t, i, _)| (*t, *i)).collect();
        let present = persist::present(self.conn, &keys)?;
        let ts = now_micros();
        let stamp_time = format_instant(ts);
        let mut created = Vec::with_capacity(items.len());
        let mut fresh: Vec<(&str, &str, Value)> = Vec::new();
        for (ty, id, body) in items {
            if audit::is_audit_log(ty) {
                let new = !audit::exists(self.conn, id)?;
                if new {
                    check_body_id(body, id)?;
                    self.store_audit_event(Some(id.to_string()), (*body).clone())?;
                }
                created.push(new);
                continue;
            }
            // A cohort Group keeps its members as rows: the ordinary path stores them.
            let single = *ty == "Group" && crate::care::cohort::is_cohort_id(id);
            match present.get(&(ty.to_string(), id.to_string())) {
                Some(false) => created.push(false),
                Some(true) => {
                    self.apply(
                        ty,
                        Change::Update {
                            id: id.to_string(),
                            body: (*body).clone(),
                            if_match: None,
                        },
                    )?;
                    created.push(true);
                }
                None if single => {
                    self.apply(
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
                    self.ctx.check_write(ty, None, Some(body))?;
                    self.prepare_body(ty, Some(id), body)?;
                    let mut b = (*body).clone();
                    crate::care::before_write(ty, None, &mut b, &stamp_time)?;
                    fresh.push((ty, id, resource::stamp(b, id, 1, ts)));
                    created.push(true);
                }
            }
        }
        let rows: Vec<(&str, &str, &Value)> = fresh.iter().map(|(t, i, v)| (*t, *i, v)).collect();
        persist::insert_new(self.conn, &rows, ts, "PUT")?;
        // The program's effects hold for imported resources too (scoring, transitions, risk);
        // the cohort Groups of the enrollments once for the whole set.
        let episodes: Vec<&Value> = fresh
            .iter()
            .filter(|(t, _, _)| *t == "EpisodeOfCare")
            .map(|(_, _, v)| v)
            .collect();
        if !episodes.is_empty() {
            let changes: Vec<(Option<&Value>, Option<&Value>)> =
                episodes.iter().map(|v| (None, Some(*v))).collect();
            self.as_server(|u| u.cohorts(&changes))?;
        }
        for (ty, id, v) in fresh {
            if ty == "EpisodeOfCare" {
                continue;
            }
            let r = persist::result(ty, id.to_string(), (1, ts, Some(v)), WriteKind::Created);
            self.after_write(ty, None, &r)?;
        }
        Ok(created)
    }

    /// AuditEvents (the audit trail, store::audit) are written by the server: through a unit of
    /// work only by server-internal work (import), created but never changed.
    fn write_audit_event(&mut self, change: Change) -> ApiResult<WriteResult> {
        if !self.ctx.is_internal() {
            return Err(ApiError::Forbidden(
                "AuditEvents are written by the server only and can never be changed".into(),
            ));
        }
        let (id, body) =
            match change {
                Change::Create { body } => (None, body),
                Change::CreateWithId { id, body } => {
                    if audit::exists(self.conn, &id)? {
                        return Err(ApiError::Conflict(format!(
                            "AuditEvent/{id} already exists"
                        )));
                    }
                    (Some(id), body)
                }
                _ => return Err(ApiError::MethodNotAllowed(
                    "AuditEvents are part of the audit trail and can never be changed or deleted"
                        .into(),
                )),
            };
        self.store_audit_event(id, body)
    }

    /// Validate and store a new AuditEvent (a new id for None; the caller checked a given one).
    fn store_audit_event(&mut self, id: Option<String>, body: Value) -> ApiResult<WriteResult> {
        resource::check_resource_type(&body, Some(audit::TYPE))?;
        integrity::validate_for_write(&body, &self.policy)?;
        let now = now_micros();
        let stored = audit::insert(self.conn, vec![(id, body, now)])?
            .pop()
            .ok_or_else(|| ApiError::internal("audit insert returned nothing"))?;
        let id = stored["id"].as_str().unwrap_or_default().to_string();
        Ok(persist::result(
            audit::TYPE,
            id,
            (1, now, Some(stored)),
            WriteKind::Created,
        ))
    }
}
