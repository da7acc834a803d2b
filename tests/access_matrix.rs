//! Access-control matrix: every entry point × principal, on SQLite and PostgreSQL, plus a
//! property test of random searches.
//!
//! The contract for a caller who may not see patient B: the server answers "as if B did not
//! exist". No resource of B, no id of B's resources, no "MRN-B"/"Bravo", no count that includes
//! B, and no status other than what a never-existing id gives. Where a request names B, the same
//! request naming a "ghost" (ids and strings that never existed) is sent too and both answers
//! must have the same status and shape (see `as_if_absent`). What a caller may see must be
//! complete: exact entry sets and totals.
//!
//! Each matrix test collects every violation (`Report`) and fails once at the end with the whole
//! list, so one run shows every open door.
mod common;
use std::collections::BTreeSet;

use common::auth::*;
use common::*;

const MRN: &str = "http://example.org/mrn";

/// Types of the Patient compartment that the world holds data of.
const PATIENT_TYPES: [&str; 7] = [
    "Patient",
    "CarePlan",
    "Task",
    "Observation",
    "CareTeam",
    "Encounter",
    "Condition",
];

/// One patient and their data.
struct Pat {
    letter: char,
    id: String,
    family: &'static str,
    mrn: &'static str,
    plan: String,
    task: String,
    obs: String,
    team: String,
    enc: String,
    cond: String,
}

impl Pat {
    /// `(type, id)` of every resource in the patient's compartment.
    fn resources(&self) -> [(&'static str, &str); 7] {
        [
            ("Patient", &self.id),
            ("CarePlan", &self.plan),
            ("Task", &self.task),
            ("Observation", &self.obs),
            ("CareTeam", &self.team),
            ("Encounter", &self.enc),
            ("Condition", &self.cond),
        ]
    }

    /// `Type/id` of the patient's resource of type `ty`.
    fn r(&self, ty: &str) -> String {
        let (t, id) = self
            .resources()
            .into_iter()
            .find(|(t, _)| *t == ty)
            .unwrap();
        format!("{t}/{id}")
    }

    fn refs(&self) -> BTreeSet<String> {
        self.resources()
            .iter()
            .map(|(t, id)| format!("{t}/{id}"))
            .collect()
    }

    /// Strings that reveal this patient, each with the stand-in of a never-existing patient.
    fn secrets(&self) -> Vec<(String, String)> {
        let l = self.letter;
        let mut out: Vec<(String, String)> = self
            .resources()
            .iter()
            .map(|(t, id)| (id.to_string(), format!("ghost-{l}-{}", t.to_lowercase())))
            .collect();
        let (fam, mrn) = if l == 'b' {
            ("Zulu", "MRN-Z")
        } else {
            ("Yankee", "MRN-Y")
        };
        out.push((self.family.to_string(), fam.to_string()));
        out.push((self.mrn.to_string(), mrn.to_string()));
        out
    }
}

struct World {
    a: Pat,
    b: Pat,
    p1: String,
    p2: String,
    p3: String,
    system: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// `patient/*.cruds`, patient = A.
    PatientA,
    /// `user/*.cruds`, Practitioner P1, on A's active CareTeam.
    PractOnATeam,
    /// `user/*.cruds`, Practitioner P2, on no team.
    PractNoTeam,
    /// `patient/Observation.rs`, patient = A.
    ObsOnlyA,
    /// `system/*.cruds`.
    System,
}

/// Callers bounded to patients (principals 1–3).
const BOUNDED: [Who; 3] = [Who::PatientA, Who::PractOnATeam, Who::PractNoTeam];
/// Callers that may read every type (1–3 and the system token).
const READERS: [Who; 4] = [
    Who::PatientA,
    Who::PractOnATeam,
    Who::PractNoTeam,
    Who::System,
];

impl World {
    fn token(&self, who: Who) -> String {
        let t = |sub: &str, scope: &str, extra: Value| mint(&claims(sub, scope, extra));
        match who {
            Who::PatientA => t("pa", "patient/*.cruds", json!({"patient": self.a.id})),
            Who::PractOnATeam => t(
                "doc1",
                "user/*.cruds",
                json!({"fhirUser": format!("Practitioner/{}", self.p1)}),
            ),
            Who::PractNoTeam => t(
                "doc2",
                "user/*.cruds",
                json!({"fhirUser": format!("Practitioner/{}", self.p2)}),
            ),
            Who::ObsOnlyA => t(
                "obs",
                "patient/Observation.rs",
                json!({"patient": self.a.id}),
            ),
            Who::System => self.system.clone(),
        }
    }

    /// The patients whose data the caller may see.
    fn sees(&self, who: Who) -> Vec<&Pat> {
        match who {
            Who::PatientA | Who::PractOnATeam | Who::ObsOnlyA => vec![&self.a],
            Who::PractNoTeam => vec![],
            Who::System => vec![&self.a, &self.b],
        }
    }

    /// The patients the caller must not learn anything about.
    fn hidden(&self, who: Who) -> Vec<&Pat> {
        let seen = self.sees(who);
        [&self.a, &self.b]
            .into_iter()
            .filter(|p| !seen.iter().any(|s| s.id == p.id))
            .collect()
    }

    fn visible(&self, who: Who, p: &Pat) -> bool {
        self.sees(who).iter().any(|s| s.id == p.id)
    }
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// Patients A and B with a CarePlan, a Task (owned by P1 for both, based on the CarePlan), an
/// Observation, an Encounter, a Condition and an active CareTeam each (P1 on A's, P3 on B's);
/// P2 is on no team.
fn world(s: &TestServer) -> World {
    let system = mint(&claims("backend", "system/*.cruds", json!({})));
    let mk = |body: Value| {
        let ty = body["resourceType"].as_str().unwrap().to_string();
        let r = s.as_token(Some(&system), "POST", &ty, Some(&body));
        assert_eq!(r.status, 201, "world: {ty}: {}", r.body);
        id_of(&r.json())
    };
    let org = mk(json!({"resourceType": "Organization", "name": "Clinic"}));
    let pract =
        |family: &str| mk(json!({"resourceType": "Practitioner", "name": [{"family": family}]}));
    let (p1, p2, p3) = (pract("One"), pract("Two"), pract("Three"));
    let pat = |letter: char, family: &'static str, mrn: &'static str, member: &str| {
        let id = mk(json!({"resourceType": "Patient",
            "identifier": [{"system": MRN, "value": mrn}],
            "name": [{"family": family, "given": ["Pat"]}],
            "birthDate": "1970-01-01",
            "managingOrganization": {"reference": format!("Organization/{org}")}}));
        let subject = json!({"reference": format!("Patient/{id}")});
        let plan = mk(
            json!({"resourceType": "CarePlan", "status": "active", "intent": "plan",
            "subject": subject, "period": {"start": "2024-01-01"}}),
        );
        let task = mk(
            json!({"resourceType": "Task", "status": "ready", "intent": "order",
            "for": subject, "basedOn": [{"reference": format!("CarePlan/{plan}")}],
            "owner": {"reference": format!("Practitioner/{p1}")}}),
        );
        let obs = mk(json!({"resourceType": "Observation", "status": "final",
            "code": {"text": "weight"}, "subject": subject, "effectiveDateTime": "2024-01-15"}));
        let team = mk(
            json!({"resourceType": "CareTeam", "status": "active", "subject": subject,
            "participant": [{"member": {"reference": format!("Practitioner/{member}")}}]}),
        );
        let enc = mk(json!({"resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": subject, "period": {"start": "2024-01-15"}}));
        let cond = mk(
            json!({"resourceType": "Condition", "code": {"text": "diabetes"},
            "subject": subject, "onsetDateTime": "2020-05-01"}),
        );
        Pat {
            letter,
            id,
            family,
            mrn,
            plan,
            task,
            obs,
            team,
            enc,
            cond,
        }
    };
    let a = pat('a', "Alpha", "MRN-A", &p1);
    let b = pat('b', "Bravo", "MRN-B", &p3);
    World {
        a,
        b,
        p1,
        p2,
        p3,
        system,
    }
}

// ---------------------------------------------------------------------------------------------
// Checking helpers
// ---------------------------------------------------------------------------------------------

/// Every violation found by a test; the test fails once, at the end, listing all of them.
#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.0.push(msg());
        }
    }

    #[track_caller]
    fn finish(self) {
        if !self.0.is_empty() {
            panic!(
                "{} violation(s):\n  - {}",
                self.0.len(),
                self.0.join("\n  - ")
            );
        }
    }
}

