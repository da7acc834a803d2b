//! Access policy decisions, pure: which interaction a request is, whether the token's scopes
//! allow it, and whether a resource lies inside the caller's patient boundary
//! (patient compartment for `patient/` scopes, care teams for practitioners with `user/` scopes).
use std::collections::BTreeSet;

use serde_json::Value;

use super::scope::{Context, Scope, C, D, R, S, U};

/// A FHIR RESTful interaction as far as access control is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    Read,
    Vread,
    Search,
    HistoryInstance,
    HistoryType,
    HistorySystem,
    Create,
    Update,
    Patch,
    Delete,
    /// POST /fhir with a batch or transaction Bundle: entries are checked one by one.
    Bundle,
    /// `$operation` (read-like: needs `r`).
    Operation,
    /// Capabilities and SMART configuration: public.
    Public,
}

impl Interaction {
    /// The SMART permission letter it needs.
    pub fn permission(self) -> u8 {
        match self {
            Interaction::Read | Interaction::Vread | Interaction::Operation => R,
            Interaction::HistoryInstance
            | Interaction::HistoryType
            | Interaction::HistorySystem => R,
            Interaction::Search => S,
            Interaction::Create => C,
            Interaction::Update | Interaction::Patch => U,
            Interaction::Delete => D,
            Interaction::Bundle | Interaction::Public => 0,
        }
    }

    pub fn is_write(self) -> bool {
        matches!(
            self,
            Interaction::Create | Interaction::Update | Interaction::Patch | Interaction::Delete
        )
    }

    /// The FHIR interaction code (http://hl7.org/fhir/R4/valueset-type-restful-interaction.html).
    pub fn code(self) -> &'static str {
        match self {
            Interaction::Read => "read",
            Interaction::Vread => "vread",
            Interaction::Search => "search-type",
            Interaction::HistoryInstance => "history-instance",
            Interaction::HistoryType => "history-type",
            Interaction::HistorySystem => "history-system",
            Interaction::Create => "create",
            Interaction::Update => "update",
            Interaction::Patch => "patch",
            Interaction::Delete => "delete",
            Interaction::Bundle => "transaction",
            Interaction::Operation => "operation",
            Interaction::Public => "capabilities",
        }
    }
}

/// What a request targets, from its method and path below /fhir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub interaction: Interaction,
    pub ty: Option<String>,
    pub id: Option<String>,
}

/// Classify `method` + path segments below `/fhir` (e.g. `["Patient", "1"]`).
pub fn classify(method: &str, segs: &[&str]) -> Target {
    use Interaction::*;
    let t = |i: Interaction, ty: Option<&str>, id: Option<&str>| Target {
        interaction: i,
        ty: ty.map(str::to_string),
        id: id.map(str::to_string),
    };
    let op = |s: &str| s.starts_with('$');
    match (method, segs) {
        ("GET", ["metadata"]) | ("GET", [".well-known", "smart-configuration"]) => {
            t(Public, None, None)
        }
        ("POST", []) => t(Bundle, None, None),
        ("GET", ["_history"]) => t(HistorySystem, None, None),
        (_, [o, ..]) if op(o) => t(Operation, None, None),
        ("GET", [ty, "_history"]) => t(HistoryType, Some(ty), None),
        ("GET", [ty]) | ("POST", [ty, "_search"]) => t(Search, Some(ty), None),
        ("POST", [ty]) => t(Create, Some(ty), None),
        ("PUT", [ty]) => t(Update, Some(ty), None),
        ("PATCH", [ty]) => t(Patch, Some(ty), None),
        ("DELETE", [ty]) => t(Delete, Some(ty), None),
        (_, [ty, o, ..]) if op(o) => t(Operation, Some(ty), None),
        (_, [ty, id, o, ..]) if op(o) => t(Operation, Some(ty), Some(id)),
        ("GET", [ty, id]) => t(Read, Some(ty), Some(id)),
        ("PUT", [ty, id]) => t(Update, Some(ty), Some(id)),
        ("PATCH", [ty, id]) => t(Patch, Some(ty), Some(id)),
        ("DELETE", [ty, id]) => t(Delete, Some(ty), Some(id)),
        ("GET", [ty, id, "_history"]) => t(HistoryInstance, Some(ty), Some(id)),
        ("GET", [ty, id, "_history", _]) => t(Vread, Some(ty), Some(id)),
        // Anything else is routed to a 404/405 by the route table; authentication still applies.
        (_, [ty, ..]) => t(Read, Some(ty), None),
        _ => t(Read, None, None),
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, Default)]
pub struct Principal {
    pub sub: String,
    pub fhir_user: Option<String>,
    pub client_id: Option<String>,
    pub scopes: Vec<Scope>,
    /// The `patient` launch-context claim.
    pub patient: Option<String>,
    /// An `admin` role claim.
    pub admin: bool,
}

