//! ICM profiles (fhir-profiles/icm/): differential StructureDefinitions enforced when a resource
//! claims them in meta.profile, or for the types the configuration names. The differential is
//! read as data: cardinality, reference targets, required bindings to our value sets, and
//! constraints (FHIRPath, evaluated by the engine through `invariant.rs`).
use std::sync::OnceLock;

use serde_json::Value;

use super::invariant::{self, Cond};
use crate::fhir::outcome::{Issue, IssueType};

/// The resource types that have an ICM profile.
pub const ICM_TYPES: &[&str] = &["Patient", "CareTeam", "CarePlan", "Task"];

/// Canonical base of everything this server defines.
pub const CANONICAL_BASE: &str = "http://icm-fhir.org/fhir";

/// Embedded conformance resources: (resource type, id, JSON text).
pub const RESOURCES: &[(&str, &str, &str)] = &[
    (
        "StructureDefinition",
        "icm-patient",
        include_str!("../../../fhir-profiles/icm/StructureDefinition-icm-patient.json"),
    ),
    (
        "StructureDefinition",
        "icm-careteam",
        include_str!("../../../fhir-profiles/icm/StructureDefinition-icm-careteam.json"),
    ),
    (
        "StructureDefinition",
        "icm-careplan",
        include_str!("../../../fhir-profiles/icm/StructureDefinition-icm-careplan.json"),
    ),
    (
        "StructureDefinition",
        "icm-task",
        include_str!("../../../fhir-profiles/icm/StructureDefinition-icm-task.json"),
    ),
    (
        "CodeSystem",
        "icm-program",
        include_str!("../../../fhir-profiles/icm/CodeSystem-icm-program.json"),
    ),
    (
        "ValueSet",
        "icm-program",
        include_str!("../../../fhir-profiles/icm/ValueSet-icm-program.json"),
    ),
    (
        "CodeSystem",
        "icm-care-team-role",
        include_str!("../../../fhir-profiles/icm/CodeSystem-icm-care-team-role.json"),
    ),
    (
        "ValueSet",
        "icm-care-team-role",
        include_str!("../../../fhir-profiles/icm/ValueSet-icm-care-team-role.json"),
    ),
    (
        "CodeSystem",
        "icm-workflow",
        include_str!("../../../fhir-profiles/icm/CodeSystem-icm-workflow.json"),
    ),
    (
        "CodeSystem",
        "icm-social-need",
        include_str!("../../../fhir-profiles/icm/CodeSystem-icm-social-need.json"),
    ),
    (
        "CodeSystem",
        "icm-risk-method",
        include_str!("../../../fhir-profiles/icm/CodeSystem-icm-risk-method.json"),
    ),
    (
        "Questionnaire",
        "icm-phq9",
        include_str!("../../../fhir-profiles/icm/Questionnaire-icm-phq9.json"),
    ),
    (
        "Questionnaire",
        "icm-social-needs",
        include_str!("../../../fhir-profiles/icm/Questionnaire-icm-social-needs.json"),
    ),
    (
        "Questionnaire",
        "icm-functional-status",
        include_str!("../../../fhir-profiles/icm/Questionnaire-icm-functional-status.json"),
    ),
    (
        "Questionnaire",
        "icm-intake",
        include_str!("../../../fhir-profiles/icm/Questionnaire-icm-intake.json"),
    ),
    (
        "CodeSystem",
        "icm-disenrollment-reason",
        include_str!("../../../fhir-profiles/icm/CodeSystem-icm-disenrollment-reason.json"),
    ),
    (
        "SearchParameter",
        "Task-due",
        include_str!("../../../fhir-profiles/icm/SearchParameter-Task-due.json"),
    ),
    (
        "SearchParameter",
        "Encounter-discharge-disposition",
        include_str!(
            "../../../fhir-profiles/icm/SearchParameter-Encounter-discharge-disposition.json"
        ),
    ),
    (
        "SearchParameter",
        "Claim-total",
        include_str!("../../../fhir-profiles/icm/SearchParameter-Claim-total.json"),
    ),
    (
        "Questionnaire",
        "icm-satisfaction",
        include_str!("../../../fhir-profiles/icm/Questionnaire-icm-satisfaction.json"),
    ),
    (
        "CodeSystem",
        "icm-experience",
        include_str!("../../../fhir-profiles/icm/CodeSystem-icm-experience.json"),
    ),
    (
        "CodeSystem",
        "icm-measure",
        include_str!("../../../fhir-profiles/icm/CodeSystem-icm-measure.json"),
    ),
    (
        "Measure",
        "readmission-30d",
        include_str!("../../../fhir-profiles/icm/Measure-readmission-30d.json"),
    ),
    (
        "Measure",
        "ed-visits",
        include_str!("../../../fhir-profiles/icm/Measure-ed-visits.json"),
    ),
    (
        "Measure",
        "hba1c-control",
        include_str!("../../../fhir-profiles/icm/Measure-hba1c-control.json"),
    ),
    (
        "Measure",
        "bp-control",
        include_str!("../../../fhir-profiles/icm/Measure-bp-control.json"),
    ),
    (
        "Measure",
        "transition-follow-up",
        include_str!("../../../fhir-profiles/icm/Measure-transition-follow-up.json"),
    ),
    (
        "Measure",
        "tasks-on-time",
        include_str!("../../../fhir-profiles/icm/Measure-tasks-on-time.json"),
    ),
    (
        "Measure",
        "referral-to-enrollment",
        include_str!("../../../fhir-profiles/icm/Measure-referral-to-enrollment.json"),
    ),
    (
        "Measure",
        "caseload-size",
        include_str!("../../../fhir-profiles/icm/Measure-caseload-size.json"),
    ),
    (
        "Measure",
        "high-risk-contact",
        include_str!("../../../fhir-profiles/icm/Measure-high-risk-contact.json"),
    ),
    (
        "Measure",
        "patient-experience",
        include_str!("../../../fhir-profiles/icm/Measure-patient-experience.json"),
    ),
    (
        "Measure",
        "cost-proxy",
        include_str!("../../../fhir-profiles/icm/Measure-cost-proxy.json"),
    ),
    // The program's own extensions (held by validate::extensions).
    (
        "StructureDefinition",
        "risk-score",
        include_str!("../../../fhir-profiles/icm/StructureDefinition-risk-score.json"),
    ),
    (
        "StructureDefinition",
        "lace-score",
        include_str!("../../../fhir-profiles/icm/StructureDefinition-lace-score.json"),
    ),
    (
        "StructureDefinition",
        "risk-contribution",
        include_str!("../../../fhir-profiles/icm/StructureDefinition-risk-contribution.json"),
    ),
    (
        "StructureDefinition",
        "measure-window",
        include_str!("../../../fhir-profiles/icm/StructureDefinition-measure-window.json"),
    ),
    (
        "StructureDefinition",
        "measure-amount",
        include_str!("../../../fhir-profiles/icm/StructureDefinition-measure-amount.json"),
    ),
    (
        "StructureDefinition",
        "positive-answer",
        include_str!("../../../fhir-profiles/icm/StructureDefinition-positive-answer.json"),
    ),
    (
        "StructureDefinition",
        "positive-threshold",
        include_str!("../../../fhir-profiles/icm/StructureDefinition-positive-threshold.json"),
    ),
    (
        "StructureDefinition",
        "disenrollment-reason",
        include_str!("../../../fhir-profiles/icm/StructureDefinition-disenrollment-reason.json"),
    ),
    (
        "StructureDefinition",
        "task-overdue",
        include_str!("../../../fhir-profiles/icm/StructureDefinition-task-overdue.json"),
    ),
    (
        "StructureDefinition",
        "referral-attention",
        include_str!("../../../fhir-profiles/icm/StructureDefinition-referral-attention.json"),
    ),
    (
        "StructureDefinition",
        "patient-admitted",
        include_str!("../../../fhir-profiles/icm/StructureDefinition-patient-admitted.json"),
    ),
];

