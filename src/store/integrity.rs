//! Rules of the write path beyond the resource itself: validation policy (which ICM profiles are
//! enforced) and referential integrity of local references (targets exist; no dangling deletes).
use std::cell::RefCell;

use diesel::prelude::*;

use crate::error::{ApiError, ApiResult};
use crate::fhir::outcome::{Issue, IssueType};
use crate::fhir::validate::{self, LocalRef};
use crate::store::backend::{db_error, DbConn};
use crate::store::schema::resources;
use crate::store::sql::{load, Sql};

/// Validation and integrity rules, from the configuration.
#[derive(Debug, Clone)]
pub struct WritePolicy {
    /// Local references must resolve (create/update) and stay resolvable (delete).
    pub referential_integrity: bool,
    /// Types whose ICM profile is enforced on every write.
    pub enforce_profiles: Vec<String>,
    /// `DELETE ?_cascade=delete` may delete the referrers too.
    pub allow_cascade_delete: bool,
}

impl Default for WritePolicy {
    fn default() -> Self {
        WritePolicy {
            referential_integrity: true,
            enforce_profiles: Vec::new(),
            allow_cascade_delete: false,
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<WritePolicy>> = const { RefCell::new(None) };
}

/// Run `f` with `policy` as the policy of the write path on this thread (set by `Store::write_tx`,
/// so `write::apply` keeps its signature for every caller).
pub fn with_policy<T>(policy: &WritePolicy, f: impl FnOnce() -> T) -> T {
    let prev = CURRENT.with(|c| c.replace(Some(policy.clone())));
    struct Restore(Option<WritePolicy>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let p = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = p);
        }
    }
    let _restore = Restore(prev);
    f()
}

/// References collected while checks are deferred: (type, own id, references).
type Deferred = Vec<(String, Option<String>, Vec<LocalRef>)>;

thread_local! {
    static DEFERRED: RefCell<Option<Deferred>> = const { RefCell::new(None) };
}

/// Run `f` (every entry of a transaction) with reference checks deferred to its end: entries of
/// one transaction may reference each other in any order, so the references of all written
/// resources are checked once all of them exist, still inside the same database transaction.
pub fn with_deferred_references<T>(
    conn: &mut DbConn,
    f: impl FnOnce(&mut DbConn) -> ApiResult<T>,
) -> ApiResult<T> {
    let outer = DEFERRED.with(|d| d.replace(Some(Vec::new())));
    let r = f(conn);
    let collected = DEFERRED.with(|d| d.replace(outer)).unwrap_or_default();
    let v = r?;
    for (ty, own, refs) in &collected {
        check_references(conn, (ty, own.as_deref()), refs)?;
    }
    Ok(v)
}

/// Queue a resource's references for the end of the transaction when checks are deferred;
/// false when they must be checked now.
pub fn defer_references(ty: &str, own: Option<&str>, refs: &[LocalRef]) -> bool {
    DEFERRED.with(|d| match d.borrow_mut().as_mut() {
        Some(list) => {
            if !refs.is_empty() {
                list.push((ty.to_string(), own.map(str::to_string), refs.to_vec()));
            }
            true
        }
        None => false,
    })
}

/// The policy in force on this thread (the default outside `Store::write_tx`).
pub fn current() -> WritePolicy {
    CURRENT.with(|c| c.borrow().clone()).unwrap_or_default()
}

/// Validate a body for a write: base R4 definitions plus the ICM profiles it claims or the policy
/// enforces. Errors → 422 with every problem.
pub fn validate_for_write(
    body: &serde_json::Value,
    policy: &WritePolicy,
) -> ApiResult<Vec<LocalRef>> {
    let mut report = validate::validate(body);
    report
        .issues
        .extend(validate::profiles::check(body, &policy.enforce_profiles));
    if report.has_errors() {
        return Err(ApiError::Unprocessable(report.issues));
    }
    Ok(report.references)
}