impl Principal {
    /// The caller when authentication is switched off: everything is allowed.
    pub fn anonymous_superuser() -> Principal {
        Principal {
            sub: "anonymous".into(),
            scopes: vec![Scope {
                context: Context::System,
                resource_type: None,
                perms: super::scope::ALL,
            }],
            admin: true,
            ..Principal::default()
        }
    }

    /// The widest context among scopes granting `perm` on `ty` (None: not granted).
    pub fn granting_context(&self, ty: &str, perm: u8) -> Option<Context> {
        self.scopes
            .iter()
            .filter(|s| s.grants(ty, perm))
            .map(|s| s.context)
            .max()
    }

    /// Whether any scope grants reading (r or s) `ty`.
    pub fn may_read_type(&self, ty: &str) -> bool {
        self.granting_context(ty, R).is_some() || self.granting_context(ty, S).is_some()
    }

    /// The Practitioner id of a `fhirUser` claim (`Practitioner/123`).
    pub fn practitioner_id(&self) -> Option<String> {
        let (ty, id) = reference_type_id(self.fhir_user.as_deref()?)?;
        (ty == "Practitioner").then_some(id)
    }

    /// The Organization id of a `fhirUser` claim (`Organization/123`): a community
    /// organization's system.
    pub fn organization_id(&self) -> Option<String> {
        let (ty, id) = reference_type_id(self.fhir_user.as_deref()?)?;
        (ty == "Organization").then_some(id)
    }
}

/// What a community organization may reach: the Tasks it owns, and what they concern.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrganizationReach {
    pub organization: String,
    /// Ids of the Tasks it owns.
    pub tasks: BTreeSet<String>,
    /// The patients of those Tasks (`Task.for`).
    pub patients: BTreeSet<String>,
    /// Other resources those Tasks reference (focus, basedOn, output), by type.
    pub referenced: std::collections::BTreeMap<String, BTreeSet<String>>,
}

/// From the Tasks owned by `organization`, what it may reach.
pub fn organization_reach<'a>(
    organization: &str,
    tasks: impl IntoIterator<Item = &'a Value>,
) -> OrganizationReach {
    let me = ("Organization", organization);
    let mut r = OrganizationReach {
        organization: organization.to_string(),
        ..Default::default()
    };
    for t in tasks {
        let owner = t["owner"]["reference"]
            .as_str()
            .and_then(crate::fhir::reference::local_target);
        let Some(id) = t["id"].as_str().filter(|_| owner == Some(me)) else {
            continue;
        };
        r.tasks.insert(id.to_string());
        let mut refs: Vec<&Value> = vec![&t["for"], &t["focus"]];
        refs.extend(t["basedOn"].as_array().into_iter().flatten());
        refs.extend(
            t["output"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| &o["valueReference"]),
        );
        for v in refs {
            if let Some((ty, id)) = v["reference"]
                .as_str()
                .and_then(crate::fhir::reference::local_target)
            {
                if ty == "Patient" {
                    r.patients.insert(id.to_string());
                } else {
                    r.referenced
                        .entry(ty.to_string())
                        .or_default()
                        .insert(id.to_string());
                }
            }
        }
    }
    r
}

/// Which patients' data a caller may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boundary {
    /// No per-patient restriction (system scopes, admins, care-team rule off).
    Unrestricted,
    /// Only resources in the compartments of these patients (plus resources that belong
    /// to no patient compartment at all, such as Practitioner or Organization).
    Patients(BTreeSet<String>),
    /// A community organization: reads reach its own Tasks, their patients and what they
    /// reference; writes reach its own Tasks and new records about those patients (the
    /// outcome of a referral).
    Organization(OrganizationReach),
}

impl Boundary {
    pub fn is_restricted(&self) -> bool {
        !matches!(self, Boundary::Unrestricted)
    }

    /// The patient ids reads must be restricted to (`None`: unrestricted); service::context
    /// turns them into the request's Visibility.
    pub fn patient_ids(&self) -> Option<&BTreeSet<String>> {
        match self {
            Boundary::Unrestricted => None,
            Boundary::Patients(p) => Some(p),
            Boundary::Organization(o) => Some(&o.patients),
        }
    }