/// Constraints checked by dedicated code (their FHIRPath needs `where`, `resolve()` or `count()`).
struct ProfileElem {
    path: String,
    min: Option<u32>,
    max: Option<u32>,
    targets: Vec<String>,
    binding: Option<String>,
    constraints: Vec<(String, String, Option<Cond>)>,
}

pub struct Profile {
    pub url: String,
    pub id: String,
    pub title: String,
    pub ty: String,
    elems: Vec<ProfileElem>,
}

struct Profiles {
    list: Vec<Profile>,
}

fn load() -> Profiles {
    let mut list = Vec::new();
    for (rt, _, text) in RESOURCES {
        let v: Value = serde_json::from_str(text).expect("embedded ICM conformance resource");
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        match *rt {
            // Held by fhir::terminology (bindings, search modifiers).
            "CodeSystem" | "ValueSet" => {}
            // Served as they are (the program's Questionnaires are applied by care::assessment,
            // its search parameters by fhir::search::params, its measures by care::measures).
            "Questionnaire" | "SearchParameter" | "Measure" => {}
            // Extension definitions are held by validate::extensions.
            _ if v["type"] == "Extension" => {}
            _ => {
                let mut elems = Vec::new();
                for e in v["differential"]["element"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let u32_of = |x: &Value| x.as_u64().map(|n| n as u32);
                    let max = match e["max"].as_str() {
                        Some("*") | None => None,
                        Some(m) => m.parse().ok(),
                    };
                    let targets = e["type"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|t| t["targetProfile"].as_array().into_iter().flatten())
                        .filter_map(|p| p.as_str().and_then(|p| p.rsplit('/').next()))
                        .map(String::from)
                        .collect();
                    let binding = (e["binding"]["strength"] == "required")
                        .then(|| e["binding"]["valueSet"].as_str().map(String::from))
                        .flatten();
                    let constraints = e["constraint"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| {
                            let key = c["key"].as_str().unwrap_or_default().to_string();
                            let expr = c["expression"].as_str().unwrap_or_default().to_string();
                            let cond = invariant::compile(&key, &expr);
                            (
                                key,
                                c["human"].as_str().unwrap_or_default().to_string(),
                                cond,
                            )
                        })
                        .collect();
                    elems.push(ProfileElem {
                        path: e["path"].as_str().unwrap_or_default().to_string(),
                        min: u32_of(&e["min"]),
                        max,
                        targets,
                        binding,
                        constraints,
                    });
                }
                list.push(Profile {
                    url: s("url"),
                    id: s("id"),
                    title: s("title"),
                    ty: s("type"),
                    elems,
                });
            }
        }
    }
    Profiles { list }
}