/// Every local reference must name an existing, not-deleted resource (the resource being written
/// may refer to itself).
pub fn check_references(
    conn: &mut DbConn,
    own: (&str, Option<&str>),
    refs: &[LocalRef],
) -> ApiResult<()> {
    let mut issues = Vec::new();
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for r in refs {
        if own.0 == r.ty && own.1 == Some(r.id.as_str()) {
            continue;
        }
        let exists = if seen.contains(&(r.ty.as_str(), r.id.as_str())) {
            true
        } else {
            let found: Option<bool> = resources::table
                .filter(resources::res_type.eq(&r.ty))
                .filter(resources::res_id.eq(&r.id))
                .select(resources::deleted)
                .first::<bool>(conn)
                .optional()
                .map_err(db_error)?;
            match found {
                Some(false) => {
                    seen.push((&r.ty, &r.id));
                    true
                }
                Some(true) => {
                    issues.push(
                        Issue::error(
                            IssueType::NotFound,
                            format!("{}/{} is referenced but was deleted", r.ty, r.id),
                        )
                        .at(&r.expression),
                    );
                    false
                }
                None => false,
            }
        };
        if !exists
            && !issues
                .iter()
                .any(|i| i.expression == [r.expression.clone()])
        {
            issues.push(
                Issue::error(
                    IssueType::NotFound,
                    format!(
                        "{}/{} is referenced but does not exist on this server",
                        r.ty, r.id
                    ),
                )
                .at(&r.expression),
            );
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Unprocessable(issues))
    }
}

#[derive(diesel::QueryableByName)]
struct Referrer {
    #[diesel(sql_type = diesel::sql_types::Text)]
    res_type: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    res_id: String,
}

/// Current resources (other than the target itself) that refer to `ty/id`, from the search
/// reference index (so: references covered by a search parameter), at most `limit`.
pub fn referrers(
    conn: &mut DbConn,
    ty: &str,
    id: &str,
    limit: i64,
) -> ApiResult<Vec<(String, String)>> {
    let mut q = Sql::new();
    q.push("SELECT DISTINCT r.res_type AS res_type, r.res_id AS res_id FROM search_reference s JOIN resources r ON r.pk = s.resource_pk WHERE s.target_type = ")
        .text(ty)
        .push(" AND s.target_id = ")
        .text(id)
        .push(" AND NOT (r.res_type = ")
        .text(ty)
        .push(" AND r.res_id = ")
        .text(id)
        .push(") ORDER BY r.res_type, r.res_id LIMIT ")
        .int(limit);
    let rows: Vec<Referrer> = load(conn, &q).map_err(db_error)?;
    Ok(rows.into_iter().map(|r| (r.res_type, r.res_id)).collect())
}

/// How many referrers a 409 lists.
const LIST_REFERRERS: usize = 5;

/// Refuse (409) to delete a resource that current resources still refer to.
pub fn check_not_referenced(conn: &mut DbConn, ty: &str, id: &str) -> ApiResult<()> {
    let found = referrers(conn, ty, id, LIST_REFERRERS as i64 + 1)?;
    if found.is_empty() {
        return Ok(());
    }
    let mut list: Vec<String> = found
        .iter()
        .take(LIST_REFERRERS)
        .map(|(t, i)| format!("{t}/{i}"))
        .collect();
    if found.len() > LIST_REFERRERS {
        list.push("and more".into());
    }
    let cascade = if current().allow_cascade_delete {
        "; DELETE with ?_cascade=delete removes them too"
    } else {
        ""
    };
    Err(ApiError::Conflict(format!(
        "{ty}/{id} cannot be deleted: it is still referenced by {}{cascade}",
        list.join(", ")
    )))
}

/// Delete `ty/id` and, first, every current resource that refers to it (recursively).
/// Only when the policy allows cascading deletes. Runs inside the caller's transaction.
pub fn cascade_delete(
    conn: &mut DbConn,
    ty: &str,
    id: &str,
    if_match: Option<i64>,
) -> ApiResult<crate::store::write::WriteResult> {
    use crate::store::write::{apply, Change};
    let mut stack = vec![(ty.to_string(), id.to_string())];
    let mut order: Vec<(String, String)> = Vec::new();
    while let Some(t) = stack.pop() {
        if order.contains(&t) || order.len() > 1000 {
            continue;
        }
        for r in referrers(conn, &t.0, &t.1, 1000)? {
            if !order.contains(&r) {
                stack.push(r);
            }
        }
        order.push(t);
    }
    // Delete the referrers (deepest last found first), then the target. References between
    // resources that are all being deleted do not block: integrity is checked per delete, so
    // delete without it and check nothing is left at the end.
    let relaxed = WritePolicy {
        referential_integrity: false,
        ..current()
    };
    with_policy(&relaxed, || -> ApiResult<()> {
        for (t, i) in order.iter().skip(1).rev() {
            apply(
                conn,
                t,
                Change::Delete {
                    id: i.clone(),
                    if_match: None,
                },
            )?;
        }
        Ok(())
    })?;
    let r = with_policy(&relaxed, || {
        apply(
            conn,
            ty,
            Change::Delete {
                id: id.to_string(),
                if_match,
            },
        )
    })?;
    check_not_referenced(conn, ty, id)?;
    Ok(r)
}
