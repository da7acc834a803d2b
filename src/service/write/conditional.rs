//! Conditional writes — create (If-None-Exist), update (PUT ?criteria), delete (DELETE
//! ?criteria) and patch (PATCH ?criteria, or a Bundle PATCH entry with criteria) — inside a
//! unit of work. Criteria
//! are resolved by the search engine within the caller's access, so the answer never depends
//! on data the caller may not see, with one exception written down in ARCHITECTURE.md: when the
//! only matches lie outside the caller's access, a conditional create or update is refused with
//! the plain 403 (creating would make a duplicate the caller cannot know about).
use serde_json::Value;

use super::{Change, UnitOfWork};
use crate::error::{ApiError, ApiResult};
use crate::fhir::patch::PatchFormat;
use crate::service::context::outside_access;
use crate::service::search::criteria_ids;
use crate::store::lookup::lock_criteria;
use crate::store::visibility::Everything;
use crate::store::write::{WriteKind, WriteResult};

/// What a conditional create did.
pub enum Created {
    Written(WriteResult),
    /// One visible resource matched: nothing was created.
    Existing {
        ty: String,
        id: String,
    },
}

impl UnitOfWork<'_> {
    /// The visible matches of criteria; when there are none, whether hidden ones exist.
    fn resolve(&mut self, ty: &str, criteria: &str) -> ApiResult<(Vec<String>, bool)> {
        let ctx = self.ctx;
        let visible = criteria_ids(self.conn(), ctx, ty, criteria)?;
        let hidden = visible.is_empty()
            && ctx.restricted()
            && !criteria_ids(self.conn(), &Everything, ty, criteria)?.is_empty();
        Ok((visible, hidden))
    }

    /// At most one visible match (412 for more).
    fn single(&mut self, ty: &str, criteria: &str) -> ApiResult<(Option<String>, bool)> {
        let (ids, hidden) = self.resolve(ty, criteria)?;
        match ids.len() {
            0 | 1 => Ok((ids.into_iter().next(), hidden)),
            n => Err(ApiError::PreconditionFailed(format!(
                "{n} {ty} resources match '{criteria}'; the criteria must select at most one"
            ))),
        }
    }

    /// Conditional create: one visible match → that resource, none → create with `id`,
    /// more → 412; matches only outside the caller's access → 403.
    pub fn conditional_create(
        &mut self,
        ty: &str,
        criteria: &str,
        id: String,
        body: Value,
    ) -> ApiResult<Created> {
        lock_criteria(self.conn(), ty, criteria)?;
        match self.single(ty, criteria)? {
            (Some(existing), _) => Ok(Created::Existing {
                ty: ty.to_string(),
                id: existing,
            }),
            (None, true) => Err(outside_access()),
            (None, false) => Ok(Created::Written(
                self.apply(ty, Change::CreateWithId { id, body })?,
            )),
        }
    }

    /// The existing match of a conditional create in a transaction, resolved before any entry
    /// is written (None: the entry creates).
    pub fn conditional_match(&mut self, ty: &str, criteria: &str) -> ApiResult<Option<String>> {
        lock_criteria(self.conn(), ty, criteria)?;
        match self.single(ty, criteria)? {
            (None, true) => Err(outside_access()),
            (found, _) => Ok(found),
        }
    }

    /// Conditional update: one visible match → update it, none → create (the body's id or a
    /// new one), more → 412; matches only outside the caller's access → 403.
    pub fn conditional_update(
        &mut self,
        ty: &str,
        criteria: &str,
        mut body: Value,
        if_match: Option<i64>,
    ) -> ApiResult<WriteResult> {
        lock_criteria(self.conn(), ty, criteria)?;
        let body_id = crate::fhir::resource::body_id(&body)?.map(str::to_string);
        match self.single(ty, criteria)? {
            (Some(id), _) => {
                if body_id.as_ref().is_some_and(|b| *b != id) {
                    return Err(ApiError::invalid_at(
                        format!(
                            "the resource id '{}' differs from the matching {ty}/{id}",
                            body_id.unwrap_or_default()
                        ),
                        "id",
                    ));
                }
                body["id"] = Value::String(id.clone());
                self.apply(ty, Change::Update { id, body, if_match })
            }
            (None, true) => Err(outside_access()),
            (None, false) => match body_id {
                Some(id) => self.apply(ty, Change::Update { id, body, if_match }),
                None => self.apply(ty, Change::Create { body }),
            },
        }
    }

    /// Conditional delete: every visible match is deleted (none → nothing to do; this server
    /// supports `conditionalDelete: multiple`).
    pub fn conditional_delete(&mut self, ty: &str, criteria: &str) -> ApiResult<Vec<WriteResult>> {
        lock_criteria(self.conn(), ty, criteria)?;
        let ctx = self.ctx;
        let ids = criteria_ids(self.conn(), ctx, ty, criteria)?;
        ids.into_iter()
            .map(|id| self.apply(ty, Change::Delete { id, if_match: None }))
            .collect()
    }

    /// Conditional patch: the one visible match is patched; none (or only matches outside the
    /// caller's access) → 404, more → 412.
    pub fn conditional_patch(
        &mut self,
        ty: &str,
        criteria: &str,
        patch: Value,
        format: PatchFormat,
        if_match: Option<i64>,
    ) -> ApiResult<WriteResult> {
        let id = self
            .single(ty, criteria)?
            .0
            .ok_or_else(|| ApiError::NotFound(format!("no {ty} matches '{criteria}'")))?;
        self.apply(
            ty,
            Change::Patch {
                id,
                patch,
                if_match,
                format,
            },
        )
    }
}

/// The result of a conditional delete that matched nothing.
pub fn nothing_deleted(ty: &str) -> WriteResult {
    WriteResult {
        ty: ty.to_string(),
        id: String::new(),
        version: 0,
        last_updated: 0,
        resource: None,
        kind: WriteKind::NoChange,
        cancelled_tasks: vec![],
    }
}