fn profiles() -> &'static Profiles {
    static P: OnceLock<Profiles> = OnceLock::new();
    P.get_or_init(load)
}

/// Every ICM profile (for the CapabilityStatement).
pub fn all() -> impl Iterator<Item = &'static Profile> {
    profiles().list.iter()
}

/// The ICM profile with this canonical URL (a `|version` suffix is ignored).
pub fn by_url(url: &str) -> Option<&'static Profile> {
    let url = url.split('|').next().unwrap_or(url);
    profiles().list.iter().find(|p| p.url == url)
}

/// An embedded conformance resource by type and id.
pub fn resource(rt: &str, id: &str) -> Option<&'static str> {
    RESOURCES
        .iter()
        .find(|(t, i, _)| *t == rt && *i == id)
        .map(|(_, _, text)| *text)
}

/// Problems of `resource` against the ICM profiles it claims or `enforce` names for its type.
pub fn check(resource: &Value, enforce: &[String]) -> Vec<Issue> {
    let ty = resource["resourceType"].as_str().unwrap_or_default();
    let mut issues = Vec::new();
    let mut applied: Vec<&str> = Vec::new();
    if let Some(claims) = resource["meta"]["profile"].as_array() {
        for c in claims.iter().filter_map(Value::as_str) {
            if let Some(p) = by_url(c) {
                if p.ty == ty && !applied.contains(&p.url.as_str()) {
                    applied.push(&p.url);
                    issues.extend(check_profile(resource, p));
                }
            }
        }
    }
    if enforce.iter().any(|t| t == ty) {
        for p in profiles().list.iter().filter(|p| p.ty == ty) {
            if !applied.contains(&p.url.as_str()) {
                applied.push(&p.url);
                issues.extend(check_profile(resource, p));
            }
        }
    }
    issues
}