fn short(body: &str) -> String {
    let b: String = body.chars().take(400).collect();
    if b.len() < body.len() {
        format!("{b}…")
    } else {
        b
    }
}

/// A request with the caller's token.
fn call(
    s: &TestServer,
    tok: &str,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    let auth = format!("Bearer {tok}");
    let mut h: Vec<(&str, &str)> = vec![("Authorization", &auth)];
    if !extra
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        h.push(("Content-Type", "application/fhir+json"));
    }
    h.extend_from_slice(extra);
    s.request(method, path, &h, body)
}

fn get(s: &TestServer, tok: &str, path: &str) -> Resp {
    call(s, tok, "GET", path, &[], None)
}

/// Remove `link` from every Bundle: links echo the client's own query.
fn strip_links(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if o.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
                o.remove("link");
            }
            o.values_mut().for_each(strip_links);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_links),
        _ => {}
    }
}

/// Whether a response text reveals any of the `hidden` patients. Bundle links (the client's
/// own query) are ignored, and so is any secret the client itself sent (`sent`): an error may
/// echo the id in the URL. Everything else — ids of the hidden patients' resources, their MRN
/// or family name — is a leak.
fn leak_free(text: &str, hidden: &[&Pat], sent: &str) -> Result<(), String> {
    let cleaned = match serde_json::from_str::<Value>(text) {
        Ok(mut v) => {
            strip_links(&mut v);
            v.to_string()
        }
        Err(_) => text.to_string(),
    };
    let found: Vec<String> = hidden
        .iter()
        .flat_map(|p| p.secrets())
        .map(|(s, _)| s)
        .filter(|s| !sent.contains(s.as_str()) && cleaned.contains(s.as_str()))
        .collect();
    if found.is_empty() {
        Ok(())
    } else {
        Err(format!("reveals {found:?}"))
    }
}

fn check_leak_free(rep: &mut Report, label: &str, r: &Resp, hidden: &[&Pat], sent: &str) {
    if let Err(e) = leak_free(&r.body, hidden, sent) {
        rep.check(false, || {
            format!("{label}: {e}: {} {}", r.status, short(&r.body))
        });
    }
}

/// Replace every secret of `hidden` by its never-existing stand-in (or back).
fn substitute(text: &str, hidden: &[&Pat], to_ghost: bool) -> String {
    let mut t = text.to_string();
    for p in hidden {
        for (real, ghost) in p.secrets() {
            t = if to_ghost {
                t.replace(&real, &ghost)
            } else {
                t.replace(&ghost, &real)
            };
        }
    }
    t
}

/// What must not differ between an answer about a hidden patient and one about a never-existing
/// patient: status, Bundle type/total/entries (resource, mode, status, outcome codes) and
/// OperationOutcome issue codes. Wording of diagnostics is not compared (only leak-checked).
fn shape(r: &Resp) -> Value {
    fn of(v: &Value) -> Value {
        match v["resourceType"].as_str() {
            Some("Bundle") => json!({
                "type": v["type"],
                "total": v["total"],
                "entry": v["entry"].as_array().map(|es| es.iter().map(|e| json!({
                    "resource": of(&e["resource"]),
                    "mode": e["search"]["mode"],
                    "status": e["response"]["status"],
                    "outcome": of(&e["response"]["outcome"]),
                })).collect::<Vec<_>>()),
            }),
            Some("OperationOutcome") => json!(v["issue"].as_array().map(|is| is
                .iter()
                .map(|i| json!([i["severity"], i["code"]]))
                .collect::<Vec<_>>())),
            Some(t) => json!(format!("{t}/{}", v["id"].as_str().unwrap_or(""))),
            None => Value::Null,
        }
    }
    let body = serde_json::from_str::<Value>(&r.body).map_or(Value::Null, |v| of(&v));
    json!({"status": r.status, "body": body})
}

/// Send a request naming hidden data and the same request naming a never-existing patient;
/// both answers must look alike and the first must reveal nothing. Returns the first answer.
#[allow(clippy::too_many_arguments)]
fn as_if_absent(
    s: &TestServer,
    w: &World,
    rep: &mut Report,
    who: Who,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    let tok = w.token(who);
    let hidden = w.hidden(who);
    let kind = body
        .and_then(|b| serde_json::from_str::<Value>(b).ok())
        .and_then(|v| v["type"].as_str().map(str::to_string))
        .unwrap_or_default();
    let label = if path.is_empty() {
        format!("{who:?} POST {kind} Bundle")
    } else {
        format!("{who:?} {method} {path}")
    };
    let real = call(s, &tok, method, path, extra, body);
    let gpath = substitute(path, &hidden, true);
    let gextra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), substitute(v, &hidden, true)))
        .collect();
    let gextra: Vec<(&str, &str)> = gextra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let gbody = body.map(|b| substitute(b, &hidden, true));
    let ghost = call(s, &tok, method, &gpath, &gextra, gbody.as_deref());
    let ghost_back = Resp {
        body: substitute(&ghost.body, &hidden, false),
        ..ghost.clone()
    };
    let (sr, sg) = (shape(&real), shape(&ghost_back));
    rep.check(sr == sg, || {
        format!(
            "{label}: answers differently than for a never-existing patient: {sr} vs {sg}; body {}",
            short(&real.body)
        )
    });
    let sent = format!(
        "{path} {} {}",
        body.unwrap_or(""),
        extra.iter().map(|(_, v)| *v).collect::<Vec<_>>().join(" ")
    );
    check_leak_free(rep, &label, &real, &hidden, &sent);
    real
}

