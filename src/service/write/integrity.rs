//! Rules of the unit of work beyond the resource itself: validation against the R4 definitions
//! and the ICM profiles the policy enforces, and referential integrity of local references
//! (targets exist and are visible to the writer; no dangling deletes).
use std::collections::HashMap;

use super::UnitOfWork;
use crate::config::WritePolicy;
use crate::error::{ApiError, ApiResult};
use crate::fhir::outcome::{Issue, IssueType};
use crate::fhir::validate::{self, LocalRef};
use crate::store::references::{referrers, target, Target};

/// Validate a body for a write: base R4 definitions plus the ICM profiles it claims or the policy
/// enforces. Errors → 422 with every problem; on success, the local references found.
pub fn validate_for_write(
    body: &serde_json::Value,
    policy: &WritePolicy,
) -> ApiResult<Vec<LocalRef>> {
    let mut report = validate::validate(body);
    report
        .issues
        .extend(validate::profiles::check(body, &policy.enforce_profiles));
    // A response to one of the program's Questionnaires is checked against it.
    if body["resourceType"] == "QuestionnaireResponse" {
        if let Some(q) = body["questionnaire"]
            .as_str()
            .and_then(crate::care::assessment::by_canonical)
        {
            report
                .issues
                .extend(crate::care::assessment::validate_response(q, body));
        }
    }
    if report.has_errors() {
        return Err(ApiError::Unprocessable(report.issues));
    }
    Ok(report.references)
}

/// How many referrers a 409 lists.
const LIST_REFERRERS: i64 = 5;

impl UnitOfWork<'_> {
    /// Every local reference must name an existing, not-deleted resource the writer may see
    /// (one outside its access counts as absent, so the answer reveals nothing); the resource
    /// being written may refer to itself.
    pub fn check_references(
        &mut self,
        own: (&str, Option<&str>),
        refs: &[LocalRef],
    ) -> ApiResult<()> {
        self.check_references_with(own, refs, &mut HashMap::new())
    }

    /// [`UnitOfWork::check_references`] with the targets already looked up (by this unit of
    /// work, when nothing can change them any more: at the end of a transaction).
    pub fn check_references_with(
        &mut self,
        own: (&str, Option<&str>),
        refs: &[LocalRef],
        known: &mut HashMap<(String, String), Target>,
    ) -> ApiResult<()> {
        let mut issues: Vec<Issue> = Vec::new();
        for r in refs {
            if own.0 == r.ty && own.1 == Some(r.id.as_str()) {
                continue;
            }
            let key = (r.ty.clone(), r.id.clone());
            let t = match known.get(&key) {
                Some(t) => *t,
                None => {
                    let t = target(self.conn, self.ctx, &r.ty, &r.id)?;
                    known.insert(key, t);
                    t
                }
            };
            let msg = match t {
                Target::Current => continue,
                Target::Deleted => format!("{}/{} is referenced but was deleted", r.ty, r.id),
                Target::Missing => format!(
                    "{}/{} is referenced but does not exist on this server",
                    r.ty, r.id
                ),
            };
            if !issues
                .iter()
                .any(|i| i.expression == [r.expression.clone()])
            {
                issues.push(Issue::error(IssueType::NotFound, msg).at(&r.expression));
            }
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Unprocessable(issues))
        }
    }

    /// Refuse (409) to delete a resource that current resources still refer to. Only referrers
    /// the caller may see are named.
    pub fn check_not_referenced(&mut self, ty: &str, id: &str) -> ApiResult<()> {
        let found = referrers(self.conn, self.ctx, ty, id, LIST_REFERRERS)?;
        if found.is_empty() {
            return Ok(());
        }
        Err(ApiError::Conflict(format!(
            "{ty}/{id} cannot be deleted: {}{}",
            referrer_list(&found),
            if self.ctx.policy.allow_cascade_delete && !self.ctx.restricted() {
                "; DELETE with ?_cascade=delete removes them too"
            } else {
                ""
            }
        )))
    }
}

/// "it is still referenced by A/1, B/2 and more" (names only what the caller may see).
pub fn referrer_list(found: &crate::store::references::Referrers) -> String {
    let mut list: Vec<String> = found
        .visible
        .iter()
        .map(|(t, i)| format!("{t}/{i}"))
        .collect();
    if found.more {
        list.push(if list.is_empty() {
            "other resources".to_string()
        } else {
            "more".to_string()
        });
    }
    format!("it is still referenced by {}", list.join(", "))
}