/// The values at a dotted path under the resource, each with its expression.
fn select<'a>(resource: &'a Value, ty: &str, path: &str) -> Vec<(String, &'a Value)> {
    let mut cur = vec![(ty.to_string(), resource)];
    for seg in path.split('.').skip(1) {
        let mut next = Vec::new();
        for (e, v) in cur {
            match v.get(seg) {
                Some(Value::Array(a)) => {
                    for (i, x) in a.iter().enumerate() {
                        next.push((format!("{e}.{seg}[{i}]"), x));
                    }
                }
                Some(Value::Null) | None => {}
                Some(x) => next.push((format!("{e}.{seg}"), x)),
            }
        }
        cur = next;
    }
    cur
}

/// The resource type a Reference points at, when it can be told from the reference itself.
fn ref_type<'a>(resource: &'a Value, r: &'a Value) -> Option<&'a str> {
    if let Some(t) = r["type"].as_str() {
        return Some(t);
    }
    let s = r["reference"].as_str()?;
    if let Some(id) = s.strip_prefix('#') {
        return resource["contained"]
            .as_array()?
            .iter()
            .find(|c| c["id"].as_str() == Some(id))
            .and_then(|c| c["resourceType"].as_str());
    }
    if s.starts_with("urn:") {
        return None;
    }
    let segs: Vec<&str> = s.split('/').collect();
    let n = segs.len();
    if n >= 4 && segs[n - 2] == "_history" {
        Some(segs[n - 4])
    } else if n >= 2 {
        Some(segs[n - 2])
    } else {
        None
    }
}

