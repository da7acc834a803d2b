//! The request context: who is asking (principal and scopes), whose data they may touch (the
//! patient compartment or care-team boundary per scope context), the write policy, the base
//! URL, the result limits and the request's audit facts. Built once per request by the HTTP
//! security layer (or as [`RequestContext::internal`] for the CLI and server-internal work) and
//! passed explicitly to every service below; the store sees it only as a [`Visibility`].
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde_json::Value;

use super::access::policy::{
    boundary_rule, care_team_patients, is_compartment_type, organization_reach, Boundary,
    BoundaryRule, Principal,
};
use super::access::scope::{Context, C, D, R, S, U};
use super::audit::{audit_record, AuditFacts};
use crate::config::{Config, WritePolicy};
use crate::error::{ApiError, ApiResult};
use crate::fhir::compartment::membership;
use crate::store::audit::Record;
use crate::store::visibility::{Rows, Visibility};
use crate::store::write::{WriteKind, WriteResult};
use crate::store::{DbConn, Store};

/// Page sizes of searches and listings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub default_count: i64,
    pub max_count: i64,
    /// Days until the intake-assessment Tasks of an enrollment are due (ICM_INTAKE_DAYS).
    pub intake_days: i64,
    /// Days before an unanswered community referral shows on $worklist
    /// (ICM_REFERRAL_RESPONSE_DAYS).
    pub referral_response_days: i64,
}

impl Limits {
    pub fn from_config(c: &Config) -> Limits {
        Limits {
            default_count: c.default_count,
            max_count: c.max_count,
            intake_days: c.intake_days.max(1),
            referral_response_days: c.referral_response_days.max(0),
        }
    }

    /// The page size for a requested `_count` (the default when absent, capped at the maximum).
    pub fn page_size(&self, requested: Option<i64>) -> i64 {
        requested
            .unwrap_or(self.default_count)
            .min(self.max_count)
            .max(0)
    }
}

/// What one request may do, and what it did (for its AuditEvent).
pub struct RequestContext {
    pub principal: Principal,
    boundaries: Vec<(Context, Boundary)>,
    pub policy: WritePolicy,
    /// The FHIR base URL of this request (`https://host/fhir`).
    pub base: String,
    pub request_id: String,
    pub limits: Limits,
    facts: Option<Mutex<AuditFacts>>,
    audited: AtomicBool,
    internal: bool,
}

/// The plain refusal for anything outside the caller's access. It names nothing, so it
/// reveals nothing about what lies outside (ARCHITECTURE.md, "Access model").
pub fn outside_access() -> ApiError {
    ApiError::Forbidden("this request reaches data outside the token's access".into())
}

impl RequestContext {
    /// Who is asking, for read-your-writes routing (store::replicas): the token's subject and
    /// client. With authentication off every caller is the same one.
    pub fn reader_key(&self) -> String {
        format!(
            "{}|{}",
            self.principal.sub,
            self.principal.client_id.as_deref().unwrap_or_default()
        )
    }

    /// A request's context: `facts` is its audit record in the making (None: not audited).
    pub fn new(
        principal: Principal,
        boundaries: Vec<(Context, Boundary)>,
        policy: &WritePolicy,
        limits: Limits,
        base: String,
        request_id: String,
        facts: Option<AuditFacts>,
    ) -> RequestContext {
        RequestContext {
            principal,
            boundaries,
            policy: policy.clone(),
            base,
            request_id,
            limits,
            facts: facts.map(Mutex::new),
            audited: AtomicBool::new(false),
            internal: false,
        }
    }

    /// Server-internal work (CLI import, migrations, tests): everything allowed, not audited.
    pub fn internal(policy: WritePolicy, base: &str) -> RequestContext {
        RequestContext {
            principal: Principal::anonymous_superuser(),
            boundaries: vec![(Context::System, Boundary::Unrestricted)],
            policy,
            base: base.trim_end_matches('/').to_string(),
            request_id: String::new(),
            limits: Limits::from_config(&Config::for_database("")),
            facts: None,
            audited: AtomicBool::new(false),
            internal: true,
        }
    }