    /// Whether a resource of type `ty` is writable inside this boundary (as it is stored, and
    /// as it would be stored).
    pub fn admits(&self, ty: &str, resource: &Value) -> bool {
        let allowed = match self {
            Boundary::Unrestricted => return true,
            Boundary::Patients(p) => p,
            Boundary::Organization(o) => {
                if ty == "Task" {
                    // Its own Tasks only, and they stay its own.
                    let me = ("Organization", o.organization.as_str());
                    return resource["owner"]["reference"]
                        .as_str()
                        .and_then(crate::fhir::reference::local_target)
                        == Some(me);
                }
                &o.patients
            }
        };
        match compartment_membership(ty, resource) {
            Membership::NotACompartmentType => true,
            Membership::Patients(ps) => ps.iter().any(|p| allowed.contains(p)),
        }
    }
}

/// How the caller's boundary is decided, before any database lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundaryRule {
    Unrestricted,
    /// `patient/` scopes: the token's patient claim (empty set when it has none).
    Patient(Option<String>),
    /// `user/` scopes of a Practitioner under the care-team rule: the patients of active
    /// CareTeams where this practitioner (or one of their PractitionerRoles) participates.
    CareTeam {
        practitioner: String,
    },
    /// `user/` scopes of someone who is neither admin nor a Practitioner under the care-team
    /// rule: nothing patient-specific.
    Nobody,
    /// `user/` or `system/` scopes of a community organization (`fhirUser` Organization/…):
    /// the Tasks it owns and what they concern.
    Organization {
        organization: String,
    },
}

/// Decide which boundary rule applies when `context` is the scope context granting access.
pub fn boundary_rule(p: &Principal, context: Context, care_team_access: bool) -> BoundaryRule {
    if p.admin {
        return BoundaryRule::Unrestricted;
    }
    if let (Context::User | Context::System, Some(organization)) = (context, p.organization_id()) {
        return BoundaryRule::Organization { organization };
    }
    if context == Context::System {
        return BoundaryRule::Unrestricted;
    }
    match context {
        Context::Patient => BoundaryRule::Patient(p.patient.clone()),
        Context::User if !care_team_access => BoundaryRule::Unrestricted,
        Context::User => match p.practitioner_id() {
            Some(practitioner) => BoundaryRule::CareTeam { practitioner },
            None => BoundaryRule::Nobody,
        },
        Context::System => BoundaryRule::Unrestricted,
    }
}

pub use crate::fhir::compartment::{
    is_member_type as is_compartment_type, membership as compartment_membership, Membership,
};

/// The local (type, id) of a reference string, owned (fhir::reference decides what is local).
pub fn reference_type_id(r: &str) -> Option<(String, String)> {
    crate::fhir::reference::local_target(r).map(|(t, i)| (t.to_string(), i.to_string()))
}

/// From CareTeam and PractitionerRole resources, the patients a practitioner may see:
/// subjects of `active` CareTeams with the practitioner, or one of their roles, as a participant.
pub fn care_team_patients<'a>(
    practitioner: &str,
    roles: impl IntoIterator<Item = &'a Value>,
    care_teams: impl IntoIterator<Item = &'a Value>,
) -> BTreeSet<String> {
    let me = ("Practitioner".to_string(), practitioner.to_string());
    let my_roles: BTreeSet<String> = roles
        .into_iter()
        .filter(|r| {
            r["active"].as_bool() != Some(false)
                && r["practitioner"]["reference"]
                    .as_str()
                    .and_then(reference_type_id)
                    .is_some_and(|x| x == me)
        })
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect();
    let mut out = BTreeSet::new();
    for ct in care_teams {
        if ct["status"].as_str() != Some("active") {
            continue;
        }
        let member = ct["participant"].as_array().into_iter().flatten().any(|p| {
            match p["member"]["reference"]
                .as_str()
                .and_then(reference_type_id)
            {
                Some((t, id)) if t == "Practitioner" => id == practitioner,
                Some((t, id)) if t == "PractitionerRole" => my_roles.contains(&id),
                _ => false,
            }
        });
        if !member {
            continue;
        }
        if let Membership::Patients(ps) = compartment_membership("CareTeam", ct) {
            // Only the subject counts, not participants who happen to be patients.
            let subject = ct["subject"]["reference"]
                .as_str()
                .and_then(reference_type_id);
            if let Some((t, id)) = subject {
                if t == "Patient" && ps.contains(&id) {
                    out.insert(id);
                }
            }
        }
    }
    out
}

/// Server-owned types no client may write through the API: those the registry stores in the
/// audit trail.
pub fn is_server_owned(ty: &str) -> bool {
    is_audit_trail(ty)
}

/// Whether `ty` is stored in the audit trail (read by administrators and system tokens only).
pub fn is_audit_trail(ty: &str) -> bool {
    crate::fhir::registry::Registry::get().storage(ty) == crate::fhir::registry::Storage::AuditLog
}