/// Problems of `resource` against one profile.
pub fn check_profile(resource: &Value, p: &Profile) -> Vec<Issue> {
    let mut out = Vec::new();
    let label = &p.title;
    for e in &p.elems {
        let Some((parent, name)) = e.path.rsplit_once('.') else {
            for (key, human, cond) in &e.constraints {
                if !constraint_holds(cond.as_ref(), resource, resource) {
                    out.push(
                        Issue::error(
                            IssueType::Invariant,
                            format!("{label} ({}): constraint {key} failed: {human}", p.url),
                        )
                        .at(&p.ty),
                    );
                }
            }
            continue;
        };
        for (pexpr, pv) in select(resource, &p.ty, parent) {
            let count = match pv.get(name) {
                Some(Value::Array(a)) => a.len(),
                Some(Value::Null) | None => 0,
                Some(_) => 1,
            };
            let eexpr = format!("{pexpr}.{name}");
            if let Some(min) = e.min {
                if (count as u32) < min {
                    out.push(
                        Issue::error(
                            IssueType::Required,
                            format!("{label} ({}): {} is required (min {min})", p.url, e.path),
                        )
                        .at(&eexpr),
                    );
                }
            }
            if let Some(max) = e.max {
                if count as u32 > max {
                    out.push(
                        Issue::error(
                            IssueType::Structure,
                            format!("{label} ({}): {} allows at most {max}", p.url, e.path),
                        )
                        .at(&eexpr),
                    );
                }
            }
        }
        let values = select(resource, &p.ty, &e.path);
        for (vexpr, v) in &values {
            if !e.targets.is_empty() {
                if let Some(t) = ref_type(resource, v) {
                    if !e.targets.iter().any(|x| x == t) {
                        out.push(
                            Issue::error(
                                IssueType::Invalid,
                                format!(
                                    "{label} ({}): {} must refer to {} (found {t})",
                                    p.url,
                                    e.path,
                                    e.targets.join(" or ")
                                ),
                            )
                            .at(format!("{vexpr}.reference")),
                        );
                    }
                }
            }
            if let Some(vs) = &e.binding {
                let pairs = crate::fhir::terminology::expand(vs).unwrap_or_default();
                let ok = v["coding"].as_array().into_iter().flatten().any(|c| {
                    pairs.iter().any(|(s, k)| {
                        c["system"].as_str() == Some(s) && c["code"].as_str() == Some(k)
                    })
                });
                if !ok {
                    out.push(
                        Issue::error(
                            IssueType::CodeInvalid,
                            format!(
                                "{label} ({}): {} must have a coding from {vs} ({})",
                                p.url,
                                e.path,
                                pairs
                                    .iter()
                                    .map(|(_, c)| c.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                        .at(vexpr),
                    );
                }
            }
            for (key, human, cond) in &e.constraints {
                if !constraint_holds(cond.as_ref(), resource, v) {
                    out.push(
                        Issue::error(
                            IssueType::Invariant,
                            format!("{label} ({}): constraint {key} failed: {human}", p.url),
                        )
                        .at(vexpr),
                    );
                }
            }
        }
    }
    out
}

/// A profile constraint on `v` (an element of `resource`, or the resource itself); one that
/// does not compile fails (a test asserts they all do).
fn constraint_holds(cond: Option<&Cond>, resource: &Value, v: &Value) -> bool {
    cond.is_some_and(|c| invariant::holds(c, &crate::fhir::fhirpath::Env::new(resource), v, None))
}

#[cfg(test)]
mod tests {
    const ROLE_SYSTEM: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-care-team-role";
    use super::*;
    use serde_json::json;

    const PAT: &str = "http://icm-fhir.org/fhir/StructureDefinition/icm-patient";

    fn exprs(v: Value, enforce: &[&str]) -> Vec<String> {
        let e: Vec<String> = enforce.iter().map(|s| s.to_string()).collect();
        check(&v, &e)
            .into_iter()
            .flat_map(|i| i.expression)
            .collect()
    }

    pub fn icm_patient() -> Value {
        json!({"resourceType": "Patient", "meta": {"profile": [PAT]},
            "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}, "system": "urn:mrn", "value": "1"}],
            "name": [{"family": "N"}], "gender": "female", "birthDate": "1950-01-01"})
    }

    #[test]
    fn our_conformance_resources_are_valid_r4() {
        for (rt, id, text) in RESOURCES {
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(v["resourceType"], *rt);
            assert_eq!(v["id"], *id);
            let r = crate::fhir::validate::validate(&v);
            assert!(!r.has_errors(), "{rt}/{id}: {:?}", r.issues);
        }
    }

    #[test]
    fn loads_the_profiles_and_value_sets() {
        assert_eq!(all().count(), 4);
        assert!(by_url(&format!("{PAT}|0.1.0")).is_some());
        assert_eq!(
            crate::fhir::terminology::expand("http://icm-fhir.org/fhir/ValueSet/icm-program")
                .unwrap()
                .len(),
            4
        );
        for p in all() {
            for e in &p.elems {
                for (k, _, c) in &e.constraints {
                    assert!(c.is_some(), "{k} is not checkable");
                }
            }
        }
    }

    #[test]
    fn patient_profile_only_when_claimed_or_enforced() {
        assert_eq!(exprs(icm_patient(), &[]), Vec::<String>::new());
        let bare = json!({"resourceType": "Patient", "name": [{"family": "N"}]});
        assert_eq!(exprs(bare.clone(), &[]), Vec::<String>::new());
        let e = exprs(bare, &["Patient"]);
        assert_eq!(
            e,
            vec![
                "Patient",
                "Patient.identifier",
                "Patient.gender",
                "Patient.birthDate"
            ]
        );
        let mut p = icm_patient();
        p["identifier"][0]["type"]["coding"][0]["code"] = json!("SS");
        assert_eq!(exprs(p, &[]), vec!["Patient"]);
    }

    #[test]
    fn careteam_needs_one_active_lead() {
        let role = |c: &str| json!([{"coding": [{"system": ROLE_SYSTEM, "code": c}]}]);
        let t = |parts: Value| json!({"resourceType": "CareTeam", "status": "active", "subject": {"reference": "Patient/1"}, "participant": parts});
        let ok = t(
            json!([{"role": role("care-manager"), "member": {"reference": "Practitioner/1"}},
            {"role": role("care-coordinator"), "member": {"reference": "Practitioner/2"}, "period": {"end": "2001-01-01"}}]),
        );
        assert_eq!(exprs(ok, &["CareTeam"]), Vec::<String>::new());
        let two = t(
            json!([{"role": role("care-manager"), "member": {"reference": "Practitioner/1"}},
            {"role": role("care-coordinator"), "member": {"reference": "Practitioner/2"}}]),
        );
        assert_eq!(exprs(two, &["CareTeam"]), vec!["CareTeam"]);
        let missing = t(json!([{"role": role("nurse")}]));
        assert_eq!(
            exprs(missing, &["CareTeam"]),
            vec!["CareTeam", "CareTeam.participant[0].member"]
        );
        let mut group =
            t(json!([{"role": role("care-manager"), "member": {"reference": "Practitioner/1"}}]));
        group["subject"] = json!({"reference": "Group/1"});
        assert_eq!(
            exprs(group, &["CareTeam"]),
            vec!["CareTeam.subject.reference"]
        );
    }

    #[test]
    fn careplan_and_task_rules() {
        let cp = json!({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/1"},
            "category": [{"coding": [{"system": "http://icm-fhir.org/fhir/CodeSystem/icm-program", "code": "social-needs"}]}],
            "careTeam": [{"reference": "CareTeam/1"}], "period": {"start": "2024-01-01"},
            "goal": [{"reference": "Goal/1"}], "addresses": [{"reference": "Condition/1"}]});
        assert_eq!(exprs(cp.clone(), &["CarePlan"]), Vec::<String>::new());
        let mut bad = cp.clone();
        bad["category"][0]["coding"][0]["code"] = json!("dental");
        bad.as_object_mut().unwrap().remove("period");
        bad["addresses"] = json!([{"reference": "Observation/1"}]);
        assert_eq!(
            exprs(bad, &["CarePlan"]),
            vec![
                "CarePlan",
                "CarePlan.category[0]",
                "CarePlan.addresses[0].reference"
            ]
        );
        let task = json!({"resourceType": "Task", "status": "in-progress", "intent": "order", "priority": "routine",
            "for": {"reference": "Patient/1"}, "basedOn": [{"reference": "CarePlan/1"}], "owner": {"reference": "Practitioner/1"},
            "restriction": {"period": {"end": "2030-01-01"}}});
        assert_eq!(exprs(task.clone(), &["Task"]), Vec::<String>::new());
        let mut t = task.clone();
        t.as_object_mut().unwrap().remove("owner");
        t.as_object_mut().unwrap().remove("restriction");
        t["basedOn"] = json!([{"reference": "ServiceRequest/1"}]);
        assert_eq!(exprs(t, &["Task"]).len(), 3);
        let mut done = task;
        done["status"] = json!("completed");
        done.as_object_mut().unwrap().remove("restriction");
        assert_eq!(exprs(done, &["Task"]), Vec::<String>::new());
    }
}