    /// This context with one more patient inside each of its patient boundaries: intake
    /// ($enroll at the base) creates a patient and, in the same unit of work, the care team
    /// that gives the caller access to it afterwards. Audited as the request it belongs to.
    pub fn with_patient(&self, id: &str) -> RequestContext {
        let boundaries = self
            .boundaries
            .iter()
            .map(|(c, b)| {
                let b = match b {
                    Boundary::Patients(p) => {
                        let mut p = p.clone();
                        p.insert(id.to_string());
                        Boundary::Patients(p)
                    }
                    Boundary::Organization(o) => {
                        let mut o = o.clone();
                        o.patients.insert(id.to_string());
                        Boundary::Organization(o)
                    }
                    Boundary::Unrestricted => Boundary::Unrestricted,
                };
                (*c, b)
            })
            .collect();
        RequestContext {
            principal: self.principal.clone(),
            boundaries,
            policy: self.policy.clone(),
            base: self.base.clone(),
            request_id: self.request_id.clone(),
            limits: self.limits,
            facts: self.facts().map(Mutex::new),
            audited: AtomicBool::new(false),
            internal: self.internal,
        }
    }

    /// The boundary that applies to `perm` on `ty` (None: no scope grants it).
    pub fn boundary(&self, ty: &str, perm: u8) -> Option<&Boundary> {
        let ctx = self.principal.granting_context(ty, perm)?;
        self.boundaries
            .iter()
            .find(|(c, _)| *c == ctx)
            .map(|(_, b)| b)
    }

    /// Whether some boundary restricts this caller to certain patients.
    pub fn restricted(&self) -> bool {
        self.boundaries.iter().any(|(_, b)| b.is_restricted())
    }

    /// The audit trail is for administrators and system tokens only.
    fn may_read_audit(&self, ty: &str) -> bool {
        self.principal.admin
            || self.principal.granting_context(ty, R) == Some(Context::System)
            || self.principal.granting_context(ty, S) == Some(Context::System)
    }

    /// Whether a stored resource is visible to this caller (the same rule as [`Visibility`],
    /// decided on a body: for history versions, which the index does not describe).
    pub fn may_see(&self, ty: &str, res: &Value) -> bool {
        match self.rows(ty) {
            Rows::Hidden => false,
            Rows::All => true,
            Rows::Patients(allowed) => membership(ty, res)
                .patients()
                .iter()
                .any(|p| allowed.contains(p)),
            Rows::Ids(ids) => res["id"].as_str().is_some_and(|i| ids.contains(i)),
        }
    }

    /// The write check, on the row locked for the write: `current` is the stored resource
    /// (None when absent or deleted), `new` the incoming body (None for a delete).
    /// Server-owned types are refused; scopes must grant the write; the current resource must
    /// be one the caller may write (else [`outside_access`]), and so must the new content.
    pub fn check_write(
        &self,
        ty: &str,
        current: Option<&Value>,
        new: Option<&Value>,
    ) -> ApiResult<()> {
        if super::access::policy::is_server_owned(ty) {
            return Err(ApiError::Forbidden(format!(
                "{ty} resources are written by the server only"
            )));
        }
        let b = match (current, new) {
            (_, None) => self.boundary(ty, D),
            (Some(_), Some(_)) => self.boundary(ty, U),
            (None, Some(_)) => self.boundary(ty, C).or_else(|| self.boundary(ty, U)),
        }
        .ok_or_else(|| {
            ApiError::Forbidden(format!("the token's scopes do not allow writing {ty}"))
        })?;
        if current.is_some_and(|c| !b.admits(ty, c)) || new.is_some_and(|n| !b.admits(ty, n)) {
            return Err(outside_access());
        }
        Ok(())
    }

    /// Whether the AuditEvent still wants the patients of what a response carries (the read of
    /// a Patient already names it).
    pub fn wants_patients(&self) -> bool {
        self.facts
            .as_ref()
            .and_then(|f| f.lock().ok().map(|f| f.patients.is_empty()))
            .unwrap_or(false)
    }