/// Why a request is refused before reaching the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 403: the scopes do not grant this.
    Forbidden(String),
}

/// The scope decision for a classified request. On success, the scope context that grants it
/// (None for public and for requests whose entries/results are checked one by one).
pub fn decide(p: &Principal, t: &Target) -> Result<Option<Context>, Refusal> {
    use Interaction::*;
    match (t.interaction, t.ty.as_deref()) {
        (Public, _) => Ok(None),
        // Entries are checked one by one (see check_bundle_entries).
        (Bundle, _) => Ok(None),
        // History across types and unknown paths: results are filtered by type and boundary.
        (HistorySystem, _) | (_, None) => {
            if p.scopes.iter().any(|s| s.perms & (R | S) != 0) {
                Ok(p.scopes.iter().map(|s| s.context).max())
            } else {
                Err(Refusal::Forbidden(
                    "no scope grants reading any resource type".into(),
                ))
            }
        }
        (i, Some(ty)) => {
            if is_audit_trail(ty) {
                if i.is_write() {
                    return Err(Refusal::Forbidden(
                        "AuditEvents are written by the server only and can never be changed"
                            .into(),
                    ));
                }
                if !p.admin && p.granting_context(ty, i.permission()) != Some(Context::System) {
                    return Err(Refusal::Forbidden(
                        "only an administrator may read the audit trail".into(),
                    ));
                }
            }
            p.granting_context(ty, i.permission())
                .map(Some)
                .ok_or_else(|| {
                    Refusal::Forbidden(format!(
                        "the token's scopes do not allow {} on {ty}",
                        i.code()
                    ))
                })
        }
    }
}

