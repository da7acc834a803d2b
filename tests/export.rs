//! Bulk Data export (`$export`, Bulk Data Access IG v2 async pattern) on both backends: kick-off,
//! polling, manifest and files; `_type`, `_since`, `_typeFilter`; cancellation; the caller's
//! access (a patient token exports its own compartment only); a program cohort Group kept by
//! enrollment and its `Group/{id}/$export`; the files load back with `icm-fhir import`; bad
//! parameters are 400 OperationOutcomes.
mod common;
use common::auth::*;
use common::*;
use std::collections::BTreeMap;

const PROGRAM: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-program";

fn system_token() -> String {
    mint(&claims("exporter", "system/*.rs", json!({})))
}

fn writer_token() -> String {
    mint(&claims("loader", "system/*.cruds", json!({})))
}

/// A kick-off GET with the Bulk Data headers (`prefer`: None leaves Prefer out).
fn kick(s: &TestServer, token: &str, path: &str, prefer: Option<&str>) -> Resp {
    let auth = format!("Bearer {token}");
    let mut h = vec![
        ("Accept", "application/fhir+json"),
        ("Authorization", auth.as_str()),
    ];
    if let Some(p) = prefer {
        h.push(("Prefer", p));
    }
    s.request("GET", path, &h, None)
}

/// A GET with a bearer token (Accept: application/fhir+ndjson for files, else application/json).
fn get_as(s: &TestServer, token: &str, url: &str) -> Resp {
    let auth = format!("Bearer {token}");
    let accept = if url.contains("$export-file/") {
        "application/fhir+ndjson"
    } else {
        "application/json"
    };
    s.request(
        "GET",
        url,
        &[("Authorization", auth.as_str()), ("Accept", accept)],
        None,
    )
}

/// Kick off and return the status URL.
#[track_caller]
fn start_export(s: &TestServer, token: &str, path: &str) -> String {
    let r = kick(s, token, path, Some("respond-async"));
    assert_eq!(r.status, 202, "{}", r.body);
    let loc = r
        .header("content-location")
        .expect("Content-Location")
        .to_string();
    assert!(loc.starts_with(&s.base), "{loc}");
    loc
}

/// Poll the status URL until the manifest is there.
#[track_caller]
fn manifest(s: &TestServer, token: &str, status_url: &str) -> Value {
    for _ in 0..600 {
        let r = get_as(s, token, status_url);
        match r.status {
            200 => {
                assert!(r
                    .header("content-type")
                    .unwrap()
                    .starts_with("application/json"));
                return r.json();
            }
            202 => {
                assert!(r.header("x-progress").is_some());
                assert!(r.header("retry-after").is_some());
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            _ => panic!("status {}: {}", r.status, r.body),
        }
    }
    panic!("export did not finish");
}

/// Every exported resource, by type (after checking the manifest's counts against the files).
#[track_caller]
fn download(s: &TestServer, token: &str, m: &Value) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for o in m["output"].as_array().unwrap() {
        let r = get_as(s, token, o["url"].as_str().unwrap());
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r
            .header("content-type")
            .unwrap()
            .starts_with("application/fhir+ndjson"));
        let lines: Vec<Value> = r
            .body
            .lines()
            .map(|l| serde_json::from_str(l).expect("one resource per line"))
            .collect();
        assert_eq!(lines.len() as u64, o["count"].as_u64().unwrap());
        let ty = o["type"].as_str().unwrap().to_string();
        assert!(lines.iter().all(|v| v["resourceType"] == ty.as_str()));
        out.entry(ty).or_default().extend(lines);
    }
    out
}

fn export_all(s: &TestServer, token: &str, path: &str) -> (Value, BTreeMap<String, Vec<Value>>) {
    let url = start_export(s, token, path);
    let m = manifest(s, token, &url);
    let files = download(s, token, &m);
    (m, files)
}