/// `Type/id` of the entries of a Bundle with the given search mode (None: every entry).
fn entry_refs(v: &Value, mode: Option<&str>) -> BTreeSet<String> {
    v["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| mode.is_none_or(|m| e["search"]["mode"] == m))
        .filter_map(|e| {
            let r = &e["resource"];
            Some(format!(
                "{}/{}",
                r["resourceType"].as_str()?,
                r["id"].as_str()?
            ))
        })
        .filter(|r| !r.starts_with("OperationOutcome/"))
        .collect()
}

fn patient_refs(refs: &BTreeSet<String>) -> BTreeSet<String> {
    refs.iter()
        .filter(|r| {
            PATIENT_TYPES
                .iter()
                .any(|t| r.starts_with(&format!("{t}/")))
        })
        .cloned()
        .collect()
}

fn refs_of(pats: &[&Pat], types: &[&str]) -> BTreeSet<String> {
    pats.iter()
        .flat_map(|p| types.iter().map(|t| p.r(t)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Searches: cases and their expected answers
// ---------------------------------------------------------------------------------------------

struct Case {
    q: String,
    /// Only B's data can match (the query targets B).
    only_b: bool,
    matches: &'static str,
    includes: &'static [&'static str],
    /// `_summary=count` / `_count=0`: a total, no entries.
    count_only: bool,
}

/// What a searchset must hold.
#[derive(Debug, PartialEq, Eq)]
struct Want {
    matches: BTreeSet<String>,
    includes: BTreeSet<String>,
    total: usize,
    /// The total must be present (otherwise: equal when present).
    total_required: bool,
}

impl Case {
    fn want(&self, w: &World, who: Who) -> Want {
        let seen: Vec<&Pat> = w
            .sees(who)
            .into_iter()
            .filter(|p| !self.only_b || p.id == w.b.id)
            .collect();
        let matches = refs_of(&seen, &[self.matches]);
        let total = matches.len();
        let required = self.count_only || self.q.contains("_total=accurate");
        if self.count_only {
            return Want {
                matches: BTreeSet::new(),
                includes: BTreeSet::new(),
                total,
                total_required: required,
            };
        }
        Want {
            matches,
            includes: refs_of(&seen, self.includes),
            total,
            total_required: required,
        }
    }
}

fn cases(w: &World) -> Vec<Case> {
    let b = &w.b.id;
    let c = |q: String, only_b: bool, matches, includes, count_only| Case {
        q,
        only_b,
        matches,
        includes,
        count_only,
    };
    vec![
        c("Patient".into(), false, "Patient", &[], false),
        c("CarePlan".into(), false, "CarePlan", &[], false),
        c(
            format!("CarePlan?patient={b}"),
            true,
            "CarePlan",
            &[],
            false,
        ),
        c(
            format!("CarePlan?subject=Patient/{b}"),
            true,
            "CarePlan",
            &[],
            false,
        ),
        c(
            "CarePlan?_summary=count".into(),
            false,
            "CarePlan",
            &[],
            true,
        ),
        c(
            "CarePlan?_total=accurate".into(),
            false,
            "CarePlan",
            &[],
            false,
        ),
        c(
            "Task?_include=Task:patient".into(),
            false,
            "Task",
            &["Patient"],
            false,
        ),
        c(
            "Patient?_revinclude=CarePlan:subject".into(),
            false,
            "Patient",
            &["CarePlan"],
            false,
        ),
        c(
            "CarePlan?_include=CarePlan:subject&_revinclude:iterate=Task:based-on".into(),
            false,
            "CarePlan",
            &["Patient", "Task"],
            false,
        ),
        c(
            "CarePlan?subject:Patient.name=Bravo".into(),
            true,
            "CarePlan",
            &[],
            false,
        ),
        c(
            "Patient?_has:CarePlan:subject:status=active".into(),
            false,
            "Patient",
            &[],
            false,
        ),
        c(
            format!("Patient?identifier={MRN}|MRN-B"),
            true,
            "Patient",
            &[],
            false,
        ),
    ]
}

/// What a searchset holds, in the terms of `Want`.
fn got(v: &Value) -> (BTreeSet<String>, BTreeSet<String>, Option<usize>) {
    (
        entry_refs(v, Some("match")),
        entry_refs(v, Some("include")),
        v["total"].as_u64().map(|t| t as usize),
    )
}

fn check_searchset(rep: &mut Report, label: &str, v: &Value, want: &Want) {
    let (m, i, total) = got(v);
    rep.check(m == want.matches, || {
        format!("{label}: matches {m:?}, expected {:?}", want.matches)
    });
    rep.check(i == want.includes, || {
        format!("{label}: includes {i:?}, expected {:?}", want.includes)
    });
    match total {
        Some(t) => rep.check(t == want.total, || {
            format!("{label}: total {t}, expected {}", want.total)
        }),
        None => rep.check(!want.total_required, || {
            format!("{label}: no total, expected {}", want.total)
        }),
    }
}

fn check_search(
    rep: &mut Report,
    w: &World,
    who: Who,
    label: &str,
    r: &Resp,
    want: &Want,
    sent: &str,
) {
    if r.status != 200 {
        rep.check(false, || {
            format!("{label}: status {}: {}", r.status, short(&r.body))
        });
        return;
    }
    check_leak_free(rep, label, r, &w.hidden(who), sent);
    check_searchset(rep, label, &r.json(), want);
}

// ---------------------------------------------------------------------------------------------
// The matrix
// ---------------------------------------------------------------------------------------------

// read, vread, instance history: 404 like a never-existing id; type and system history: no
// hidden entries, visible ones complete.
secure_tests!(reads_and_history, |s| {
    let w = world(s);
    let mut rep = Report::default();
    for who in READERS {
        let tok = w.token(who);
        for p in [&w.a, &w.b] {
            for path in [
                format!("Patient/{}", p.id),
                format!("CarePlan/{}", p.plan),
                format!("Task/{}", p.task),
                format!("Observation/{}", p.obs),
                format!("Patient/{}/_history/1", p.id),
                format!("CarePlan/{}/_history/1", p.plan),
                format!("Patient/{}/_history", p.id),
                format!("CarePlan/{}/_history", p.plan),
            ] {
                if w.visible(who, p) {
                    let r = get(s, &tok, &path);
                    rep.check(r.status == 200, || {
                        format!("{who:?} GET {path}: {} {}", r.status, short(&r.body))
                    });
                } else {
                    let r = as_if_absent(s, &w, &mut rep, who, "GET", &path, &[], None);
                    rep.check(r.status == 404, || {
                        format!("{who:?} GET {path}: {} (expected 404)", r.status)
                    });
                }
            }
        }
        let seen = w.sees(who);
        let hidden = w.hidden(who);
        // Type history: exactly the visible CarePlans.
        let r = get(s, &tok, "CarePlan/_history?_count=1000");
        check_leak_free(
            &mut rep,
            &format!("{who:?} CarePlan/_history"),
            &r,
            &hidden,
            "",
        );
        let refs = entry_refs(&r.json(), None);
        let want = refs_of(&seen, &["CarePlan"]);
        rep.check(r.status == 200 && refs == want, || {
            format!(
                "{who:?} CarePlan/_history: {} {refs:?}, expected {want:?}",
                r.status
            )
        });
        // System history: every visible patient resource, nothing of the others.
        let r = get(s, &tok, "_history?_count=1000");
        check_leak_free(&mut rep, &format!("{who:?} _history"), &r, &hidden, "");
        let refs = patient_refs(&entry_refs(&r.json(), None));
        let want: BTreeSet<String> = seen.iter().flat_map(|p| p.refs()).collect();
        rep.check(r.status == 200 && refs == want, || {
            format!("{who:?} _history: {} {refs:?}, expected {want:?}", r.status)
        });
    }
    // The reference answer for a never-existing id.
    let pa = w.token(Who::PatientA);
    let r = get(s, &pa, "CarePlan/does-not-exist");
    rep.check(r.status == 404, || {
        format!("CarePlan/does-not-exist: {}", r.status)
    });
    rep.finish();
});

// search-type, GET and POST _search.
secure_tests!(searches, |s| {
    let w = world(s);
    let mut rep = Report::default();
    for who in READERS {
        let tok = w.token(who);
        for c in cases(&w) {
            let want = c.want(&w, who);
            let r = get(s, &tok, &c.q);
            check_search(
                &mut rep,
                &w,
                who,
                &format!("{who:?} GET {}", c.q),
                &r,
                &want,
                &c.q,
            );
            let (ty, qs) = c.q.split_once('?').unwrap_or((&c.q, ""));
            let r = call(
                s,
                &tok,
                "POST",
                &format!("{ty}/_search"),
                &[("Content-Type", "application/x-www-form-urlencoded")],
                Some(qs),
            );
            let label = format!("{who:?} POST {ty}/_search {qs}");
            check_search(&mut rep, &w, who, &label, &r, &want, &c.q);
        }
    }
    rep.finish();
});

/// The searches sent as batch/transaction entries (besides `GET _history` and `GET Patient/B`).
fn bundle_searches(w: &World) -> Vec<Case> {
    let keep = [
        "Patient".to_string(),
        "CarePlan".to_string(),
        "CarePlan?_summary=count".to_string(),
        format!("CarePlan?patient={}", w.b.id),
        "Task?_include=Task:patient".to_string(),
        "Patient?_revinclude=CarePlan:subject".to_string(),
    ];
    cases(w)
        .into_iter()
        .filter(|c| keep.contains(&c.q))
        .collect()
}

fn get_bundle(kind: &str, urls: &[String]) -> Value {
    let entry: Vec<Value> = urls
        .iter()
        .map(|u| json!({"request": {"method": "GET", "url": u}}))
        .collect();
    json!({"resourceType": "Bundle", "type": kind, "entry": entry})
}

// batch and transaction GET entries answer what the same GET answers directly.
secure_tests!(batch_and_transaction_searches, |s| {
    let w = world(s);
    let mut rep = Report::default();
    let searches = bundle_searches(&w);
    for who in READERS {
        let tok = w.token(who);
        for kind in ["batch", "transaction"] {
            let mut urls: Vec<String> = searches.iter().map(|c| c.q.clone()).collect();
            urls.push("_history".into());
            if kind == "batch" {
                // In a transaction a failing read fails the whole Bundle: tested on its own below.
                urls.push(format!("Patient/{}", w.b.id));
            }
            let bundle = get_bundle(kind, &urls).to_string();
            let r = if who == Who::System {
                call(s, &tok, "POST", "", &[], Some(&bundle))
            } else {
                as_if_absent(s, &w, &mut rep, who, "POST", "", &[], Some(&bundle))
            };
            let label = format!("{who:?} {kind}");
            if r.status != 200 {
                rep.check(false, || {
                    format!("{label}: {} {}", r.status, short(&r.body))
                });
                continue;
            }
            check_leak_free(&mut rep, &label, &r, &w.hidden(who), &bundle);
            let v = r.json();
            let entries = v["entry"].as_array().cloned().unwrap_or_default();
            rep.check(entries.len() == urls.len(), || {
                format!(
                    "{label}: {} entries for {} requests",
                    entries.len(),
                    urls.len()
                )
            });
            for (u, e) in urls.iter().zip(&entries) {
                let label = format!("{label} entry GET {u}");
                let status = e["response"]["status"].as_str().unwrap_or("");
                if u.starts_with("Patient/") {
                    let want = if who == Who::System { "200" } else { "404" };
                    rep.check(status.starts_with(want), || {
                        format!("{label}: status {status:?}, expected {want}")
                    });
                    continue;
                }
                if !status.starts_with("200") {
                    rep.check(false, || format!("{label}: status {status:?}: {e}"));
                    continue;
                }
                let nested = &e["resource"];
                let seen = w.sees(who);
                if u == "_history" {
                    // Here only: nothing outside the boundary. Equality with the direct answer
                    // is `bundle_count_and_history_entries`.
                    let n = patient_refs(&entry_refs(nested, None));
                    let allowed: BTreeSet<String> = seen.iter().flat_map(|p| p.refs()).collect();
                    rep.check(n.is_subset(&allowed), || {
                        format!("{label}: {n:?} not within {allowed:?}")
                    });
                    continue;
                }
                let c = searches.iter().find(|c| &c.q == u).unwrap();
                let want = c.want(&w, who);
                if c.count_only {
                    // Here only: the total counts what may be seen, entries stay inside.
                    let (m, _, total) = got(nested);
                    rep.check(total == Some(want.total), || {
                        format!("{label}: total {total:?}, expected {}", want.total)
                    });
                    let allowed = refs_of(&seen, &[c.matches]);
                    rep.check(m.is_subset(&allowed), || {
                        format!("{label}: {m:?} not within {allowed:?}")
                    });
                    continue;
                }
                let direct = get(s, &tok, u).json();
                rep.check(got(nested) == got(&direct), || {
                    format!("{label}: {:?} vs direct {:?}", got(nested), got(&direct))
                });
                check_searchset(&mut rep, &label, nested, &want);
            }
        }
        // A transaction reading B: as if B did not exist (a failed transaction for 1–3).
        let bundle = get_bundle("transaction", &[format!("Patient/{}", w.b.id)]).to_string();
        if who == Who::System {
            let r = call(s, &tok, "POST", "", &[], Some(&bundle));
            rep.check(
                r.status == 200 && entry_refs(&r.json(), None).contains(&w.b.r("Patient")),
                || {
                    format!(
                        "System transaction GET Patient/B: {} {}",
                        r.status,
                        short(&r.body)
                    )
                },
            );
        } else {
            let r = as_if_absent(s, &w, &mut rep, who, "POST", "", &[], Some(&bundle));
            rep.check(r.status == 404, || {
                format!(
                    "{who:?} transaction GET Patient/B: {} (expected 404)",
                    r.status
                )
            });
        }
    }
    rep.finish();
});

// Not a leak today but part of the contract: in a batch or transaction, `GET Type?_summary=count`
// and `GET _history` answer what the same GET answers directly.
secure_tests!(bundle_count_and_history_entries, |s| {
    let w = world(s);
    let mut rep = Report::default();
    let urls = [
        "CarePlan?_summary=count".to_string(),
        "_history".to_string(),
    ];
    for who in READERS {
        let tok = w.token(who);
        for kind in ["batch", "transaction"] {
            let bundle = get_bundle(kind, &urls).to_string();
            let r = call(s, &tok, "POST", "", &[], Some(&bundle));
            if r.status != 200 {
                rep.check(false, || {
                    format!("{who:?} {kind}: {} {}", r.status, short(&r.body))
                });
                continue;
            }
            let v = r.json();
            for (i, u) in urls.iter().enumerate() {
                let nested = &v["entry"][i]["resource"];
                let direct = get(s, &tok, u).json();
                let label = format!("{who:?} {kind} entry GET {u}");
                if u == "_history" {
                    let (n, d) = (entry_refs(nested, None), entry_refs(&direct, None));
                    rep.check(n == d, || format!("{label}: {n:?} vs direct {d:?}"));
                } else {
                    rep.check(got(nested) == got(&direct), || {
                        format!("{label}: {:?} vs direct {:?}", got(nested), got(&direct))
                    });
                }
            }
        }
    }
    rep.finish();
});

// Not a leak today but part of the contract: `_count=0` gives no entries and the total of what
// the caller may see.
secure_tests!(count_zero_total, |s| {
    let w = world(s);
    let mut rep = Report::default();
    let c = Case {
        q: "CarePlan?_count=0".into(),
        only_b: false,
        matches: "CarePlan",
        includes: &[],
        count_only: true,
    };
    for who in READERS {
        let tok = w.token(who);
        let want = c.want(&w, who);
        let r = get(s, &tok, &c.q);
        check_search(
            &mut rep,
            &w,
            who,
            &format!("{who:?} GET {}", c.q),
            &r,
            &want,
            &c.q,
        );
        let r = call(
            s,
            &tok,
            "POST",
            "CarePlan/_search",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some("_count=0"),
        );
        let label = format!("{who:?} POST CarePlan/_search _count=0");
        check_search(&mut rep, &w, who, &label, &r, &want, &c.q);
    }
    rep.finish();
});

fn patient_count(s: &TestServer, w: &World) -> u64 {
    let r = get(s, &w.system, "Patient?_summary=count");
    r.json()["total"].as_u64().unwrap()
}

fn version_of(s: &TestServer, w: &World, path: &str) -> (u16, String) {
    let r = get(s, &w.system, path);
    let v = if r.status == 200 {
        r.json()["meta"]["versionId"]
            .as_str()
            .unwrap_or("")
            .to_string()
    } else {
        String::new()
    };
    (r.status, v)
}

/// B's Patient and CarePlan still exist, unchanged (version 1).
fn b_unchanged(s: &TestServer, w: &World, rep: &mut Report, label: &str) {
    for path in [w.b.r("Patient"), w.b.r("CarePlan")] {
        let got = version_of(s, w, &path);
        rep.check(got == (200, "1".to_string()), || {
            format!("{label}: afterwards {path} is {got:?}, expected (200, \"1\")")
        });
    }
}

fn new_patient_mrn_b() -> String {
    json!({"resourceType": "Patient", "identifier": [{"system": MRN, "value": "MRN-B"}],
        "name": [{"family": "Mallory"}]})
    .to_string()
}

// POST Patient with If-None-Exist naming B.
secure_tests!(conditional_create, |s| {
    let w = world(s);
    let mut rep = Report::default();
    let criteria = format!("identifier={MRN}|MRN-B");
    let body = new_patient_mrn_b();
    for who in BOUNDED {
        let before = patient_count(s, &w);
        let r = call(
            s,
            &w.token(who),
            "POST",
            "Patient",
            &[("If-None-Exist", &criteria)],
            Some(&body),
        );
        let label = format!("{who:?} POST Patient If-None-Exist {criteria}");
        rep.check(r.status == 403, || {
            format!("{label}: {} (expected 403) {}", r.status, short(&r.body))
        });
        rep.check(
            r.status != 403 || r.json()["resourceType"] == "OperationOutcome",
            || format!("{label}: 403 without OperationOutcome"),
        );
        check_leak_free(
            &mut rep,
            &label,
            &r,
            &w.hidden(who),
            &format!("{criteria} {body}"),
        );
        let after = patient_count(s, &w);
        rep.check(after == before, || {
            format!("{label}: {before} Patients before, {after} after")
        });
    }
    b_unchanged(s, &w, &mut rep, "conditional create");
    // The system token finds B.
    let r = call(
        s,
        &w.system,
        "POST",
        "Patient",
        &[("If-None-Exist", &criteria)],
        Some(&body),
    );
    rep.check(r.status == 200 && r.json()["id"] == json!(w.b.id), || {
        format!("System conditional create: {} {}", r.status, short(&r.body))
    });
    rep.finish();
});

// PUT Patient?identifier=…MRN-B
secure_tests!(conditional_update, |s| {
    let w = world(s);
    let mut rep = Report::default();
    let path = format!("Patient?identifier={MRN}|MRN-B");
    let body = new_patient_mrn_b();
    for who in BOUNDED {
        let before = patient_count(s, &w);
        let r = call(s, &w.token(who), "PUT", &path, &[], Some(&body));
        let label = format!("{who:?} PUT {path}");
        rep.check(r.status == 403, || {
            format!("{label}: {} (expected 403) {}", r.status, short(&r.body))
        });
        check_leak_free(
            &mut rep,
            &label,
            &r,
            &w.hidden(who),
            &format!("{path} {body}"),
        );
        let after = patient_count(s, &w);
        rep.check(after == before, || {
            format!("{label}: {before} Patients before, {after} after")
        });
    }
    b_unchanged(s, &w, &mut rep, "conditional update");
    rep.finish();
});

// DELETE CarePlan?subject=Patient/B
secure_tests!(conditional_delete, |s| {
    let w = world(s);
    let mut rep = Report::default();
    let path = format!("CarePlan?subject=Patient/{}", w.b.id);
    for who in BOUNDED {
        let r = as_if_absent(s, &w, &mut rep, who, "DELETE", &path, &[], None);
        rep.check(r.status == 204, || {
            format!(
                "{who:?} DELETE {path}: {} (expected 204) {}",
                r.status,
                short(&r.body)
            )
        });
    }
    b_unchanged(s, &w, &mut rep, "conditional delete");
    rep.finish();
});

fn patch_entry(url: &str) -> Value {
    use base64::Engine;
    let doc = r#"[{"op":"replace","path":"/birthDate","value":"1999-09-09"}]"#;
    json!({"request": {"method": "PATCH", "url": url},
        "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
            "data": base64::engine::general_purpose::STANDARD.encode(doc)}})
}

/// A FHIRPath Patch (Parameters) doing what `patch_entry`'s JSON Patch does.
fn fhirpath_patch() -> Value {
    json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": "Patient.birthDate"},
        {"name": "value", "valueDate": "1999-09-09"}]}]})
}

