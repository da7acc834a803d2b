//! Rules of the write path beyond the resource itself: validation policy (which ICM profiles are
//! enforced) and referential integrity of local references (targets exist; no dangling deletes).
use std::cell::RefCell;

use diesel::prelude::*;

use crate::error::{ApiError, ApiResult};
use crate::fhir::outcome::{Issue, IssueType};
use crate::fhir::validate::{self, LocalRef};
use crate::store::backend::{db_error, DbConn};
use crate::store::schema::resources;

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