    /// Record the patients whose data a response carries (for the AuditEvent).
    pub fn note(&self, ty: &str, res: &Value) {
        let Some(f) = &self.facts else { return };
        if !is_compartment_type(ty) {
            return;
        }
        if let Ok(mut f) = f.lock() {
            if f.patients.len() < 50 {
                for p in membership(ty, res).patients() {
                    if !f.patients.contains(&p) {
                        f.patients.push(p);
                    }
                }
            }
        }
    }

    /// The AuditEvent of a write request (`r`: its one write, None for a transaction Bundle),
    /// to store in the write's own transaction; None when the request is not audited.
    pub fn audit_record(&self, r: Option<&WriteResult>) -> Option<Record> {
        let mut f = self.facts.as_ref()?.lock().ok()?.clone();
        match r {
            Some(r) => {
                f.version_ref = Some(format!("{}/{}/_history/{}", r.ty, r.id, r.version));
                f.id = Some(r.id.clone());
                f.status = match r.kind {
                    WriteKind::Created => 201,
                    WriteKind::Updated => 200,
                    _ => 204,
                };
                if let Some(res) = &r.resource {
                    f.patients = membership(&r.ty, res).patients();
                }
            }
            None => f.status = 200,
        }
        Some(audit_record(&f, crate::fhir::datetime::now_micros()))
    }

    /// The request's AuditEvent was committed with its write.
    pub fn mark_audited(&self) {
        if self.facts.is_some() {
            self.audited.store(true, Ordering::Release);
        }
    }

    /// Whether the request's AuditEvent was already stored with its write.
    pub fn audited(&self) -> bool {
        self.audited.load(Ordering::Acquire)
    }

    /// Server-internal work (no request behind it).
    pub fn is_internal(&self) -> bool {
        self.internal
    }

    /// The audit facts gathered so far (None when the request is not audited).
    pub fn facts(&self) -> Option<AuditFacts> {
        self.facts.as_ref()?.lock().ok().map(|f| f.clone())
    }
}

impl Visibility for RequestContext {
    fn rows(&self, ty: &str) -> Rows<'_> {
        if super::access::policy::is_audit_trail(ty) && !self.may_read_audit(ty) {
            return Rows::Hidden;
        }
        // The search permission's boundary, else the read permission's.
        let b = match (self.boundary(ty, S), self.boundary(ty, R)) {
            (Some(Boundary::Unrestricted), _) | (_, Some(Boundary::Unrestricted)) => {
                return Rows::All
            }
            (Some(b), _) | (None, Some(b)) => b,
            (None, None) => return Rows::Hidden,
        };
        // A Group lists other patients (a program cohort lists everyone enrolled): a caller
        // limited to certain patients never reads one through a member's compartment.
        if ty == "Group" && b.patient_ids().is_some() {
            return Rows::Hidden;
        }
        match b {
            // A community organization: its Tasks, their patients, what they reference.
            Boundary::Organization(o) if is_compartment_type(ty) => match ty {
                "Task" => Rows::Ids(&o.tasks),
                "Patient" => Rows::Ids(&o.patients),
                _ => o.referenced.get(ty).map_or(Rows::Hidden, Rows::Ids),
            },
            _ => match b.patient_ids() {
                Some(p) if is_compartment_type(ty) => Rows::Patients(p),
                _ => Rows::All,
            },
        }
    }
}

/// Whether resolving the caller's boundaries reads the database (the care-team rule).
pub fn needs_lookup(p: &Principal, care_team_access: bool) -> bool {
    p.scopes.iter().map(|s| s.context).any(|c| {
        matches!(
            boundary_rule(p, c, care_team_access),
            BoundaryRule::CareTeam { .. } | BoundaryRule::Organization { .. }
        )
    })
}

/// Resolve every boundary the caller's scopes can need (one look-up of care teams for a
/// practitioner under the care-team rule).
pub fn resolve_boundaries(
    store: &Store,
    p: &Principal,
    care_team_access: bool,
) -> ApiResult<Vec<(Context, Boundary)>> {
    if !needs_lookup(p, care_team_access) {
        return resolve_boundaries_on(None, p, care_team_access);
    }
    let mut conn = store.conn()?;
    resolve_boundaries_on(Some(&mut conn), p, care_team_access)
}