// PATCH Patient?identifier=…MRN-B as a batch and a transaction entry (JSON Patch in a Binary,
// and FHIRPath Patch).
secure_tests!(conditional_patch_in_bundles, |s| {
    let w = world(s);
    let mut rep = Report::default();
    let url = format!("Patient?identifier={MRN}|MRN-B");
    let fhirpath_entry =
        json!({"request": {"method": "PATCH", "url": url}, "resource": fhirpath_patch()});
    for who in BOUNDED {
        for (kind, entry) in [
            ("batch", patch_entry(&url)),
            ("transaction", patch_entry(&url)),
            ("batch", fhirpath_entry.clone()),
            ("transaction", fhirpath_entry.clone()),
        ] {
            let bundle =
                json!({"resourceType": "Bundle", "type": kind, "entry": [entry]}).to_string();
            let r = as_if_absent(s, &w, &mut rep, who, "POST", "", &[], Some(&bundle));
            let failed = if kind == "batch" {
                r.status == 200
                    && !r.json()["entry"][0]["response"]["status"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with('2')
            } else {
                r.status >= 400
            };
            rep.check(failed, || {
                format!(
                    "{who:?} {kind} PATCH {url}: did not fail: {} {}",
                    r.status,
                    short(&r.body)
                )
            });
        }
    }
    b_unchanged(s, &w, &mut rep, "conditional patch");
    rep.finish();
});

// PATCH Patient?identifier=…MRN-B (FHIRPath Patch): as if there were no match, 404.
secure_tests!(conditional_patch, |s| {
    let w = world(s);
    let mut rep = Report::default();
    let path = format!("Patient?identifier={MRN}|MRN-B");
    let body = fhirpath_patch().to_string();
    for who in BOUNDED {
        let r = as_if_absent(
            s,
            &w,
            &mut rep,
            who,
            "PATCH",
            &path,
            &[("Content-Type", "application/fhir+json")],
            Some(&body),
        );
        rep.check(r.status == 404, || {
            format!(
                "{who:?} PATCH {path}: {} (expected 404) {}",
                r.status,
                short(&r.body)
            )
        });
    }
    b_unchanged(s, &w, &mut rep, "conditional patch");
    rep.finish();
});

// PATCH, PUT and DELETE on Patient/B.
secure_tests!(instance_writes, |s| {
    let w = world(s);
    let mut rep = Report::default();
    let path = w.b.r("Patient");
    for who in BOUNDED {
        let tok = w.token(who);
        let hidden = w.hidden(who);
        let r = as_if_absent(
            s,
            &w,
            &mut rep,
            who,
            "PATCH",
            &path,
            &[("Content-Type", "application/json-patch+json")],
            Some(r#"[{"op":"replace","path":"/birthDate","value":"1999-09-09"}]"#),
        );
        rep.check(r.status == 404, || {
            format!("{who:?} PATCH {path}: {} (expected 404)", r.status)
        });
        let body =
            json!({"resourceType": "Patient", "id": w.b.id, "name": [{"family": "Mallory"}]})
                .to_string();
        let r = call(s, &tok, "PUT", &path, &[], Some(&body));
        rep.check(matches!(r.status, 403 | 404), || {
            format!("{who:?} PUT {path}: {} (expected 403 or 404)", r.status)
        });
        check_leak_free(&mut rep, &format!("{who:?} PUT {path}"), &r, &hidden, &body);
        let r = call(s, &tok, "DELETE", &path, &[], None);
        rep.check(r.status == 204 || r.status == 404, || {
            format!("{who:?} DELETE {path}: {} (expected 204 or 404)", r.status)
        });
        check_leak_free(
            &mut rep,
            &format!("{who:?} DELETE {path}"),
            &r,
            &hidden,
            &path,
        );
    }
    b_unchanged(s, &w, &mut rep, "instance writes");
    rep.finish();
});

// Patient/$everything
secure_tests!(everything, |s| {
    let w = world(s);
    let mut rep = Report::default();
    for who in READERS {
        let tok = w.token(who);
        for p in [&w.a, &w.b] {
            let path = format!("Patient/{}/$everything", p.id);
            if !w.visible(who, p) {
                let r = as_if_absent(s, &w, &mut rep, who, "GET", &path, &[], None);
                rep.check(r.status == 404, || {
                    format!("{who:?} GET {path}: {} (expected 404)", r.status)
                });
                continue;
            }
            let r = get(s, &tok, &path);
            let label = format!("{who:?} GET {path}");
            if r.status != 200 {
                rep.check(false, || {
                    format!("{label}: {} {}", r.status, short(&r.body))
                });
                continue;
            }
            check_leak_free(&mut rep, &label, &r, &w.hidden(who), "");
            let v = r.json();
            let refs = entry_refs(&v, None);
            let mine = patient_refs(&refs);
            rep.check(mine == p.refs(), || {
                format!("{label}: patient data {mine:?}, expected {:?}", p.refs())
            });
            rep.check(v["total"].as_u64() == Some(refs.len() as u64), || {
                format!("{label}: total {} for {} entries", v["total"], refs.len())
            });
        }
    }
    rep.finish();
});

// Practitioner/$worklist and $caseload
secure_tests!(worklist_and_caseload, |s| {
    let w = world(s);
    let mut rep = Report::default();
    // P1 owns both Tasks; each caller sees only the Tasks of patients they may see.
    let worklist = format!("Practitioner/{}/$worklist", w.p1);
    for who in READERS {
        let r = get(s, &w.token(who), &worklist);
        let label = format!("{who:?} GET {worklist}");
        let want = refs_of(&w.sees(who), &["Task"]);
        check_leak_free(&mut rep, &label, &r, &w.hidden(who), "");
        if want.is_empty() && matches!(r.status, 403 | 404) {
            // Nothing to show: refusing the whole worklist is as good as an empty one.
            continue;
        }
        if r.status != 200 {
            rep.check(false, || {
                format!("{label}: {} {}", r.status, short(&r.body))
            });
            continue;
        }
        let v = r.json();
        let refs = entry_refs(&v, None);
        rep.check(refs == want, || {
            format!("{label}: {refs:?}, expected {want:?}")
        });
        rep.check(v["total"].as_u64() == Some(want.len() as u64), || {
            format!("{label}: total {}, expected {}", v["total"], want.len())
        });
    }
    // $caseload: patients of a practitioner's teams, limited to what the caller may see.
    for (pract, team_of) in [(&w.p1, &w.a), (&w.p3, &w.b)] {
        let path = format!("Practitioner/{pract}/$caseload");
        for who in READERS {
            let r = get(s, &w.token(who), &path);
            let label = format!("{who:?} GET {path}");
            let want = w.visible(who, team_of);
            check_leak_free(&mut rep, &label, &r, &w.hidden(who), "");
            if !want && matches!(r.status, 403 | 404) {
                continue;
            }
            if r.status != 200 {
                rep.check(false, || {
                    format!("{label}: {} {}", r.status, short(&r.body))
                });
                continue;
            }
            let listed = r.body.contains(&format!("Patient/{}", team_of.id));
            rep.check(listed == want, || {
                format!(
                    "{label}: lists {} = {listed}, expected {want}",
                    team_of.r("Patient")
                )
            });
        }
    }
    rep.finish();
});

// $validate
secure_tests!(validate, |s| {
    let w = world(s);
    let mut rep = Report::default();
    let delete_mode = json!({"resourceType": "Parameters",
        "parameter": [{"name": "mode", "valueCode": "delete"}]})
    .to_string();
    for who in BOUNDED {
        // Would deleting B be refused (because B's CarePlan, Task… refer to B)? Not for you to know.
        let path = format!("Patient/{}/$validate", w.b.id);
        let r = call(s, &w.token(who), "POST", &path, &[], Some(&delete_mode));
        let label = format!("{who:?} POST {path} mode=delete");
        rep.check(r.status == 404, || {
            format!("{label}: {} (expected 404) {}", r.status, short(&r.body))
        });
        check_leak_free(&mut rep, &label, &r, &w.hidden(who), &path);
        // Validating a CarePlan for B tells nothing about whether B exists.
        let plan = json!({"resourceType": "CarePlan", "status": "active", "intent": "plan",
            "subject": {"reference": format!("Patient/{}", w.b.id)}})
        .to_string();
        let r = as_if_absent(
            s,
            &w,
            &mut rep,
            who,
            "POST",
            "CarePlan/$validate",
            &[],
            Some(&plan),
        );
        rep.check(r.status == 200, || {
            format!(
                "{who:?} POST CarePlan/$validate: {} {}",
                r.status,
                short(&r.body)
            )
        });
    }
    // The system token may validate B's delete.
    let path = format!("Patient/{}/$validate", w.b.id);
    let r = call(s, &w.system, "POST", &path, &[], Some(&delete_mode));
    rep.check(r.status == 200, || format!("System {path}: {}", r.status));
    rep.finish();
});

// `patient/Observation.rs`: nothing but A's Observations.
secure_tests!(type_limited_scope, |s| {
    let w = world(s);
    let mut rep = Report::default();
    let who = Who::ObsOnlyA;
    let tok = w.token(who);
    let r = get(s, &tok, "CarePlan");
    rep.check(r.status == 403, || {
        format!("GET CarePlan: {} (expected 403)", r.status)
    });
    check_leak_free(&mut rep, "GET CarePlan", &r, &[&w.a, &w.b], "");
    // The Patient is not included: the scope grants Observation only.
    let q = "Observation?_include=Observation:subject";
    let r = get(s, &tok, q);
    let want = Want {
        matches: refs_of(&[&w.a], &["Observation"]),
        includes: BTreeSet::new(),
        total: 1,
        total_required: false,
    };
    check_search(&mut rep, &w, who, &format!("GET {q}"), &r, &want, q);
    rep.check(!r.body.contains(w.a.family), || {
        format!("GET {q} includes Patient A")
    });
    rep.finish();
});

// A batch answers a GET the scopes do not grant with a 403 entry, the others normally.
secure_tests!(type_limited_scope_in_batch, |s| {
    let w = world(s);
    let mut rep = Report::default();
    let tok = w.token(Who::ObsOnlyA);
    let bundle = get_bundle("batch", &["CarePlan".into(), "Observation".into()]).to_string();
    let r = call(s, &tok, "POST", "", &[], Some(&bundle));
    check_leak_free(&mut rep, "batch", &r, &[&w.b], "");
    if r.status != 200 {
        rep.check(false, || format!("batch: {} {}", r.status, short(&r.body)));
    } else {
        let v = r.json();
        let st = |i: usize| {
            v["entry"][i]["response"]["status"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        rep.check(st(0).starts_with("403"), || {
            format!("entry GET CarePlan: {:?}", st(0))
        });
        rep.check(st(1).starts_with("200"), || {
            format!("entry GET Observation: {:?}", st(1))
        });
        let obs = entry_refs(&v["entry"][1]["resource"], Some("match"));
        rep.check(obs == refs_of(&[&w.a], &["Observation"]), || {
            format!("entry GET Observation: {obs:?}")
        });
    }
    rep.finish();
});

// ---------------------------------------------------------------------------------------------
// Property test: random searches from the parameter registry never leave A's compartment.
// ---------------------------------------------------------------------------------------------

/// One generated search: the query string on a type.
#[derive(Debug, Clone)]
struct Gen {
    ty: &'static str,
    query: String,
}

/// Values for generated searches: the world's ids, references, names, codes and dates, by the
/// kind of parameter they suit.
struct Pools {
    any: Vec<String>,
    ids: Vec<String>,
    refs: Vec<String>,
    strings: Vec<String>,
    tokens: Vec<String>,
    dates: Vec<String>,
}

impl Pools {
    fn new(w: &World) -> Pools {
        let owned = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let strings = owned(&["Alpha", "Bravo", "Pat", "Br", "al", "Clinic", "weight"]);
        let mut tokens = owned(&[
            "MRN-A", "MRN-B", "active", "final", "ready", "order", "plan", "AMB", "finished",
            "true", "false",
        ]);
        tokens.extend([
            format!("{MRN}|MRN-B"),
            format!("{MRN}|MRN-A"),
            format!("{MRN}|"),
        ]);
        let dates = owned(&[
            "1970-01-01",
            "2024-01-15",
            "ge2024-01-01",
            "lt2030",
            "le2000-01-01",
            "gt2020-05",
            "2024",
            "ne2024-01-15",
        ]);
        let (mut ids, mut refs) = (Vec::new(), Vec::new());
        for p in [&w.a, &w.b] {
            for (t, id) in p.resources() {
                ids.push(id.to_string());
                refs.push(format!("{t}/{id}"));
            }
        }
        for p in [&w.p1, &w.p2, &w.p3] {
            ids.push(p.clone());
            refs.push(format!("Practitioner/{p}"));
        }
        refs.extend(ids.iter().cloned());
        let mut any: Vec<String> = [&strings, &tokens, &dates, &refs]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        any.extend(owned(&["5", "gt1", "5||kg"]));
        Pools {
            any,
            ids,
            refs,
            strings,
            tokens,
            dates,
        }
    }

    /// A pool for a parameter (`typed` false: anything at all).
    fn for_param(
        &self,
        code: &str,
        ptype: icm_fhir::fhir::search::ParamType,
        typed: bool,
    ) -> &[String] {
        use icm_fhir::fhir::search::ParamType as P;
        if !typed {
            return &self.any;
        }
        match (code, ptype) {
            ("_id", _) => &self.ids,
            (_, P::Reference) => &self.refs,
            (_, P::String) => &self.strings,
            (_, P::Token) => &self.tokens,
            (_, P::Date) => &self.dates,
            _ => &self.any,
        }
    }
}

/// A search parameter of a type: code, type and reference targets.
type Param = (String, icm_fhir::fhir::search::ParamType, Vec<String>);

fn generator(w: &World) -> impl proptest::strategy::Strategy<Value = Gen> {
    use icm_fhir::fhir::search::{ParamType, SearchParams};
    use proptest::prelude::*;
    use proptest::sample::{select, Index};
    let reg = SearchParams::get();
    let supported = |ty: &str| -> Vec<Param> {
        reg.for_type(ty)
            .map(|m| {
                m.values()
                    .filter(|d| d.supported())
                    .map(|d| (d.code.clone(), d.ptype, d.targets.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let params: Vec<(&'static str, Vec<Param>)> =
        PATIENT_TYPES.iter().map(|t| (*t, supported(t))).collect();
    let pools = Pools::new(w);
    let modifiers = [
        "",
        "",
        "",
        "",
        ":missing",
        ":not",
        ":exact",
        ":contains",
        ":text",
        ":identifier",
        ":below",
        ":above",
    ];
    let extras = [
        "",
        "_include=*",
        "_revinclude=*",
        "_include:iterate=*",
        "_include=*&_revinclude=*",
        "_summary=count",
        "_total=accurate",
        "_sort=-_lastUpdated",
    ];
    (
        any::<Index>(),
        any::<Index>(),
        any::<Index>(),
        select(modifiers.to_vec()),
        select(extras.to_vec()),
        prop::option::of(0i64..4),
        0u8..4,
        any::<Index>(),
        any::<bool>(),
    )
        .prop_map(
            move |(ti, pi, vi, modifier, extra, count, style, hi, typed)| {
                let (ty, ps) = &params[ti.index(params.len())];
                let (code, ptype, targets) = &ps[pi.index(ps.len())];
                let value = if modifier == ":missing" {
                    ["true", "false"][vi.index(2)].to_string()
                } else {
                    let pool = pools.for_param(code, *ptype, typed);
                    pool[vi.index(pool.len())].clone()
                };
                let mut parts: Vec<String> = Vec::new();
                match style {
                    // A chain through a reference to Patient.
                    1 if *ptype == ParamType::Reference
                        && targets.iter().any(|t| t == "Patient") =>
                    {
                        let (chain, pool) = [
                            ("name", &pools.strings),
                            ("family", &pools.strings),
                            ("identifier", &pools.tokens),
                            ("_id", &pools.ids),
                        ][hi.index(4)];
                        let value = &pool[vi.index(pool.len())];
                        parts.push(format!("{code}:Patient.{chain}={value}"));
                    }
                    // A reverse chain from another patient type whose reference parameter targets `ty`.
                    2 => {
                        let back: Vec<(&str, &String)> = params
                            .iter()
                            .flat_map(|(t2, ps2)| {
                                ps2.iter()
                                    .filter(|(_, pt, tg)| {
                                        *pt == ParamType::Reference && tg.iter().any(|x| x == ty)
                                    })
                                    .map(move |(c2, _, _)| (*t2, c2))
                            })
                            .collect();
                        if back.is_empty() {
                            parts.push(format!("{code}{modifier}={value}"));
                        } else {
                            let (t2, c2) = back[hi.index(back.len())];
                            let (_, ps2) = params.iter().find(|(t, _)| *t == t2).unwrap();
                            let (c3, _, _) = &ps2[pi.index(ps2.len())];
                            parts.push(format!("_has:{t2}:{c2}:{c3}={value}"));
                        }
                    }
                    _ => parts.push(format!("{code}{modifier}={value}")),
                }
                if !extra.is_empty() {
                    parts.push(extra.to_string());
                }
                if let Some(c) = count {
                    parts.push(format!("_count={c}"));
                }
                let query = parts.join("&").replace('|', "%7C").replace(' ', "%20");
                Gen { ty, query }
            },
        )
}

/// Every entry is A's or of a type outside the Patient compartment, nothing names B, no 5xx.
fn check_in_compartment_a(w: &World, label: &str, status: u16, v: &Value) -> Result<(), String> {
    if status >= 500 {
        return Err(format!("{label}: status {status}: {v}"));
    }
    if status != 200 {
        return Ok(());
    }
    let mine = w.a.refs();
    for e in v["entry"].as_array().into_iter().flatten() {
        let r = &e["resource"];
        let rt = r["resourceType"].as_str().unwrap_or("");
        let rref = format!("{rt}/{}", r["id"].as_str().unwrap_or(""));
        if PATIENT_TYPES.contains(&rt) && !mine.contains(&rref) {
            return Err(format!("{label}: {rref} is outside A's compartment"));
        }
        if !matches!(rt, "Practitioner" | "Organization" | "OperationOutcome")
            && !PATIENT_TYPES.contains(&rt)
        {
            return Err(format!("{label}: unexpected entry {rref}"));
        }
    }
    Ok(())
}

#[test]
fn random_searches_stay_in_patient_a_compartment() {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let s = start_secure(Backend::Sqlite).unwrap();
    let w = world(&s);
    let tok = w.token(Who::PatientA);
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&generator(&w), |g| {
        let path = format!("{}?{}", g.ty, g.query);
        let r = get(&s, &tok, &path);
        let v = serde_json::from_str::<Value>(&r.body).unwrap_or(Value::Null);
        check_in_compartment_a(&w, &format!("GET {path}"), r.status, &v)
            .map_err(TestCaseError::fail)?;
        leak_free(&r.body, &[&w.b], &path)
            .map_err(|e| TestCaseError::fail(format!("GET {path}: {e}")))?;
        // The same search as a batch entry.
        let bundle = get_bundle("batch", std::slice::from_ref(&path)).to_string();
        let r = call(&s, &tok, "POST", "", &[], Some(&bundle));
        if r.status >= 500 {
            return Err(TestCaseError::fail(format!("batch {path}: {}", r.status)));
        }
        let v = r.json();
        let e = &v["entry"][0];
        let st: u16 = e["response"]["status"]
            .as_str()
            .and_then(|x| x.get(..3))
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        check_in_compartment_a(&w, &format!("batch GET {path}"), st, &e["resource"])
            .map_err(TestCaseError::fail)?;
        leak_free(&r.body, &[&w.b], &bundle)
            .map_err(|e| TestCaseError::fail(format!("batch GET {path}: {e}")))?;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