/// Check each entry of a batch/transaction Bundle against the scopes: the first refusal, if any.
pub fn check_bundle_entries(p: &Principal, bundle: &Value) -> Result<(), Refusal> {
    for (n, e) in bundle["entry"].as_array().into_iter().flatten().enumerate() {
        let method = e["request"]["method"]
            .as_str()
            .unwrap_or("")
            .to_ascii_uppercase();
        let url = e["request"]["url"].as_str().unwrap_or("");
        let path = url.split('?').next().unwrap_or("");
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let t = classify(&method, &segs);
        if t.interaction == Interaction::Bundle {
            return Err(Refusal::Forbidden(format!(
                "entry {n}: nested bundles are not allowed"
            )));
        }
        decide(p, &t)
            .map_err(|Refusal::Forbidden(m)| Refusal::Forbidden(format!("entry {n}: {m}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn principal(scopes: &str) -> Principal {
        Principal {
            sub: "t".into(),
            scopes: super::super::scope::parse_scopes(scopes).0,
            ..Principal::default()
        }
    }

    #[test]
    fn classify_paths() {
        use Interaction::*;
        let c = |m: &str, p: &str| {
            classify(
                m,
                &p.split('/').filter(|s| !s.is_empty()).collect::<Vec<_>>(),
            )
            .interaction
        };
        assert_eq!(c("GET", "metadata"), Public);
        assert_eq!(c("GET", ".well-known/smart-configuration"), Public);
        assert_eq!(c("GET", "Patient/1"), Read);
        assert_eq!(c("GET", "Patient/1/_history/2"), Vread);
        assert_eq!(c("GET", "Patient/1/_history"), HistoryInstance);
        assert_eq!(c("GET", "Patient/_history"), HistoryType);
        assert_eq!(c("GET", "_history"), HistorySystem);
        assert_eq!(c("GET", "Patient"), Search);
        assert_eq!(c("POST", "Patient/_search"), Search);
        assert_eq!(c("POST", "Patient"), Create);
        assert_eq!(c("PUT", "Patient/1"), Update);
        assert_eq!(c("PATCH", "Patient/1"), Patch);
        assert_eq!(c("DELETE", "Patient/1"), Delete);
        assert_eq!(c("POST", ""), Bundle);
        assert_eq!(c("GET", "Patient/1/$everything"), Operation);
        assert_eq!(
            c("POST", "metadata"),
            Create,
            "non-GET metadata is not public"
        );
    }

    #[test]
    fn scope_decisions() {
        let t = |m: &str, p: &str| classify(m, &p.split('/').collect::<Vec<_>>());
        let p = principal("patient/Task.read user/CarePlan.cruds");
        assert_eq!(decide(&p, &t("GET", "Task/1")), Ok(Some(Context::Patient)));
        assert!(decide(&p, &t("PUT", "Task/1")).is_err());
        assert!(decide(&p, &t("GET", "Goal/1")).is_err());
        assert_eq!(
            decide(&p, &t("DELETE", "CarePlan/1")),
            Ok(Some(Context::User))
        );
        let none = principal("openid fhirUser");
        assert!(decide(&none, &t("GET", "_history")).is_err());
        assert!(decide(&none, &t("GET", "metadata")).is_ok());
    }

    #[test]
    fn audit_events_are_admin_read_only() {
        let t = |m: &str, p: &str| classify(m, &p.split('/').collect::<Vec<_>>());
        let user = principal("user/*.cruds");
        assert!(decide(&user, &t("GET", "AuditEvent")).is_err());
        let mut admin = principal("user/*.cruds");
        admin.admin = true;
        assert!(decide(&admin, &t("GET", "AuditEvent")).is_ok());
        assert!(decide(&admin, &t("PUT", "AuditEvent/1")).is_err());
        assert!(decide(&admin, &t("DELETE", "AuditEvent/1")).is_err());
        assert!(decide(&Principal::anonymous_superuser(), &t("POST", "AuditEvent")).is_err());
    }

    #[test]
    fn bundle_entries_checked_one_by_one() {
        let p = principal("user/Task.cruds user/Patient.r");
        let ok = json!({"entry": [
            {"request": {"method": "POST", "url": "Task"}},
            {"request": {"method": "GET", "url": "Patient/1"}}]});
        assert!(check_bundle_entries(&p, &ok).is_ok());
        let bad = json!({"entry": [
            {"request": {"method": "POST", "url": "Task"}},
            {"request": {"method": "DELETE", "url": "Patient/1"}}]});
        assert!(
            check_bundle_entries(&p, &bad).unwrap_err()
                == Refusal::Forbidden(
                    "entry 1: the token's scopes do not allow delete on Patient".into()
                )
        );
    }

    #[test]
    fn boundary_admits() {
        let b = Boundary::Patients(["a".to_string()].into());
        assert!(b.admits("Patient", &json!({"id": "a"})));
        assert!(!b.admits("Patient", &json!({"id": "b"})));
        assert!(b.admits("Task", &json!({"for": {"reference": "Patient/a"}})));
        assert!(!b.admits("Task", &json!({"for": {"reference": "Patient/b"}})));
        assert!(
            !b.admits("Task", &json!({"status": "ready"})),
            "a compartment resource of no patient is outside"
        );
        assert!(b.admits("Practitioner", &json!({"id": "x"})));
        assert!(Boundary::Unrestricted.admits("Task", &json!({})));
    }

    #[test]
    fn boundary_rules() {
        let mut p = principal("user/*.cruds");
        p.fhir_user = Some("Practitioner/7".into());
        assert_eq!(
            boundary_rule(&p, Context::User, true),
            BoundaryRule::CareTeam {
                practitioner: "7".into()
            }
        );
        assert_eq!(
            boundary_rule(&p, Context::User, false),
            BoundaryRule::Unrestricted
        );
        assert_eq!(
            boundary_rule(&p, Context::System, true),
            BoundaryRule::Unrestricted
        );
        p.admin = true;
        assert_eq!(
            boundary_rule(&p, Context::User, true),
            BoundaryRule::Unrestricted
        );
        let mut q = principal("patient/*.rs");
        q.patient = Some("a".into());
        assert_eq!(
            boundary_rule(&q, Context::Patient, true),
            BoundaryRule::Patient(Some("a".into()))
        );
        q.fhir_user = Some("RelatedPerson/1".into());
        assert_eq!(boundary_rule(&q, Context::User, true), BoundaryRule::Nobody);
    }

    #[test]
    fn care_teams() {
        let roles = [
            json!({"resourceType": "PractitionerRole", "id": "r1", "practitioner": {"reference": "Practitioner/7"}}),
        ];
        let teams = [
            json!({"status": "active", "subject": {"reference": "Patient/a"}, "participant": [{"member": {"reference": "Practitioner/7"}}]}),
            json!({"status": "active", "subject": {"reference": "Patient/b"}, "participant": [{"member": {"reference": "PractitionerRole/r1"}}]}),
            json!({"status": "inactive", "subject": {"reference": "Patient/c"}, "participant": [{"member": {"reference": "Practitioner/7"}}]}),
            json!({"status": "active", "subject": {"reference": "Patient/d"}, "participant": [{"member": {"reference": "Practitioner/8"}}]}),
        ];
        let got: Vec<String> = care_team_patients("7", roles.iter(), teams.iter())
            .into_iter()
            .collect();
        assert_eq!(got, vec!["a", "b"]);
    }
}