/// [`resolve_boundaries`] on a given connection (inside a write transaction: a subscriber's
/// boundaries as of the write being matched). `conn` may be None when no look-up is needed.
pub fn resolve_boundaries_on(
    mut conn: Option<&mut DbConn>,
    p: &Principal,
    care_team_access: bool,
) -> ApiResult<Vec<(Context, Boundary)>> {
    use crate::store::access;
    let mut out = Vec::new();
    let contexts: BTreeSet<Context> = p.scopes.iter().map(|s| s.context).collect();
    for ctx in contexts {
        let b = match boundary_rule(p, ctx, care_team_access) {
            BoundaryRule::Unrestricted => Boundary::Unrestricted,
            BoundaryRule::Patient(pat) => Boundary::Patients(pat.into_iter().collect()),
            BoundaryRule::Nobody => Boundary::Patients(BTreeSet::new()),
            BoundaryRule::CareTeam { practitioner } => {
                let c = conn
                    .as_deref_mut()
                    .ok_or_else(|| ApiError::internal("care-team look-up without a connection"))?;
                let (roles, teams) = access::care_team_candidates(c, &practitioner)?;
                Boundary::Patients(care_team_patients(
                    &practitioner,
                    roles.iter(),
                    teams.iter(),
                ))
            }
            BoundaryRule::Organization { organization } => {
                let c = conn.as_deref_mut().ok_or_else(|| {
                    ApiError::internal("organization look-up without a connection")
                })?;
                let tasks = access::organization_tasks(c, &organization)?;
                let mut reach = organization_reach(&organization, tasks.iter());
                for (t, i) in access::organization_records(c, &organization)? {
                    reach.referenced.entry(t).or_default().insert(i);
                }
                Boundary::Organization(reach)
            }
        };
        out.push((ctx, b));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::access::scope::parse_scopes;
    use serde_json::json;

    fn patient_ctx(scopes: &str) -> RequestContext {
        let principal = Principal {
            sub: "p".into(),
            scopes: parse_scopes(scopes).0,
            patient: Some("a".into()),
            ..Principal::default()
        };
        let b = vec![(
            Context::Patient,
            Boundary::Patients(["a".to_string()].into()),
        )];
        RequestContext::new(
            principal,
            b,
            &WritePolicy::default(),
            Limits::from_config(&Config::for_database("sqlite::memory:")),
            "http://x/fhir".into(),
            String::new(),
            None,
        )
    }

    #[test]
    fn rows_per_type() {
        let c = patient_ctx("patient/*.rs");
        assert!(matches!(c.rows("Task"), Rows::Patients(p) if p.len() == 1));
        assert_eq!(c.rows("Practitioner"), Rows::All);
        assert_eq!(c.rows("AuditEvent"), Rows::Hidden);
        let o = patient_ctx("patient/Observation.rs");
        assert_eq!(o.rows("Patient"), Rows::Hidden);
        assert!(matches!(o.rows("Observation"), Rows::Patients(_)));
        let i = RequestContext::internal(WritePolicy::default(), "http://x/fhir");
        assert_eq!(i.rows("Task"), Rows::All);
        assert_eq!(i.rows("AuditEvent"), Rows::All);
    }

    #[test]
    fn writes_outside_the_boundary_are_refused_plainly() {
        let c = patient_ctx("patient/*.cruds");
        let mine = json!({"resourceType": "Task", "for": {"reference": "Patient/a"}});
        let theirs = json!({"resourceType": "Task", "for": {"reference": "Patient/b"}});
        assert!(c.check_write("Task", None, Some(&mine)).is_ok());
        for e in [
            c.check_write("Task", None, Some(&theirs)).unwrap_err(),
            c.check_write("Task", Some(&theirs), Some(&mine))
                .unwrap_err(),
            c.check_write("Task", Some(&theirs), None).unwrap_err(),
        ] {
            assert_eq!(e.to_string(), outside_access().to_string());
        }
        assert!(c.may_see("Task", &mine) && !c.may_see("Task", &theirs));
    }
}