fn ids(files: &BTreeMap<String, Vec<Value>>, ty: &str) -> Vec<String> {
    let mut v: Vec<String> = files
        .get(ty)
        .map(|l| {
            l.iter()
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn put_as(s: &TestServer, token: &str, body: Value) {
    let path = format!(
        "{}/{}",
        body["resourceType"].as_str().unwrap(),
        body["id"].as_str().unwrap()
    );
    let r = s.as_token(Some(token), "PUT", &path, Some(&body));
    assert!(r.status == 200 || r.status == 201, "{}", r.body);
}

/// Patients a and b, a Practitioner, Observations (a: final + preliminary, b: final).
fn world(s: &TestServer) {
    let w = writer_token();
    for p in ["a", "b"] {
        put_as(
            s,
            &w,
            json!({"resourceType": "Patient", "id": p, "name": [{"family": format!("Fam-{p}")}]}),
        );
    }
    put_as(
        s,
        &w,
        json!({"resourceType": "Practitioner", "id": "doc", "name": [{"family": "Doc"}]}),
    );
    for (id, p, status) in [
        ("oa1", "a", "final"),
        ("oa2", "a", "preliminary"),
        ("ob1", "b", "final"),
    ] {
        put_as(
            s,
            &w,
            json!({"resourceType": "Observation", "id": id, "status": status,
                "code": {"text": "weight"}, "subject": {"reference": format!("Patient/{p}")}}),
        );
    }
}

secure_tests!(kickoff_poll_manifest_download, |s| {
    world(s);
    let tok = system_token();
    let path = "$export?_outputFormat=application%2Ffhir%2Bndjson";
    let r = kick(s, &tok, path, Some("respond-async"));
    r.expect(202);
    let status_url = r.header("content-location").unwrap().to_string();
    let m = manifest(s, &tok, &status_url);
    assert_eq!(m["request"], format!("{}/{path}", s.base));
    assert_eq!(m["requiresAccessToken"], true);
    assert!(m["transactionTime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(m["error"], json!([]));
    let files = download(s, &tok, &m);
    assert_eq!(ids(&files, "Patient"), ["a", "b"]);
    assert_eq!(ids(&files, "Observation"), ["oa1", "oa2", "ob1"]);
    assert_eq!(ids(&files, "Practitioner"), ["doc"]);
    // Types with nothing to export have no file; the audit trail is not exported.
    assert!(!files.contains_key("CarePlan") && !files.contains_key("AuditEvent"));
    // Files and status need the token of the caller who started the export.
    let file = m["output"][0]["url"].as_str().unwrap().to_string();
    assert_eq!(s.get(&file).status, 401);
    let other = mint(&claims("someone-else", "system/*.rs", json!({})));
    get_as(s, &other, &file).expect_outcome(404, "not-found");
    get_as(s, &other, &status_url).expect_outcome(404, "not-found");
    // The manifest stays available.
    assert_eq!(get_as(s, &tok, &status_url).status, 200);
    // Nothing written after the transaction time is in a later poll's files either.
    let after = manifest(s, &tok, &status_url);
    assert_eq!(after, m);
});

secure_tests!(type_since_and_type_filter, |s| {
    world(s);
    let tok = system_token();
    let (_, files) = export_all(s, &tok, "$export?_type=Patient,Observation");
    assert_eq!(
        files.keys().cloned().collect::<Vec<_>>(),
        ["Observation", "Patient"]
    );
    // _type repeated
    let (_, files) = export_all(s, &tok, "$export?_type=Patient&_type=Practitioner");
    assert_eq!(
        files.keys().cloned().collect::<Vec<_>>(),
        ["Patient", "Practitioner"]
    );

    // _since: only what changed at or after it.
    std::thread::sleep(std::time::Duration::from_millis(30));
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(std::time::Duration::from_millis(30));
    put_as(
        s,
        &writer_token(),
        json!({"resourceType": "Observation", "id": "ob1", "status": "amended",
            "code": {"text": "weight"}, "subject": {"reference": "Patient/b"}}),
    );
    let (_, files) = export_all(
        s,
        &tok,
        &format!("$export?_since={}", since.replace('+', "%2B")),
    );
    assert_eq!(files.keys().cloned().collect::<Vec<_>>(), ["Observation"]);
    assert_eq!(ids(&files, "Observation"), ["ob1"]);

    // _typeFilter limits its type only; other types are exported whole.
    let f = "Observation%3Fstatus%3Dpreliminary";
    let (_, files) = export_all(
        s,
        &tok,
        &format!("$export?_type=Observation,Patient&_typeFilter={f}"),
    );
    assert_eq!(ids(&files, "Observation"), ["oa2"]);
    assert_eq!(ids(&files, "Patient"), ["a", "b"]);
    // Several filters of one type are ORed, each resource written once.
    let f2 = "Observation%3Fsubject%3DPatient%2Fa";
    let (m, files) = export_all(
        s,
        &tok,
        &format!("$export?_type=Observation&_typeFilter={f}&_typeFilter={f2}"),
    );
    assert_eq!(ids(&files, "Observation"), ["oa1", "oa2"]);
    assert_eq!(m["output"][0]["count"], 2);
    // A value list inside a filter (comma) is not a filter separator.
    let f3 = "Observation%3Fstatus%3Dpreliminary%2Camended";
    let (_, files) = export_all(
        s,
        &tok,
        &format!("$export?_type=Observation&_typeFilter={f3}"),
    );
    assert_eq!(ids(&files, "Observation"), ["oa2", "ob1"]);
});

secure_tests!(cancel_removes_the_job_and_files, |s| {
    world(s);
    let tok = system_token();
    let url = start_export(s, &tok, "$export");
    let m = manifest(s, &tok, &url);
    let file = m["output"][0]["url"].as_str().unwrap().to_string();
    get_as(s, &tok, &file).expect(200);
    // Someone else cannot cancel it.
    let other = mint(&claims("someone-else", "system/*.rs", json!({})));
    s.as_token(Some(&other), "DELETE", &url, None)
        .expect_outcome(404, "not-found");
    let r = s.as_token(Some(&tok), "DELETE", &url, None);
    assert_eq!(r.status, 202, "{}", r.body);
    get_as(s, &tok, &url).expect_outcome(404, "not-found");
    get_as(s, &tok, &file).expect_outcome(404, "not-found");
    s.as_token(Some(&tok), "DELETE", &url, None)
        .expect_outcome(404, "not-found");
    // Cancelling while it runs: the status answers 404 at once and no files are left.
    let url = start_export(s, &tok, "$export");
    assert_eq!(s.as_token(Some(&tok), "DELETE", &url, None).status, 202);
    get_as(s, &tok, &url).expect_outcome(404, "not-found");
    let job = url.rsplit('/').next().unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let dir = match s.backend {
        Backend::Sqlite => std::path::PathBuf::from(
            s.database_url
                .trim_start_matches("sqlite://")
                .trim_end_matches("icm.db"),
        )
        .join("exports"),
        Backend::Postgres => std::env::temp_dir().join("icm-fhir-exports"),
    };
    assert!(!dir.join(&job).exists(), "files of a cancelled job remain");
});

secure_tests!(patient_token_exports_its_own_compartment_only, |s| {
    world(s);
    let pa = mint(&claims("pa", "patient/*.rs", json!({"patient": "a"})));
    // A system-level export needs system/ or user/ scopes.
    kick(s, &pa, "$export", Some("respond-async")).expect_outcome(403, "forbidden");
    let (_, files) = export_all(s, &pa, "Patient/$export");
    assert_eq!(ids(&files, "Patient"), ["a"]);
    assert_eq!(ids(&files, "Observation"), ["oa1", "oa2"]);
    // Patient/$export covers the Patient compartment only.
    assert!(!files.contains_key("Practitioner"));
    // A system token's Patient/$export has every patient.
    let (_, files) = export_all(s, &system_token(), "Patient/$export");
    assert_eq!(ids(&files, "Patient"), ["a", "b"]);
    assert_eq!(ids(&files, "Observation"), ["oa1", "oa2", "ob1"]);
    // A named type the token may not read is reported in the error file, not exported.
    let po = mint(&claims("po", "system/Observation.rs", json!({})));
    let url = start_export(s, &po, "$export?_type=Observation,Patient");
    let m = manifest(s, &po, &url);
    let files = download(s, &po, &m);
    assert_eq!(ids(&files, "Observation"), ["oa1", "oa2", "ob1"]);
    assert!(!files.contains_key("Patient"));
    let err = get_as(s, &po, m["error"][0]["url"].as_str().unwrap());
    assert_eq!(err.status, 200);
    let oo: Value = serde_json::from_str(err.body.lines().next().unwrap()).unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert!(oo["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("Patient"));
});

fn episode(id: &str, patient: &str, status: &str, end: Option<&str>) -> Value {
    let mut e = json!({"resourceType": "EpisodeOfCare", "id": id, "status": status,
        "type": [{"coding": [{"system": PROGRAM, "code": "chronic-disease"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "period": {"start": "2025-01-01"}});
    if let Some(e2) = end {
        e["period"]["end"] = json!(e2);
    }
    e
}

secure_tests!(program_cohort_group_and_its_export, |s| {
    world(s);
    let w = writer_token();
    put_as(s, &w, episode("ea", "a", "active", None));
    put_as(s, &w, episode("eb", "b", "active", None));
    let g = s.as_token(Some(&w), "GET", "Group/icm-cohort-chronic-disease", None);
    assert_eq!(g.status, 200, "{}", g.body);
    let g = g.json();
    assert_eq!(g["type"], "person");
    assert_eq!(g["actual"], true);
    assert_eq!(g["quantity"], 2);
    let members: Vec<&str> = g["member"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["entity"]["reference"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["Patient/a", "Patient/b"]);
    // b's enrollment ends: b stays listed, inactive, with the end of the period.
    put_as(s, &w, episode("eb", "b", "finished", Some("2025-06-30")));
    let g = s
        .as_token(Some(&w), "GET", "Group/icm-cohort-chronic-disease", None)
        .json();
    assert_eq!(g["quantity"], 1);
    assert_eq!(g["member"][1]["inactive"], true);
    assert_eq!(g["member"][1]["period"]["end"], "2025-06-30");

    // The cohort's export: the compartments of its current members only.
    let tok = system_token();
    let (_, files) = export_all(s, &tok, "Group/icm-cohort-chronic-disease/$export");
    assert_eq!(ids(&files, "Patient"), ["a"]);
    assert_eq!(ids(&files, "Observation"), ["oa1", "oa2"]);
    assert_eq!(ids(&files, "EpisodeOfCare"), ["ea"]);
    assert!(!files.contains_key("Practitioner"));
    // With _type and _typeFilter.
    let (_, files) = export_all(
        s,
        &tok,
        "Group/icm-cohort-chronic-disease/$export?_type=Observation&_typeFilter=Observation%3Fstatus%3Dfinal",
    );
    assert_eq!(ids(&files, "Observation"), ["oa1"]);
    // Within the caller's access: a token for patient b (a former member) does not see the
    // cohort Group at all — it lists every enrolled patient — neither to read, search nor export.
    let pb = mint(&claims("pb", "patient/*.rs", json!({"patient": "b"})));
    kick(
        s,
        &pb,
        "Group/icm-cohort-chronic-disease/$export",
        Some("respond-async"),
    )
    .expect_outcome(404, "not-found");
    s.as_token(Some(&pb), "GET", "Group/icm-cohort-chronic-disease", None)
        .expect(404);
    let found = s.as_token(Some(&pb), "GET", "Group?member=Patient/b", None);
    found.expect(200);
    assert_eq!(found.json()["total"], 0, "{}", found.body);
    // An unknown Group is a 404.
    kick(s, &tok, "Group/nope/$export", Some("respond-async")).expect_outcome(404, "not-found");
    // b enrolls again: active again.
    put_as(s, &w, episode("eb2", "b", "active", None));
    let g = s
        .as_token(Some(&w), "GET", "Group/icm-cohort-chronic-disease", None)
        .json();
    assert_eq!(g["quantity"], 2);
    assert_eq!(g["member"][1]["inactive"], false);
});

secure_tests!(exported_files_load_back_with_import, |s| {
    world(s);
    let w = writer_token();
    put_as(s, &w, episode("ea", "a", "active", None));
    let tok = system_token();
    let url = start_export(s, &tok, "$export");
    let m = manifest(s, &tok, &url);
    let dir = TempDir::new();
    let mut total = 0;
    for o in m["output"].as_array().unwrap() {
        let r = get_as(s, &tok, o["url"].as_str().unwrap());
        let ty = o["type"].as_str().unwrap();
        std::fs::write(dir.0.join(format!("{ty}.ndjson")), &r.body).unwrap();
        total += o["count"].as_u64().unwrap();
    }
    assert!(total >= 8, "{m}");
    // A fresh database of the same backend.
    let fresh = start(s.backend).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_icm-fhir"))
        .args(["import", "--quiet"])
        .arg(&dir.0)
        .env("DATABASE_URL", &fresh.database_url)
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    // Every exported resource is there, with the same content.
    for o in m["output"].as_array().unwrap() {
        let r = get_as(s, &tok, o["url"].as_str().unwrap());
        for line in r.body.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let path = format!(
                "{}/{}",
                v["resourceType"].as_str().unwrap(),
                v["id"].as_str().unwrap()
            );
            let got = fresh.get(&path);
            assert_eq!(got.status, 200, "{path} missing after import: {log}");
            let got = got.json();
            let strip = |mut x: Value| {
                x.as_object_mut().unwrap().remove("meta");
                x
            };
            assert_eq!(strip(got), strip(v), "{path}");
        }
    }
});

secure_tests!(bad_kickoffs_are_400_outcomes, |s| {
    world(s);
    let tok = system_token();
    // Prefer: respond-async is required.
    kick(s, &tok, "$export", None).expect_outcome(400, "invalid");
    kick(s, &tok, "Patient/$export", Some("return=minimal")).expect_outcome(400, "invalid");
    for bad in [
        "$export?_outputFormat=text%2Fcsv",
        "$export?_type=NotAType",
        "$export?_since=yesterday",
        "$export?_typeFilter=Observation%3Fnonsense%3D1",
        "$export?_typeFilter=NotAType%3Fstatus%3Dfinal",
        "$export?_typeFilter=no-question-mark",
        "$export?_type=Patient&_typeFilter=Observation%3Fstatus%3Dfinal",
        "$export?_typeFilter=Observation%3F_sort%3Ddate",
        "$export?_typeFilter=Observation%3F_include%3DObservation%3Asubject",
        "$export?includeAssociatedData=LatestProvenanceResources",
        "Patient/$export?_type=Practitioner",
        "Group/icm-cohort-x/$export?_type=Organization",
    ] {
        let r = kick(s, &tok, bad, Some("respond-async"));
        let oo = r.expect_outcome(400, "invalid");
        assert!(oo["issue"][0]["diagnostics"].as_str().is_some(), "{bad}");
    }
    // handling=lenient: unsupported parameters are ignored.
    let r = kick(
        s,
        &tok,
        "$export?includeAssociatedData=LatestProvenanceResources&_type=Patient",
        Some("respond-async, handling=lenient"),
    );
    r.expect(202);
    // JSON is what the kick-off answers in.
    let auth = format!("Bearer {tok}");
    let r = s.request(
        "GET",
        "$export",
        &[
            ("Accept", "text/csv"),
            ("Prefer", "respond-async"),
            ("Authorization", auth.as_str()),
        ],
        None,
    );
    assert_eq!(r.status, 406);
    // Unknown jobs and files.
    get_as(s, &tok, "$export-status/nope").expect_outcome(404, "not-found");
    get_as(s, &tok, "$export-file/nope/Patient.ndjson").expect_outcome(404, "not-found");
    get_as(s, &tok, "$export-file/nope/..%2F..%2Fetc.ndjson").expect_outcome(404, "not-found");
});

// The job lives in the database: another server process on the same database (or the same one
// after a restart) answers for it, with the same manifest and files.
secure_tests!(jobs_are_shared_by_server_processes, |s| {
    world(s);
    let tok = system_token();
    let url = start_export(s, &tok, "$export?_type=Patient");
    let m = manifest(s, &tok, &url);
    let db = s.database_url.clone();
    let other = start_secure_with(s.backend, |c| c.database_url = db).unwrap();
    let moved = |u: &str| u.replacen(&s.base, &other.base, 1);
    let r = get_as(&other, &tok, &moved(&url));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["transactionTime"], m["transactionTime"]);
    let f = get_as(
        &other,
        &tok,
        &moved(m["output"][0]["url"].as_str().unwrap()),
    );
    assert_eq!(f.status, 200, "{}", f.body);
    assert_eq!(f.body.lines().count(), 2);
});

backend_tests!(capability_statement_lists_export, |s| {
    let cap = s.get("metadata").json();
    assert_eq!(
        cap["instantiates"][0],
        "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
    );
    let names = |ops: &Value| -> Vec<String> {
        ops.as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(names(&cap["rest"][0]["operation"]).contains(&"export".to_string()));
    let res = cap["rest"][0]["resource"].as_array().unwrap();
    let of = |ty: &str| names(&res.iter().find(|r| r["type"] == ty).unwrap()["operation"]);
    assert!(of("Patient").contains(&"export".to_string()));
    assert_eq!(of("Group"), ["export", "validate"]);
});

// The cohort Group's cost per enrollment does not grow with the cohort: its members are rows,
// so no stored version (and no history row) carries the member list — every version is about
// the size of the first, whatever the number of members — while a read, a search by member,
// `_revinclude` and `_has` still see every member.
secure_tests!(cohort_versions_do_not_carry_the_member_list, |s| {
    let w = writer_token();
    const N: usize = 25;
    for n in 0..N {
        put_as(
            s,
            &w,
            json!({"resourceType": "Patient", "id": format!("m{n}")}),
        );
        put_as(
            s,
            &w,
            episode(&format!("em{n}"), &format!("m{n}"), "active", None),
        );
    }
    // One member leaves: one more version.
    put_as(s, &w, episode("em3", "m3", "finished", Some("2025-06-30")));
    let g = s
        .as_token(Some(&w), "GET", "Group/icm-cohort-chronic-disease", None)
        .json();
    assert_eq!(g["quantity"], N as u64 - 1);
    let members = g["member"].as_array().unwrap();
    assert_eq!(members.len(), N);
    assert_eq!(members[0]["entity"]["reference"], "Patient/m0");
    assert_eq!(
        members[N - 1]["entity"]["reference"],
        format!("Patient/m{}", N - 1)
    );
    assert_eq!(members[3]["inactive"], true);
    assert_eq!(members[3]["period"]["end"], "2025-06-30");
    // A version per change, none of them holding the members.
    let h = s
        .as_token(
            Some(&w),
            "GET",
            "Group/icm-cohort-chronic-disease/_history?_count=100",
            None,
        )
        .json();
    let versions: Vec<&Value> = h["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    assert_eq!(versions.len(), N + 1, "{h}");
    assert_eq!(g["meta"]["versionId"], (N + 1).to_string());
    let sizes: Vec<usize> = versions.iter().map(|v| v.to_string().len()).collect();
    let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
    // A member list would add tens of bytes per member to the later versions.
    assert!(
        max - min < 16,
        "history rows grow with the cohort: {sizes:?}"
    );
    assert!(versions.iter().all(|v| v.get("member").is_none()));
    assert_eq!(versions[0]["quantity"], N as u64 - 1);
    // Found by member, with _revinclude and _has, like any Group.
    let found = s
        .as_token(Some(&w), "GET", "Group?member=Patient/m7", None)
        .json();
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(
        found["entry"][0]["resource"]["member"]
            .as_array()
            .unwrap()
            .len(),
        N
    );
    let rev = s
        .as_token(
            Some(&w),
            "GET",
            "Patient?_id=m7&_revinclude=Group:member",
            None,
        )
        .json();
    let types: Vec<&str> = rev["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Patient", "Group"], "{rev}");
    let has = s
        .as_token(
            Some(&w),
            "GET",
            "Patient?_has:Group:member:_id=icm-cohort-chronic-disease&_count=100",
            None,
        )
        .json();
    assert_eq!(has["entry"].as_array().unwrap().len(), N, "{has}");
    // The export hands over the current members only.
    let (_, files) = export_all(
        s,
        &system_token(),
        "Group/icm-cohort-chronic-disease/$export?_type=Patient",
    );
    assert_eq!(ids(&files, "Patient").len(), N - 1);
    assert!(!ids(&files, "Patient").contains(&"m3".to_string()));
});

// A client's whole-Group write of a cohort replaces its members (rows), and a PATCH sees them.
secure_tests!(cohort_group_written_whole_by_a_client, |s| {
    world(s);
    let w = writer_token();
    put_as(s, &w, episode("ea", "a", "active", None));
    let mut g = s
        .as_token(Some(&w), "GET", "Group/icm-cohort-chronic-disease", None)
        .json();
    g["member"] =
        json!([{"entity": {"reference": "Patient/b"}, "period": {"start": "2025-02-01"}}]);
    put_as(s, &w, g);
    let g = s
        .as_token(Some(&w), "GET", "Group/icm-cohort-chronic-disease", None)
        .json();
    assert_eq!(g["quantity"], 1);
    assert_eq!(g["member"].as_array().unwrap().len(), 1, "{g}");
    assert_eq!(g["member"][0]["entity"]["reference"], "Patient/b");
    let found = s
        .as_token(Some(&w), "GET", "Group?member=Patient/a", None)
        .json();
    assert_eq!(found["total"], 0, "{found}");
    // PATCH applies to the Group as read: its members stay.
    let r = s.request(
        "PATCH",
        "Group/icm-cohort-chronic-disease",
        &[
            ("Authorization", &format!("Bearer {w}")),
            ("Content-Type", "application/json-patch+json"),
        ],
        Some(r#"[{"op":"replace","path":"/name","value":"Renamed cohort"}]"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let g = s
        .as_token(Some(&w), "GET", "Group/icm-cohort-chronic-disease", None)
        .json();
    assert_eq!(g["name"], "Renamed cohort");
    assert_eq!(g["member"][0]["entity"]["reference"], "Patient/b");
    // A delete removes the members with it; the next enrollment starts a new cohort.
    s.as_token(Some(&w), "DELETE", "Group/icm-cohort-chronic-disease", None)
        .expect(204);
    let found = s
        .as_token(Some(&w), "GET", "Group?member=Patient/b", None)
        .json();
    assert_eq!(found["total"], 0, "{found}");
    put_as(s, &w, episode("ea2", "a", "active", None));
    let g = s
        .as_token(Some(&w), "GET", "Group/icm-cohort-chronic-disease", None)
        .json();
    assert_eq!(g["quantity"], 1);
    assert_eq!(g["member"][0]["entity"]["reference"], "Patient/a");
});
