//! The program's shipped conformance resources (fhir-profiles/icm/) are stored at server start
//! as ordinary resources (issue 18): searchable (`Questionnaire?status=active`, `?url=`,
//! `?name=`, `_sort=title`), readable, in history; a restart adds no version; a local edit is
//! replaced by the shipped content at the next start; several processes starting together on a
//! fresh database store each of them once; a patient-scoped token reads the Questionnaires.
mod common;
use common::auth::{claims, mint};
use common::*;
use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

/// The shipped conformance resources as the repository holds them: (type, id, resource).
fn shipped() -> Vec<(String, String, Value)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fhir-profiles/icm");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        // <Type>-<id>.json; risk-config.json and charlson-codes.json are server settings.
        let Some((ty, _)) = name.split_once('-') else {
            continue;
        };
        if !ty.chars().next().is_some_and(char::is_uppercase) {
            continue;
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["resourceType"], ty, "{name}");
        out.push((ty.to_string(), v["id"].as_str().unwrap().to_string(), v));
    }
    out
}

fn of_type(ty: &str) -> Vec<Value> {
    shipped()
        .into_iter()
        .filter(|(t, _, _)| t == ty)
        .map(|(_, _, v)| v)
        .collect()
}

fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["resource"]["id"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn total(s: &TestServer, path: &str) -> u64 {
    let r = s.get(path);
    r.expect(200);
    r.json()["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("{path}: no total"))
}

backend_tests!(searchable_like_any_resource, |s| {
    let questionnaires = of_type("Questionnaire");
    assert!(
        questionnaires.len() >= 5,
        "the program ships its Questionnaires"
    );
    // status=active: every shipped active Questionnaire, sorted by title on request.
    let active: Vec<&Value> = questionnaires
        .iter()
        .filter(|q| q["status"] == "active")
        .collect();
    let mut by_title: Vec<(String, String)> = active
        .iter()
        .map(|q| {
            (
                q["title"].as_str().unwrap().to_string(),
                q["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    by_title.sort();
    let b = s
        .get("Questionnaire?status=active&_sort=title&_count=100")
        .json();
    assert_eq!(b["total"], active.len());
    let want: Vec<String> = by_title.into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids(&b), want);
    // Every shipped Questionnaire in a plain type search.
    let all: BTreeSet<String> = ids(&s.get("Questionnaire?_count=100").json())
        .into_iter()
        .collect();
    for q in &questionnaires {
        assert!(all.contains(q["id"].as_str().unwrap()), "{}", q["id"]);
    }
    // By canonical url and by name.
    for q in &questionnaires {
        let url = q["url"].as_str().unwrap();
        let b = s.get(&format!("Questionnaire?url={url}")).json();
        assert_eq!(ids(&b), [q["id"].as_str().unwrap()], "url={url}");
        let name = q["name"].as_str().unwrap();
        let b = s.get(&format!("Questionnaire?name={name}")).json();
        assert!(
            ids(&b).contains(&q["id"].as_str().unwrap().to_string()),
            "name={name}"
        );
    }
    // The other shipped types too.
    for ty in [
        "Measure",
        "CodeSystem",
        "ValueSet",
        "StructureDefinition",
        "SearchParameter",
    ] {
        let n = of_type(ty).len() as u64;
        assert!(n > 0, "{ty} ships");
        assert_eq!(total(s, &format!("{ty}?_count=0")), n, "{ty}");
    }
    let cs = &of_type("CodeSystem")[0];
    let b = s
        .get(&format!("CodeSystem?url={}", cs["url"].as_str().unwrap()))
        .json();
    assert_eq!(ids(&b), [cs["id"].as_str().unwrap()]);
    // Read by id: the stored version (with meta), content as shipped.
    let phq9 = s.get("Questionnaire/icm-phq9");
    phq9.expect(200);
    let v = phq9.json();
    assert_eq!(v["meta"]["versionId"], "1");
    let shipped_phq9 = questionnaires
        .iter()
        .find(|q| q["id"] == "icm-phq9")
        .unwrap();
    assert_eq!(v["item"], shipped_phq9["item"]);
    // A Questionnaire of the site's own is listed beside them.
    s.create(
        json!({"resourceType": "Questionnaire", "status": "active", "title": "A site check-in",
        "item": [{"linkId": "1", "text": "How are you?", "type": "string"}]}),
    );
    assert_eq!(
        total(s, "Questionnaire?status=active&_count=0"),
        active.len() as u64 + 1
    );
    // Profile lookups and $validate still work against the embedded profiles.
    let r = s.post(
        "Patient/$validate?profile=http://icm-fhir.org/fhir/StructureDefinition/icm-patient",
        &json!({"resourceType": "Patient"}),
    );
    assert!(r.status == 200, "{} {}", r.status, r.body);
});

/// How many versions the system history holds (it has no total: one page of all).
fn history_len(s: &TestServer) -> u64 {
    let b = s.get("_history?_count=1000").json();
    assert!(
        !b["link"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["relation"] == "next")),
        "one page"
    );
    b["entry"].as_array().map_or(0, |a| a.len() as u64)
}

/// (versionId of Questionnaire/icm-phq9, its title, system history total)
fn snapshot(s: &TestServer) -> (String, String, u64) {
    let q = s.get("Questionnaire/icm-phq9").json();
    (
        q["meta"]["versionId"].as_str().unwrap().to_string(),
        q["title"].as_str().unwrap().to_string(),
        history_len(s),
    )
}

backend_tests!(
    a_restart_adds_no_version_and_restores_shipped_content,
    |s| {
        let n = shipped().len() as u64;
        let shipped_title = of_type("Questionnaire")
            .into_iter()
            .find(|q| q["id"] == "icm-phq9")
            .unwrap()["title"]
            .as_str()
            .unwrap()
            .to_string();
        // A fresh database holds the shipped resources, one version each, and nothing else.
        assert_eq!(snapshot(s), ("1".into(), shipped_title.clone(), n));
        assert_eq!(total(s, "Questionnaire/icm-phq9/_history"), 1);
        let mut again = s.another(|_| {});
        assert_eq!(snapshot(&again), ("1".into(), shipped_title.clone(), n));
        again.stop();
        // A local edit is a new version; the next start puts the shipped content back, once.
        let mut q = s.get("Questionnaire/icm-phq9").json();
        q["title"] = json!("Edited locally");
        s.put("Questionnaire/icm-phq9", &q).expect(200);
        assert_eq!(snapshot(s), ("2".into(), "Edited locally".into(), n + 1));
        let mut again = s.another(|_| {});
        assert_eq!(snapshot(&again), ("3".into(), shipped_title.clone(), n + 2));
        again.stop();
        let again = s.another(|_| {});
        assert_eq!(snapshot(&again), ("3".into(), shipped_title.clone(), n + 2));
        // A deleted one comes back at the next start.
        s.delete("Measure/bp-control").expect(204);
        drop(again);
        let again = s.another(|_| {});
        again.get("Measure/bp-control").expect(200);
        assert_eq!(total(&again, "Measure/bp-control/_history"), 3);
    }
);

/// Several processes starting together on a fresh database: each shipped resource is stored once.
fn concurrent_first_start(backend: Backend) {
    let Some(db) = fresh_database(backend) else {
        return;
    };
    const PROCESSES: usize = 4;
    let barrier = Arc::new(Barrier::new(PROCESSES));
    let threads: Vec<_> = (0..PROCESSES)
        .map(|_| {
            let url = db.url.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let state = icm_fhir::build_state(icm_fhir::config::Config::for_database(&url))
                    .expect("state");
                barrier.wait();
                state.store.migrate().expect("migrations");
                icm_fhir::service::definitions::install(&state.store, state.config.write_policy())
                    .expect("install")
            })
        })
        .collect();
    let created: usize = threads
        .into_iter()
        .map(|t| t.join().expect("process").created)
        .sum();
    let n = shipped().len();
    assert_eq!(
        created, n,
        "each shipped resource created by exactly one process"
    );
    let s = start_on(&db.url, backend, |_| {});
    assert_eq!(history_len(&s), n as u64);
    for (ty, id, _) in shipped() {
        assert_eq!(total(&s, &format!("{ty}/{id}/_history")), 1, "{ty}/{id}");
    }
}

#[test]
fn concurrent_first_start_sqlite() {
    concurrent_first_start(Backend::Sqlite);
}

#[test]
fn concurrent_first_start_postgres() {
    concurrent_first_start(Backend::Postgres);
}

secure_tests!(patient_tokens_read_the_questionnaires, |s| {
    let system = mint(&claims("backend", "system/*.cruds", json!({})));
    let auth = format!("Bearer {system}");
    let p = s.request(
        "POST",
        "Patient",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/fhir+json"),
        ],
        Some(r#"{"resourceType":"Patient","name":[{"family":"Reader"}]}"#),
    );
    p.expect(201);
    let pid = p.json()["id"].as_str().unwrap().to_string();
    let n = of_type("Questionnaire")
        .iter()
        .filter(|q| q["status"] == "active")
        .count();
    // patient/*.rs: Questionnaire is in no patient compartment, so the patient's boundary admits
    // it (as Practitioner or Organization): the definitions an app needs to fill one in.
    let tok = mint(&claims("pa", "patient/*.rs", json!({"patient": pid})));
    let auth = format!("Bearer {tok}");
    let get = |path: &str| s.request("GET", path, &[("Authorization", &auth)], None);
    let b = get("Questionnaire?status=active&_count=100");
    b.expect(200);
    assert_eq!(ids(&b.json()).len(), n);
    get("Questionnaire/icm-phq9").expect(200);
    // A scope without Questionnaire does not reach them.
    let tok = mint(&claims(
        "pa",
        "patient/Observation.rs",
        json!({"patient": pid}),
    ));
    let auth = format!("Bearer {tok}");
    s.request(
        "GET",
        "Questionnaire?status=active",
        &[("Authorization", &auth)],
        None,
    )
    .expect(403);
});
